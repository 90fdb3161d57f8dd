"""Build a data dir from WFDB records and a labels CSV: the whole of preprocess.py, top to bottom in preprocess().

Records are read by parallel worker processes (common/readers.py), in blocks of at most CHUNK_BYTES, straight
into the .npy files inside a temporary folder beside --out_dir; only when everything succeeded do they replace the
files of those names in --out_dir (meta.json last), and every other file there is left alone (common/outdir.py).
The workers also sum each block for the normalisation statistics, so no array is ever held whole in memory: the
peak does not grow with the number of records.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common import dx, ptbxl, signals, splits
from common.datadir import DEFAULT_DATA_DIR, META_NAME, SPLITS, fingerprint_arrays, staging_dir, write_json_atomic
from common.host import usable_cpus
from common.outdir import check_out_dir, check_out_path, commit, out_dir_locked
from common.readers import CHUNK_BYTES, ReadTask, drop_rows, read_all

log = logging.getLogger("preprocess")

PTBXL_NATIVE_LENGTH = {100: 1000, 500: 5000}
LENGTH_SLACK = 1.5
DEFAULT_FRAC = 0.1
# --bandpass auto: chosen over none on PTB-XL fold 8 and the outside dev set (docs/experiments.md, "Generalisation")
DEFAULT_BAND = (0.5, 40.0)


@dataclass
class PreprocessConfig:
    """Everything that decides the arrays preprocess.py writes; meta.json stores it."""

    input_dir: Path
    out_dir: Path = DEFAULT_DATA_DIR
    meta_csv: Path | None = None
    task: str = "superdiagnostic"
    sampling_rate: int | None = None
    fs: float | None = None
    length: int | None = None
    bandpass: tuple[float, float] | str = "auto"  # (LOW, HIGH) Hz; "auto": DEFAULT_BAND where the rate allows; "off"
    split: str = "auto"
    val_folds: list[int] = field(default_factory=lambda: [9])
    test_folds: list[int] = field(default_factory=lambda: [10])
    val_frac: float | None = None         # random split only; None: DEFAULT_FRAC
    test_frac: float | None = None
    seed: int = 0
    record_col: str = "record"
    label_col: str = "labels"
    patient_col: str = "patient_id"
    fold_col: str = "fold"
    label_sep: str = ";"
    dx_map: Path | None = None                # Challenge-format folders: SNOMED CT -> class map (None: the shipped)
    max_skip_frac: float = 0.01
    workers: int = usable_cpus()
    overwrite: bool = False
    dedupe: bool = False                      # keep the first of rows listing one record, instead of refusing
    allow_patient_across_folds: bool = False  # split by fold even when a patient's records span splits

    def identity(self) -> str:
        """Digest of the settings that shape the data (not of workers, overwrite or the two permissions, which
        only let a run through that would otherwise stop, so they never tell two finished datasets apart)."""
        settings = {k: str(v) for k, v in asdict(self).items()
                    if k not in ("workers", "overwrite", "out_dir", "dedupe", "allow_patient_across_folds")}
        settings["input_dir"] = str(Path(self.input_dir).resolve())
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def resolve_meta_csv(cfg: PreprocessConfig) -> Path | None:
    """The labels CSV: as given (or inside --input_dir), defaulting to PTB-XL's ptbxl_database.csv; None for a folder
    of Challenge-format records, whose headers carry their labels (#Dx lines)."""
    if cfg.meta_csv is None:
        path = cfg.input_dir / "ptbxl_database.csv"
        if path.is_file():
            return path
        first = next(cfg.input_dir.rglob("*.hea"), None)
        if first is not None and dx.read_dx_codes(first) is not None:
            return None
        raise FileNotFoundError(
            f"{path} not found: --input_dir is not a PTB-XL folder, nor a folder of records with #Dx header lines; "
            "pass --meta_csv with a labels CSV"
        )
    for path in (cfg.meta_csv, cfg.input_dir / cfg.meta_csv):
        if path.is_file():
            return path
    raise FileNotFoundError(f"--meta_csv {cfg.meta_csv} not found (looked in . and in {cfg.input_dir})")


def check_settings(cfg: PreprocessConfig) -> None:
    """Refuse option values that are not allowed (None stands for "choose automatically")."""
    problems = []
    if cfg.length is not None and cfg.length < 1:
        problems.append(f"--length must be a positive number of samples, got {cfg.length} (leave it out for 10 s)")
    if cfg.fs is not None and not (math.isfinite(cfg.fs) and cfg.fs > 0):
        problems.append(f"--fs must be a positive rate in Hz, got {cfg.fs:g} (leave it out for the records' own)")
    if isinstance(cfg.bandpass, str) and cfg.bandpass not in ("auto", "off"):
        problems.append(f"--bandpass takes LOW HIGH (Hz), auto or off, got {cfg.bandpass!r}")
    elif not isinstance(cfg.bandpass, str) and not 0 < cfg.bandpass[0] < cfg.bandpass[1]:
        problems.append(f"--bandpass LOW HIGH needs 0 < LOW < HIGH, got {cfg.bandpass[0]:g} {cfg.bandpass[1]:g}")
    if not 0 <= cfg.max_skip_frac <= 1:
        problems.append(f"--max_skip_frac must be between 0 and 1, got {cfg.max_skip_frac:g}")
    if cfg.workers < 1:
        problems.append(f"--workers must be at least 1, got {cfg.workers}")
    if problems:
        raise ValueError("; ".join(problems))


def missing_500hz(input_dir: Path, hr_names: pd.Series) -> list[str]:
    """The 500 Hz records (filename_hr) whose header is not under input_dir."""
    return [name for name in hr_names.astype(str) if not (input_dir / f"{name}.hea").is_file()]


def choose_ptbxl_rate(cfg: PreprocessConfig, hr_names: pd.Series) -> tuple[int, str]:
    """Pick 100 or 500 Hz records, and say why: as asked, else the 500 Hz ones when --fs or --length needs more
    than 100 Hz and they are there (at most --max_skip_frac of them missing)."""
    if cfg.sampling_rate is not None:
        return cfg.sampling_rate, f"--sampling_rate {cfg.sampling_rate}"
    wanted = f"--fs {cfg.fs:g}" if cfg.fs is not None else f"--length {cfg.length}"
    needs_more = cfg.fs > 100 if cfg.fs is not None else (cfg.length or 0) > PTBXL_NATIVE_LENGTH[100] * LENGTH_SLACK
    if not needs_more:
        asked = "no --fs or --length given" if (cfg.fs, cfg.length) == (None, None) else f"{wanted} fits 100 Hz"
        return 100, f"{asked}, so filename_lr is used"
    missing = missing_500hz(cfg.input_dir, hr_names)
    usable = len(missing) <= cfg.max_skip_frac * len(hr_names)
    if usable:
        return 500, f"{wanted} needs more than 100 Hz and the 500 Hz records are there, so filename_hr is used"
    absent = (f"the 500 Hz records (records500/) are not in --input_dir ({len(missing)} of {len(hr_names)} "
              f"missing, e.g. {cfg.input_dir / missing[0]}.hea)")
    if cfg.fs is not None:
        return 100, f"{wanted} needs more than 100 Hz but {absent}, so the 100 Hz records are resampled up"
    raise ValueError(
        f"--length {cfg.length} is {cfg.length / 100:g} s at 100 Hz but PTB-XL records last 10 s, and {absent}; "
        "pass --length 1000 for 100 Hz, or add records500/ and --sampling_rate 500"
    )


def native_timing(input_dir: Path, records: pd.Series) -> tuple[dict[float, int], float]:
    """Records per sampling rate, and the median duration (s), over every readable header of the table (an unreadable
    one is skipped, with its reason, when the records are read)."""
    rates, durations = Counter(), []
    for rec in records:
        try:
            header = signals.parse_header(input_dir / f"{rec}.hea")
        except signals.RecordError:
            continue
        rates[header.fs] += 1
        durations.append(header.n_samples / header.fs)
    if not rates:
        raise FileNotFoundError(f"no record listed in the CSV has a readable header under {input_dir}")
    return dict(rates), float(np.median(durations))


def choose_fs_and_length(cfg: PreprocessConfig, table: pd.DataFrame) -> tuple[float, int, dict]:
    """Target rate (--fs, else the records' most common rate, the higher on a tie) and length, and the records per
    source rate for meta.json; stop when --length would mostly be zero padding."""
    rates, duration = native_timing(cfg.input_dir, table["record"])
    most_common = max(rates, key=lambda rate: (rates[rate], rate))
    fs = most_common if cfg.fs is None else cfg.fs
    counted = ", ".join(f"{n} at {rate:g} Hz" for rate, n in sorted(rates.items()))
    if len(rates) > 1 or fs != most_common:
        log.info("records per sampling rate: %s; every record is resampled to %g Hz (%s)", counted, fs,
                 "--fs" if cfg.fs is not None else "the most common rate")
    natural = int(round(duration * fs))
    length = natural if cfg.length is None else cfg.length
    if length > natural * LENGTH_SLACK:
        raise ValueError(
            f"--length {length} is {length / fs:g} s at {fs:g} Hz but the records last about {duration:g} s; "
            f"pass --length {natural}, or --fs {length / duration:g} to resample to that many samples"
        )
    return fs, length, {f"{rate:g}": n for rate, n in sorted(rates.items())}


def choose_band(bandpass: tuple[float, float] | str, fs: float) -> tuple[float, float] | None:
    """The band-pass to apply at rate fs: --bandpass LOW HIGH as given (refused when fs cannot hold its high edge),
    none for off; auto is DEFAULT_BAND where fs carries its high edge, else none (a 50 Hz dataset cannot hold
    40 Hz), said in the log."""
    if bandpass == "off":
        return None
    if bandpass != "auto":
        if bandpass[1] >= fs / 2:
            raise ValueError(f"--bandpass high edge {bandpass[1]:g} Hz must be below half the rate, {fs / 2:g} Hz")
        return tuple(bandpass)
    if DEFAULT_BAND[1] < fs / 2:
        return DEFAULT_BAND
    log.info("no band-pass filter: the default %g-%g Hz needs a rate above %g Hz, and the data is at %g Hz",
             *DEFAULT_BAND, 2 * DEFAULT_BAND[1], fs)
    return None


def label_arrays(labels: pd.Series, multilabel: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The y stored (multi-hot float32 (N, C), or class-index int64 (N,) for single-label data), the 0/1 matrix
    (N, C) of the labels in both cases (for stratifying and counting), and the class names."""
    classes = sorted({c for row in labels for c in row})
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, row in enumerate(labels):
        matrix[i, [index[c] for c in row]] = 1.0
    y = matrix if multilabel else np.array([index[row[0]] for row in labels], dtype=np.int64)
    return y, matrix, classes


def drop_repeated_records(cfg: PreprocessConfig, table: pd.DataFrame, meta_csv: Path,
                          id_name: str) -> tuple[pd.DataFrame, list[dict]]:
    """The table without rows that list a record again (by id or by file); refused unless --dedupe, which keeps
    the first. Returns the repeated rows too."""
    repeats = ptbxl.duplicate_records(table, cfg.input_dir, id_name)
    if repeats and not cfg.dedupe:
        shown = ", ".join(f"row {r['row']} repeats row {r['same_as_row']} ({r['why']})" for r in repeats[:5])
        raise ValueError(
            f"{meta_csv} has {len(repeats)} repeated row{'s' if len(repeats) > 1 else ''}: {shown}"
            f"{', ...' if len(repeats) > 5 else ''}; delete the repeated rows, or pass --dedupe to keep the first row "
            "of each record")
    if repeats:
        first = repeats[0]
        log.warning("%s: dropped %d repeated rows (--dedupe), e.g. row %d repeats row %d (%s)", meta_csv, len(repeats),
                    first["row"], first["same_as_row"], first["why"])
    return table.drop(index=[r["row"] - 1 for r in repeats]), repeats


def assign_splits(cfg: PreprocessConfig, table: pd.DataFrame, y_matrix: np.ndarray, meta_csv: Path,
                  fold_col: str) -> tuple[np.ndarray, dict]:
    """Split per record and a description of how and why that split was chosen; table's index is the CSV row."""
    folds = table["fold"]
    has_folds = bool(folds.notna().any())
    method = cfg.split if cfg.split != "auto" else ("folds" if has_folds else "random")
    if method == "folds":
        if not has_folds:
            raise ValueError("--split folds needs a fold column in the CSV; use --split random")
        blank = folds.index[folds.isna()] + 1
        if len(blank):
            rows = ", ".join(map(str, blank[:5])) + (", ..." if len(blank) > 5 else "")
            raise ValueError(f"{meta_csv}: {len(blank)} record{'s have' if len(blank) > 1 else ' has'} no {fold_col} "
                             f"(row{'s' if len(blank) > 1 else ''} {rows}); fill those cells in, or pass --split "
                             "random to split by patient instead")
        reason = "official strat_fold split" if cfg.split == "auto" else "--split folds"
        log.info("split: folds (%s); val folds %s, test folds %s", reason, cfg.val_folds, cfg.test_folds)
        if cfg.split == "auto" and (cfg.val_frac, cfg.test_frac) != (None, None):
            log.warning("--val_frac/--test_frac are ignored: the CSV has folds, so the official fold split is "
                        "used; pass --split random to split by those fractions instead")
        assignment = splits.split_by_folds(folds, cfg.val_folds, cfg.test_folds)
        across = splits.patients_across_splits(table["patient_id"], folds, assignment)
        if across:
            chosen = " ".join(["--val_folds", *map(str, cfg.val_folds), "--test_folds", *map(str, cfg.test_folds)])
            shown = ", ".join(f"patient {p} (folds {', '.join(map(str, f))})" for p, f in list(across.items())[:5])
            shown += ", ..." if len(across) > 5 else ""
            many = len(across) > 1
            if not cfg.allow_patient_across_folds:
                raise ValueError(
                    f"{len(across)} patient{'s have' if many else ' has'} records in more than one split under "
                    f"{chosen}: {shown}; fix the folds in {meta_csv}, or pass --allow_patient_across_folds to split "
                    "by fold anyway")
            log.warning("%d patient%s records in more than one split (--allow_patient_across_folds): %s",
                        len(across), "s have" if many else " has", shown)
        info = {"method": "folds", "reason": reason, "val_folds": cfg.val_folds, "test_folds": cfg.test_folds,
                "patients_across_splits": list(across)}
    else:
        reason = "the CSV has no folds" if cfg.split == "auto" else "--split random"
        val_frac = DEFAULT_FRAC if cfg.val_frac is None else cfg.val_frac
        test_frac = DEFAULT_FRAC if cfg.test_frac is None else cfg.test_frac
        log.info("split: random by patient (%s); val %.2f, test %.2f, seed %d", reason, val_frac, test_frac, cfg.seed)
        assignment = splits.split_random(table["patient_id"], y_matrix, val_frac, test_frac, cfg.seed)
        info = {"method": "random", "reason": reason, "val_frac": val_frac, "test_frac": test_frac, "seed": cfg.seed}
    for name in SPLITS:
        if not (assignment == name).any():
            folds = sorted(table["fold"].dropna().unique().tolist())
            raise ValueError(
                f"the {name} split is empty (split {info}; folds present: {folds or 'none'}); "
                "choose other --val_folds/--test_folds or fractions"
            )
    return assignment, info


def lead_statistics(sums: np.ndarray, count: int) -> tuple[list[float], list[float]]:
    """Per-lead mean and standard deviation from [sum, sum of squares] (2, leads) over count samples per lead."""
    mean = sums[0] / count
    std = np.sqrt(np.maximum(sums[1] / count - mean**2, 0.0))
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def load_table(cfg: PreprocessConfig, meta_csv: Path | None) -> tuple[pd.DataFrame, str, dict]:
    """Record table of either CSV format or of a Challenge-format folder, and how the records were chosen."""
    if meta_csv is None:
        dx_map = dx.load_dx_map(cfg.dx_map)
        table, unknown = dx.challenge_records(cfg.input_dir, dx_map)
        log.info("Challenge-format folder %s: labels from #Dx header lines through %s", cfg.input_dir, dx_map.path)
        if unknown:
            shown = ", ".join(f"{code} ({n})" for code, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:5])
            log.warning("%d codes are not in %s (most frequent: %s); a record whose codes are all unknown is "
                        "unlabelled, not negative, and is dropped", len(unknown), dx_map.path, shown)
        return table, "challenge", {"labels": f"#Dx header lines through {dx_map.path}",
                                    "unknown_codes": unknown}
    if ptbxl.is_ptbxl_table(meta_csv):
        database = ptbxl.read_database(meta_csv)
        rate, why = choose_ptbxl_rate(cfg, database["filename_hr"])
        log.info("PTB-XL table %s: task %s, %d Hz records (%s)", meta_csv, cfg.task, rate, why)
        table = ptbxl.ptbxl_records(database, meta_csv, cfg.task, rate)
        return table, "ptbxl", {"records_hz": rate, "why": why}
    log.info("generic labels CSV %s", meta_csv)
    table = ptbxl.generic_records(
        meta_csv, cfg.record_col, cfg.label_col, cfg.patient_col, cfg.fold_col, cfg.label_sep
    )
    return table, "generic", {}


def preprocess(cfg: PreprocessConfig, command: str) -> dict:
    """Build the data dir described by cfg; return its meta.json content."""
    start = time.time()
    check_settings(cfg)
    if not cfg.input_dir.is_dir():
        raise FileNotFoundError(f"--input_dir {cfg.input_dir} is not a folder")
    meta_csv = resolve_meta_csv(cfg)
    check_out_path(cfg.out_dir, cfg.input_dir)
    with out_dir_locked(cfg.out_dir.resolve()):
        meta = _preprocess_locked(cfg, command, meta_csv, start)
    log.info("wrote %s: %s records in %.1f s", cfg.out_dir, meta["counts"], time.time() - start)
    return meta


def _preprocess_locked(cfg: PreprocessConfig, command: str, meta_csv: Path | None, start: float) -> dict:
    """preprocess() once --out_dir is locked."""
    previous = check_out_dir(cfg.out_dir, cfg.identity(), cfg.overwrite)
    table, source_format, rate_info = load_table(cfg, meta_csv)
    source = meta_csv or cfg.input_dir
    table, repeats = drop_repeated_records(cfg, table, source, "ecg_id" if source_format == "ptbxl" else "record")

    has_label = table["labels"].map(len) > 0
    dropped = table.loc[~has_label, "record_id"].tolist()
    if dropped:
        log.warning("%d records have no label for task %s and are dropped", len(dropped), cfg.task)
    table = table[has_label]
    if table.empty:
        raise ValueError(f"no record has a label for task {cfg.task!r}")
    multilabel = source_format in ("ptbxl", "challenge") or bool((table["labels"].map(len) > 1).any())
    y_all, y_matrix, classes = label_arrays(table["labels"], multilabel)
    fold_col = "strat_fold" if source_format == "ptbxl" else cfg.fold_col
    assignment, split_info = assign_splits(cfg, table, y_matrix, source, fold_col)
    fs, length, source_rates = choose_fs_and_length(cfg, table)
    band = choose_band(cfg.bandpass, fs)
    log.info("%d records, %d classes, %g Hz, length %d (centre-crop / zero-pad at end), band-pass %s", len(table),
             len(classes), fs, length, "%g-%g Hz" % band if band else "none")

    out_dir = cfg.out_dir.resolve()
    with staging_dir(out_dir) as tmp:
        members = {name: np.flatnonzero(assignment == name) for name in SPLITS}
        per_task = max(1, CHUNK_BYTES // (12 * length * np.dtype(np.float32).itemsize))
        tasks = []
        for name, rows in members.items():
            x_path = tmp / f"X_{name}.npy"
            X = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(len(rows), 12, length))
            offset = X.offset
            del X
            for at in range(0, len(rows), per_task):
                records = table["record"].iloc[rows[at : at + per_task]].tolist()
                tasks.append(ReadTask(cfg.input_dir, x_path, offset, at, records, fs, length, band))
        failures, sums, fixes = read_all(tasks, cfg.workers, len(table))
        signals.log_fixes(log, fixes)

        record_paths, record_ids = table["record"].tolist(), table["record_id"].tolist()
        skipped = []
        for name, rows in members.items():
            x_path = tmp / f"X_{name}.npy"
            bad = sorted((row, why) for path, row, why in failures if path == x_path)
            for row, why in bad:
                skipped.append({"record": record_paths[rows[row]], "record_id": record_ids[rows[row]],
                                "split": name, "reason": why})
            if bad:
                drop_rows(x_path, [row for row, _ in bad])
                members[name] = np.delete(rows, [row for row, _ in bad])
        if skipped:
            log.warning("%d records skipped, e.g. %s: %s", len(skipped), skipped[0]["record"], skipped[0]["reason"])
        if len(skipped) > cfg.max_skip_frac * len(table):
            raise RuntimeError(
                f"{len(skipped)} of {len(table)} records could not be used (more than --max_skip_frac "
                f"{cfg.max_skip_frac}); first: {skipped[0]['record']}: {skipped[0]['reason']}"
            )
        for name, rows in members.items():
            if len(rows) == 0:
                raise ValueError(f"every record of the {name} split was skipped")
            np.save(tmp / f"y_{name}.npy", y_all[rows])

        mean, std = lead_statistics(sums[tmp / "X_train.npy"], len(members["train"]) * length)
        meta = {
            "format": source_format,
            "task": {"ptbxl": cfg.task, "challenge": "superdiagnostic"}.get(source_format, cfg.label_col),
            "classes": classes,
            "multilabel": multilabel,
            "fs": fs,
            "length": length,
            "leads": list(signals.STANDARD_LEADS),
            "signal": {"units": "mV", "crop": "centre-crop longer records, zero-pad shorter ones at the end",
                       "bandpass_hz": list(band) if band else None, **rate_info,
                       "source_rates_hz": source_rates, "read_with_fixes": dict(fixes)},
            "normalisation": {"method": "per_lead_zscore", "stored": "raw (apply (x - mean) / std per lead)",
                              "computed_on": "train", "mean": mean, "std": std},
            "split": split_info,
            "counts": {name: int(len(rows)) for name, rows in members.items()},
            "class_counts": {name: dict(zip(classes, y_matrix[rows].sum(axis=0).astype(int).tolist()))
                             for name, rows in members.items()},
            "splits": {name: {"record_ids": table["record_id"].iloc[rows].tolist(),
                              "patient_ids": table["patient_id"].iloc[rows].tolist()}
                       for name, rows in members.items()},
            "skipped": skipped,
            "deduplicated": repeats,
            "dropped_no_label": {"count": len(dropped), "record_ids": dropped},
            "source": {"input_dir": str(cfg.input_dir.resolve()), "meta_csv": meta_csv and str(meta_csv.resolve())},
            "command": command,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "config_id": cfg.identity(),
            "fingerprint": fingerprint_arrays(tmp),
            "seconds": round(time.time() - start, 2),
        }
        write_json_atomic(tmp / META_NAME, meta)
        commit(tmp, out_dir, previous, meta["fingerprint"]["dataset"])
    return meta
