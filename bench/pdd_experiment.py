"""Baseline, staged PDD and online PDD (dbpd, srd, smrd) over several seeds: test macro-AUC against compute.

    python bench/pdd_experiment.py --data_dir results/baseline --out_dir results/pdd_experiment \\
        --seeds 0 1 2 --variants baseline staged dbpd srd smrd --epochs 30 [train_1d_baseline.py flags]

Every run goes in OUT_DIR/<variant>/seed<k>/: one with metrics.json is reused and one with last.pt resumed, so
the same command continues after an interruption; a run there made with other settings (the TrainConfig fields in
COMPARED, or other data) is refused before anything is trained, naming the difference. Any other flag is train_1d_baseline.py's and applies to
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
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import quiet_interrupts  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

import numpy as np  # noqa: E402

from bench.compare_runs import small_test_note, test_label_counts  # noqa: E402
from common.augment import sliding_window_starts  # noqa: E402
from common.checkpoint import load_checkpoint  # noqa: E402
from common.datadir import (DEFAULT_DATA_DIR, atomic_file, file_sha256, load_meta, load_npy,  # noqa: E402
                            write_json_atomic)
from common.difficulty import compute_difficulty  # noqa: E402
from common.pdd import build_stage, generate_stages, load_json, split_difficulty  # noqa: E402
from common.train import (ConfigError, NonFiniteLossError, TrainConfig, TrainingInterrupted,  # noqa: E402
                          check_config, resolve_config, train)
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


# Not what a run was trained with: where it ran and how it was continued; the data (compared by fingerprint); the
# matched dbpd run (checked itself); the one-cycle length (follows --epochs, which the runner alone sets it from).
NOT_COMPARED = ("data_dir", "ckpt_dir", "resume", "init_from", "given", "stop_after_epoch", "overwrite", "device",
                "workers", "threads", "pdd_match", "schedule_epochs")
COMPARED = tuple(f.name for f in fields(TrainConfig) if f.name not in NOT_COMPARED)


def stored_run(run_dir: Path) -> tuple[dict, str | None, Path] | None:
    """(config, data fingerprint, file read) of the finished or interrupted run in run_dir; None when there is none."""
    if (run_dir / "metrics.json").is_file():
        metrics = load_json(run_dir / "metrics.json", f"remove {run_dir} and run again", ("config", "data_fingerprint"))
        return metrics["config"], metrics["data_fingerprint"], run_dir / "metrics.json"
    if (run_dir / "last.pt").is_file():
        ckpt = load_checkpoint(run_dir / "last.pt")
        return ckpt["config"], (ckpt.get("data_fingerprint") or {}).get("dataset"), run_dir / "last.pt"
    return None


def check_reusable(cfg: TrainConfig) -> None:
    """Refuse a run dir whose run was trained with other settings (COMPARED) or on other data than cfg asks for,
    naming each difference; data dirs are compared by their arrays' fingerprint, not their path."""
    run_dir = Path(cfg.ckpt_dir)
    stored = stored_run(run_dir)
    if stored is None:
        return
    config, fingerprint, source = stored
    wanted = asdict(resolve_config(cfg, None))
    differ = [name for name in COMPARED if config.get(name) != wanted[name]]
    theirs = [f"--{name} {config.get(name)}" for name in differ]
    ours = [f"--{name} {wanted[name]}" for name in differ]
    if fingerprint != load_meta(cfg.data_dir)["fingerprint"]["dataset"]:
        theirs.append("other data")
        ours.append(f"the data {cfg.data_dir} holds now")
    if theirs:
        raise ConfigError(f"{run_dir} was trained with {' '.join(theirs)} ({source.name}), this experiment asks for "
                          f"{' '.join(ours)}; use another --out_dir or remove {run_dir}")


def trained(cfg: TrainConfig) -> dict:
    """metrics.json of cfg's run: read when it finished with cfg's settings, else trained, resuming its own last.pt
    if present; a run made with other settings is refused."""
    run_dir = Path(cfg.ckpt_dir)
    check_reusable(cfg)
    if (run_dir / "metrics.json").is_file():
        print(f"{run_dir}: finished earlier with these settings, reusing its metrics.json", flush=True)
        return load_json(run_dir / "metrics.json", f"remove {run_dir} and run again")
    if (run_dir / "last.pt").is_file():
        cfg = replace(cfg, resume=str(run_dir / "last.pt"))
    print(f"\n=== {run_dir}" + (f" (resuming {cfg.resume})" if cfg.resume else ""), flush=True)
    return train(cfg)


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
    build_stage(data_dir, scored, np.arange(n_train), {"scored_by": str(baseline_dir / "best.pt")})
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
    """The training config of a baseline, dbpd, srd or smrd run of one seed."""
    cfg = replace(base, data_dir=str(data_dir), ckpt_dir=str(out_dir / variant / f"seed{seed}"), seed=seed)
    if variant == "baseline":
        return cfg
    return replace(cfg, pdd=variant, pdd_match=str(out_dir / "dbpd" / f"seed{seed}") if variant == "smrd" else None)


def check_existing_runs(variants: list[str], seeds: list[int], base: TrainConfig, data_dir: Path,
                        out_dir: Path) -> None:
    """Before anything is trained: refuse runs (and staged data) already in out_dir that other settings made."""
    for variant in variants:
        for seed in seeds:
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


def write_results(rows: list[dict], out_dir: Path, note: str | None) -> str:
    """results.csv, results.md (with the small-test note, if any) and the plot; returns the Markdown."""
    with atomic_file(out_dir / "results.csv") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = summary_markdown(rows) + (f"\n\n{note}" if note else "")
    with atomic_file(out_dir / "results.md") as f:
        f.write(markdown + "\n")
    plot_auc_vs_compute(rows, out_dir / "auc_vs_effective_epochs.png")
    return markdown


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The runner's own flags, and the training config every run starts from (the other flags)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="data dir from preprocess.py")
    p.add_argument("--out_dir", type=Path, default=Path("results/pdd_experiment"), help="runs and result tables")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distinct, >= 0")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run (staged: over its three stages)")
    args, rest = p.parse_known_args(argv)
    base = replace(parse_train_args(rest), epochs=args.epochs)
    owned = [f"--{name}" for name in RUNNER_OWNED if getattr(base, name) != getattr(TrainConfig, name)]
    if owned:
        p.error(f"{', '.join(owned)} are set by the runner per run; leave them out")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct numbers >= 0, got {' '.join(map(str, args.seeds))}")
    if "staged" in args.variants and args.epochs < 3:
        p.error("--variants staged needs --epochs >= 3 (one or more per stage)")
    return args, base


def main(argv: list[str] | None = None) -> str:
    """Check every input and every run already in out_dir, then run each variant and seed (reusing finished runs of
    the same settings), write the results; returns the Markdown table."""
    args, base = parse_args(argv)
    check_config(replace(base, data_dir=str(args.data_dir)))
    load_meta(args.data_dir)
    n_train = len(load_npy(args.data_dir / "y_train.npy", mmap_mode="r"))
    order = run_order(args.variants)
    check_existing_runs(order, args.seeds, base, args.data_dir, args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(variant, seed, run_variant(variant, seed, base, args.data_dir, args.out_dir))
            for variant in order for seed in args.seeds]
    first = runs[0][2]
    note = small_test_note({"classes": first["classes"], "test_labels": test_label_counts(first)})
    markdown = write_results([result_row(*run, n_train) for run in runs], args.out_dir, note)
    print("\n" + markdown)
    return markdown


if __name__ == "__main__":
    try:
        main()
    except TrainingInterrupted as e:
        print(f"{e}; run the same command again to continue", file=sys.stderr)
        sys.exit(128 + e.signum)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
