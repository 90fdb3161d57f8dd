"""Apply trained checkpoints to new recordings: the whole of predict.py.

Every record goes through what the checkpoint was trained with, read from the checkpoint: its leads in its order,
the resampling and band-pass preprocess.py applies (common.signals), then common.evaluate.predict's per-lead
normalisation and sliding-window scoring over the whole record. Several checkpoints are averaged as an ensemble.
Records that cannot be used are skipped with a one-line reason; the others are still predicted.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common import signals
from common.checkpoint import CheckpointError, CheckpointMismatchError, load_model
from common.datadir import META_NAME, atomic_file, load_meta, write_json_atomic
from common.device import resolve_device
from common.evaluate import predict_as_trained
from common.outside_eval import (check_metrics_out, evaluate, format_table, label_inputs, match_inputs, metrics_path,
                                 read_labels)
from common.outputs import check_writable, new_folders, refuse_collisions, refuse_foreign
from common.records import Record, WfdbRecord, find_records

log = logging.getLogger("predict")

CHUNK_RECORDS = 256    # records read, then scored, at a time: bounds memory on folders of any size
DEFAULT_THRESHOLD = 0.5
SKIPPED_HEADER = ["record", "reason"]


@dataclass
class Member:
    """One checkpoint of the ensemble: its model (eval mode, on the device), the checkpoint dict and its "signal"."""

    path: Path
    model: nn.Module
    ckpt: dict
    signal: dict

    def agreement(self) -> dict:
        """What every member of an ensemble must share, so one prepared record and one label set serve them all."""
        return {"classes": list(self.ckpt["classes"]), "multilabel": bool(self.ckpt["multilabel"]),
                "fs": float(self.ckpt["input_shape"]["fs"]), "leads": [lead.upper() for lead in self.signal["leads"]],
                "bandpass_hz": self.signal.get("bandpass_hz")}


@dataclass(frozen=True)
class Processing:
    """What a record must go through before scoring: rate, lead order, band-pass, and the shortest usable length."""

    fs: float
    leads: tuple[str, ...]
    bandpass: tuple[float, float] | None
    window: int


def checkpoint_signal(ckpt: dict, path: Path) -> dict:
    """The checkpoint's lead order and signal processing; for checkpoints older than its "signal" entry, taken from
    the meta.json of the data dir it was trained on, when that still holds the same data."""
    if "signal" in ckpt:
        return ckpt["signal"]
    data_dir = Path(str(ckpt.get("data_dir", "")))
    if not ckpt.get("data_dir") or not (data_dir / META_NAME).is_file():
        raise CheckpointError(f"{path} predates checkpoints that record their leads and filtering, and its data dir "
                              f"{ckpt.get('data_dir')} has no {META_NAME} to take them from; retrain it, or run from "
                              "the folder it was trained in")
    meta = load_meta(data_dir)
    if meta.get("fingerprint", {}).get("dataset") != (ckpt.get("data_fingerprint") or {}).get("dataset"):
        raise CheckpointError(f"{path} predates checkpoints that record their leads and filtering, and its data dir "
                              f"{data_dir} now holds other data, so its {META_NAME} cannot stand in; retrain it")
    log.info("%s has no signal entry: leads and filtering taken from %s", path, data_dir / META_NAME)
    return {"leads": list(meta["leads"]), **meta.get("signal", {})}


def load_members(paths: list[Path], device: torch.device) -> list[Member]:
    """Load every --ckpt on `device`; CheckpointError naming the file when one is not ours, or naming each
    difference when they cannot be averaged (classes, label type, rate, leads, band-pass)."""
    members = []
    for path in paths:
        model, ckpt = load_model(path, device)
        members.append(Member(path, model, ckpt, checkpoint_signal(ckpt, path)))
    first = members[0].agreement()
    for member in members[1:]:
        other = member.agreement()
        differences = [f"{key} {first[key]} vs {other[key]}" for key in first if first[key] != other[key]]
        if differences:
            raise CheckpointMismatchError(f"--ckpt {member.path} cannot be averaged with {members[0].path}: "
                                          + "; ".join(differences))
    return members


def processing(members: list[Member]) -> Processing:
    """The processing the ensemble's records need; the longest window of its members is the shortest record."""
    signal, shape = members[0].signal, members[0].ckpt["input_shape"]
    band = signal.get("bandpass_hz")
    return Processing(float(shape["fs"]), tuple(signal["leads"]), tuple(band) if band else None,
                      max(int(m.ckpt["input_shape"]["window"]) for m in members))


def checkpoint_paths(ckpts: list[Path]) -> tuple[list[Path], Path | None]:
    """The checkpoint files the --ckpt values name: an ensemble dir (train_1d_baseline.py --seeds) stands for its
    members' best.pt. Also returns the ensemble's metrics.json when it is the only --ckpt: its thresholds were tuned
    on the ensemble's own validation probabilities."""
    paths = []
    for ckpt in ckpts:
        if not ckpt.is_dir():
            paths.append(ckpt)
            continue
        try:
            members = json.loads((ckpt / "metrics.json").read_text(encoding="utf-8"))["checkpoints"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"--ckpt {ckpt} is a folder but not an ensemble of train_1d_baseline.py --seeds (no "
                                  f"metrics.json listing member checkpoints); pass a checkpoint file such as "
                                  f"{ckpt / 'best.pt'}") from None
        paths += [ckpt / member for member in members]
    return paths, ckpts[0] / "metrics.json" if len(ckpts) == 1 and ckpts[0].is_dir() else None


def tuned_thresholds(metrics: Path, classes: list[str], checkpoint: Path | None = None) -> list[float]:
    """The per-class thresholds tuned on validation in a metrics.json (warning when they were tuned for another
    file than `checkpoint`); OSError, ValueError, KeyError or TypeError when it is missing or does not fit `classes`."""
    report = json.loads(metrics.read_text(encoding="utf-8"))
    values = [float(t) for t in report["val"]["thresholds"]]
    if list(report["classes"]) != classes or len(values) != len(classes):
        raise ValueError(f"its classes {report['classes']} are not the checkpoint's {classes}")
    tuned_for = Path(str(report.get("checkpoint", checkpoint))).name
    if checkpoint is not None and tuned_for != checkpoint.name:
        log.warning("warning: the thresholds in %s were tuned for %s, not %s", metrics, tuned_for, checkpoint.name)
    return values


def decision_thresholds(members: list[Member], ensemble_metrics: Path | None = None) -> tuple[list[float] | None, str]:
    """Per-class thresholds of a multi-label model or ensemble and where they come from: those tuned on validation in
    `ensemble_metrics` (an ensemble dir's), else in the metrics.json beside each checkpoint (averaged over
    members), else 0.5 with a warning; None for single-label."""
    if not members[0].ckpt["multilabel"]:
        return None, "argmax (single-label model)"
    classes = list(members[0].ckpt["classes"])
    sources = ([(ensemble_metrics, None)] if ensemble_metrics
               else [(member.path.parent / "metrics.json", member.path) for member in members])
    found = []
    for metrics, checkpoint in sources:
        try:
            found.append(tuned_thresholds(metrics, classes, checkpoint))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = "not found" if not metrics.is_file() else f"unusable ({exc})"
            log.warning("warning: %s %s: every class is decided at %g", metrics, why, DEFAULT_THRESHOLD)
            return [DEFAULT_THRESHOLD] * len(classes), f"{DEFAULT_THRESHOLD} for every class ({metrics} {why})"
    where = ", ".join(str(metrics) for metrics, _ in sources)
    if ensemble_metrics:
        source = f"tuned on the ensemble's validation probabilities ({where})"
    else:
        source = f"tuned on validation ({where})" if len(found) == 1 else f"mean of those tuned on validation ({where})"
    return np.mean(found, axis=0).tolist(), source


def prepare(record: Record, proc: Processing, fixes: Counter) -> np.ndarray:
    """A record as the model's input: its leads in the model's order, in mV, resampled and band-passed as
    preprocess.py does, float32 (leads, samples); RecordError saying why it cannot be used; header fixes counted."""
    x, fs = record.read(proc.leads, fixes)
    ratio = signals.resample_ratio(fs, proc.fs)
    if not math.isclose(fs * ratio, proc.fs, rel_tol=1e-9):
        raise signals.RecordError(f"sampled at {fs:g} Hz, which cannot be resampled exactly to the model's "
                                  f"{proc.fs:g} Hz (the nearest polyphase ratio {ratio} gives {float(fs * ratio):g} Hz)")
    samples = math.ceil(x.shape[-1] * ratio)
    if samples < proc.window:
        raise signals.RecordError(f"has {samples} samples at {proc.fs:g} Hz ({samples / proc.fs:g} s), shorter than "
                                  f"the model's window of {proc.window} samples ({proc.window / proc.fs:g} s)")
    return signals.resample_and_filter(x, fs, proc.fs, proc.bandpass).astype(np.float32)


def score(members: list[Member], X: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Record probabilities (N, C) of equal-length records X: common.evaluate.predict, averaged over the members."""
    return np.mean([predict_as_trained(m.model, m.ckpt, X, batch_size, device) for m in members],
                   axis=0).astype(np.float32)


def predict_records(members: list[Member], records: list[Record], batch_size: int,
                    device: torch.device) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Names and probabilities of the usable records in input order, and (name, reason) of the skipped ones.
    Records are read CHUNK_RECORDS at a time and scored in groups of equal length."""
    proc = processing(members)
    names, probs, skipped, fixes = [], [], [], Counter()
    with tqdm(total=len(records), desc="predicting", unit="rec") as bar:
        for first in range(0, len(records), CHUNK_RECORDS):
            chunk = records[first:first + CHUNK_RECORDS]
            prepared, by_length = {}, {}
            for i, record in enumerate(chunk):
                try:
                    prepared[i] = prepare(record, proc, fixes)
                except signals.RecordError as exc:
                    skipped.append((record.name, str(exc)))
                    continue
                by_length.setdefault(prepared[i].shape[-1], []).append(i)
            scored = {}
            for rows in by_length.values():
                scored.update(zip(rows, score(members, np.stack([prepared[i] for i in rows]), batch_size, device)))
            names += [chunk[i].name for i in sorted(scored)]
            probs += [scored[i] for i in sorted(scored)]
            bar.update(len(chunk))
    signals.log_fixes(log, fixes)
    return names, np.array(probs, dtype=np.float32).reshape(len(names), len(members[0].ckpt["classes"])), skipped


def decide(probs: np.ndarray, classes: list[str], thresholds: list[float] | None) -> list[str]:
    """Predicted labels per record, ';'-joined: classes at or above their threshold, or the argmax class."""
    if thresholds is None:
        return [classes[k] for k in probs.argmax(axis=1)]
    return [";".join(c for c, p, t in zip(classes, row, thresholds) if p >= t) for row in probs]


def write_rows(f: IO[str], header: list[str], rows: list[list[object]]) -> None:
    """A header and rows as CSV."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def skipped_path(out: Path) -> Path:
    """Where the skipped records of an output CSV are listed: `<out stem>.skipped.csv` beside it."""
    return out.with_name(f"{out.stem}.skipped.csv")


def is_skipped_list(path: Path) -> bool:
    """True when path starts like the skipped list predict.py writes, the one file it replaces without being named."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n") == ",".join(SKIPPED_HEADER)
    except OSError:
        return False


def check_out(out: Path) -> None:
    """ValueError, before any work, when `out` or its skipped list cannot be written, or the skipped list's name is
    taken by a file predict.py did not write."""
    check_writable(out, "--out")
    check_writable(skipped_path(out), "--out", "skipped list")
    refuse_foreign(skipped_path(out), "--out", "skipped list", is_skipped_list,
                   f"an earlier skipped list (a CSV starting {','.join(SKIPPED_HEADER)})")


def files_read(paths: list[Path], ensemble_metrics: Path | None, input_path: Path,
               records: list[Record]) -> list[tuple[str, Path]]:
    """What a prediction reads, named for messages: the checkpoints, the metrics.json files that may hold their
    thresholds, the --input file or PTB-XL table, and every WFDB record's header and signal file."""
    metrics = [ensemble_metrics] if ensemble_metrics else []
    files = [("--ckpt", path) for path in paths]
    files += [("the thresholds file", path) for path in metrics + [path.parent / "metrics.json" for path in paths]]
    if input_path.is_file():
        files.append(("--input", input_path))
    elif input_path.is_dir():
        files.append(("--input file", input_path / "ptbxl_database.csv"))
    return files + [("--input record file", r.path.with_name(r.path.name + ext))
                    for r in records if isinstance(r, WfdbRecord) for ext in (".hea", ".dat")]


def write_predictions(out: Path, header: list[str], rows: list[list[object]], skipped: list[list[str]],
                      metrics: dict | None = None) -> None:
    """`out`, its skipped list and its `metrics` when given, each atomically; `out` is renamed in only once the others
    are written, so a failure leaves the previous set (or no file, and no folder made for them)."""
    with new_folders(out.parent), atomic_file(out, "w") as f:
        write_rows(f, header, rows)
        with atomic_file(skipped_path(out), "w") as g:
            write_rows(g, SKIPPED_HEADER, skipped)
            if metrics is not None:
                write_json_atomic(metrics_path(out), metrics)


def run_predict(ckpts: list[Path], input_path: Path, out: Path, fs: float | None = None,
                leads: list[str] | None = None, device: str = "auto", batch_size: int = 512,
                labels: str | None = None, dx_map: Path | None = None, adc_gain: float | None = None) -> int:
    """Predict every record at `input_path`, write `out` and its skipped list, and with `labels` (a CSV or "dx",
    common.outside_eval) the metrics file; exit code 0 when none was skipped, 1 when some were, 2 when none could be
    predicted. Bad usage raises ValueError or CheckpointError; an output that would replace an input, or labels
    that cannot be used, are refused before any record is read."""
    check_out(out)
    if labels is not None:
        check_metrics_out(out)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1 window, got {batch_size}")
    where = resolve_device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no GPU; use --device cpu or auto")
    paths, ensemble_metrics = checkpoint_paths(ckpts)
    members = load_members(paths, where)
    proc = processing(members)
    records = find_records(input_path, proc.fs, fs, leads, adc_gain)
    refuse_collisions([("--out", "", out), ("--out", "skipped list", skipped_path(out))],
                      files_read(paths, ensemble_metrics, input_path, records)
                      + (label_inputs(labels, dx_map) if labels is not None else []))
    classes = list(members[0].ckpt["classes"])
    known = read_labels(labels, classes, records, dx_map) if labels is not None else None
    missing = match_inputs(known, [record.name for record in records]) if known is not None else []
    thresholds, source = decision_thresholds(members, ensemble_metrics)
    log.info("%d records; %s of %d checkpoint(s), %g Hz, leads %s, band-pass %s; labels: %s",
             len(records), "mean" if len(members) > 1 else "model", len(members), proc.fs, ",".join(proc.leads),
             proc.bandpass or "none", source)
    names, probs, skipped = predict_records(members, records, batch_size, where)
    decided = decide(probs, classes, thresholds)
    report = evaluate(known, names, probs, classes, skipped, missing) if known is not None else None
    write_predictions(out, ["record", *classes, "labels"],
                      [[name, *(f"{p:.8g}" for p in row), label] for name, row, label in zip(names, probs, decided)],
                      [list(item) for item in skipped], report)
    log.info("wrote %s: %d records predicted; %d skipped (%s)", out, len(names), len(skipped), skipped_path(out))
    if report is not None:
        log.info("wrote %s", metrics_path(out))
        print(format_table(report))
    if skipped:
        log.warning("warning: %d of %d records skipped, e.g. %s: %s", len(skipped), len(records), *skipped[0])
    if not names:
        log.error("error: none of the %d records could be predicted", len(records))
        return 2
    return 1 if skipped else 0
