"""Compare finished run dirs (metrics.json): test macro-AUC, per-class AUC, epochs, compute, wall time.

    python tools/compare_runs.py baseline_ckpt pdd_ckpt/stage3 [--markdown]

A PDD stage run needs the baseline run whose checkpoint scored the difficulty; its samples and wall
time are added to the stage run's own ("total" columns), since staged training cannot exist without it.
Effective epochs = total samples back-propagated / training records of the full data dir.
An ensemble dir (train_1d_baseline.py --seeds) is a run too: its best epoch column lists its members'.
Runs must share their classes and their test records (the data dirs' X_test.npy and y_test.npy fingerprints).
Each later run is paired with the first: the test probabilities each run's final report kept (predictions.npz; an
ensemble's are its members' mean) give the difference of their macro-AUCs a 95 % interval from the same bootstrap
resamples of the records (common/stats.py).
Under a small test split (fewer than MIN_TEST_RECORDS records, or a class with fewer than MIN_TEST_POSITIVES
positives or negatives) a note says how far a single test record moves the AUCs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.datadir import load_npy  # noqa: E402
from common.files import load_json, stored_path  # noqa: E402
from common.labels import one_hot  # noqa: E402
from common.predictions import load_predictions  # noqa: E402
from common.stats import paired_auc_difference  # noqa: E402
from common.traindata import record_ids  # noqa: E402

MIN_TEST_RECORDS = 500
MIN_TEST_POSITIVES = 50
METRICS_KEYS = ("test", "val", "epochs", "samples_backpropagated", "wall_seconds", "data_dir", "classes",
                "multilabel")


def load_run(run_dir: Path) -> dict:
    """metrics.json of a finished run dir or ensemble dir, refused naming the file when it is absent, corrupt or
    incomplete (a single run's has a best_epoch, an ensemble's its members and their checkpoints)."""
    path, fix = run_dir / "metrics.json", f"is {run_dir} a finished run dir of train_1d_baseline.py?"
    metrics = load_json(path, fix, METRICS_KEYS)
    return load_json(path, fix, (*METRICS_KEYS, *(("members", "checkpoints") if "members" in metrics
                                                  else ("best_epoch",))))


def scoring_run(data_dir: Path) -> tuple[Path | None, int]:
    """For a run on a PDD stage: the run dir whose checkpoint scored its difficulty, and the full train size."""
    fix = "is the run's data dir still where it was trained?"
    meta = load_json(data_dir / "meta.json", fix, ("counts",))
    pdd = meta.get("pdd")
    if not pdd:
        return None, meta["counts"]["train"]
    source = stored_path(pdd["source_data_dir"], data_dir)
    full_train = load_json(source / "meta.json", fix, ("counts",))["counts"]["train"]
    return stored_path(pdd["checkpoint"], data_dir).parent, full_train


def test_label_counts(run_metrics: dict, data_dir: Path) -> dict[str, tuple[int, int]]:
    """(positives, negatives) per class in a run's test split, from its data dir's y_test.npy."""
    y = load_npy(data_dir / "y_test.npy")
    positives = one_hot(y, len(run_metrics["classes"]), run_metrics["multilabel"]).sum(axis=0).astype(int)
    return {c: (int(n), len(y) - int(n)) for c, n in zip(run_metrics["classes"], positives)}


def test_split_fingerprint(data_dir: Path) -> tuple[str, str]:
    """SHA-256 of X_test.npy and y_test.npy as the run's data dir recorded them: equal means the same test records."""
    fingerprint = load_json(data_dir / "meta.json", "is the run's data dir still where it was trained?",
                            ("fingerprint",))["fingerprint"]
    return fingerprint["X_test.npy"], fingerprint["y_test.npy"]


def describe(run_dir: Path) -> dict:
    """One table row for a run dir."""
    metrics = load_run(run_dir)
    data_dir = stored_path(metrics["data_dir"], run_dir)
    scorer, n_train = scoring_run(data_dir)
    extra_samples, extra_seconds = 0, 0.0
    if scorer is not None:
        scorer_metrics = load_run(scorer)
        extra_samples, extra_seconds = scorer_metrics["samples_backpropagated"], scorer_metrics["wall_seconds"]
    total = metrics["samples_backpropagated"] + extra_samples
    return {
        "run": str(run_dir),
        "classes": metrics["classes"],
        "data_dir": data_dir,
        "test_split": test_split_fingerprint(data_dir),
        "test_macro_auc": metrics["test"]["macro_auc"],
        "val_macro_auc": metrics["val"]["macro_auc"],
        "per_class_auc": metrics["test"]["per_class_auc"],
        "test_labels": test_label_counts(metrics, data_dir),
        "epochs": metrics["epochs"],
        "best_epoch": ("/".join(str(m["best_epoch"]) for m in metrics["members"]) if "members" in metrics
                       else metrics["best_epoch"]),
        "samples": metrics["samples_backpropagated"],
        "scoring_run": str(scorer) if scorer else "",
        "total_samples": total,
        "effective_epochs": total / n_train,
        "wall_minutes": (metrics["wall_seconds"] + extra_seconds) / 60,
    }


def check_comparable(rows: list[dict]) -> None:
    """Refuse runs whose classes or test records differ from the first run's: their AUCs measure different things."""
    first = rows[0]
    for row in rows[1:]:
        if row["classes"] != first["classes"]:
            raise ValueError(f"{row['run']} has classes {row['classes']} but {first['run']} has {first['classes']}; "
                             "compare runs trained on the same classes")
        if row["test_split"] != first["test_split"]:
            raise ValueError(f"{row['run']} was tested on other records than {first['run']} (X_test.npy/y_test.npy "
                             f"of {row['data_dir']} and {first['data_dir']} differ); compare runs tested on the same "
                             "test split")


def paired_differences(rows: list[dict]) -> str:
    """Each later run's test macro-AUC minus the first run's, with its paired bootstrap interval, from the test
    probabilities each run kept (predictions.npz), checked to score the first run's test records."""
    data_dir = rows[0]["data_dir"]
    y = load_npy(data_dir / "y_test.npy")
    ids = record_ids(load_json(data_dir / "meta.json", "is the run's data dir still where it was trained?"), "test",
                     len(y))
    try:
        probs = [load_predictions(Path(row["run"]), "test", ids) for row in rows]
    except (FileNotFoundError, ValueError) as e:
        return f"paired interval of the macro-AUC difference: not computed, {e}"
    results = [paired_auc_difference(run_probs, probs[0], y) for run_probs in probs[1:]]
    lines = [f"paired bootstrap over the {len(y)} test records, each run's kept test probabilities "
             f"({results[0]['resamples']:,} resamples, seed {results[0]['seed']}):"]
    for row, result in zip(rows[1:], results):
        pair = f"  test macro-AUC {row['run']} - {rows[0]['run']}"
        if result["interval"] is None:
            lines.append(f"{pair}: no class has both labels")
            continue
        lo, hi = result["interval"]
        verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0: no difference shown"
        lines.append(f"{pair}: {result['difference']:+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}] ({verdict})")
    return "\n".join(lines)


def small_test_note(row: dict) -> str | None:
    """A warning when the test split is too small for differences between runs to mean anything, else None.

    Moving one record of a class's rarer label (positive or negative) across the ranking changes that class's
    AUC by up to 1 / (its count), and the macro-AUC by that over the number of classes with an AUC."""
    labels = {c: counts for c, counts in row["test_labels"].items() if min(counts) > 0}
    n_records = sum(row["test_labels"][row["classes"][0]])
    if not labels:
        return f"note: no class has both labels in the {n_records}-record test split: no AUC can be compared."
    rarest = min(labels, key=lambda c: min(labels[c]))
    if n_records >= MIN_TEST_RECORDS and min(labels[rarest]) >= MIN_TEST_POSITIVES:
        return None
    swing = 1 / min(labels[rarest])
    return (f"note: the test split has {n_records} records, {rarest} {labels[rarest][0]} positives and "
            f"{labels[rarest][1]} negatives: one {rarest} record can move its AUC by up to {swing:.3f} and the "
            f"macro-AUC by up to {swing / len(labels):.3f}, so this table cannot separate these runs. Compare on a "
            f"test split of {MIN_TEST_RECORDS}+ records with {MIN_TEST_POSITIVES}+ positives per class (PTB-XL's "
            "fold 10 has 2,198 records).")


def number(x: float | None, digits: int) -> str:
    """A metric for the table; '-' where it is undefined."""
    return "-" if x is None else f"{x:.{digits}f}"


def format_rows(rows: list[dict], markdown: bool) -> str:
    """The comparison as aligned text or a Markdown table."""
    classes = rows[0]["classes"]
    head = ["run", "test AUC", "val AUC", *classes, "epochs", "best", "samples", "+scoring run", "total samples",
            "eff. epochs", "wall min"]
    body = []
    for r in rows:
        auc = [number(r["per_class_auc"][c], 3) for c in classes]
        extra = r["total_samples"] - r["samples"]
        body.append([r["run"], number(r["test_macro_auc"], 4), number(r["val_macro_auc"], 4), *auc, str(r["epochs"]),
                     str(r["best_epoch"]), f"{r['samples']:,}", f"{extra:,}" if extra else "-",
                     f"{r['total_samples']:,}", f"{r['effective_epochs']:.1f}", f"{r['wall_minutes']:.1f}"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
                     for line in [head, *body])


def compare(run_dirs: list[Path], markdown: bool = False) -> str:
    """The comparison table of the run dirs, the paired intervals of their differences, and the small-test note
    when it applies."""
    rows = [describe(d) for d in run_dirs]
    check_comparable(rows)
    note = small_test_note(rows[0])
    paired = f"\n\n{paired_differences(rows)}" if len(rows) > 1 else ""
    return format_rows(rows, markdown) + paired + (f"\n\n{note}" if note else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", help="run dirs holding metrics.json")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    print(compare(args.run_dirs, args.markdown))


if __name__ == "__main__":
    sys.exit(run_cli(main))
