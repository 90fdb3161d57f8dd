"""Synthetic 12-lead ECG demo dataset in PhysioNet PTB-XL layout, generated locally from a seed.

Each beat is a sum of Gaussian waves (P, Q, R, S, T, plus an atrial second hump, an R'/notch and
an ST segment). A wave has one frontal-plane vector, projected onto leads I and II, and one
amplitude per chest lead; III, aVR, aVL and aVF are derived from I and II as an ECG machine does.
SCP statements edit these waves the way the disease changes the ECG, scaled by a severity in
[0.15, 1] so that some records are clear-cut and others borderline.
"""

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import resample_poly
from tqdm import tqdm

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
FS_HIGH, FS_LOW, SECONDS = 500, 100, 10
MARKER = "demo_dataset.json"

# code: (description, diagnostic_class, diagnostic_subclass, form, rhythm), as in PTB-XL's scp_statements.csv
SCP_STATEMENTS = {
    "NDT": ("non-diagnostic T abnormalities", "STTC", "STTC", True, False),
    "NST_": ("non-specific ST changes", "STTC", "NST_", True, False),
    "NORM": ("normal ECG", "NORM", "NORM", False, False),
    "IMI": ("inferior myocardial infarction", "MI", "IMI", False, False),
    "ASMI": ("anteroseptal myocardial infarction", "MI", "AMI", False, False),
    "LVH": ("left ventricular hypertrophy", "HYP", "LVH", False, False),
    "LAFB": ("left anterior fascicular block", "CD", "LAFB/LPFB", False, False),
    "ISC_": ("non-specific ischemic", "STTC", "ISC_", False, False),
    "IRBBB": ("incomplete right bundle branch block", "CD", "IRBBB", False, False),
    "1AVB": ("first degree AV block", "CD", "_AVB", False, False),
    "ISCAL": ("ischemic in anterolateral leads", "STTC", "ISCA", False, False),
    "CRBBB": ("complete right bundle branch block", "CD", "CRBBB", False, False),
    "CLBBB": ("complete left bundle branch block", "CD", "CLBBB", False, False),
    "ILMI": ("inferolateral myocardial infarction", "MI", "IMI", False, False),
    "LAO/LAE": ("left atrial overload/enlargement", "HYP", "LAO/LAE", False, False),
    "AMI": ("anterior myocardial infarction", "MI", "AMI", False, False),
    "RVH": ("right ventricular hypertrophy", "HYP", "RVH", False, False),
    "ABQRS": ("abnormal QRS", None, None, True, False),
    "LVOLT": ("low QRS voltages in the frontal and horizontal leads", None, None, True, False),
    "SR": ("sinus rhythm", None, None, False, True),
    "AFIB": ("atrial fibrillation", None, None, False, True),
    "STACH": ("sinus tachycardia", None, None, False, True),
    "SBRAD": ("sinus bradycardia", None, None, False, True),
}

# None stands for a record with rhythm/form statements only (no superdiagnostic label)
CLASS_PROBABILITY = {"NORM": 0.42, "MI": 0.20, "STTC": 0.14, "CD": 0.14, "HYP": 0.07, None: 0.03}
CODE_PROBABILITY = {
    "MI": {"IMI": 0.4, "ASMI": 0.3, "AMI": 0.15, "ILMI": 0.15},
    "STTC": {"NDT": 0.3, "NST_": 0.2, "ISC_": 0.25, "ISCAL": 0.25},
    "CD": {"CLBBB": 0.2, "CRBBB": 0.25, "IRBBB": 0.15, "LAFB": 0.2, "1AVB": 0.2},
    "HYP": {"LVH": 0.6, "RVH": 0.15, "LAO/LAE": 0.25},
}
SECOND_CLASS_PROBABILITY = 0.3
SECOND_CLASS = {
    "MI": {"STTC": 0.6, "CD": 0.25, "HYP": 0.15},
    "STTC": {"MI": 0.4, "HYP": 0.4, "CD": 0.2},
    "CD": {"HYP": 0.5, "MI": 0.3, "STTC": 0.2},
    "HYP": {"CD": 0.5, "STTC": 0.5},
}

P, P2, Q, R, R2, S, ST, T = range(8)
QRS = [Q, R, R2, S]
N_WAVES = 8
# chest-lead amplitudes (mV) of a normal beat, V1..V6: R progression, septal q, deep S in V1-V2
NORMAL_PRECORDIAL = np.array([
    [0.05, 0.08, 0.08, 0.08, 0.08, 0.07],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, -0.02, -0.07, -0.08],
    [0.25, 0.5, 0.85, 1.25, 1.35, 1.05],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.95, -1.4, -0.9, -0.45, -0.2, -0.08],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.05, 0.3, 0.45, 0.42, 0.32, 0.24],
])
NORMAL_WIDTH = np.array([0.022, 0.022, 0.008, 0.009, 0.012, 0.009, 0.04, 0.05])
# rows: I, II, III, aVR, aVL, aVF from columns I, II (Einthoven and Goldberger)
LIMB_FROM_I_II = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]])
MI_CHEST_LEADS = {"IMI": [], "ILMI": [4, 5], "ASMI": [0, 1, 2], "AMI": [1, 2, 3, 4]}
TYPICAL_PATIENT = {"axis": 45.0, "gain": 1.0, "prec_gain": np.ones(6), "pr": 0.16, "qt": 0.27, "qrs": 1.0}
STUDY_START = np.datetime64("1989-10-01T00:00:00")
STUDY_DAYS = 2460


@dataclass
class Morphology:
    """One beat's waves: frontal-plane vector (complex, mV), chest amplitudes (mV), centre and width (s); QRS gain."""

    frontal: np.ndarray
    precordial: np.ndarray
    center: np.ndarray
    width: np.ndarray
    gain: float


def _vec(magnitude: float, degrees: float) -> complex:
    """Frontal-plane vector; 0 deg points to lead I, +90 deg to aVF."""
    return magnitude * np.exp(1j * np.deg2rad(degrees))


def _axis(z: complex) -> float:
    """Direction of a frontal-plane vector in degrees."""
    return float(np.angle(z, deg=True))


def draw_patient(rng: np.random.Generator) -> dict:
    """Demographics and the patient-specific normal ECG (axis, voltage, electrode placement, intervals)."""
    return {
        "age": float(rng.integers(18, 90)),
        "sex": int(rng.random() < 0.48),
        "axis": rng.normal(45.0, 22.0),
        "gain": rng.uniform(0.75, 1.35),
        "prec_gain": 1.0 + 0.12 * rng.standard_normal(6),
        "pr": rng.uniform(0.14, 0.19),
        "qt": rng.uniform(0.25, 0.30),
        "qrs": rng.uniform(0.9, 1.1),
        "hr": rng.normal(75.0, 10.0),
    }


def _normal_morphology(patient: Mapping) -> Morphology:
    """Normal sinus beat of this patient."""
    axis, gain = patient["axis"], patient["gain"]
    frontal = np.array([_vec(0.12, 55), 0, _vec(0.08, axis + 170), _vec(1.0, axis), 0,
                        _vec(0.22, axis + 160), 0, _vec(0.3, axis - 5)])
    precordial = NORMAL_PRECORDIAL * patient["prec_gain"]
    frontal[QRS] *= gain
    precordial[QRS] *= gain
    pr = patient["pr"]
    center = np.array([-pr, -pr + 0.045, -0.024, 0.0, 0.04, 0.022, 0.11, patient["qt"]])
    width = NORMAL_WIDTH.copy()
    width[QRS] *= patient["qrs"]
    return Morphology(frontal, precordial, center, width, gain)


def _apply_mi(m: Morphology, code: str, s: float, rng: np.random.Generator) -> None:
    """Pathological Q and lost R in the infarct leads, with acute ST elevation or old T inversion."""
    acute = rng.random() < 0.45
    q_depth = (0.15 + 0.45 * s) * m.gain
    m.width[Q] *= 1.4 + 0.6 * s
    if code in ("IMI", "ILMI"):
        m.frontal[Q] += _vec(q_depth, -90)
        m.frontal[R] -= _vec(0.5 * s * abs(m.frontal[R]), 90)
        if acute:
            m.frontal[ST] += _vec(0.06 + 0.22 * s, 105)
        else:
            m.frontal[T] += _vec(0.15 + 0.35 * s, -75)
    leads = MI_CHEST_LEADS[code]
    m.precordial[R, leads] *= 1 - 0.85 * s
    m.precordial[Q, leads] -= q_depth
    if acute:
        m.precordial[ST, leads] += 0.06 + 0.22 * s
    else:
        m.precordial[T, leads] *= 1 - 2 * s


def _apply_sttc(m: Morphology, code: str, s: float, rng: np.random.Generator) -> None:
    """ST depression and/or flat or inverted T waves (inferolateral, or anterolateral for ISCAL)."""
    depression = {"NDT": 0.0, "NST_": 0.03 + 0.06 * s, "ISC_": 0.07 + 0.18 * s, "ISCAL": 0.07 + 0.18 * s}[code]
    t_factor = {"NDT": 1 - 1.4 * s, "NST_": 1 - 0.5 * s, "ISC_": 1 - 1.6 * s, "ISCAL": 1 - 2 * s}[code]
    direction = 165 if code == "ISCAL" else 240
    m.frontal[ST] += _vec(depression, direction)
    m.precordial[ST, 2:] -= depression
    m.precordial[T, 2:] *= t_factor
    if code == "ISCAL":
        m.frontal[T] += _vec(0.2 + 0.4 * s, direction)
    else:
        m.frontal[T] *= t_factor


def _apply_cd(m: Morphology, code: str, s: float, rng: np.random.Generator) -> None:
    """Bundle branch block (wide QRS), left axis deviation (LAFB) or a long PR interval (1AVB)."""
    g = m.gain
    if code == "CLBBB":
        m.frontal[Q] = 0
        m.precordial[Q] = 0
        m.width[R] *= 1.8 + 0.5 * s
        m.frontal[R2] = 0.8 * m.frontal[R] * np.exp(-1j * np.deg2rad(15))
        m.precordial[R2] = g * np.array([0.0, 0.0, 0.2, 0.7, 1.0, 1.0])
        m.center[R2], m.width[R2] = 0.045, 0.018 + 0.006 * s
        m.precordial[R, :3] *= 0.2
        m.frontal[S] = 0
        m.precordial[S] = g * (0.8 + 0.5 * s) * np.array([-1.3, -1.8, -1.4, -0.6, 0.0, 0.0])
        m.center[S], m.width[S] = 0.035, 0.022 + 0.006 * s
        axis = _axis(m.frontal[R])
        m.frontal[ST] = _vec(0.08 * (0.5 + 0.5 * s), axis + 180)
        m.frontal[T] = _vec(abs(m.frontal[T]), axis + 180)
        m.precordial[ST] = (0.5 + 0.5 * s) * np.array([0.12, 0.18, 0.15, 0.0, -0.08, -0.1])
        m.precordial[T] = np.array([0.3, 0.45, 0.35, 0.05, -0.2, -0.25])
    elif code in ("CRBBB", "IRBBB"):
        complete = code == "CRBBB"
        size = g * ((0.5 + 0.7 * s) if complete else (0.25 + 0.35 * s))
        m.center[R2], m.width[R2] = (0.055, 0.016) if complete else (0.04, 0.011)
        m.frontal[R2] = _vec(0.5 * size, 190)
        m.precordial[R2] = size * np.array([1.0, 0.7, 0.15, -0.25, -0.4, -0.45])
        m.width[[Q, R, S]] *= 1.15 if complete else 1.05
        if complete:
            m.precordial[T, :2] = -0.15 * g * (0.5 + s)
    elif code == "LAFB":
        m.frontal[R] = _vec(abs(m.frontal[R]), -45 - 20 * s)
        m.frontal[Q] = _vec((0.1 + 0.1 * s) * g, 120)
        m.frontal[S] *= 0.3
        m.width[QRS] *= 1.08
    elif code == "1AVB":
        m.center[[P, P2]] -= 0.06 + 0.12 * s


def _apply_hyp(m: Morphology, code: str, s: float, rng: np.random.Generator) -> None:
    """Ventricular hypertrophy voltages and axis, or a wide notched P of left atrial enlargement."""
    if code == "LVH":
        k = 1.5 + 1.3 * s
        m.precordial[R, 3:] *= [(1 + k) / 2, k, k]
        m.precordial[S, :3] *= [k, k, (1 + k) / 2]
        m.frontal[R] *= (1 + 0.5 * s) * np.exp(-1j * np.deg2rad(15 * s))
        m.width[QRS] *= 1 + 0.12 * s
        if s > 0.5:
            m.precordial[ST, 4:] -= 0.15 * s
            m.precordial[T, 4:] *= 1 - 4 * (s - 0.5)
    elif code == "RVH":
        m.frontal[R] = _vec(abs(m.frontal[R]), 100 + 25 * s)
        m.frontal[P] *= 1 + 0.8 * s
        m.precordial[R, :2] = m.gain * np.array([0.5 + 0.9 * s, 0.4 + 0.5 * s])
        m.precordial[S, :2] *= 0.35
        m.precordial[S, 4:] = -m.gain * (0.4 + 0.5 * s)
        m.precordial[T, :3] *= 1 - 2 * s
    elif code == "LAO/LAE":
        m.width[[P, P2]] = m.width[P] * (1.15 + 0.25 * s)
        m.frontal[P2] = 0.85 * m.frontal[P]
        m.center[P2] = m.center[P] + 0.04 + 0.02 * s
        m.precordial[P2] = np.array([-0.06 - 0.1 * s, -0.03, 0.03, 0.05, 0.05, 0.05])


def _apply_form(m: Morphology, code: str, s: float, rng: np.random.Generator) -> None:
    """Low QRS voltage (LVOLT) or a fragmented QRS (ABQRS) where no R' is present yet."""
    if code == "LVOLT":
        m.frontal[QRS] *= 0.4
        m.precordial[QRS] *= 0.4
    elif code == "ABQRS" and not (m.frontal[R2] or m.precordial[R2].any()):
        m.frontal[R2] = _vec(0.15 * m.gain, rng.uniform(0, 360))
        m.precordial[R2] = m.gain * rng.normal(0.0, 0.12, 6)
        m.center[R2], m.width[R2] = 0.03, 0.007


APPLY = {"HYP": _apply_hyp, "CD": _apply_cd, "MI": _apply_mi, "STTC": _apply_sttc, None: _apply_form}


def morphology(patient: Mapping, findings: Mapping[str, float], rng: np.random.Generator) -> Morphology:
    """The patient's beat with each finding {code: severity} applied: hypertrophy, conduction, infarct, ST-T, form."""
    m = _normal_morphology(patient)
    for cls, apply in APPLY.items():
        for code, severity in findings.items():
            if SCP_STATEMENTS[code][1] == cls:
                apply(m, code, severity, rng)
    return m


def _beat_times(hr: float, afib: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-peak times (s) covering the record, each beat's preceding RR (s) and respiratory amplitude factor."""
    rr_mean = 60.0 / hr
    n = int(np.ceil((SECONDS + 2) / (0.6 * rr_mean)))
    phase = rng.uniform(0, 2 * np.pi)
    if afib:
        rr = np.maximum(rr_mean * rng.gamma(12.0, 1 / 12.0, n), 0.33)
    else:
        breathing = 0.04 * np.sin(2 * np.pi * 0.25 * rr_mean * np.arange(n) + phase)
        rr = rr_mean * (1 + breathing + 0.015 * rng.standard_normal(n))
    beats = -rng.uniform(0.2, 1.0) * rr_mean + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    previous_rr = np.concatenate([[rr_mean], rr[:-1]])
    amplitude = 1 + 0.05 * np.sin(2 * np.pi * 0.25 * beats + phase)
    keep = beats < SECONDS + 0.5
    return beats[keep], previous_rr[keep], amplitude[keep]


def _wave_shapes(
    m: Morphology, beats: np.ndarray, previous_rr: np.ndarray, amplitude: np.ndarray, fs: int
) -> np.ndarray:
    """Unit-amplitude time course of every wave summed over beats, (n_waves, n_samples); ST-T follows Bazett."""
    t = np.arange(SECONDS * fs) / fs
    stretch = np.ones((N_WAVES, len(beats)))
    stretch[[ST, T]] = np.sqrt(np.clip(previous_rr, 0.4, 1.5))
    center = beats + m.center[:, None] * stretch
    width = m.width[:, None] * stretch
    x = (t - center[..., None]) / width[..., None]
    return np.einsum("wbn,b->wn", np.exp(-0.5 * x * x), amplitude)


def _lead_weights(frontal: np.ndarray, precordial: np.ndarray) -> np.ndarray:
    """Amplitude in the independent leads I, II, V1..V6 of frontal vectors and chest amplitudes, (..., 8)."""
    lead_i = frontal.real
    lead_ii = (frontal * np.exp(-1j * np.pi / 3)).real
    return np.concatenate([lead_i[..., None], lead_ii[..., None], precordial], axis=-1)


def _fibrillation(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Atrial fibrillatory f-waves (4-8 Hz, strongest in V1) in the independent leads, (n, 8)."""
    t = np.arange(n) / fs
    freqs, phases = rng.uniform(4, 8, 3), rng.uniform(0, 2 * np.pi, 3)
    wave = rng.uniform(0.03, 0.08) * np.sin(2 * np.pi * freqs * t[:, None] + phases).mean(axis=1)
    weights = _lead_weights(np.array(_vec(1.0, 70)), np.array([1.0, 0.6, 0.35, 0.2, 0.1, 0.1]))
    return wave[:, None] * weights


def _noise(levels: Mapping[str, float], n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander, EMG-like white noise and 50 Hz hum in the independent leads, (n, 8) mV."""
    t = np.arange(n) / fs
    freqs, phases = rng.uniform(0.05, 0.5, (3, 8)), rng.uniform(0, 2 * np.pi, (3, 8))
    wander = (rng.uniform(0.2, 0.6, (3, 8)) * np.sin(2 * np.pi * freqs * t[:, None, None] + phases)).sum(axis=1)
    emg = rng.standard_normal((n, 8)) * rng.uniform(0.5, 1.5, 8)
    hum = np.sin(2 * np.pi * 50 * t[:, None] + rng.uniform(0, 2 * np.pi, 8))
    return levels["baseline"] * wander + levels["emg"] * emg + levels["hum"] * hum


def synthesize_ecg(
    findings: Mapping[str, float],
    rng: np.random.Generator,
    patient: Mapping | None = None,
    hr: float = 70.0,
    afib: bool = False,
    noise: Mapping[str, float] | None = None,
    fs: int = FS_HIGH,
) -> np.ndarray:
    """10 s 12-lead ECG in mV, (SECONDS * fs, 12) in LEADS order; findings {code: severity}; noise None = clean."""
    beats, previous_rr, amplitude = _beat_times(hr, afib, rng)
    m = morphology(TYPICAL_PATIENT if patient is None else patient, findings, rng)
    if afib:
        m.frontal[[P, P2]] = 0
        m.precordial[[P, P2]] = 0
    independent = _wave_shapes(m, beats, previous_rr, amplitude, fs).T @ _lead_weights(m.frontal, m.precordial)
    if afib:
        independent += _fibrillation(len(independent), fs, rng)
    if noise is not None:
        independent += _noise(noise, len(independent), fs, rng)
    return np.hstack([independent[:, :2] @ LIMB_FROM_I_II.T, independent[:, 2:]])


def _pick(options: Mapping, rng: np.random.Generator):
    """One key of {option: probability}."""
    keys = list(options)
    return keys[rng.choice(len(keys), p=np.array(list(options.values())) / sum(options.values()))]


def _severity(rng: np.random.Generator) -> float:
    """How pronounced a finding is: mostly clear, sometimes borderline."""
    return float(0.15 + 0.85 * rng.beta(2.0, 1.4))


def _draw_findings(rng: np.random.Generator) -> dict[str, float]:
    """Diagnostic SCP codes with severities: NORM, one abnormal class, sometimes a second one; {} = none."""
    first = _pick(CLASS_PROBABILITY, rng)
    if first is None:
        return {}
    if first == "NORM":
        return {"NORM": float(0.15 + 0.85 * rng.beta(6.0, 1.0))}
    classes = [first]
    if rng.random() < SECOND_CLASS_PROBABILITY:
        classes.append(_pick(SECOND_CLASS[first], rng))
    return {_pick(CODE_PROBABILITY[cls], rng): _severity(rng) for cls in classes}


def _draw_noise(rng: np.random.Generator) -> dict[str, float]:
    """Noise amplitudes (mV): most records clean, a tail of noisy ones."""
    quality = rng.beta(1.3, 5.0)
    return {
        "baseline": float(quality * rng.uniform(0.2, 1.2)),
        "emg": float(quality * rng.uniform(0.01, 0.1)),
        "hum": float(quality * rng.uniform(0.0, 0.08) * (rng.random() < 0.3)),
    }


def _draw_record(patient: dict, rng: np.random.Generator) -> dict:
    """One recording of a patient: findings (often the patient's usual ones), form codes, rhythm and noise."""
    if rng.random() < 0.75:
        findings = {code: float(np.clip(s + rng.normal(0, 0.08), 0.15, 1.0)) for code, s in patient["findings"].items()}
    else:
        findings = _draw_findings(rng)
    afib = bool(findings) and "NORM" not in findings and rng.random() < 0.06
    if not findings:
        afib = rng.random() < 0.3
        if not afib:
            findings[_pick({"LVOLT": 0.5, "ABQRS": 0.5}, rng)] = 1.0
    elif "NORM" not in findings:
        if rng.random() < (0.35 if any(SCP_STATEMENTS[c][1] == "MI" for c in findings) else 0.04):
            findings["ABQRS"] = 1.0
        if rng.random() < 0.04:
            findings["LVOLT"] = 1.0
    hr = rng.uniform(70, 115) if afib else float(np.clip(patient["hr"] + rng.normal(0, 6), 50, 110))
    return {"findings": findings, "afib": afib, "hr": hr, "noise": _draw_noise(rng)}


def _likelihood(severity: float) -> float:
    """PTB-XL-style statement likelihood (15 .. 100) from how pronounced the finding is."""
    return (15.0, 35.0, 50.0, 80.0, 100.0)[int(np.searchsorted([0.25, 0.35, 0.45, 0.6], severity))]


def _scp_codes(record: Mapping) -> dict[str, float]:
    """scp_codes of a record: diagnostic likelihoods, then form and rhythm statements at 0.0."""
    codes = {c: (_likelihood(s) if SCP_STATEMENTS[c][1] else 0.0) for c, s in record["findings"].items()}
    codes = dict(sorted(codes.items(), key=lambda item: SCP_STATEMENTS[item[0]][1] is None))
    if record["afib"]:
        codes["AFIB"] = 0.0
    else:
        codes["SBRAD" if record["hr"] < 60 else "STACH" if record["hr"] > 100 else "SR"] = 0.0
    return codes


def superclasses(findings: Mapping[str, float]) -> list[str]:
    """Superdiagnostic classes of a record's codes, in SUPERCLASSES order."""
    present = {SCP_STATEMENTS[code][1] for code in findings}
    return [cls for cls in SUPERCLASSES if cls in present]


def assign_folds(patient_ids: np.ndarray, y: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """Folds 1..n_folds keeping each patient in one fold, greedily balancing record and per-class counts."""
    patients, inverse = np.unique(patient_ids, return_inverse=True)
    load = np.zeros((len(patients), 1 + y.shape[1]))
    np.add.at(load, inverse, np.column_stack([np.ones(len(y)), y]))
    weight = 1.0 / np.maximum(load.sum(axis=0), 1.0)
    fold_load = np.zeros((n_folds, load.shape[1]))
    fold_of_patient = np.zeros(len(patients), dtype=int)
    for p in np.argsort(-load[:, 0], kind="stable"):
        fold = int(np.argmin(fold_load @ (weight * (load[p] > 0))))
        fold_of_patient[p] = fold + 1
        fold_load[fold] += load[p]
    return fold_of_patient[inverse]


def _records_per_patient(n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Records of each patient (1 + Poisson), summing to n_records."""
    counts = 1 + rng.poisson(1.3, size=n_records)
    total = np.cumsum(counts)
    n_patients = int(np.searchsorted(total, n_records)) + 1
    counts = counts[:n_patients]
    counts[-1] -= total[n_patients - 1] - n_records
    return counts


def _record_path(ecg_id: int, fs: int) -> str:
    """PTB-XL record path without extension: records100/01000/01234_lr."""
    folder, suffix = ("records500", "hr") if fs == FS_HIGH else ("records100", "lr")
    return f"{folder}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{suffix}"


def plan_dataset(n_records: int, rng: np.random.Generator) -> tuple[pd.DataFrame, list[dict]]:
    """ptbxl_database table and, row for row, what to synthesise (patient, findings, rhythm, noise)."""
    counts = _records_per_patient(n_records, rng)
    records = []
    patient_ids = 1 + rng.choice(max(21999, len(counts)), size=len(counts), replace=False)
    for patient_id, count in zip(patient_ids, counts):
        patient = draw_patient(rng) | {"id": float(patient_id), "findings": _draw_findings(rng)}
        first_day = np.floor(rng.uniform(0, STUDY_DAYS))
        gaps = np.floor(np.cumsum(np.r_[0.0, rng.exponential(150.0, count - 1)]))
        days = first_day + gaps + rng.uniform(0.3, 0.8, count)
        for day in days:
            records.append(_draw_record(patient, rng) | {"patient": patient, "day": day, "first_day": first_day})
    records.sort(key=lambda record: record["day"])
    n = len(records)
    ecg_ids = np.arange(1, n + 1)
    patient_ids = np.array([r["patient"]["id"] for r in records])
    y = np.array([[cls in superclasses(r["findings"]) for cls in SUPERCLASSES] for r in records], dtype=float)
    folds = assign_folds(patient_ids, y)
    seconds = np.array([r["day"] for r in records]) * 86400
    database = pd.DataFrame({
        "ecg_id": ecg_ids,
        "patient_id": patient_ids,
        "age": [np.floor(r["patient"]["age"] + (r["day"] - r["first_day"]) / 365.25) for r in records],
        "sex": [r["patient"]["sex"] for r in records],
        "recording_date": STUDY_START + seconds.astype("timedelta64[s]"),
        "scp_codes": [str(_scp_codes(r)) for r in records],
        "validated_by_human": (folds >= 9) | (rng.random(n) < 0.7),
        "baseline_drift": [", alles," if r["noise"]["baseline"] > 0.25 else "" for r in records],
        "static_noise": [", alles," if r["noise"]["emg"] > 0.03 else "" for r in records],
        "strat_fold": folds,
        "filename_lr": [_record_path(i, FS_LOW) for i in ecg_ids],
        "filename_hr": [_record_path(i, FS_HIGH) for i in ecg_ids],
    })
    return database, records


def scp_statements_table() -> pd.DataFrame:
    """scp_statements.csv content: code index, description, diagnostic/form/rhythm flags (1.0 or empty), classes."""
    rows = {
        code: {"description": desc, "diagnostic": 1.0 if cls else np.nan, "form": 1.0 if form else np.nan,
               "rhythm": 1.0 if rhythm else np.nan,
               "diagnostic_class": cls, "diagnostic_subclass": sub}
        for code, (desc, cls, sub, form, rhythm) in SCP_STATEMENTS.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def _wfdb_record(name: str, signal: np.ndarray, fs: int) -> wfdb.Record:
    """WFDB record of a 12-lead mV signal as PTB-XL stores it: format 16, 1000 adu/mV, baseline 0."""
    n = len(LEADS)
    record = wfdb.Record(record_name=name, n_sig=n, fs=fs, sig_len=len(signal), p_signal=signal,
                         file_name=[f"{name}.dat"] * n, fmt=["16"] * n, adc_gain=[1000.0] * n, baseline=[0] * n,
                         units=["mV"] * n, sig_name=LEADS, adc_res=[16] * n, adc_zero=[0] * n, block_size=[0] * n)
    record.set_d_features(do_adc=True)
    return record


@functools.cache
def _wfdb_write_fields() -> tuple[list, dict]:
    """Header fields wfdb.wrsamp writes for such a record; wfdb takes ~30 ms to work them out, so once only."""
    record_fields, signal_fields = _wfdb_record("template", np.zeros((1, len(LEADS))), FS_LOW).get_write_fields()
    signal_fields.pop("samps_per_frame", None)
    return record_fields, signal_fields


def write_wfdb(path: Path, signal: np.ndarray, fs: int) -> None:
    """Write path.hea/.dat byte-identical to wfdb.wrsamp, minus its per-call field checks (5x faster)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _wfdb_record(path.name, signal, fs)
    record.wr_header_file(*_wfdb_write_fields(), write_dir=str(path.parent))
    record.wr_dat_files(write_dir=str(path.parent))


def _write_dataset(root: Path, n_records: int, seed: int, with_500hz: bool, progress: bool) -> dict:
    """Write every file of the dataset into root and return its summary."""
    rng = np.random.default_rng(seed)
    database, records = plan_dataset(n_records, rng)
    for row, record in tqdm(zip(database.itertuples(), records), total=len(records), desc="demo ECGs",
                            unit="record", disable=not progress):
        signal = synthesize_ecg(record["findings"], rng, record["patient"], record["hr"], record["afib"],
                                record["noise"])
        write_wfdb(root / row.filename_lr, resample_poly(signal, 1, FS_HIGH // FS_LOW, axis=0, padtype="line"), FS_LOW)
        if with_500hz:
            write_wfdb(root / row.filename_hr, signal, FS_HIGH)
    database.to_csv(root / "ptbxl_database.csv", index=False)
    scp_statements_table().to_csv(root / "scp_statements.csv")
    classes = [superclasses(r["findings"]) for r in records]
    record_column = database["filename_hr" if with_500hz else "filename_lr"]
    labels = pd.DataFrame({"record": record_column, "labels": [";".join(c) for c in classes],
                           "patient_id": database["patient_id"].astype(int)})
    labels[[bool(c) for c in classes]].to_csv(root / "labels.csv", index=False)
    listed = [database["filename_lr"], database["filename_hr"]] if with_500hz else [database["filename_lr"]]
    (root / "RECORDS").write_text("".join(f"{name}\n" for column in listed for name in column))
    summary = {
        "generator": "common.synthetic.generate_demo_dataset",
        "seed": seed,
        "n_records": len(records),
        "n_patients": int(database["patient_id"].nunique()),
        "with_500hz": with_500hz,
        "records_per_class": {cls: sum(cls in c for c in classes) for cls in SUPERCLASSES},
        "multi_label_records": sum(len(c) > 1 for c in classes),
        "records_without_diagnostic_class": sum(not c for c in classes),
        "records_per_fold": {str(f): int(n) for f, n in database["strat_fold"].value_counts().sort_index().items()},
    }
    (root / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty out_dir that is not a previous demo dataset, unless overwrite."""
    if overwrite or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory; choose another --out_dir or pass --overwrite")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ValueError(
            f"{out_dir} is not empty and is not a demo dataset (no {MARKER}); choose another --out_dir, "
            "empty it, or pass --overwrite (overwrite=True) to replace it"
        )


def _move_into_place(staged: Path, out_dir: Path) -> None:
    """Replace out_dir by the fully written staged folder, so readers never see a half-written dataset."""
    if not (out_dir.exists() or out_dir.is_symlink()):
        staged.rename(out_dir)
        return
    old = staged.with_name(staged.name + ".old")
    out_dir.rename(old)
    staged.rename(out_dir)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def generate_demo_dataset(
    out_dir: Path | str,
    n_records: int = 300,
    seed: int = 0,
    with_500hz: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write a seeded PTB-XL-layout demo dataset (WFDB records, ptbxl_database.csv, scp_statements.csv, labels.csv)."""
    out_dir = Path(os.path.abspath(out_dir))
    if n_records < 1:
        raise ValueError(f"n_records must be at least 1, got {n_records}")
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        staged.chmod(0o755)
        summary = _write_dataset(staged, n_records, seed, with_500hz, progress)
        _move_into_place(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary | {"out_dir": str(out_dir)}
