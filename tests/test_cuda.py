"""What only a CUDA machine can check (bench/gpu_check.py runs these there); skipped without CUDA."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint, load_model
from common.config import TrainConfig
from common.data import TrainBatches
from common.evaluate import predict
from common.train import train
from conftest import TINY_TRAIN

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_check.py)")


def test_gpu_training_resumes_on_a_cpu_and_scores_alike_on_both(tiny_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(tiny_data_dir), ckpt_dir=str(run), epochs=3, device="cuda", augment=True,
                      **TINY_TRAIN)
    assert train(TrainConfig(**{**cfg.__dict__, "stop_after_epoch": 2})) is None
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["rng"]["cuda"] is not None and not isinstance(ckpt["rng"]["cuda"], list)
    report = train(TrainConfig(**{**cfg.__dict__, "device": "cpu", "resume": str(run / "last.pt")}))
    assert report["epochs"] == 3
    X = np.load(tiny_data_dir / "X_test.npy")
    model, ckpt = load_model(run / "best.pt")
    on_cpu = predict(model, X, ckpt["normalisation"], True, ckpt["input_shape"]["window"])
    on_gpu = predict(model.to("cuda"), X, ckpt["normalisation"], True, ckpt["input_shape"]["window"], device="cuda")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5)


def test_device_batches_are_seeded_windows_on_the_gpu(tiny_data_dir: Path) -> None:
    X, y = np.load(tiny_data_dir / "X_train.npy"), np.load(tiny_data_dir / "y_train.npy")
    norm = {"mean": [0.0] * 12, "std": [1.0] * 12}
    batches = TrainBatches(X, y, norm, 100, 50.0, True, 0, 0, torch.device("cuda"), "device")
    x, target = batches.get_batch(1, 2, np.arange(10))
    assert x.device.type == "cuda" and x.shape == (10, 12, 100) and target.device.type == "cuda"
    assert torch.equal(batches.get_batch(1, 2, np.arange(10))[0], x)


def test_cuda_graph_steps_train_like_eager_steps(tiny_data_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for graphs in ("auto", "off"):
        cfg = TrainConfig(data_dir=str(tiny_data_dir), ckpt_dir=str(tmp_path / graphs), epochs=2, device="cuda",
                          amp="off", cuda_graphs=graphs, **TINY_TRAIN)
        runs[graphs] = (train(cfg), load_checkpoint(tmp_path / graphs / "last.pt")["model"])
    for name, tensor in runs["auto"][1].items():
        torch.testing.assert_close(tensor, runs["off"][1][name], rtol=1e-3, atol=1e-4, msg=name)
    assert runs["auto"][0]["samples_backpropagated"] == runs["off"][0]["samples_backpropagated"] == 2 * 96
