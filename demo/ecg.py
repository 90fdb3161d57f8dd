"""Synthetic 12-lead ECG signals: a parametric beat model that SCP statements edit.

Each beat is a sum of Gaussian waves (P, Q, R, S, T, plus an atrial second hump, an R'/notch and
an ST segment). A wave has one frontal-plane vector, projected onto leads I and II, and one
amplitude per chest lead; III, aVR, aVL and aVF are derived from I and II as an ECG machine does.
SCP statements edit these waves the way the disease changes the ECG, scaled by a severity in
[0.15, 1] so that some records are clear-cut and others borderline.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FS_HIGH, SECONDS = 500, 10

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

