"""textalign: the uniformity loss against its closed form, straight-through top-k token selection,
and training (synthetic data, the ablations, classification). Image-text and extracted datasets
with descriptions are trained in tests/test_describe_rules.py."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from msalign.config import TrainConfig
from msalign.data.synthetic import generate_synthetic
from msalign.errors import MsalignError
from msalign.losses.uniformity import uniformity_loss
from msalign.models import create_model
from msalign.models.base import task_loss
from msalign.models.registry import build_config
from msalign.models.textalign import straight_through_top_k
from msalign.training import RunSpec, train
from msalign.training.checkpoint import read_checkpoint_meta
from msalign.training.data import collate_rows
from support import train_two_epochs

TINY = {"width": 16, "heads": 4, "head_hidden": 16, "top_k": 5}
ABLATIONS = {
    "full": {},
    "no_token_selection": {"token_selection": False},
    "no_uniformity": {"uniformity": False},
    "neither": {"token_selection": False, "uniformity": False},
}


# -- uniformity loss --------------------------------------------------------------------------------


def brute_force_uniformity(x: torch.Tensor, t: float) -> float:
    z = torch.nn.functional.normalize(x.double(), dim=-1)
    terms = [math.exp(-t * float(((z[i] - z[j]) ** 2).sum())) for i, j in itertools.combinations(range(len(z)), 2)]
    return math.log(sum(terms) / len(terms))


def test_uniformity_closed_form_by_hand():
    # two orthogonal unit vectors: ||z1 - z2||^2 = 2, one pair -> log exp(-2t) = -2t
    two = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # lengths do not matter: rows are normalised
    for t in (0.5, 2.0, 3.0):
        assert uniformity_loss(two, t).item() == pytest.approx(-2 * t, abs=1e-6)
    # (1,0), (0,1), (-1,0): squared distances 2, 4, 2
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert uniformity_loss(three, 2.0).item() == pytest.approx(expected, abs=1e-6)
    # all rows equal: every potential is 1 -> log 1 = 0, the maximum
    assert uniformity_loss(torch.ones(5, 3), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # a regular simplex (4 points in 3-d, ||z_i - z_j||^2 = 2B/(B-1) = 8/3) reaches the minimum for B = 4
    simplex = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    assert uniformity_loss(simplex, 2.0).item() == pytest.approx(-2 * 8 / 3, abs=1e-5)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_matches_brute_force_loop(t):
    torch.manual_seed(0)
    for b, d in [(2, 3), (7, 5), (16, 8)]:
        x = torch.randn(b, d)
        assert uniformity_loss(x, t).item() == pytest.approx(brute_force_uniformity(x, t), abs=1e-5)
    # already-normalised input with normalize=False gives the same value
    x = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    assert uniformity_loss(x, t, normalize=False).item() == pytest.approx(uniformity_loss(x, t).item(), abs=1e-6)


def test_uniformity_decreases_as_features_spread_and_its_gradient_spreads_them():
    # 8 points on an arc of the unit circle, arc length growing from 0.1 rad to the full circle
    values = []
    for spread in np.linspace(0.1, 1.0, 10):
        angles = torch.arange(8, dtype=torch.float64) * spread * 2 * math.pi / 8
        values.append(uniformity_loss(torch.stack([angles.cos(), angles.sin()], dim=1), 2.0).item())
    assert all(a > b for a, b in itertools.pairwise(values)), values
    # gradient descent on the loss alone pushes clustered features apart
    torch.manual_seed(0)
    x = (torch.randn(1, 4) + 0.05 * torch.randn(12, 4)).requires_grad_()
    before = uniformity_loss(x, 2.0).item()
    optimizer = torch.optim.SGD([x], lr=5.0)
    for _ in range(100):
        optimizer.zero_grad()
        uniformity_loss(x, 2.0).backward()
        optimizer.step()
    assert uniformity_loss(x, 2.0).item() < before - 1.0
    assert torch.isfinite(x.grad).all()


def test_uniformity_edge_cases():
    assert uniformity_loss(torch.randn(1, 4), 2.0).item() == 0.0
    x = torch.zeros(3, 4, requires_grad=True)  # zero rows: finite value and gradient
    loss = uniformity_loss(x, 2.0)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(x.grad).all()
    with pytest.raises(MsalignError, match="temperature"):
        uniformity_loss(torch.randn(3, 2), 0.0)
    with pytest.raises(MsalignError, match=r"\(B, D\)"):
        uniformity_loss(torch.randn(3, 2, 2))


# -- token selection -------------------------------------------------------------------------------


def test_top_k_keeps_exactly_k_real_tokens_and_never_padding():
    torch.manual_seed(0)
    lengths = torch.tensor([10, 6, 3, 1, 12])
    mask = torch.arange(12)[None, :] < lengths[:, None]
    scores = torch.randn(5, 12)
    scores[~mask] = 100.0  # padding scores highest: still never selected
    for k in (1, 3, 6, 12, 20):
        gate, hard = straight_through_top_k(scores, mask, k)
        assert torch.equal(hard.sum(dim=1), torch.minimum(lengths, torch.tensor(k)).float())
        assert not hard[~mask].any()
        assert torch.equal(gate, hard)  # the forward value is the hard selection
        assert set(hard.unique().tolist()) <= {0.0, 1.0}
        # the kept tokens are the k best-scoring real ones
        for row in range(5):
            real = scores[row, : lengths[row]]
            kept = real[hard[row, : lengths[row]].bool()]
            if len(kept) < len(real):
                assert kept.min() >= real[~hard[row, : lengths[row]].bool()].max()


def test_top_k_passes_gradients_to_the_scorer():
    torch.manual_seed(0)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    scores = torch.randn(2, 8, requires_grad=True)
    values = torch.randn(2, 8)
    gate, _ = straight_through_top_k(scores, mask, 3)
    (gate * values).sum().backward()
    grad = scores.grad
    assert (grad[mask] != 0).all()  # selected AND unselected real tokens learn
    assert (grad[~mask] == 0).all()  # padding gets nothing
    soft = torch.sigmoid(scores.detach())
    assert torch.allclose(grad[mask], (values * soft * (1 - soft))[mask])  # the soft gate's gradient
    # through the model: the scorer's weights get a gradient from the task loss
    data = generate_synthetic(seed=0, n_train=16, n_valid=8, n_test=8)
    b = collate_rows(data.split("train"), ("text",), np.arange(12))
    model = create_model("textalign", dims={"text": data.dims["text"]}, **TINY)
    out = model(b["features"], b["masks"])
    task_loss(out.prediction, b["labels"], 1).backward()
    assert model.scorer.weight.grad.abs().sum() > 0
    lengths = b["masks"]["text"].sum(dim=1).float()
    expected = torch.minimum(lengths, torch.tensor(5.0)).sum() / lengths.sum()
    assert out.diagnostics["selected_fraction"].item() == pytest.approx(expected.item())


# -- the model -------------------------------------------------------------------------------------


def test_config_and_registry():
    c = build_config("textalign")
    assert (c.token_selection, c.uniformity, c.uniformity_t, c.top_k) == (True, True, 2.0, 16)
    with pytest.raises(MsalignError, match="top_k"):
        build_config("textalign", {"top_k": 0})
    model = create_model("textalign", dims={"text": 384, "audio": 73}, output_dim=3)
    assert model.modalities == ("text",)  # descriptions reach it through the text
    with pytest.raises(MsalignError, match="needs modality"):
        create_model("textalign", dims={"audio": 73})


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, n_train=96, n_valid=32, n_test=32)


@pytest.mark.parametrize("name", ABLATIONS)
def test_textalign_and_its_ablations_train_on_synthetic(data, name, tmp_path):
    torch.set_num_threads(1)
    model_config = build_config("textalign", {**TINY, **ABLATIONS[name]})
    results = train_two_epochs("textalign", model_config, data, tmp_path)
    assert np.isfinite(results.mean["MAE"])
    history = json.loads((tmp_path / "seed_0" / "history.json").read_text())
    assert ("train/uniformity" in history[0]) == model_config.uniformity
    assert ("diag/selected_fraction" in history[0]) == model_config.token_selection


def test_textalign_classification(tmp_path):
    data = generate_synthetic(seed=1, n_train=64, n_valid=24, n_test=24, task="classification", num_classes=3)
    model_config = build_config("textalign", TINY)
    train_config = TrainConfig(epochs=1, batch_size=16, threads=1, accelerator="cpu")
    results = train(
        RunSpec("textalign", model_config, train_config, seeds=[0], out_dir=tmp_path),
        data,
        progress=False,
        log=lambda *a: None,
    )
    assert 0 <= results.mean["WAcc"] <= 1
    assert {"WAcc", "WAF1"} <= set(results.mean)  # scored as classification
    assert read_checkpoint_meta(tmp_path / "seed_0" / "model.safetensors").output_dim == 3  # a 3-class head
