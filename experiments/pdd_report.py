"""The PDD experiment's report: each run's row, paired bootstrap differences, results.csv, results.md and the plot."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.datadir import DataDir, atomic_file
from common.predictions import load_predictions
from common.runs import run_load
from common.stats import macro_over_defined, percentile_interval, point_and_bootstrap_weights, resampled_aucs
from common.traindata import record_ids
from experiments.pdd_variants import VARIANTS, budget_epochs

RESAMPLES = 1000


def result_row(variant: str, seed: int, metrics: dict, n_train: int, seconds: float) -> dict:
    """One line of results.csv."""
    return {"variant": variant, "seed": seed, "test_macro_auc": metrics["test"]["macro_auc"],
            "val_macro_auc": metrics["val"]["macro_auc"],
            "effective_epochs": metrics["samples_backpropagated"] / n_train,
            "scoring_epochs": metrics["scoring_forward_samples"] / n_train,
            "samples_backpropagated": metrics["samples_backpropagated"],
            "forward_samples": metrics["samples_backpropagated"] + metrics["scoring_forward_samples"],
            "scoring_forward_samples": metrics["scoring_forward_samples"],
            "train_seconds": round(seconds, 1), "wall_minutes": metrics["wall_seconds"] / 60,
            "load_5min_at_end": run_load(Path(metrics["ckpt_dir"])), "run_dir": metrics["ckpt_dir"]}


def resampled_macro_aucs(run_dir: str, test_ids: list[str], y_test: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Test macro-AUC of the run's kept test probabilities under each bootstrap weight row (row 0: all ones, the
    point estimate)."""
    return macro_over_defined(resampled_aucs(load_predictions(Path(run_dir), "test", test_ids), y_test, weights))


def mean_sd(values: list[float], digits: int) -> str:
    """'mean ± sample sd' ('mean' alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(line) + " |" for line in body])


def add_statistics(rows: list[dict], data_dir: Path, epochs: int, n_train: int) -> dict[str, np.ndarray]:
    """Add to each PDD row its test macro-AUC difference to the same seed's baseline and to its budget-matched
    baseline, with paired bootstrap 95 % intervals; returns each difference per resample (row 0: the point
    estimate), keyed "<variant>/<seed>/<vs_baseline|vs_budget>", for the means over seeds."""
    data = DataDir(Path(data_dir))
    y_test = data.split("test")[1]
    test_ids = record_ids(data.meta, "test", len(y_test))
    weights = point_and_bootstrap_weights(len(y_test), RESAMPLES)
    resampled = {(row["variant"], row["seed"]): resampled_macro_aucs(row["run_dir"], test_ids, y_test, weights)
                 for row in rows}
    differences = {}
    for row in rows:
        if is_baseline_recipe(row["variant"]):
            continue
        budget = f"budget{budget_epochs(row['samples_backpropagated'], n_train, epochs)}"
        for name, other in (("vs_baseline", "baseline"), ("vs_budget", budget)):
            if (other, row["seed"]) in resampled:
                difference = resampled[(row["variant"], row["seed"])] - resampled[(other, row["seed"])]
                differences[f"{row['variant']}/{row['seed']}/{name}"] = difference
                row[f"diff_{name}"] = float(difference[0])
                row[f"diff_{name}_lo"], row[f"diff_{name}_hi"] = percentile_interval(difference[1:], 0.95)
    return differences


def is_baseline_recipe(variant: str) -> bool:
    """The full baseline and the budget-matched ones: the plain recipe, not a PDD variant."""
    return variant == "baseline" or variant.startswith("budget")


def ordered_variants(rows: list[dict]) -> list[str]:
    """Variants present in rows: VARIANTS' order, then the budget-matched baselines by their epochs."""
    present = {r["variant"] for r in rows}
    return [v for v in VARIANTS if v in present] + sorted((v for v in present if v.startswith("budget")),
                                                          key=lambda v: int(v[6:]))


def mean_difference(differences: dict[str, np.ndarray], variant: str, seeds: list[int],
                    name: str) -> tuple[float, list[float]] | None:
    """The mean over seeds of a variant's paired difference and the 95 % interval of its per-resample mean."""
    mine = [differences[key] for key in (f"{variant}/{seed}/{name}" for seed in seeds) if key in differences]
    if not mine:
        return None
    mean = np.mean(mine, axis=0)
    return float(mean[0]), percentile_interval(mean[1:], 0.95)


def difference_text(measured: tuple[float, list[float]] | None) -> str:
    """'+0.0012 [-0.0010, +0.0035]', with ' *' when the interval excludes 0."""
    if measured is None:
        return ""
    point, (lo, hi) = measured
    return f"{point:+.4f} [{lo:+.4f}, {hi:+.4f}]" + (" *" if lo > 0 or hi < 0 else "")


def share(rows: list[dict], key: str, baseline: float | None) -> str:
    """Mean of rows[key], with its share of the baseline's mean."""
    value = float(np.mean([r[key] for r in rows]))
    return f"{value:,.0f}" + (f" ({value / baseline:.0%})" if baseline else "")


def means(rows: list[dict], variant: str) -> dict[str, float]:
    """A variant's means over seeds of the goal's quantities."""
    mine = [r for r in rows if r["variant"] == variant]
    return {k: float(np.mean([r[k] for r in mine])) for k in ("test_macro_auc", "train_seconds",
                                                                 "samples_backpropagated")}


def goal_line(rows: list[dict], differences: dict[str, np.ndarray]) -> str:
    """Which variants reach the goal: mean test macro-AUC within 0.003 of the baseline's at <= 35 % of its
    training seconds and back-propagated samples, and above the budget-matched baseline of its compute."""
    if not any(r["variant"] == "baseline" for r in rows):
        return "Goal: no baseline in this experiment to judge against."
    seeds, base = sorted({r["seed"] for r in rows}), means(rows, "baseline")
    met = []
    for variant in (v for v in ordered_variants(rows) if not is_baseline_recipe(v)):
        mine, budget = means(rows, variant), mean_difference(differences, variant, seeds, "vs_budget")
        if mine["test_macro_auc"] >= base["test_macro_auc"] - 0.003 and budget is not None and budget[0] > 0 \
                and mine["train_seconds"] <= 0.35 * base["train_seconds"] \
                and mine["samples_backpropagated"] <= 0.35 * base["samples_backpropagated"]:
            met.append(variant)
    return ("Goal (mean test macro-AUC within 0.003 of the baseline's at <= 35 % of its training seconds and "
            "back-propagated samples, above its budget-matched baseline): "
            + (f"met by {', '.join(met)}." if met else "not met by any variant."))


def summary_markdown(rows: list[dict], differences: dict[str, np.ndarray]) -> str:
    """Per-variant means over seeds with the paired differences, the goal, then every run."""
    seeds = sorted({r["seed"] for r in rows})
    baseline = [r for r in rows if r["variant"] == "baseline"]
    base = {k: float(np.mean([r[k] for r in baseline])) if baseline else None
            for k in ("samples_backpropagated", "forward_samples", "train_seconds")}
    summary = []
    for v in ordered_variants(rows):
        mine = [r for r in rows if r["variant"] == v]
        summary.append([v, mean_sd([r["test_macro_auc"] for r in mine], 4)]
                       + [difference_text(mean_difference(differences, v, seeds, name))
                          for name in ("vs_baseline", "vs_budget")]
                       + [share(mine, k, base[k]) for k in base] + [str(len(mine))])
    per_run = [[r["variant"], str(r["seed"]), f"{r['test_macro_auc']:.4f}", f"{r['val_macro_auc']:.4f}",
                f"{r['diff_vs_baseline']:+.4f} [{r['diff_vs_baseline_lo']:+.4f}, {r['diff_vs_baseline_hi']:+.4f}]"
                if "diff_vs_baseline" in r else "",
                f"{r['effective_epochs']:.2f}", f"{r['scoring_epochs']:.2f}", f"{r['train_seconds']:.0f}",
                "" if r["load_5min_at_end"] is None else f"{r['load_5min_at_end']:.2f}", r["run_dir"]] for r in rows]
    return "\n\n".join([
        markdown_table(["variant", "test macro-AUC", "Δ vs baseline [95 % CI]", "Δ vs budget-matched [95 % CI]",
                        "back-propagated samples", "forward samples", "train seconds", "seeds"], summary),
        "Mean ± sample sd over seeds; in brackets, the share of the baseline's. Δ: test macro-AUC minus that of "
        "the same seed's baseline, or of the budget-matched baseline (the baseline recipe trained for as many "
        "epochs as the run back-propagated: budget<epochs>), averaged over seeds, with the paired bootstrap 95 % "
        "interval of that mean (1,000 resamples of the test records, the same for every run); * marks an "
        "interval that excludes 0. Forward samples: back-propagated plus scoring passes (dbpd: each batch scored "
        "first; staged: the sliding windows scoring difficulty, plus its baseline's). Train seconds: time in "
        "training epochs (staged: with its baseline's and the scoring).",
        goal_line(rows, differences),
        markdown_table(["variant", "seed", "test AUC", "val AUC", "Δ vs baseline [95 % CI]", "eff. epochs",
                        "scoring epochs", "train s", "load (5 min) at end", "run dir"], per_run),
    ])


def plot_auc_vs_compute(rows: list[dict], path: Path) -> None:
    """Test macro-AUC against training seconds and against back-propagated samples: a dot per run, the baseline
    recipe at each budget (budget-matched runs and the full baseline, means over seeds) as a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    variants = ordered_variants(rows)
    for ax, key, label in ((axes[0], "train_seconds", "training seconds"),
                           (axes[1], "samples_backpropagated", "samples back-propagated")):
        curve = sorted((np.mean([r[key] for r in rows if r["variant"] == v]),
                        np.mean([r["test_macro_auc"] for r in rows if r["variant"] == v]))
                       for v in variants if is_baseline_recipe(v))
        if curve:
            ax.plot(*zip(*curve), "o-", color="grey", label="baseline recipe at each budget (mean)")
        for v in (v for v in variants if not is_baseline_recipe(v)):
            mine = [r for r in rows if r["variant"] == v]
            ax.scatter([r[key] for r in mine], [r["test_macro_auc"] for r in mine], s=22, label=v)
        ax.set(xlabel=label, title=f"test macro-AUC against {label}")
    axes[0].set_ylabel("test macro ROC AUC (one dot per run)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(rows: list[dict], differences: dict[str, np.ndarray], out_dir: Path, note: str | None) -> str:
    """results.csv, results.md (with the small-test note, if any) and the plot; returns the Markdown."""
    with atomic_file(out_dir / "results.csv") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    markdown = summary_markdown(rows, differences) + (f"\n\n{note}" if note else "")
    with atomic_file(out_dir / "results.md") as f:
        f.write(markdown + "\n")
    plot_auc_vs_compute(rows, out_dir / "auc_vs_compute.png")
    return markdown
