"""How the default recipe generalises: PTB-XL test AUC beside the AUC on other hospitals' labelled recordings, with
95 % bootstrap intervals, per class and macro (issue 21, item 6).

    python bench/external.py --data_dir results/dev100 --external ../shared/data/external-dev/records \
        --labels ../shared/data/external-dev/labels.csv --run_dir bench/out/external

Trains once with the default recipe (train_1d_baseline.py's defaults) on --data_dir into --run_dir; a --run_dir
that already holds the default recipe's finished run on that data is reused, an interrupted one continued, and a run
with other settings or data refused (common.runs.trained). The outside recordings
are scored by predict.py --labels' own code (common.inference.run_predict), into RUN_DIR/external.csv and
RUN_DIR/external.metrics.json; the PTB-XL figures are metrics.json's "test".
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()

from common.config import TrainConfig  # noqa: E402
from common.inference import run_predict  # noqa: E402
from common.outside_eval import metrics_path  # noqa: E402
from common.runs import trained  # noqa: E402


def interval(auc: float | None, ci: list[float] | None) -> str:
    """An AUC and its interval as `0.932 [0.921-0.943]`, or n/a."""
    return "n/a" if auc is None else f"{auc:.3f} [{ci[0]:.3f}-{ci[1]:.3f}]"


def side_by_side(test: dict, outside: dict) -> str:
    """One line per class and the macro: PTB-XL test AUC [CI] beside the outside recordings' AUC [CI] (positives)."""
    lines = [f"{'class':<6} {'PTB-XL test':<22} {'outside':<22} outside pos/neg"]
    for name, row in outside["per_class"].items():
        lines.append(f"{name:<6} {interval(test['per_class_auc'].get(name), test['per_class_auc_ci95'].get(name)):<22} "
                     f"{interval(row['auc'], row['auc_ci95']):<22} {row['positives']}/{row['negatives']}")
    lines.append(f"{'macro':<6} {interval(test['macro_auc'], test['macro_auc_ci95']):<22} "
                 f"{interval(outside['macro_auc'], outside['macro_auc_ci95']):<22} "
                 f"over {', '.join(outside['macro_over'])}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True,
                   help="PTB-XL data dir (preprocess.py, default settings) to train on, or the one --run_dir's run used")
    p.add_argument("--external", type=Path, required=True, help="folder of outside WFDB records")
    p.add_argument("--labels", required=True, help="their labels: a CSV (1/0/blank per class) or the word dx")
    p.add_argument("--run_dir", type=Path, required=True, help="run dir to train into, or a finished run to reuse")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = trained(TrainConfig(data_dir=str(args.data_dir), ckpt_dir=str(args.run_dir)), "bench/external.py",
                      "--run_dir")
    out = args.run_dir / "external.csv"
    code = run_predict([args.run_dir / "best.pt"], args.external, out, device=args.device, labels=args.labels)
    outside = json.loads(metrics_path(out).read_text(encoding="utf-8"))
    print(side_by_side(metrics["test"], outside))
    return code


if __name__ == "__main__":
    sys.exit(run_cli(main))
