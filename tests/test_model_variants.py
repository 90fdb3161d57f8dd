"""Every model the flags can build (width, stages, blocks, kernel size, dropout) goes through every PDD route: the
baseline, difficulty scoring and staged PDD, online DBPD, SRD and SMRD, and an ensemble of two seeds."""
import json
from pathlib import Path

import pytest

from common.ensemble import train_ensemble
from conftest import TINY_TRAIN, tiny_train_config, with_preprocess_meta
from experiments import pdd_experiment

pytestmark = pytest.mark.slow  # trains and re-scores whole runs: see pytest.ini

MODELS = {
    "deep narrow": {"width": 4, "stages": 4, "blocks": 2, "kernel_size": 3, "dropout": 0.0},
    "one wide stage": {"width": 12, "stages": 1, "blocks": 1, "kernel_size": 9, "dropout": 0.3},
}


@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
def test_every_pdd_route_and_an_ensemble_train_each_model(tiny_data_dir: Path, tmp_path: Path, model: dict) -> None:
    data = with_preprocess_meta(tiny_data_dir)
    flags = [f"--{k}={v}" for k, v in {**TINY_TRAIN, **model}.items()]
    out = tmp_path / "exp"
    pdd_experiment.main(["--data_dir", str(data), "--out_dir", str(out), "--seeds", "0", "--epochs", "3",
                         "--variants", "baseline", "staged", "dbpd", "srd", "smrd", *flags])
    for run in ("baseline/seed0", "staged/seed0/stage3", "dbpd/seed0", "srd/seed0", "smrd/seed0"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["model_hparams"] == {**metrics["model_hparams"], **model}, run
        test = metrics["test"]
        assert test["n_records"] == 48, run
        assert test["macro_auc"] == pytest.approx(sum(test["per_class_auc"].values()) / 3), run
    scores = json.loads((out / "staged" / "seed0" / "data" / "scored" / "difficulty.json").read_text())
    assert scores["n_train"] == 96
    report = train_ensemble(tiny_train_config(data, tmp_path / "ens", epochs=1, **model), [0, 1])
    assert report["n_params"] == 2 * metrics["n_params"] and report["model_hparams"] == metrics["model_hparams"]
