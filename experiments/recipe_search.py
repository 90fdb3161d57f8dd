"""Search for a better training recipe on validation only: each candidate in RECIPES is trained with the given
seeds, and scored by the val macro-AUC of one member and of the ensemble of its first k members, beside its cost.

    python experiments/recipe_search.py --data_dir results/dev100 --out_dir results/recipe_search \\
        --recipes e20 e15 e20_aug --seeds 0 1 2 [--table docs/recipe_search_dev100.md] [train_1d_baseline.py flags]

Every run goes in OUT_DIR/<recipe>/seed<k>: a finished run of the same settings is reused, an interrupted one
resumed, one of other settings refused (common.runs), so the same command continues after a kill. The table lists
every recipe of RECIPES with finished runs in OUT_DIR, not only those of this command, so several commands (more
seeds for the promising recipes) build one table. Wall time is the runs' own wall_seconds (per-epoch validation and
the final scoring included) summed over the members of an ensemble; the 5-minute load when each run ended is kept
beside it, so a timing taken while something else ran shows. "Best at each budget" picks the highest val macro-AUC
whose wall time fits 6, 15 and 45 minutes.

The table reads validation only (each run's metrics.json holds test figures, as every run's does; nothing here
reads them). OUT_DIR/<recipe> is laid out as an ensemble dir of train_1d_baseline.py --seeds, so the chosen
recipe's test figures come once, at the end, from that command with the recipe's flags (it reuses the members).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

import numpy as np  # noqa: E402

from common.config import TrainConfig, check_config, options, parse_config  # noqa: E402
from common.datadir import DEFAULT_DATA_DIR, DataDir, atomic_file  # noqa: E402
from common.ensemble import member_config  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from common.files import load_json  # noqa: E402
from common.labels import one_hot  # noqa: E402
from common.metrics import macro, per_class_auc  # noqa: E402
from common.predictions import load_predictions  # noqa: E402
from common.runs import check_reusable, run_load, trained  # noqa: E402
from common.traindata import record_ids  # noqa: E402
from experiments.pdd_report import markdown_table, mean_sd  # noqa: E402

RECIPES = {  # candidate: the train_1d_baseline.py options it sets over the search's own
    "e30_max": {"epochs": 30, "aggregation": "max_prob"},  # the default before this search
    "e20_max": {"epochs": 20, "aggregation": "max_prob"},
    "e20": {"epochs": 20},
    "e15": {"epochs": 15},
    "e10": {"epochs": 10},
    "e20_aug": {"epochs": 20, "augment": True},
    "e15_aug": {"epochs": 15, "augment": True},
    "e20_b2": {"epochs": 20, "blocks": 2},
    "e20_w48": {"epochs": 20, "width": 48},
    "e15_w48": {"epochs": 15, "width": 48},
}
BUDGETS_MINUTES = (6, 15, 45)


def recipe_config(base: TrainConfig, recipe: str, out_dir: Path) -> TrainConfig:
    """The ensemble-level config of a recipe: its members are member_config(cfg, seed)."""
    return replace(base, **RECIPES[recipe], ckpt_dir=str(out_dir / recipe))


def finished_seeds(recipe_dir: Path) -> list[int]:
    """Seeds of the finished runs (metrics.json) in a recipe's dir, in ascending order."""
    return sorted(int(path.parent.name[4:]) for path in recipe_dir.glob("seed*/metrics.json"))


def recipe_rows(recipe: str, cfg: TrainConfig, val_ids: list[str], y_val: np.ndarray) -> list[dict]:
    """One row for a single member (mean ± sd over seeds) and one per ensemble of the first k members, k >= 2."""
    seeds = finished_seeds(Path(cfg.ckpt_dir))
    runs = []
    for seed in seeds:
        member = member_config(cfg, seed)
        check_reusable(member, "this search")
        metrics = load_json(Path(member.ckpt_dir) / "metrics.json", f"remove {member.ckpt_dir} and run again")
        runs.append((metrics, load_predictions(Path(member.ckpt_dir), "val", val_ids), run_load(Path(member.ckpt_dir))))
    if not runs:
        return []
    classes = runs[0][0]["classes"]
    targets = one_hot(y_val, len(classes), runs[0][0]["multilabel"])

    def auc(probs: np.ndarray) -> float:
        return macro(per_class_auc(probs, targets, classes))

    loads = [load for _, _, load in runs if load is not None]
    common = {"recipe": recipe, "flags": " ".join(f"--{k}" if v is True else f"--{k} {v}"
                                                  for k, v in RECIPES[recipe].items()),
              "n_params": runs[0][0]["n_params"],
              "samples_per_second": np.mean([m["samples_per_second"] for m, _, _ in runs]),
              "train_seconds_per_member": np.mean([m["train_seconds"] for m, _, _ in runs]),
              "max_load": max(loads) if loads else None}
    member_aucs = [auc(probs) for _, probs, _ in runs]
    rows = [{**common, "members": 1, "seeds": " ".join(map(str, seeds)), "val_macro_auc": float(np.mean(member_aucs)),
             "val_macro_auc_text": mean_sd(member_aucs, 4),
             "wall_minutes": np.mean([m["wall_seconds"] for m, _, _ in runs]) / 60}]
    for k in range(2, len(runs) + 1):
        value = auc(np.mean([probs for _, probs, _ in runs[:k]], axis=0))
        rows.append({**common, "members": k, "seeds": " ".join(map(str, seeds[:k])), "val_macro_auc": value,
                     "val_macro_auc_text": f"{value:.4f}",
                     "wall_minutes": sum(m["wall_seconds"] for m, _, _ in runs[:k]) / 60})
    return rows


def results_markdown(rows: list[dict]) -> str:
    """The full table, then the best row within each wall-time budget."""
    def line(row: dict) -> list[str]:
        load = "" if row["max_load"] is None else f"{row['max_load']:.1f}"
        return [row["recipe"], row["flags"], str(row["members"]), row["seeds"], row["val_macro_auc_text"],
                f"{row['wall_minutes']:.1f}", f"{row['train_seconds_per_member']:.0f}",
                f"{row['samples_per_second']:.0f}", f"{row['n_params']:,}", load]

    head = ["recipe", "flags", "members", "seeds", "val macro-AUC", "wall min", "train s / member", "samples/s",
            "params / member", "max load"]
    best = []
    for budget in BUDGETS_MINUTES:
        fitting = [row for row in rows if row["wall_minutes"] <= budget]
        if fitting:
            top = max(fitting, key=lambda row: row["val_macro_auc"])
            best.append([f"≤ {budget} min", top["recipe"], str(top["members"]), f"{top['val_macro_auc']:.4f}",
                         f"{top['wall_minutes']:.1f}"])
    return "\n\n".join([
        "Recipe search on validation; one member: mean ± sd over its seeds; k members: the mean of the "
        "probabilities of the first k seeds' runs. Wall minutes: the members' own wall time summed.",
        markdown_table(head, [line(row) for row in rows]),
        "Best val macro-AUC within each wall-time budget:",
        markdown_table(["budget", "recipe", "members", "val macro-AUC", "wall min"], best)])


def write_results(rows: list[dict], markdown: str, out_dir: Path, table: Path | None) -> None:
    """results.csv and results.md in out_dir, and the Markdown table at `table` too when asked."""
    keys = [key for key in rows[0] if key != "val_macro_auc_text"]
    with atomic_file(out_dir / "results.csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for path in (out_dir / "results.md", table):
        if path is not None:
            with atomic_file(path, "w") as f:
                f.write(markdown + "\n")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The search's own flags, and the training config every run starts from (the other flags)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="data dir from preprocess.py")
    p.add_argument("--out_dir", type=Path, default=Path("results/recipe_search"), help="runs and result tables")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=["e15", "e20"],
                   help="candidates to train (default: e15, the default recipe, and e20)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="distinct, >= 0")
    p.add_argument("--table", type=Path, default=None, help="also write the Markdown table here")
    args, rest = p.parse_known_args(argv)
    base = parse_config(rest)[0]
    owned = [f"--{name}" for name in options(runner="run") if getattr(base, name) != getattr(TrainConfig, name)]
    if owned:
        p.error(f"{', '.join(owned)} are set by the search per run; leave them out")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct numbers >= 0, got {' '.join(map(str, args.seeds))}")
    return args, replace(base, data_dir=str(args.data_dir))


def main(argv: list[str] | None = None) -> str:
    """Check every run already in out_dir, train the asked recipes and seeds, tabulate all; returns the Markdown."""
    args, base = parse_args(argv)
    check_config(base)
    configs = {recipe: recipe_config(base, recipe, args.out_dir) for recipe in RECIPES}
    for recipe in args.recipes:
        for seed in args.seeds:
            check_reusable(member_config(configs[recipe], seed), "this search")
    for recipe in args.recipes:
        for seed in args.seeds:
            trained(member_config(configs[recipe], seed), "this search")
    data = DataDir(Path(args.data_dir))
    y_val = data.split("val")[1]
    val_ids = record_ids(data.meta, "val", len(y_val))
    rows = [row for recipe in RECIPES for row in recipe_rows(recipe, configs[recipe], val_ids, y_val)]
    if not rows:
        raise ConfigError(f"no finished runs in {args.out_dir}")
    markdown = results_markdown(rows)
    write_results(rows, markdown, args.out_dir, args.table)
    print("\n" + markdown)
    return markdown


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="run the same command again to continue"))
