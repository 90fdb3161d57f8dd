"""predict.py --labels: how well a model scores labelled recordings from outside its data (ROC AUC per class and
macro, with bootstrap intervals), from a labels CSV or from each WFDB header's #Dx codes.

A blank cell is unknown, not negative: a record counts for a class only where its label is 1 or 0, so a source that
cannot say (CPSC2018 has no MI statements) never makes the model look wrong. Everything about the labels that can be
refused is refused before any record is scored.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from common.dx import SHIPPED_MAP, SUPERCLASSES, labels_from_codes, load_dx_map, read_dx_codes
from common.errors import ConfigError
from common.outputs import check_writable, refuse_foreign
from common.records import Record, WfdbRecord
from common.stats import macro_over_defined, percentile_interval, point_and_bootstrap_weights, weighted_auc

log = logging.getLogger("predict")

DX = "dx"
RESAMPLES, SEED, LEVEL = 1000, 0, 0.95  # the training report's test intervals (common.metrics.summarise)
WRITTEN_BY = "predict.py --labels"
NO_LABELS, ONE_LABEL = "no labels", "one label only"
EXAMPLES = 10  # names of labels rows not found kept in metrics.json


@dataclass
class Labels:
    """Known labels of named records: values (records, classes) 1.0/0.0, NaN where unknown, over `classes` (the
    model's classes the source can label, in the model's order); `unlabelled`: input records the source leaves out."""

    source: str
    classes: list[str]
    names: list[str]
    values: np.ndarray
    unlabelled: list[str] = field(default_factory=list)


def metrics_path(out: Path) -> Path:
    """Where the evaluation of an output CSV goes: `<out stem>.metrics.json` beside it."""
    return out.with_name(f"{out.stem}.metrics.json")


def is_metrics_file(path: Path) -> bool:
    """True when path is a metrics file predict.py --labels wrote, the one such file it replaces."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def check_metrics_out(out: Path) -> None:
    """ValueError, before any work, when `out`'s metrics file cannot be written or is a file predict did not write."""
    check_writable(metrics_path(out), "--out", "metrics file")
    refuse_foreign(metrics_path(out), "--out", "metrics file", is_metrics_file,
                   f"an earlier metrics file of {WRITTEN_BY}")


def label_inputs(labels: str, dx_map: Path | None) -> list[tuple[str, Path]]:
    """The files --labels reads, named for the check that no output replaces them."""
    if labels != DX:
        return [("--labels", Path(labels))]
    return [("--dx_map", dx_map)] if dx_map is not None else []


def read_labels(labels: str, classes: Sequence[str], records: list[Record], dx_map: Path | None = None) -> Labels:
    """The labels --labels names: the word dx (each record's #Dx header line through `dx_map`, default the shipped
    map) or a CSV path; ConfigError naming the fix when they cannot label this model's records."""
    return dx_labels(records, classes, dx_map) if labels == DX else read_label_csv(Path(labels), classes)


def read_label_csv(path: Path, classes: Sequence[str]) -> Labels:
    """A labels CSV: a `record` column and a column per class of the model (others ignored) holding 1, 0 or blank
    (unknown); ConfigError for a missing file, no record or class column, a bad cell or a repeated record."""
    usage = f"give a CSV with a record column and 1/0/blank columns named as the model's classes {', '.join(classes)}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise ConfigError(f"--labels {path} not found; {usage}, or the word {DX}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"--labels {path} cannot be read ({e}); {usage}") from None
    header = [name.strip() for name in rows[0][1]] if rows else []
    if "record" not in header:
        raise ConfigError(f"--labels {path} has no 'record' column (columns: {', '.join(header) or 'none'}); name "
                          "the column of record names, written as predictions.csv writes them, `record`")
    common = [name for name in classes if name in header]
    if not common:
        raise ConfigError(f"--labels {path} has no column named as a class of the model ({', '.join(classes)}); "
                          f"its columns are {', '.join(header)}")
    record_at, class_at = header.index("record"), [header.index(name) for name in common]
    names: list[str] = []
    values = np.full((len(rows) - 1, len(common)), np.nan)
    line_of: dict[str, int] = {}
    for i, (line, row) in enumerate(rows[1:]):
        cells = [row[at].strip() if at < len(row) else "" for at in (record_at, *class_at)]
        name = cells[0]
        if not name:
            raise ConfigError(f"--labels {path} line {line}: no record name; fill it in or delete the line")
        if name in line_of:
            raise ConfigError(f"--labels {path} line {line}: record {name} repeats line {line_of[name]}; keep one "
                              "row per record")
        for j, cell in enumerate(cells[1:]):
            if cell:
                values[i, j] = label_value(cell, f"--labels {path} line {line} (record {name}): column {common[j]}")
        names.append(name)
        line_of[name] = line
    return Labels(str(path), common, names, values)


def label_value(cell: str, where: str) -> float:
    """A non-blank label cell as 1.0 or 0.0; ConfigError naming `where` otherwise."""
    try:
        value = float(cell)
    except ValueError:
        value = np.nan
    if value not in (0.0, 1.0):
        raise ConfigError(f"{where} holds {cell!r}; a label is 1, 0, or blank where unknown")
    return value


def dx_labels(records: list[Record], classes: Sequence[str], dx_map: Path | None = None) -> Labels:
    """Labels from each WFDB record's #Dx codes through the map (common.dx: the shipped one over the PTB-XL
    superclasses, or a user's naming the model's classes); a record with no code the map knows is unlabelled."""
    mapping = load_dx_map(dx_map) if dx_map is None else load_dx_map(dx_map, classes=classes)
    where = f"--dx_map {dx_map}" if dx_map is not None else f"the shipped map {SHIPPED_MAP.name}"
    common = [name for name in classes if name in mapping.classes]
    if not common:
        raise ConfigError(f"--labels {DX}: {where} labels {', '.join(SUPERCLASSES)}, none of the model's classes "
                          f"{', '.join(classes)}; give --dx_map a map whose superclass column names them")
    arrays = [record.name for record in records if not isinstance(record, WfdbRecord)]
    if arrays:
        raise ConfigError(f"--labels {DX} reads the #Dx line of WFDB headers, and --input records such as {arrays[0]} "
                          "are rows of an array; give a labels CSV instead")
    names, rows, unlabelled = [], [], []
    for record in records:
        try:
            codes = read_dx_codes(record.path.with_name(record.path.name + ".hea"))
        except OSError:
            codes = None
        y, _ = labels_from_codes(codes or [], mapping, common)
        if y is None:
            unlabelled.append(record.name)
        else:
            names.append(record.name)
            rows.append(y)
    if not names:
        raise ConfigError(f"--labels {DX}: none of the {len(records)} --input records has a #Dx code that {where} "
                          f"knows (e.g. {records[0].name}); give a labels CSV, or --dx_map a map of their codes")
    if unlabelled:
        log.warning("warning: %d of %d records have no #Dx code %s knows and are unlabelled, e.g. %s",
                    len(unlabelled), len(records), where, unlabelled[0])
    return Labels(f"{DX} ({mapping.path})", common, names, np.array(rows, dtype=np.float64), unlabelled)


def match_inputs(labels: Labels, input_names: list[str]) -> list[str]:
    """The labelled records that are not among the inputs, with a warning when some are; ConfigError when all are."""
    present = set(input_names)
    missing = [name for name in labels.names if name not in present]
    if missing and len(missing) == len(labels.names):
        raise ConfigError(f"none of the {len(missing)} records of --labels {labels.source} is among the --input "
                          f"records (e.g. {missing[0]}; --input names its records as {input_names[0]}); write the "
                          "record column as predictions.csv names them")
    if missing:
        log.warning("warning: %d of %d records of --labels %s are not among the --input records, e.g. %s; the "
                    "metrics are over those present", len(missing), len(labels.names), labels.source, missing[0])
    return missing


def evaluate(labels: Labels, names: list[str], probs: np.ndarray, classes: list[str], skipped: list[tuple[str, str]],
             missing: list[str]) -> dict:
    """The metrics.json content: per class the AUC of `probs` (records `names`, columns `classes`) over the records
    whose label is known, its bootstrap interval, positives, negatives and n; the macro AUC over the classes with
    both labels and its interval (a class undefined in a resample is left out of that resample's macro); the
    classes not scored and why; and the record counts."""
    row_of = {name: i for i, name in enumerate(names)}
    used = [j for j, name in enumerate(labels.names) if name in row_of and not np.isnan(labels.values[j]).all()]
    y = labels.values[used]
    p = probs[[row_of[labels.names[j]] for j in used]]
    weights = point_and_bootstrap_weights(len(used), RESAMPLES, SEED) if used else np.zeros((1 + RESAMPLES, 0))
    per_class, not_scored, scored, aucs = {}, {}, [], []
    for k, name in enumerate(classes):
        column = y[:, labels.classes.index(name)] if name in labels.classes else np.full(len(used), np.nan)
        known, positive = ~np.isnan(column), column == 1
        counts = {"positives": int(positive.sum()), "negatives": int((known & ~positive).sum()),
                  "n_labelled": int(known.sum())}
        if counts["positives"] and counts["negatives"]:
            aucs.append(weighted_auc(p[:, k], positive, weights * known))
            scored.append(name)
            per_class[name] = {"auc": float(aucs[-1][0]), "auc_ci95": percentile_interval(aucs[-1][1:], LEVEL),
                               **counts}
        else:
            not_scored[name] = ONE_LABEL if counts["n_labelled"] else NO_LABELS
            per_class[name] = {"auc": None, "auc_ci95": None, **counts}
    macro = macro_over_defined(np.stack(aucs, axis=1)) if aucs else np.full(1, np.nan)
    labelled_names = set(labels.names)
    return {
        "written_by": WRITTEN_BY, "labels": labels.source, "classes": classes,
        "macro_auc": None if np.isnan(macro[0]) else float(macro[0]),
        "macro_auc_ci95": percentile_interval(macro[1:], LEVEL), "macro_over": scored,
        "per_class": per_class, "not_scored": not_scored,
        "auc_ci95_bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": LEVEL},
        "records": {"labelled": len(used), "predicted": len(names), "skipped": len(skipped),
                    "labelled_skipped": sum(name in labelled_names for name, _ in skipped),
                    "labels_not_found": len(missing), "unlabelled": len(labels.unlabelled)},
        "labels_not_found_examples": missing[:EXAMPLES], "unlabelled_records": labels.unlabelled,
    }


def format_table(report: dict) -> str:
    """A few readable lines of a metrics.json content: one per class, then the macro AUC."""
    def interval(ci: list[float] | None) -> str:
        return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a"

    counts = report["records"]
    lines = [f"labels {report['labels']}: {counts['labelled']} labelled records predicted ({counts['skipped']} "
             f"records skipped, {counts['labels_not_found']} labels rows not found, {counts['unlabelled']} records "
             "unlabelled)",
             f"{'class':<8} {'AUC':>6}  {'95 % CI':<12} {'pos':>5} {'neg':>5} {'n':>5}"]
    for name, row in report["per_class"].items():
        auc = f"{row['auc']:6.3f}  {interval(row['auc_ci95']):<12}" if row["auc"] is not None \
            else f"{'n/a':>6}  {'(' + report['not_scored'][name] + ')':<12}"
        lines.append(f"{name:<8} {auc} {row['positives']:>5} {row['negatives']:>5} {row['n_labelled']:>5}")
    macro = "n/a" if report["macro_auc"] is None else f"{report['macro_auc']:.3f}"
    lines.append(f"{'macro':<8} {macro:>6}  {interval(report['macro_auc_ci95']):<12} over "
                 f"{', '.join(report['macro_over']) or 'no class'}")
    return "\n".join(lines)
