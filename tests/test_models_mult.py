"""MulT: training steps for M = 2 and M = 3, padding invariance, dropping padding is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import msalign.models.attention as attention_module
from msalign.data.synthetic import generate_synthetic
from msalign.errors import MsalignError
from msalign.models import create_model
from msalign.models.base import task_loss
from msalign.training.data import collate_rows
from support import set_packing

TINY = {"width": 16, "heads": 4, "layers": 1, "self_layers": 1}


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, n_train=64, n_valid=32, n_test=32)


def batch(dataset, modalities, rows=range(16)):
    return collate_rows(dataset.split("train"), tuple(modalities), np.asarray(list(rows), dtype=np.int64))


def model_for(dataset, modalities, output_dim=1, **overrides):
    torch.manual_seed(0)
    return create_model(
        "mult", dims={m: dataset.dims[m] for m in modalities}, output_dim=output_dim, **{**TINY, **overrides}
    )


@pytest.mark.parametrize("modalities", [("text", "audio"), ("text", "vision"), ("text", "audio", "vision")])
def test_trains_a_step(data, modalities):
    model = model_for(data, modalities).train()
    b = batch(data, modalities)
    out = model(b["features"], b["masks"])
    assert out.prediction.shape == (16,) and out.aux_losses == {}
    loss = task_loss(out.prediction, b["labels"], 1)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_utterance_level_audio(data):
    """Audio as one vector per clip (a length-1 sequence), as in the real MOSI folder."""
    torch.manual_seed(0)
    model = create_model("mult", dims={"text": data.dims["text"], "audio": 73}, **TINY).train()
    b = batch(data, ("text",))
    b["features"]["audio"] = torch.randn(16, 1, 73)
    b["masks"]["audio"] = torch.ones(16, 1, dtype=torch.bool)
    out = model(b["features"], b["masks"])
    task_loss(out.prediction, b["labels"], 1).backward()
    assert torch.isfinite(out.prediction).all()


def test_classification_logits():
    dataset = generate_synthetic(seed=0, n_train=32, n_valid=16, n_test=16, task="classification")
    model = model_for(dataset, ("text", "audio", "vision"), output_dim=6).eval()
    b = batch(dataset, ("text", "audio", "vision"), range(8))
    with torch.no_grad():
        assert model(b["features"], b["masks"]).prediction.shape == (8, 6)


def test_one_modality_is_refused(data):
    with pytest.raises(MsalignError, match="at least 2"):
        create_model("mult", dims={"text": data.dims["text"]}, **TINY)


@pytest.mark.parametrize("modalities", [("text", "audio"), ("text", "audio", "vision")])
def test_padding_does_not_change_predictions(data, modalities):
    model = model_for(data, modalities).eval()
    b = batch(data, modalities)
    assert any(not bool(m.all()) for m in b["masks"].values())
    generator = torch.Generator().manual_seed(0)
    noisy = {
        m: torch.where(b["masks"][m].unsqueeze(-1), x, 100 * torch.randn(x.shape, generator=generator))
        for m, x in b["features"].items()
    }
    with torch.no_grad():
        clean = model(b["features"], b["masks"]).prediction
        scrambled = model(noisy, b["masks"]).prediction
    torch.testing.assert_close(clean, scrambled, atol=1e-5, rtol=1e-5)


def test_dropping_padding_is_exact(data, monkeypatch):
    """Packed queries and length groups give the plain padded batch's predictions."""
    model = model_for(data, ("text", "audio", "vision"), layers=2).eval()
    b = batch(data, ("text", "audio", "vision"), range(32))
    encoders = [*model.transformer.crossmodal.values(), *model.transformer.memory.values()]

    def run(pack: bool, groups: bool):
        set_packing(monkeypatch, encoders, (attention_module,), pack=pack, groups=groups)
        with torch.no_grad():
            return model(b["features"], b["masks"]).prediction

    plain = run(False, False)
    for pack, groups in ((True, False), (False, True), (True, True)):
        torch.testing.assert_close(run(pack, groups), plain, atol=1e-5, rtol=1e-5)
