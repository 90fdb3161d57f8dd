"""experiments/recipe_search.py: validation-only table of recipes, one member and ensembles of the first k, reusing
runs; a recipe's folder is an ensemble dir that train_1d_baseline.py --seeds evaluates without retraining."""
import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.checkpoint import load_model
from common.ensemble import train_ensemble
from common.evaluate import predict_as_trained
from conftest import TINY_TRAIN, tiny_train_config
from experiments import recipe_search

FLAGS = [f"--{k}={v}" for k, v in {**TINY_TRAIN, "lr": 3e-4}.items()]  # slow: models stay imperfect


@pytest.mark.slow
def test_table_of_members_and_ensembles_on_validation_then_the_ensemble_command_reuses_them(tiny_data_dir, tmp_path,
                                                                                             capsys):
    out = tmp_path / "search"
    markdown = recipe_search.main(["--data_dir", str(tiny_data_dir), "--out_dir", str(out), "--recipes", "e10",
                                   "--seeds", "0", "2", "--table", str(tmp_path / "table.md"), *FLAGS])
    rows = {row["members"]: row for row in csv.DictReader(open(out / "results.csv"))}
    X_val, y_val = np.load(tiny_data_dir / "X_val.npy"), np.load(tiny_data_dir / "y_val.npy")
    probs = []
    for seed in (0, 2):
        model, ckpt = load_model(out / "e10" / f"seed{seed}" / "best.pt")
        probs.append(predict_as_trained(model, ckpt, X_val))
    aucs = [np.mean([roc_auc_score(y_val[:, k], p[:, k]) for k in range(3)]) for p in (*probs, np.mean(probs, 0))]
    assert float(rows["1"]["val_macro_auc"]) == pytest.approx(np.mean(aucs[:2]), abs=1e-6)
    assert float(rows["2"]["val_macro_auc"]) == pytest.approx(aucs[2], abs=1e-6)
    assert rows["2"]["seeds"] == "0 2" and rows["1"]["seeds"] == "0 2"
    assert (tmp_path / "table.md").read_text() == markdown + "\n" and "| ≤ 45 min | e10 |" in markdown
    mtime = (out / "e10" / "seed0" / "best.pt").stat().st_mtime_ns
    capsys.readouterr()
    recipe_search.main(["--data_dir", str(tiny_data_dir), "--out_dir", str(out), "--recipes", "e10", "--seeds", "0",
                        *FLAGS])
    assert "finished earlier with these settings" in capsys.readouterr().out
    report = train_ensemble(tiny_train_config(tiny_data_dir, out / "e10", epochs=10, lr=3e-4), [0, 2])
    assert (out / "e10" / "seed0" / "best.pt").stat().st_mtime_ns == mtime
    assert report["val"]["macro_auc"] == pytest.approx(aucs[2], abs=1e-6)


def test_the_default_recipes_are_recipes(tiny_data_dir, tmp_path):
    args, base = recipe_search.parse_args(["--data_dir", str(tiny_data_dir), "--out_dir", str(tmp_path / "s")])
    assert args.recipes == ["e15", "e20"]
    assert [recipe_search.recipe_config(base, r, args.out_dir).epochs for r in args.recipes] == [15, 20]
