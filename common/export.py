"""Export a checkpoint as an ONNX window scorer plus a JSON sidecar holding everything another program needs to
score whole records the way predict.py does (onnx/onnxruntime: requirements-export.txt)."""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.augment import normalise
from common.checkpoint import load_model
from common.datadir import atomic_file, write_json_atomic
from common.evaluate import default_stride
from common.inference import Member, checkpoint_signal, decision_thresholds
from common.outputs import check_writable, new_folders, refuse_collisions, refuse_foreign

log = logging.getLogger("predict")

OPSET = 17
TOLERANCE = 1e-4
CHECK_WINDOWS = 8


OUTPUTS = ("logits", "probabilities")
AGGREGATION_TEXT = {
    "mean_logit": "mean of the windows' logits, then sigmoid (multi-label) or softmax (single-label)",
    "max_prob": "highest of the windows' probabilities",
    "mean_prob": "mean of the windows' probabilities",
}


class WindowScorer(nn.Module):
    """A checkpoint's model as one graph: raw windows (batch, leads, window) in the checkpoint's units -> class
    logits and probabilities (batch, classes), its per-lead normalisation and sigmoid (multi-label) or softmax
    inside; the checkpoint's aggregation says which of the two makes a record's probabilities."""

    def __init__(self, model: nn.Module, norm: dict, multilabel: bool):
        super().__init__()
        self.model, self.norm, self.multilabel = model, norm, multilabel

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(normalise(windows, self.norm))
        return logits, torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


def onnx_bytes(scorer: WindowScorer, leads: int, window: int) -> bytes:
    """The scorer as an ONNX model with a dynamic batch axis, by the TorchScript-based exporter (no network, and
    no onnxscript needed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation, and tracing its constants
        torch.onnx.export(scorer, (torch.zeros(2, leads, window),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["windows"], output_names=list(OUTPUTS),
                          dynamic_axes={name: {0: "batch"} for name in ("windows", *OUTPUTS)})
    return buffer.getvalue()


def check_with_onnxruntime(model: bytes, path: Path, scorer: WindowScorer, leads: int, window: int) -> dict:
    """Largest difference between onnxruntime's and PyTorch's logits and probabilities on random windows (3 mV scale),
    for the ONNX `model` before it is written to `path`; RuntimeError above TOLERANCE. Skipped, and said so, when
    onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        log.warning("warning: onnxruntime is not installed, so %s was not checked against PyTorch "
                    "(pip install -r requirements-export.txt)", path)
        return {"checked": False, "why": "onnxruntime not installed"}
    windows = np.random.default_rng(0).normal(scale=3.0, size=(CHECK_WINDOWS, leads, window)).astype(np.float32)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    ours = session.run(list(OUTPUTS), {"windows": windows})
    with torch.inference_mode():
        theirs = scorer(torch.from_numpy(windows))
    difference = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(ours, theirs))
    if difference > TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {difference:.2e} (more than {TOLERANCE:g})")
    return {"checked": True, "onnxruntime": onnxruntime.__version__, "windows": CHECK_WINDOWS,
            "max_abs_difference": difference}


def sidecar_names(sidecar_path: Path, onnx_path: Path) -> bool:
    """True when sidecar_path is the sidecar of an earlier export to onnx_path: the files --export may replace."""
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(sidecar, dict) and sidecar.get("model") == onnx_path.name and "onnx" in sidecar


def check_export_paths(ckpt_path: Path, onnx_path: Path, sidecar_path: Path) -> None:
    """ValueError, before any work, when the model or its sidecar cannot be written, would replace the checkpoint,
    its thresholds or each other, or would replace a file that is not an earlier export of the same name."""
    check_writable(onnx_path, "--export")
    check_writable(sidecar_path, "--export", "sidecar")
    refuse_collisions([("--export", "", onnx_path), ("--export", "sidecar", sidecar_path)],
                      [("--ckpt", ckpt_path), ("the thresholds file", ckpt_path.parent / "metrics.json")])
    earlier = sidecar_names(sidecar_path, onnx_path)
    refuse_foreign(onnx_path, "--export", "", lambda _: earlier, f"a model exported before (no sidecar {sidecar_path} "
                   "names it)")
    refuse_foreign(sidecar_path, "--export", "sidecar", lambda _: earlier, f"the sidecar of a model exported to "
                   f"{onnx_path}")


def export_onnx(ckpt_path: Path, onnx_path: Path) -> Path:
    """Write `onnx_path` and its sidecar (same name, .json), both atomically, the model renamed in only once it passed
    the onnxruntime check and its sidecar is written; return the sidecar's path."""
    sidecar_path = onnx_path.with_suffix(".json")
    check_export_paths(ckpt_path, onnx_path, sidecar_path)
    if importlib.util.find_spec("onnx") is None:
        raise ValueError("--export needs the onnx package: pip install -r requirements-export.txt")
    model, ckpt = load_model(ckpt_path)
    signal = checkpoint_signal(ckpt, ckpt_path)
    shape, multilabel, classes = ckpt["input_shape"], bool(ckpt["multilabel"]), list(ckpt["classes"])
    leads, window, fs = int(shape["leads"]), int(shape["window"]), float(shape["fs"])
    scorer = WindowScorer(model, ckpt["normalisation"], multilabel).eval()
    onnx_model = onnx_bytes(scorer, leads, window)
    check = check_with_onnxruntime(onnx_model, onnx_path, scorer, leads, window)
    thresholds, source = decision_thresholds([Member(ckpt_path, model, ckpt, signal)])
    stride = default_stride(window)
    sidecar = {
        "model": onnx_path.name,
        "checkpoint": str(ckpt_path),
        "input": {"name": "windows", "shape": ["batch", leads, window], "dtype": "float32",
                  "units": signal.get("units", "mV"),
                  "meaning": "raw windows in the leads' order below, after resampling and band-pass; "
                             "the normalisation is inside the model"},
        "output": {"names": list(OUTPUTS), "shape": ["batch", len(classes)],
                   "meaning": f"per-window class logits, and probabilities ({'sigmoid' if multilabel else 'softmax'} "
                              "of the logits, inside)"},
        "classes": classes,
        "multilabel": multilabel,
        "sampling_rate_hz": fs,
        "leads": list(signal["leads"]),
        "window": window,
        "stride": stride,
        "window_starts": f"0, {stride}, 2*{stride}, ... while a window fits, plus one window ending at the record's "
                         f"end; records shorter than {window} samples cannot be scored",
        "aggregation": ckpt["aggregation"],
        "aggregation_meaning": f"a record's probabilities: {AGGREGATION_TEXT[ckpt['aggregation']]}",
        "preprocessing": {
            "lead_names": "matched case-insensitively (aVR = AVR)",
            "resampling": f"polyphase (scipy.signal.resample_poly) to {fs:g} Hz, up/down ratio with denominator "
                          "at most 1000",
            "bandpass_hz": signal.get("bandpass_hz"),
            "bandpass": ("zero-phase 3rd-order Butterworth (scipy.signal.sosfiltfilt), after resampling"
                         if signal.get("bandpass_hz") else "none"),
        },
        "normalisation": {"mean": list(ckpt["normalisation"]["mean"]), "std": list(ckpt["normalisation"]["std"]),
                          "applied": "inside the model: (x - mean) / std per lead; feed raw values"},
        "thresholds": thresholds,
        "thresholds_source": source,
        "decision": ("a class is predicted when its aggregated probability is at least its threshold" if multilabel
                     else "the class of highest aggregated probability"),
        "onnx": {"opset": OPSET, "torch": str(torch.__version__), "check": check},
    }
    with new_folders(onnx_path.parent), atomic_file(onnx_path, "wb") as f:
        f.write(onnx_model)
        write_json_atomic(sidecar_path, sidecar)
    log.info("wrote %s (windows -> logits, probabilities) and %s; thresholds: %s", onnx_path, sidecar_path, source)
    return sidecar_path
