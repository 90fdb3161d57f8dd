"""Baseline, staged PDD and online PDD (dbpd, srd, smrd) over several seeds: test macro-AUC against compute.

    python bench/pdd_experiment.py --data_dir results/baseline --out_dir results/pdd_experiment \\
        --seeds 0 1 2 --variants baseline staged dbpd srd smrd --epochs 30 [train_1d_baseline.py flags]

Every run goes in OUT_DIR/<variant>/seed<k>/: one with metrics.json is reused and one with last.pt resumed, so
the same command continues after an interruption. Any other flag is train_1d_baseline.py's and applies to
every run (e.g. --width 16 --blocks 1; --pdd_threshold, --pdd_gamma and --revision_frac set the online variants).

  staged  the seed's baseline scores every train record (common.difficulty, written into
          OUT_DIR/staged/seed<k>/data/scored, never into --data_dir), then easy / +medium / all stages of
          about epochs/3 each, each resuming the one before. Its compute includes the baseline's.
  smrd    matches the same seed's dbpd run (which is run first when not asked for).

Compute is counted in training-window passes over N train records: effective epochs = samples
back-propagated / N; scoring epochs = forward passes without grad / N (dbpd's batch scoring; staged: each
record scored by the sliding windows of validation). Writes results.csv, results.md and
auc_vs_effective_epochs.png, and prints the Markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.augment import sliding_window_starts  # noqa: E402
from common.datadir import load_meta, write_json_atomic  # noqa: E402
from common.difficulty import compute_difficulty  # noqa: E402
from common.pdd import build_stage, generate_stages, split_difficulty  # noqa: E402
from common.checkpoint import CheckpointMismatchError  # noqa: E402
from common.train import ConfigError, TrainConfig, TrainingInterrupted, train  # noqa: E402
from train_1d_baseline import parse_args as parse_train_args  # noqa: E402

VARIANTS = ("baseline", "staged", "dbpd", "srd", "smrd")
NEEDS = {"staged": "baseline", "smrd": "dbpd"}
RUNNER_OWNED = ("ckpt_dir", "seed", "pdd", "pdd_match", "resume", "init_from", "stop_after_epoch",
                "schedule_epochs")
PREPARED = "prepared.json"


def run_order(variants: list[str]) -> list[str]:
    """The asked variants plus those they need, in dependency order."""
    wanted = set(variants) | {NEEDS[v] for v in variants if v in NEEDS}
    return [v for v in VARIANTS if v in wanted]


def trained(cfg: TrainConfig) -> dict:
    """metrics.json of cfg's run: read when it finished, else trained, resuming its own last.pt if present."""
    run_dir = Path(cfg.ckpt_dir)
    if (run_dir / "metrics.json").is_file():
        print(f"{run_dir}: finished earlier, reusing its metrics.json", flush=True)
        return json.loads((run_dir / "metrics.json").read_text())
    if (run_dir / "last.pt").is_file():
        cfg = replace(cfg, resume=str(run_dir / "last.pt"))
    print(f"\n=== {run_dir}" + (f" (resuming {cfg.resume})" if cfg.resume else ""), flush=True)
    return train(cfg)


def stage_epochs(epochs: int) -> tuple[int, int, int]:
    """The run's epochs split over the three stages as evenly as possible, earlier stages taking the rest."""
    return tuple(epochs // 3 + (k < epochs % 3) for k in range(3))


def prepare_stages(data_dir: Path, baseline_dir: Path, root: Path, epochs: int, device: str) -> dict:
    """Score the train set with the baseline's best.pt in a linked copy of data_dir, split it and build the stage
    data dirs under root; returns (and caches in root/prepared.json) the stage dirs, forward passes and seconds."""
    if (root / PREPARED).is_file():
        return json.loads((root / PREPARED).read_text())
    started = time.time()
    n_train = len(np.load(data_dir / "y_train.npy", mmap_mode="r"))
    scored = root / "scored"
    build_stage(data_dir, scored, np.arange(n_train), {"scored_by": str(baseline_dir / "best.pt")})
    compute_difficulty(scored, baseline_dir / "best.pt", device=device)
    split_difficulty(scored, root / "split")
    stages = generate_stages(scored, root / "split", root, stage_epochs=stage_epochs(epochs))
    window = json.loads((baseline_dir / "metrics.json").read_text())["input_shape"]["window"]
    windows = len(sliding_window_starts(load_meta(data_dir)["length"], window, window // 2))
    prepared = {"stages": [str(s) for s in stages], "scoring_forward_samples": n_train * windows,
                "seconds": round(time.time() - started, 1)}
    write_json_atomic(root / PREPARED, prepared)
    return prepared


def run_staged(base: TrainConfig, data_dir: Path, seed_dir: Path, baseline_dir: Path, epochs: int) -> dict:
    """The staged PDD run of one seed; its table row counts the baseline's samples and time and the scoring."""
    prepared = prepare_stages(data_dir, baseline_dir, seed_dir / "data", epochs, base.device)
    previous = None
    for k, stage in enumerate(prepared["stages"], start=1):
        metrics = trained(replace(base, data_dir=stage, ckpt_dir=str(seed_dir / f"stage{k}"), epochs=None,
                                  resume=previous))
        previous = str(seed_dir / f"stage{k}" / "last.pt")
    baseline = json.loads((baseline_dir / "metrics.json").read_text())
    return {**metrics, "samples_backpropagated": metrics["samples_backpropagated"] + baseline["samples_backpropagated"],
            "scoring_forward_samples": prepared["scoring_forward_samples"],
            "wall_seconds": metrics["wall_seconds"] + baseline["wall_seconds"] + prepared["seconds"],
            "ckpt_dir": str(seed_dir / f"stage{len(prepared['stages'])}")}


def run_variant(variant: str, seed: int, base: TrainConfig, data_dir: Path, out_dir: Path) -> dict:
    """metrics.json content of one variant's run for one seed (for staged, with the counts described above)."""
    seed_dir = out_dir / variant / f"seed{seed}"
    cfg = replace(base, data_dir=str(data_dir), ckpt_dir=str(seed_dir), seed=seed)
    if variant == "baseline":
        return trained(cfg)
    if variant == "staged":
        return run_staged(cfg, data_dir, seed_dir, out_dir / "baseline" / f"seed{seed}", base.epochs)
    match = str(out_dir / "dbpd" / f"seed{seed}") if variant == "smrd" else None
    return trained(replace(cfg, pdd=variant, pdd_match=match))


def result_row(variant: str, seed: int, metrics: dict, n_train: int) -> dict:
    """One line of results.csv."""
    return {"variant": variant, "seed": seed, "test_macro_auc": metrics["test"]["macro_auc"],
            "val_macro_auc": metrics["val"]["macro_auc"],
            "effective_epochs": metrics["samples_backpropagated"] / n_train,
            "scoring_epochs": metrics["scoring_forward_samples"] / n_train,
            "samples_backpropagated": metrics["samples_backpropagated"],
            "scoring_forward_samples": metrics["scoring_forward_samples"],
            "wall_minutes": metrics["wall_seconds"] / 60, "run_dir": metrics["ckpt_dir"]}


def mean_sd(values: list[float], digits: int) -> str:
    """'mean ± sample sd' ('mean' alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(line) + " |" for line in body])


def summary_markdown(rows: list[dict]) -> str:
    """Per-variant mean ± sd over seeds, then every run."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    summary = []
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        summary.append([v, mean_sd([r["test_macro_auc"] for r in mine], 4)]
                       + [mean_sd([r[key] for r in mine], 2) for key in ("effective_epochs", "scoring_epochs")]
                       + [mean_sd([r["wall_minutes"] for r in mine], 1)]
                       + [str(len(mine))])
    per_run = [[r["variant"], str(r["seed"]), f"{r['test_macro_auc']:.4f}", f"{r['val_macro_auc']:.4f}",
                f"{r['effective_epochs']:.2f}", f"{r['scoring_epochs']:.2f}", f"{r['wall_minutes']:.1f}", r["run_dir"]]
               for r in rows]
    return "\n\n".join([
        markdown_table(["variant", "test macro-AUC", "effective epochs", "scoring epochs", "wall min", "seeds"],
                       summary),
        "Effective epochs: samples back-propagated / train records (staged: its stages plus its baseline). Scoring "
        "epochs: forward passes without grad / train records (dbpd: each batch scored before selection; staged: "
        "the sliding windows scoring difficulty). Mean ± sample sd over seeds.",
        markdown_table(["variant", "seed", "test AUC", "val AUC", "eff. epochs", "scoring epochs", "wall min",
                        "run dir"], per_run),
    ])


def plot_auc_vs_compute(rows: list[dict], path: Path) -> None:
    """Test macro-AUC against effective epochs: each run a dot, each variant's mean ± sd a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in VARIANTS:
        mine = [r for r in rows if r["variant"] == v]
        if not mine:
            continue
        x, y = [r["effective_epochs"] for r in mine], [r["test_macro_auc"] for r in mine]
        dots = ax.scatter(x, y, alpha=0.4, s=18)
        ax.errorbar(np.mean(x), np.mean(y), yerr=np.std(y, ddof=1) if len(y) > 1 else None, fmt="o", capsize=4,
                    color=dots.get_facecolor()[0][:3], label=v)
    ax.set(xlabel="effective epochs (samples back-propagated / train records)", ylabel="test macro ROC AUC",
           title="test macro-AUC against compute (dots: runs; bars: mean ± sd over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(rows: list[dict], out_dir: Path) -> str:
    """results.csv, results.md and the plot; returns the Markdown."""
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = summary_markdown(rows)
    (out_dir / "results.md").write_text(markdown + "\n")
    plot_auc_vs_compute(rows, out_dir / "auc_vs_effective_epochs.png")
    return markdown


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The runner's own flags, and the training config every run starts from (the other flags)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data_dir", type=Path, default=Path("results/baseline"), help="data dir from preprocess.py")
    p.add_argument("--out_dir", type=Path, default=Path("results/pdd_experiment"), help="runs and result tables")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run (staged: over its three stages)")
    args, rest = p.parse_known_args(argv)
    base = replace(parse_train_args(rest), epochs=args.epochs)
    owned = [f"--{name}" for name in RUNNER_OWNED if getattr(base, name) != getattr(TrainConfig, name)]
    if owned:
        p.error(f"{', '.join(owned)} are set by the runner per run; leave them out")
    if "staged" in args.variants and args.epochs < 3:
        p.error("--variants staged needs --epochs >= 3 (one or more per stage)")
    return args, base


def main(argv: list[str] | None = None) -> str:
    """Run every variant and seed (skipping finished runs), write the results; returns the Markdown table."""
    args, base = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    n_train = len(np.load(args.data_dir / "y_train.npy", mmap_mode="r"))
    rows = [result_row(variant, seed, run_variant(variant, seed, base, args.data_dir, args.out_dir), n_train)
            for variant in run_order(args.variants) for seed in args.seeds]
    markdown = write_results(rows, args.out_dir)
    print("\n" + markdown)
    return markdown


if __name__ == "__main__":
    try:
        main()
    except TrainingInterrupted as e:
        sys.exit(f"{e}; run the same command again to continue")
    except (ConfigError, CheckpointMismatchError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
