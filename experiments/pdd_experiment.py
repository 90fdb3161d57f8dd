"""Baseline, staged PDD, online PDD and budget-matched baselines over several seeds: test macro-AUC against
compute, with paired bootstrap intervals of each variant's difference to the baseline.

    python experiments/pdd_experiment.py --data_dir results/baseline --out_dir results/pdd_experiment \\
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
          --pdd modes with the settings in ONLINE (experiments/pdd_variants.py).
  dbpd_last_half, infobatch_half_r<ratio>: the same modes on half the epochs (HALF_SCHEDULE), the one-cycle
          schedule as short, so that dropping on top of it comes to about a third of the baseline's compute.
  budget  for each other variant's run, the baseline recipe trained for as many epochs as that run back-propagated
          (samples / N, rounded; the one-cycle schedule shortened to them), same seed: "the same compute, spent on
          the plain recipe", in OUT_DIR/budget/epochs<k>/seed<s>.

Statistics: every run's test probabilities (predictions.npz, kept by its final report) score the test split; each
run's difference in test macro-AUC to the same seed's baseline (and to its budget-matched baseline) gets a paired
bootstrap 95 % interval (1,000 resamples of the test records, seed 0, the same resamples for every run); the mean
over seeds gets the interval of the per-resample mean, and a difference is called significant only when that interval
excludes 0. Training seconds are the runs' own
(train_seconds); the 5-minute load average when each run ended is kept beside it (load.json), so a timing taken
while something else ran shows.

Compute is counted in training-window passes over N train records: effective epochs = samples
back-propagated / N; scoring epochs = forward passes without grad / N (dbpd's batch scoring; staged: each
record scored by the sliding windows of validation). Writes results.csv, results.md and
auc_vs_compute.png, and prints the Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

import numpy as np  # noqa: E402

from common.augment import sliding_window_starts  # noqa: E402
from common.checkpoint import load_checkpoint  # noqa: E402
from common.config import TrainConfig, check_config, options, parse_config  # noqa: E402
from common.datadir import DEFAULT_DATA_DIR, DataDir, file_sha256, load_meta, load_npy, write_json_atomic  # noqa: E402
from common.difficulty import compute_difficulty  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from common.files import load_json  # noqa: E402
from common.pdd import split_difficulty  # noqa: E402
from common.pdd_stages import build_stage, generate_stages  # noqa: E402
from common.run import pdd_plan  # noqa: E402
from common.runs import check_reusable, trained  # noqa: E402
from experiments.pdd_report import add_statistics, result_row, write_results  # noqa: E402
from experiments.pdd_variants import (DEFAULT_VARIANTS, HALF_SCHEDULE, NEEDS, ONLINE, VARIANTS,  # noqa: E402
                                      budget_epochs)
from tools.compare_runs import small_test_note, test_label_counts  # noqa: E402

RUNNER_OWNED = options(runner="run") + options(runner="variant")  # set per run and per variant (common/config.py)
PREPARED = "prepared.json"


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
    note = small_test_note({"classes": first["classes"], "test_labels": test_label_counts(first, args.data_dir)})
    rows = [result_row(variant, seed, metrics, n_train, train_seconds(variant, metrics, args.out_dir, seed))
            for variant, seed, metrics in runs]
    differences = add_statistics(rows, args.data_dir, base.epochs, n_train)
    markdown = write_results(rows, differences, args.out_dir, note)
    print("\n" + markdown)
    return markdown


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="run the same command again to continue"))
