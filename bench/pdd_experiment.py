"""Baseline, staged PDD, online PDD and budget-matched baselines over several seeds: test macro-AUC against
compute, with paired bootstrap intervals of each variant's difference to the baseline.

    python bench/pdd_experiment.py --data_dir results/baseline --out_dir results/pdd_experiment \\
        --seeds 0 1 2 --variants baseline infobatch dbpd_last budget --epochs 30 [train_1d_baseline.py flags]

Every run goes in OUT_DIR/<variant>/seed<k>/: one with metrics.json is reused and one with last.pt resumed, so
the same command continues after an interruption; a run there made with other settings (the TrainConfig fields in
common.runs.COMPARED, or other data) is refused before anything is trained, naming the difference. Any other flag
is train_1d_baseline.py's and applies to every run (e.g. --width 16 --blocks 1; --pdd_threshold, --pdd_gamma and
--revision_frac set the online variants).

  staged  the seed's baseline scores every train record (common.difficulty, written into
          OUT_DIR/staged/seed<k>/data/scored, never into --data_dir), then easy / +medium / all stages of
          about epochs/3 each, each resuming the one before. Its compute includes the baseline's.
  smrd    matches the same seed's dbpd run (which is run first when not asked for).
  dbpd, dbpd_last, infobatch, srd and the ablations (dbpd_bn_update, srd_g<gamma>_r<revision>): train_1d_baseline.py
          --pdd modes with the settings in ONLINE.
  dbpd_last_half, infobatch_half_r<ratio>: the same modes on half the epochs (HALF_SCHEDULE), the one-cycle
          schedule as short, so that dropping on top of it comes to about a third of the baseline's compute.
  budget  for each other variant's run, the baseline recipe trained for as many epochs as that run back-propagated
          (samples / N, rounded; the one-cycle schedule shortened to them), same seed: "the same compute, spent on
          the plain recipe", in OUT_DIR/budget/epochs<k>/seed<s>.

Statistics: every run's best.pt scores the test split; each run's difference in test macro-AUC to the same seed's
baseline (and to its budget-matched baseline) gets a paired bootstrap 95 % interval (1,000 resamples of the test
records, seed 0, the same resamples for every run); the mean over seeds gets the interval of the per-resample mean,
and a difference is called significant only when that interval excludes 0. Training seconds are the runs' own
(train_seconds); the 5-minute load average when each run ended is kept beside it (load.json), so a timing taken
while something else ran shows.

Compute is counted in training-window passes over N train records: effective epochs = samples
back-propagated / N; scoring epochs = forward passes without grad / N (dbpd's batch scoring; staged: each
record scored by the sliding windows of validation). Writes results.csv, results.md and
auc_vs_compute.png, and prints the Markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

import numpy as np  # noqa: E402

from bench.compare_runs import small_test_note, test_label_counts  # noqa: E402
from common.augment import sliding_window_starts  # noqa: E402
from common.checkpoint import load_checkpoint  # noqa: E402
from common.checkpoint import load_model  # noqa: E402
from common.config import TrainConfig, check_config, options, parse_config  # noqa: E402
from common.datadir import (DEFAULT_DATA_DIR, DataDir, atomic_file, file_sha256, load_meta, load_npy,  # noqa: E402
                            load_split, write_json_atomic)
from common.device import resolve_device  # noqa: E402
from common.difficulty import compute_difficulty  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from common.evaluate import predict_as_trained  # noqa: E402
from common.files import load_json  # noqa: E402
from common.pdd import split_difficulty  # noqa: E402
from common.pdd_stages import build_stage, generate_stages  # noqa: E402
from common.run import pdd_plan  # noqa: E402
from common.runs import LOAD_NAME, check_reusable, trained  # noqa: E402
from common.stats import (macro_over_defined, percentile_interval, point_and_bootstrap_weights,  # noqa: E402
                          resampled_aucs)

ONLINE = {  # online variants: the train_1d_baseline.py options each sets over the experiment's own
    "dbpd": {"pdd": "dbpd"},
    "dbpd_last": {"pdd": "dbpd", "pdd_scores": "last"},
    "srd": {"pdd": "srd"},
    "smrd": {"pdd": "smrd"},
    "infobatch": {"pdd": "infobatch"},
    "dbpd_bn_update": {"pdd": "dbpd", "pdd_bn": "update"},
    **{f"srd_g{gamma}_r{revision}": {"pdd": "srd", "pdd_gamma": gamma, "revision_frac": revision}
       for gamma in (0.8, 0.85) for revision in (0.1, 0.2)},
}
HALF_SCHEDULE = {  # online settings run for half the experiment's epochs, the one-cycle schedule as short
    "dbpd_last_half": ONLINE["dbpd_last"],
    **{f"infobatch_half_r{ratio}": {"pdd": "infobatch", "pdd_ratio": ratio} for ratio in (0.5, 0.6, 0.7)},
}
VARIANTS = ("baseline", "staged", *ONLINE, *HALF_SCHEDULE, "budget")
DEFAULT_VARIANTS = ("baseline", "staged", "dbpd", "dbpd_last", "srd", "smrd", "infobatch", "budget")
NEEDS = {"staged": "baseline", "smrd": "dbpd"}
RUNNER_OWNED = options(runner="run") + options(runner="variant")  # set per run and per variant (common/config.py)
PREPARED = "prepared.json"
RESAMPLES = 1000


def run_order(variants: list[str]) -> list[str]:
    """The asked variants plus those they need, in dependency order (budget last: it matches the others)."""
    wanted = set(variants) | {NEEDS[v] for v in variants if v in NEEDS}
    if "budget" in variants:
        wanted.add("baseline")
    return [v for v in VARIANTS if v in wanted]


def stage_epochs(epochs: int) -> tuple[int, int, int]:
    """The run's epochs split over the three stages as evenly as possible, earlier stages taking the rest."""
    return tuple(epochs // 3 + (k < epochs % 3) for k in range(3))


def prepared_plan(data_dir: Path, baseline_dir: Path, epochs: int) -> dict:
    """What a seed's staged data is made from: the data, the baseline checkpoint that scores it, the stage epochs."""
    return {"data_fingerprint": load_meta(data_dir)["fingerprint"]["dataset"],
            "scored_by_sha256": file_sha256(baseline_dir / "best.pt"), "stage_epochs": list(stage_epochs(epochs))}


def check_prepared(root: Path, plan: dict) -> dict | None:
    """root/prepared.json when it was made by `plan`, None when there is none; refused naming what differs."""
    path = root / PREPARED
    if not path.is_file():
        return None
    prepared = load_json(path, f"remove {root.parent} and run again",
                         ("stages", "scoring_forward_samples", "seconds", *plan))
    what = {"data_fingerprint": "from other data", "scored_by_sha256": "by another baseline best.pt",
            "stage_epochs": f"with --stage_epochs {prepared['stage_epochs']} (this experiment: {plan['stage_epochs']})"}
    differ = [what[key] for key in plan if prepared[key] != plan[key]]
    if differ:
        raise ConfigError(f"{root} was prepared {' and '.join(differ)}; use another --out_dir or remove {root.parent}")
    return prepared


def prepare_stages(data_dir: Path, baseline_dir: Path, root: Path, epochs: int, device: str) -> dict:
    """Score the train set with the baseline's best.pt in a linked copy of data_dir, split it and build the stage
    data dirs under root; returns (and caches in root/prepared.json) the stage dirs, forward passes and seconds."""
    plan = prepared_plan(data_dir, baseline_dir, epochs)
    prepared = check_prepared(root, plan)
    if prepared is not None:
        return prepared
    started = time.time()
    n_train = len(load_npy(data_dir / "y_train.npy", mmap_mode="r"))
    scored = root / "scored"
    build_stage(DataDir(data_dir), scored, np.arange(n_train), {"scored_by": str(baseline_dir / "best.pt")})
    compute_difficulty(scored, baseline_dir / "best.pt", device=device)
    split_difficulty(scored, root / "split")
    stages = generate_stages(scored, root / "split", root, stage_epochs=stage_epochs(epochs))
    window = load_checkpoint(baseline_dir / "best.pt")["input_shape"]["window"]
    windows = len(sliding_window_starts(load_meta(data_dir)["length"], window, window // 2))
    prepared = {**plan, "stages": [str(s) for s in stages], "scoring_forward_samples": n_train * windows,
                "seconds": round(time.time() - started, 1)}
    write_json_atomic(root / PREPARED, prepared)
    return prepared


def stage_configs(base: TrainConfig, seed_dir: Path, stages: list[str]) -> list[TrainConfig]:
    """The stage runs of one seed, each resuming the one before; their epochs come from the stage dirs' plans."""
    return [replace(base, data_dir=stage, ckpt_dir=str(seed_dir / f"stage{k}"), epochs=None,
                    resume=str(seed_dir / f"stage{k - 1}" / "last.pt") if k > 1 else None)
            for k, stage in enumerate(stages, start=1)]


def run_staged(base: TrainConfig, data_dir: Path, seed_dir: Path, baseline_dir: Path, epochs: int) -> dict:
    """The staged PDD run of one seed; its table row counts the baseline's samples and time and the scoring."""
    prepared = prepare_stages(data_dir, baseline_dir, seed_dir / "data", epochs, base.device)
    for cfg in stage_configs(base, seed_dir, prepared["stages"]):
        metrics = trained(cfg)
    baseline = load_json(baseline_dir / "metrics.json", f"remove {baseline_dir} and run again")
    return {**metrics, "samples_backpropagated": metrics["samples_backpropagated"] + baseline["samples_backpropagated"],
            "scoring_forward_samples": prepared["scoring_forward_samples"],
            "wall_seconds": metrics["wall_seconds"] + baseline["wall_seconds"] + prepared["seconds"],
            "ckpt_dir": str(seed_dir / f"stage{len(prepared['stages'])}")}


def run_config(variant: str, seed: int, base: TrainConfig, data_dir: Path, out_dir: Path) -> TrainConfig:
    """The training config of a baseline or online variant's run of one seed."""
    cfg = replace(base, data_dir=str(data_dir), ckpt_dir=str(out_dir / variant / f"seed{seed}"), seed=seed)
    if variant == "baseline":
        return cfg
    if variant in HALF_SCHEDULE:
        return replace(cfg, **HALF_SCHEDULE[variant], epochs=max(1, base.epochs // 2))
    return replace(cfg, **ONLINE[variant],
                   pdd_match=str(out_dir / "dbpd" / f"seed{seed}") if variant == "smrd" else None)


def budget_config(epochs: int, seed: int, base: TrainConfig, data_dir: Path, out_dir: Path) -> TrainConfig:
    """The baseline recipe for `epochs` epochs (its one-cycle schedule as long): a budget-matched baseline."""
    return replace(base, data_dir=str(data_dir), ckpt_dir=str(out_dir / "budget" / f"epochs{epochs}" / f"seed{seed}"),
                   seed=seed, epochs=epochs)


def budget_epochs(samples_backpropagated: int, n_train: int, full: int) -> int:
    """Whole epochs of the plain recipe costing what a run back-propagated (at least 1, below the full run's)."""
    return min(max(1, round(samples_backpropagated / n_train)), full - 1)


def check_existing_runs(variants: list[str], seeds: list[int], base: TrainConfig, data_dir: Path,
                        out_dir: Path) -> None:
    """Before anything is trained: refuse runs (and staged data) already in out_dir that other settings made."""
    for variant in variants:
        for seed in seeds:
            if variant == "budget":
                for run_dir in sorted((out_dir / "budget").glob(f"epochs*/seed{seed}")):
                    check_reusable(budget_config(int(run_dir.parent.name[6:]), seed, base, data_dir, out_dir))
                continue
            if variant != "staged":
                check_reusable(run_config(variant, seed, base, data_dir, out_dir))
                continue
            seed_dir, baseline_dir = out_dir / "staged" / f"seed{seed}", out_dir / "baseline" / f"seed{seed}"
            if (seed_dir / "data" / PREPARED).is_file():
                stages = load_json(seed_dir / "data" / PREPARED, f"remove {seed_dir} and run again", ("stages",))
                for cfg in stage_configs(replace(base, seed=seed), seed_dir, stages["stages"]):
                    check_reusable(cfg)
            if (baseline_dir / "best.pt").is_file():
                check_prepared(seed_dir / "data", prepared_plan(data_dir, baseline_dir, base.epochs))


def run_variant(variant: str, seed: int, base: TrainConfig, data_dir: Path, out_dir: Path) -> dict:
    """metrics.json content of one variant's run for one seed (for staged, with the counts described above)."""
    if variant == "staged":
        seed_dir = out_dir / variant / f"seed{seed}"
        return run_staged(replace(base, seed=seed), data_dir, seed_dir, out_dir / "baseline" / f"seed{seed}",
                          base.epochs)
    return trained(run_config(variant, seed, base, data_dir, out_dir))


def run_budgets(runs: list[tuple[str, int, dict]], base: TrainConfig, data_dir: Path, out_dir: Path,
                n_train: int) -> list[tuple[str, int, dict]]:
    """The budget-matched baselines of every non-baseline run (one per distinct epoch count and seed)."""
    wanted = sorted({(budget_epochs(metrics["samples_backpropagated"], n_train, base.epochs), seed)
                     for variant, seed, metrics in runs if variant != "baseline"})
    return [(f"budget{epochs}", seed, trained(budget_config(epochs, seed, base, data_dir, out_dir)))
            for epochs, seed in wanted]


def train_seconds(variant: str, metrics: dict, out_dir: Path, seed: int) -> float:
    """Seconds spent training: the run's own; staged adds its baseline's and the scoring between."""
    if variant != "staged":
        return metrics["train_seconds"]
    baseline = load_json(out_dir / "baseline" / f"seed{seed}" / "metrics.json", "run the baseline first")
    prepared = load_json(out_dir / "staged" / f"seed{seed}" / "data" / PREPARED, "run staged again")
    stages = [load_json(Path(stage_dir) / "metrics.json", "run staged again")["train_seconds"]
              for stage_dir in sorted(Path(metrics["ckpt_dir"]).parent.glob("stage*"))]
    return sum(stages) + baseline["train_seconds"] + prepared["seconds"]


def run_load(metrics: dict) -> float | None:
    """The 5-minute load average when the run ended (None when another runner trained it)."""
    path = Path(metrics["ckpt_dir"]) / LOAD_NAME
    return json.loads(path.read_text())["load_5min_at_end"] if path.is_file() else None


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
            "load_5min_at_end": run_load(metrics), "run_dir": metrics["ckpt_dir"]}


def resampled_macro_aucs(run_dir: str, X_test: np.ndarray, y_test: np.ndarray, weights: np.ndarray,
                         device: str) -> np.ndarray:
    """Test macro-AUC of run_dir's best.pt under each bootstrap weight row (row 0: all ones, the point estimate)."""
    model, ckpt = load_model(Path(run_dir) / "best.pt", device)
    return macro_over_defined(resampled_aucs(predict_as_trained(model, ckpt, X_test, device=device), y_test, weights))


def mean_sd(values: list[float], digits: int) -> str:
    """'mean ± sample sd' ('mean' alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(line) + " |" for line in body])


def add_statistics(rows: list[dict], data_dir: Path, device: str, epochs: int,
                   n_train: int) -> dict[str, np.ndarray]:
    """Add to each PDD row its test macro-AUC difference to the same seed's baseline and to its budget-matched
    baseline, with paired bootstrap 95 % intervals; returns each difference per resample (row 0: the point
    estimate), keyed "<variant>/<seed>/<vs_baseline|vs_budget>", for the means over seeds."""
    X_test, y_test = load_split(data_dir, "test")
    weights = point_and_bootstrap_weights(len(y_test), RESAMPLES)
    resampled = {(row["variant"], row["seed"]): resampled_macro_aucs(row["run_dir"], X_test, y_test, weights, device)
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


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The runner's own flags, and the training config every run starts from (the other flags)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="data dir from preprocess.py")
    p.add_argument("--out_dir", type=Path, default=Path("results/pdd_experiment"), help="runs and result tables")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distinct, >= 0")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                   help="budget adds a budget-matched baseline for every other variant's run")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run (staged: over its three stages)")
    args, rest = p.parse_known_args(argv)
    base = replace(parse_config(rest)[0], epochs=args.epochs)
    owned = [f"--{name}" for name in RUNNER_OWNED if getattr(base, name) != getattr(TrainConfig, name)]
    if owned:
        p.error(f"{', '.join(owned)} are set by the runner per run; leave them out")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct numbers >= 0, got {' '.join(map(str, args.seeds))}")
    if "staged" in args.variants and args.epochs < 3:
        p.error("--variants staged needs --epochs >= 3 (one or more per stage)")
    if "budget" in args.variants and (args.epochs < 2 or set(args.variants) <= {"baseline", "budget"}):
        p.error("--variants budget matches the other variants' compute: add at least one PDD variant and use "
                "--epochs >= 2")
    return args, base


def main(argv: list[str] | None = None) -> str:
    """Check every input and every run already in out_dir, then run each variant and seed (reusing finished runs of
    the same settings), write the results; returns the Markdown table."""
    args, base = parse_args(argv)
    check_config(replace(base, data_dir=str(args.data_dir)))
    load_meta(args.data_dir)
    n_train = len(load_npy(args.data_dir / "y_train.npy", mmap_mode="r"))
    order = run_order(args.variants)
    for variant in (v for v in order if v in ONLINE or v in HALF_SCHEDULE):
        if variant != "smrd":  # its plan needs the dbpd run it matches
            pdd_plan(run_config(variant, args.seeds[0], base, args.data_dir, args.out_dir), n_train)
    check_existing_runs(order, args.seeds, base, args.data_dir, args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(variant, seed, run_variant(variant, seed, base, args.data_dir, args.out_dir))
            for variant in order if variant != "budget" for seed in args.seeds]
    if "budget" in order:
        runs += run_budgets(runs, base, args.data_dir, args.out_dir, n_train)
    first = runs[0][2]
    note = small_test_note({"classes": first["classes"], "test_labels": test_label_counts(first)})
    rows = [result_row(variant, seed, metrics, n_train, train_seconds(variant, metrics, args.out_dir, seed))
            for variant, seed, metrics in runs]
    differences = add_statistics(rows, args.data_dir, str(resolve_device(base.device)), base.epochs, n_train)
    markdown = write_results(rows, differences, args.out_dir, note)
    print("\n" + markdown)
    return markdown


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="run the same command again to continue"))
