"""Test-time modality ablation: a model that ignores a modality loses nothing when it is permuted."""

import json

import numpy as np
import pytest
import torch

from msalign.cli import main
from msalign.data.synthetic import generate_synthetic
from msalign.evaluation.ablation import _with_modality, modality_contribution
from msalign.models.base import ModelOutput, MSAModel


class TextOnlyProbe(MSAModel):
    """Predicts from the text features alone while declaring audio too."""

    name = "probe"

    def __init__(self, dims):
        super().__init__(None, dims, 1)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, features, masks):
        text = (features["text"] * masks["text"].unsqueeze(-1)).sum(dim=(1, 2))
        return ModelOutput(self.scale * text)


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, n_train=40, n_valid=20, n_test=30)


def test_ignored_modality_costs_nothing_and_used_one_does(data):
    model = TextOnlyProbe({"text": data.dims["text"], "audio": data.dims["audio"]})
    results = modality_contribution(model, data.select_modalities(("text", "audio")), "test", repeats=2)
    assert results["audio/permute"]["MAE"] == pytest.approx(results["full"]["MAE"])
    assert results["audio/mean"]["MAE"] == pytest.approx(results["full"]["MAE"])
    assert results["text/permute"]["MAE"] != pytest.approx(results["full"]["MAE"])


def test_permutation_keeps_rows_whole_and_mean_keeps_masks(data):
    split = data.split("test")
    rng = np.random.default_rng(0)
    mean = np.full(data.dims["audio"], 7.0, dtype=np.float32)
    permuted = _with_modality(split, "audio", "permute", rng, mean)
    assert sorted(map(tuple, permuted.lengths["audio"][:, None])) == sorted(map(tuple, split.lengths["audio"][:, None]))
    assert np.allclose(
        np.sort(permuted.features["audio"].sum(axis=(1, 2))), np.sort(split.features["audio"].sum(axis=(1, 2)))
    )
    filled = _with_modality(split, "audio", "mean", rng, mean)
    assert (filled.features["audio"][split.mask("audio")] == 7.0).all()
    assert (filled.features["audio"][~split.mask("audio")] == 0.0).all()
    assert filled.features["text"] is split.features["text"]


def test_cli_modality_ablation(tmp_path, capsys):
    spec = "synthetic:n_train=40,n_valid=20,n_test=20"
    assert main(["train", "--model", "late_fusion", "--dataset", spec, "--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "seed_1111" / "model.safetensors"),
                "--dataset",
                spec,
                "--modality-ablation",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {"full", "audio/permute", "vision/mean", "text/permute"} <= set(out["modality_ablation"])
