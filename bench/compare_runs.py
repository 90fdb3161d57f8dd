"""Compare finished run dirs (metrics.json): test macro-AUC, per-class AUC, epochs, compute, wall time.

    python bench/compare_runs.py baseline_ckpt pdd_ckpt/stage3 [--markdown]

A PDD stage run needs the baseline run whose checkpoint scored the difficulty; its samples and wall
time are added to the stage run's own ("total" columns), since staged training cannot exist without it.
Effective epochs = total samples back-propagated / training records of the full data dir.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_json(path: Path) -> dict:
    """A JSON file, or a clear exit when it is absent."""
    if not path.is_file():
        sys.exit(f"error: {path} not found; is {path.parent} a finished run dir?")
    return json.loads(path.read_text())


def scoring_run(run_metrics: dict) -> tuple[Path | None, int]:
    """For a PDD stage run: the run dir whose checkpoint scored its difficulty, and the full train size."""
    meta = load_json(Path(run_metrics["data_dir"]) / "meta.json")
    pdd = meta.get("pdd")
    if not pdd:
        return None, meta["counts"]["train"]
    full_train = load_json(Path(pdd["source_data_dir"]) / "meta.json")["counts"]["train"]
    return Path(pdd["checkpoint"]).parent, full_train


def describe(run_dir: Path) -> dict:
    """One table row for a run dir."""
    metrics = load_json(run_dir / "metrics.json")
    scorer, n_train = scoring_run(metrics)
    extra_samples, extra_seconds = 0, 0.0
    if scorer is not None:
        scorer_metrics = load_json(scorer / "metrics.json")
        extra_samples, extra_seconds = scorer_metrics["samples_backpropagated"], scorer_metrics["wall_seconds"]
    total = metrics["samples_backpropagated"] + extra_samples
    return {
        "run": str(run_dir),
        "test_macro_auc": metrics["test"]["macro_auc"],
        "val_macro_auc": metrics["val"]["macro_auc"],
        "per_class_auc": metrics["test"]["per_class_auc"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "samples": metrics["samples_backpropagated"],
        "scoring_run": str(scorer) if scorer else "",
        "total_samples": total,
        "effective_epochs": total / n_train,
        "wall_minutes": (metrics["wall_seconds"] + extra_seconds) / 60,
    }


def format_rows(rows: list[dict], markdown: bool) -> str:
    """The comparison as aligned text or a Markdown table."""
    classes = list(rows[0]["per_class_auc"])
    head = ["run", "test AUC", "val AUC", *classes, "epochs", "best", "samples", "+scoring run", "total samples",
            "eff. epochs", "wall min"]
    body = []
    for r in rows:
        auc = [f"{r['per_class_auc'][c]:.3f}" if r["per_class_auc"][c] is not None else "-" for c in classes]
        extra = r["total_samples"] - r["samples"]
        body.append([r["run"], f"{r['test_macro_auc']:.4f}", f"{r['val_macro_auc']:.4f}", *auc, str(r["epochs"]),
                     str(r["best_epoch"]), f"{r['samples']:,}", f"{extra:,}" if extra else "-",
                     f"{r['total_samples']:,}", f"{r['effective_epochs']:.1f}", f"{r['wall_minutes']:.1f}"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
                     for line in [head, *body])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", help="run dirs holding metrics.json")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args()
    print(format_rows([describe(d) for d in args.run_dirs], args.markdown))


if __name__ == "__main__":
    main()
