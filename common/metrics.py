"""Classification metrics from record probabilities, and the run's report: history.csv, curve PNGs, summary."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from common.datadir import atomic_file
from common.evaluate import per_record_loss
from common.labels import one_hot
from common.stats import auc_intervals

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_auc", "lr", "samples_backpropagated", "seconds",
                   "epoch_seconds", "samples_per_second", "train_records", "epoch_backpropagated",
                   "scoring_forward_samples")


def classes_without_both_labels(targets: np.ndarray, classes: list[str]) -> list[str]:
    """Classes whose column has no positive or no negative record: their AUC is undefined."""
    positives = targets.sum(axis=0)
    return [c for c, n in zip(classes, positives) if n == 0 or n == len(targets)]


def per_class_auc(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class; None for a class without both labels."""
    undefined = set(classes_without_both_labels(targets, classes))
    return {c: None if c in undefined else float(roc_auc_score(targets[:, k], probs[:, k]))
            for k, c in enumerate(classes)}


def macro(values: dict[str, float | None]) -> float | None:
    """Mean over the defined per-class values; None when none is defined."""
    defined = [v for v in values.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per-class probability threshold maximising F1 (tune on validation only); 0.5 where a class lacks labels."""
    thresholds = []
    for k in range(targets.shape[1]):
        if targets[:, k].min() == targets[:, k].max():
            thresholds.append(0.5)
            continue
        precision, recall, cuts = precision_recall_curve(targets[:, k], probs[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds.append(float(cuts[int(np.argmax(f1))]))
    return thresholds


def per_class_f1(predicted: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """F1 per class from 0/1 predictions (N, C); None for a class with no positive record."""
    tp = (predicted * targets).sum(axis=0)
    fp = (predicted * (1 - targets)).sum(axis=0)
    fn = ((1 - predicted) * targets).sum(axis=0)
    return {c: None if targets[:, k].sum() == 0 else float(2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]))
            for k, c in enumerate(classes)}


def summarise(probs: np.ndarray, y: np.ndarray, multilabel: bool, classes: list[str],
              thresholds: list[float] | None = None, intervals: bool = False) -> dict:
    """Metrics of one split: loss, macro/per-class AUC and F1, plus accuracy for single-label tasks.

    Multi-label F1 uses per-class `thresholds` (default 0.5; pass the ones tuned on validation for test);
    single-label F1 and accuracy use the argmax class. Classes without both labels are listed, AUC None.
    `intervals` adds 95 % bootstrap intervals of the AUCs (common.stats: 1,000 resamples of the records, seed 0).
    """
    targets = one_hot(y, len(classes), multilabel)
    aucs = per_class_auc(probs, targets, classes)
    out: dict = {
        "n_records": int(len(probs)),
        "loss": float(per_record_loss(probs, y, multilabel).mean()),
        "macro_auc": macro(aucs),
        "per_class_auc": aucs,
        "classes_without_both_labels": classes_without_both_labels(targets, classes),
    }
    if intervals:
        ci = auc_intervals(probs, targets, classes)
        out.update(macro_auc_ci95=ci["macro_auc"], per_class_auc_ci95=ci["per_class_auc"],
                   auc_ci95_bootstrap={"resamples": ci["resamples"], "seed": ci["seed"]})
    if multilabel:
        cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(classes))
        predicted = (probs >= cut).astype(np.float32)
        out["thresholds"] = [float(t) for t in cut]
    else:
        predicted = one_hot(probs.argmax(axis=1), len(classes), multilabel=False)
        out["accuracy"] = float((probs.argmax(axis=1) == y).mean())
    f1 = per_class_f1(predicted, targets, classes)
    out["macro_f1"] = macro(f1)
    out["per_class_f1"] = f1
    return out


def write_history_csv(path: str | Path, rows: list[dict]) -> None:
    """Write all epoch rows to history.csv atomically, so the file is always complete."""
    with atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot_history(path: str | Path, rows: list[dict]) -> None:
    """Save the loss, validation AUC and learning-rate curves per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_auc, ax_lr) = plt.subplots(1, 3, figsize=(14, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train: 1 random window/record, train mode")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], label="val: whole record (sliding windows), eval mode")
    ax_loss.set(title="loss (not comparable: measured differently)", xlabel="epoch")
    ax_loss.legend(fontsize=8)
    ax_auc.plot(epochs, [r["val_macro_auc"] for r in rows], color="tab:green")
    ax_auc.set(title="validation macro ROC AUC", xlabel="epoch")
    ax_lr.plot(epochs, [r["lr"] for r in rows], color="tab:red")
    ax_lr.set(title="learning rate (last batch of the epoch)", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc_curves(path: str | Path, probs: np.ndarray, y: np.ndarray, multilabel: bool, classes: list[str]) -> None:
    """Save one-vs-rest ROC curves of every class with both labels, AUC in the legend, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = one_hot(y, len(classes), multilabel)
    aucs = per_class_auc(probs, targets, classes)
    fig, ax = plt.subplots(figsize=(6, 6))
    for k, c in enumerate(classes):
        if aucs[c] is not None:
            fpr, tpr, _ = roc_curve(targets[:, k], probs[:, k])
            ax.plot(fpr, tpr, label=f"{c} (AUC {aucs[c]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    ax.set(title=f"ROC curves per class, {len(probs)} records", xlabel="false positive rate",
           ylabel="true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_summary(report: dict) -> str:
    """A few readable lines about a finished run, from its metrics.json content."""
    test, val = report["test"], report["val"]

    def number(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    ci = test.get("macro_auc_ci95")
    interval = f" (95 % CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    scoring = f", +{report['scoring_forward_samples']:,} scoring forward passes" \
        if report["scoring_forward_samples"] else ""
    members = report.get("members")
    first = (f"ensemble dir {report['ckpt_dir']}: mean of {len(members)} members (seeds "
             f"{' '.join(str(m['seed']) for m in members)}; member val macro AUC "
             f"{', '.join(number(m['val_macro_auc']) for m in members)})" if members else
             f"run dir {report['ckpt_dir']}: best epoch {report['best_epoch']} of {report['epochs']}")
    lines = [
        f"{first} (val macro AUC {number(val['macro_auc'])})",
        f"test macro AUC {number(test['macro_auc'])}{interval}, macro F1 {number(test['macro_f1'])}"
        + (f", accuracy {test['accuracy']:.3f}" if "accuracy" in test else " (thresholds tuned on val)"),
        "test per-class AUC: " + ", ".join(f"{c} {number(a)}" for c, a in test["per_class_auc"].items()),
        f"{report['samples_backpropagated']:,} samples back-propagated ({report['effective_epochs']:.1f} effective "
        f"epochs{scoring}), {report['samples_per_second']:.0f} samples/s, {report['wall_seconds'] / 60:.1f} min, "
        f"{report['n_params']:,} parameters",
    ]
    if test["classes_without_both_labels"]:
        lines.append("test classes without both labels (AUC n/a): " + ", ".join(test["classes_without_both_labels"]))
    return "\n".join(lines)
