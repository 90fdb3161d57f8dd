"""Checkpoint files: atomic save, safe load (weights_only), compatibility checks, RNG state, model rebuild.

A checkpoint (last.pt, best.pt) is a dict of tensors and plain Python values:
  model, model_hparams, optimizer, scaler (None unless fp16 AMP), state (epoch, batches_done, epoch_loss_sum,
  epoch_samples, samples_backpropagated, elapsed_seconds, train_seconds, best_score, best_epoch, history),
  rng (torch, numpy, python, cuda), schedule_epochs, classes, task, multilabel, normalisation,
  input_shape (leads, length, fs, window), signal (lead names in channel order, units, filter), aggregation (of
  window logits per record: common.evaluate.aggregate), data_dir (relative to the run dir; as typed in older
  checkpoints), data_fingerprint, pdd_split_id (a PDD stage's
  easy/medium/hard split, else None; absent from older checkpoints), config, torch_version.
Checkpoints written before the aggregation entry load with the aggregation they were scored by (legacy_aggregation).
"""
from __future__ import annotations

import pickle
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.datadir import atomic_file
from common.errors import ConfigError
from common.evaluate import legacy_aggregation
from common.model import build_model


class CheckpointError(ConfigError):
    """A file given as a checkpoint is missing, unreadable or not one of ours; the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the data it is asked to continue on."""


REQUIRED_KEYS = ("model", "model_hparams", "classes", "multilabel", "normalisation", "input_shape")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save atomically (temporary file, then rename), so `path` is always a complete checkpoint."""
    with atomic_file(path, "wb") as f:
        torch.save(state, f)


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint file atomically (best.pt from a just-written last.pt)."""
    with atomic_file(dst, "wb") as f, open(src, "rb") as source:
        shutil.copyfileobj(source, f)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on CPU with weights_only=True (tensors and plain containers only, no code); any file
    that is not a complete checkpoint of this pipeline raises CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the last.pt or best.pt of a run dir")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols before failing on them
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = ("it refers to code (a pickled Python object), which is never loaded" if "GLOBAL" in str(e)
                  else "it is not a torch checkpoint")
        raise CheckpointError(f"{path} is not a usable checkpoint: {reason}") from None
    except Exception:  # random bytes raise whatever the unpickler trips over first
        raise CheckpointError(f"{path} is not a readable checkpoint: empty, truncated or not a torch file") from None
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED_KEYS):
        what = "a bare state_dict" if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor)
                                                                      for v in ckpt.values()) else "missing keys"
        raise CheckpointError(f"{path} is not a checkpoint of this pipeline ({what}); pass the last.pt or best.pt "
                              "that train_1d_baseline.py wrote")
    ckpt.setdefault("aggregation", legacy_aggregation(bool(ckpt["multilabel"])))
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"].setdefault("aggregation", ckpt["aggregation"])
    return ckpt


def check_compatible(ckpt: dict, path: str | Path, classes: list[str], input_shape: dict, fix: str) -> None:
    """Refuse a checkpoint whose classes or input shape (leads, length, fs, window) differ from the data's,
    naming the file, every difference with both values, and `fix`."""
    problems = []
    if list(ckpt["classes"]) != list(classes):
        problems.append(f"classes: checkpoint {list(ckpt['classes'])}, data {list(classes)}")
    for key, value in input_shape.items():
        if ckpt["input_shape"][key] != value:
            problems.append(f"{key}: checkpoint {ckpt['input_shape'][key]}, data {value}")
    if problems:
        raise CheckpointMismatchError(f"{path} does not match the data dir (" + "; ".join(problems) + f"); {fix}")


def load_model(ckpt_path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a checkpoint's model from its model_hparams, load its weights, move it to `device` in eval mode.

    Returns (model, ckpt); ckpt["normalisation"], ckpt["multilabel"], ckpt["input_shape"]["window"],
    ckpt["aggregation"] and ckpt["classes"] are what common.evaluate.predict needs to score new records.
    """
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(**ckpt["model_hparams"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def rng_state(device: torch.device) -> dict:
    """Global RNG states of torch, numpy, python and, training on CUDA, of this process's GPU only (so the file
    resumes wherever it goes), as tensors and plain lists (weights_only-safe)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, list(py_state), py_gauss],
    }


def restore_rng_state(state: dict, device: torch.device) -> None:
    """Inverse of rng_state(); a CUDA state is restored only when training on CUDA (older checkpoints kept one
    per visible GPU: the first is taken), and ignored on a CPU."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):
        cuda = cuda[0] if cuda else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
