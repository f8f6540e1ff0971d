"""DashFusion: fusion variants (Table V), ablations (Table IV), bottleneck schedule, padding,
missing modalities, the contrastive terms and the training loop's hard-negative sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msalign.cli import main
from msalign.config import TrainConfig, resolve_config
from msalign.data.synthetic import generate_synthetic
from msalign.errors import MsalignError
from msalign.losses.contrastive import label_classes
from msalign.models import create_model
from msalign.models.base import task_loss
from msalign.models.dashfusion import FUSIONS, BottleneckFusion
from msalign.models.registry import build_config
from msalign.training import RunSpec, train
from msalign.training.data import collate_rows
from msalign.training.mining import HardNegativeSampler
from support import train_two_epochs

TINY = {"width": 16, "heads": 4, "ff_width": 32}
ABLATIONS = {
    "no_temporal": {"temporal": False},
    "no_semantic": {"semantic": False},
    "no_scl": {"scl": False},
    "no_hbf": {"fusion": "concat"},
    "no_dual_stream": {"temporal": False, "semantic": False, "bottleneck_source": "learned"},
}


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, n_train=64, n_valid=32, n_test=32)


def batch(dataset, rows=range(12), modalities=("text", "audio", "vision")):
    return collate_rows(dataset.split("train"), tuple(modalities), np.asarray(list(rows), dtype=np.int64))


def model_for(dataset, modalities=("text", "audio", "vision"), output_dim=1, **overrides):
    torch.manual_seed(0)
    return create_model(
        "dashfusion", dims={m: dataset.dims[m] for m in modalities}, output_dim=output_dim, **{**TINY, **overrides}
    )


def sampler_for(model, dataset, seed=0):
    sampler = HardNegativeSampler(model.mining, dataset.split("train"), model.modalities, dataset.task, seed)
    sampler.refresh(model, torch.device("cpu"))
    return sampler


def step(model, b, contrast=None):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(b["features"], b["masks"], contrast=contrast)
    loss = task_loss(out.prediction, b["labels"], model.output_dim) + sum(out.aux_losses.values())
    loss.backward()
    assert torch.isfinite(loss)
    return out


def test_default_config_is_the_papers():
    c = build_config("dashfusion")
    assert (c.width, c.heads, c.bottleneck_tokens, c.fusion_layers, c.fusion) == (128, 8, 8, 2, "hbf")
    assert (c.contrastive_weight, c.temperature) == (0.2, 0.5)
    assert (c.positives, c.hard_negatives, c.easy_negatives, c.mining_refresh) == (2, 2, 2, 2)
    model = create_model("dashfusion", dims={"text": 768, "audio": 33, "vision": 709})
    assert model.head[0].in_features == 512  # 4 first tokens x 128 -> 256 -> 128 -> 1
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [256, 128, 1]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_variant_trains_with_contrast(data, fusion):
    model = model_for(data, fusion=fusion)
    b = batch(data)
    out = step(model, b, sampler_for(model, data).draw(b["index"], torch.device("cpu")))
    assert out.prediction.shape == (12,)
    assert set(out.diagnostics) == {
        "semantic_audio",
        "semantic_vision",
        "scl_text",
        "scl_audio",
        "scl_vision",
        "scl_aligned",
    }
    expected = 0.2 * sum(out.diagnostics.values())
    assert out.aux_losses["contrastive"].item() == pytest.approx(expected.item(), rel=1e-5)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_trains(data, name):
    model = model_for(data, **ABLATIONS[name])
    b = batch(data)
    contrast = sampler_for(model, data).draw(b["index"], torch.device("cpu")) if model.mining else None
    out = step(model, b, contrast)
    if name == "no_semantic":
        assert not any(k.startswith("semantic") for k in out.diagnostics)
    if name == "no_scl":
        assert model.mining is None and not any(k.startswith("scl") for k in out.diagnostics)
    if name in ("no_temporal", "no_dual_stream"):
        assert model.temporal is None


def test_no_temporal_alignment_means_h_is_the_text(data):
    model = model_for(data, temporal=False).eval()
    b = batch(data)
    encoded = model.encode(b["features"], b["masks"])
    torch.testing.assert_close(encoded.aligned, encoded.sequences["text"])
    with_temporal = model_for(data).eval().encode(b["features"], b["masks"])
    assert not torch.allclose(with_temporal.aligned, with_temporal.sequences["text"])


def test_eval_mode_has_no_aux_losses(data):
    model = model_for(data).eval()
    b = batch(data)
    assert model(b["features"], b["masks"]).aux_losses == {}


@pytest.mark.parametrize(
    "fusion, layers, sizes",
    [("hbf", 2, [8, 4]), ("hbf", 3, [8, 4, 2]), ("hbf", 5, [8, 4, 2, 1, 1]), ("bf", 3, [8, 8, 8])],
)
def test_bottleneck_schedule(data, fusion, layers, sizes):
    model = model_for(data, fusion=fusion, fusion_layers=layers)
    assert isinstance(model.fusion, BottleneckFusion) and model.fusion.sizes == sizes
    model.eval()
    seen = []
    hooks = [g.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1])) for g in model.fusion.gather]
    b = batch(data)
    model(b["features"], b["masks"])
    for h in hooks:
        h.remove()
    assert seen == sizes


def test_learned_bottleneck_does_not_read_the_aligned_sequence_at_level_one(data):
    model = model_for(data, bottleneck_source="learned", fusion_layers=1).eval()
    b = batch(data)
    encoded = model.encode(b["features"], b["masks"])
    changed = type(encoded)(encoded.sequences, encoded.masks, encoded.aligned + 5.0, encoded.aligned_mask)
    torch.testing.assert_close(model.fusion(encoded)[0][0], model.fusion(changed)[0][0])


@pytest.mark.parametrize("fusion, summary", [(f, "first") for f in FUSIONS] + [("hbf", "mean"), ("concat_sa", "mean")])
def test_padding_does_not_change_predictions(data, fusion, summary):
    model = model_for(data, fusion=fusion, summary=summary).eval()
    b = batch(data)
    padded = {m: torch.cat([x, torch.randn(x.shape[0], 7, x.shape[2])], dim=1) for m, x in b["features"].items()}
    masks = {m: torch.cat([x, torch.zeros(x.shape[0], 7, dtype=torch.bool)], dim=1) for m, x in b["masks"].items()}
    torch.testing.assert_close(
        model(padded, masks).prediction, model(b["features"], b["masks"]).prediction, atol=1e-5, rtol=1e-5
    )


def test_text_and_utterance_audio_only(data):
    """MOSI's shape: text tokens + one audio vector per clip, no vision."""
    model = create_model("dashfusion", dims={"text": data.dims["text"], "audio": 73}, **TINY)
    b = batch(data, modalities=("text",))
    b["features"]["audio"] = torch.randn(12, 1, 73)
    b["masks"]["audio"] = torch.ones(12, 1, dtype=torch.bool)
    out = step(model, b)
    assert "semantic_audio" in out.diagnostics and "semantic_vision" not in out.diagnostics
    assert model.head[0].in_features == 3 * 16


def test_text_is_required(data):
    with pytest.raises(MsalignError, match="needs modality"):
        create_model("dashfusion", dims={"audio": 8, "vision": 12})
    with pytest.raises(MsalignError, match="fusion 'sum'"):
        create_model("dashfusion", dims={"text": 8, "audio": 8}, fusion="sum")


def test_too_long_sequence_is_a_clear_error(data):
    model = model_for(data, max_length=10).eval()
    b = batch(data)
    with pytest.raises(MsalignError, match=r"audio sequence of length .* exceeds max_length 10"):
        model(b["features"], b["masks"])


def test_mined_samples_carry_gradient(data):
    """SCL encodes the mined samples with the same encoders: their loss reaches the audio encoder
    even when only SCL is on."""
    model = model_for(data, semantic=False)
    b = batch(data)
    contrast = sampler_for(model, data).draw(b["index"], torch.device("cpu"))
    model.train()
    out = model(b["features"], b["masks"], contrast=contrast)
    out.aux_losses["contrastive"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.encoders["audio"].parameters()) > 0


def test_sampler_draws_the_right_classes(data):
    model = model_for(data)
    sampler = sampler_for(model, data)
    anchors = torch.arange(len(data.split("train")))
    contrast = sampler.draw(anchors, torch.device("cpu"))
    classes = label_classes(torch.as_tensor(data.split("train").labels))
    rows = torch.stack([sampler.pools.positives, sampler.pools.hard, sampler.pools.easy])
    assert rows.shape[1] == len(anchors)
    # rebuild the drawn rows from the features: each mined clip is looked up by its text features
    text = torch.as_tensor(data.split("train").features["text"])
    drawn = contrast.features["text"].reshape(len(anchors), 6, *contrast.features["text"].shape[1:])
    for i in range(0, len(anchors), 7):
        for k in range(6):
            if not contrast.valid[i, k]:
                continue
            length = drawn.shape[2]
            match = (text[:, :length] == drawn[i, k]).all(dim=(1, 2)).nonzero().flatten()
            assert len(match) == 1
            same = bool(classes[match[0]] == classes[i])
            assert same == bool(contrast.positive[i, k]), (i, k)
            assert int(match[0]) != i


def test_sampler_refresh_schedule(data):
    model = model_for(data)
    sampler = HardNegativeSampler(model.mining, data.split("train"), model.modalities, data.task, 0)
    assert sampler.due(0)
    sampler.refresh(model, torch.device("cpu"))
    assert [sampler.due(e) for e in (1, 2, 3, 4)] == [False, True, False, True]


def test_train_end_to_end_with_sampler(data, tmp_path):
    results = train_two_epochs("dashfusion", build_config("dashfusion", TINY), data, tmp_path)
    history = json.loads((tmp_path / "seed_0" / "history.json").read_text())
    assert {"train/task", "train/contrastive", "diag/scl_aligned", "diag/semantic_audio"} <= set(history[0])
    assert np.isfinite(results.mean["MAE"])


def test_same_seed_same_results(data, tmp_path):
    model_config = build_config("dashfusion", TINY)
    train_config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, patience=2, threads=1, accelerator="cpu")
    first = train(RunSpec("dashfusion", model_config, train_config, [3], tmp_path / "a"), data, False, lambda *a: None)
    second = train(RunSpec("dashfusion", model_config, train_config, [3], tmp_path / "b"), data, False, lambda *a: None)
    assert first.mean == second.mean


# the variants trained on real MOSI; the synthetic runs also try summary=mean
MOSI_VARIANTS = [
    "fusion=hbf",
    "fusion=bf",
    "fusion=ca",
    "fusion=concat_sa",
    "fusion=concat",
    "temporal=false",
    "semantic=false",
    "scl=false",
    "bottleneck_source=learned",
]
CLI_VARIANTS = [*MOSI_VARIANTS, "summary=mean"]


@pytest.mark.parametrize("variant", CLI_VARIANTS)
def test_cli_variants_train_on_synthetic(tmp_path, variant):
    spec = "synthetic:n_train=48,n_valid=24,n_test=24"
    args = [
        "train",
        "--model",
        "dashfusion",
        "--dataset",
        spec,
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--set",
        "width=16",
        "heads=4",
        "ff_width=32",
        variant,
    ]
    assert main(args) == 0
    key, value = variant.split("=")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert str(saved["config"]["model"][key]).lower() == value and np.isfinite(saved["mean"]["MAE"])


@pytest.mark.parametrize("variant", MOSI_VARIANTS)
def test_real_mosi_text_and_audio(tmp_path, mosi_dir, mosi_cache, variant):
    """Every variant on real MOSI, which has text and utterance-level audio and no vision."""
    args = [
        "train",
        "--model",
        "dashfusion",
        "--dataset",
        str(mosi_dir),
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--cache-dir",
        str(mosi_cache),
        "--set",
        "train.max_train_batches=4",
        "width=32",
        "heads=4",
        variant,
    ]
    assert main(args) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert np.isfinite(saved["mean"]["MAE"])


@pytest.mark.parametrize(
    "key, expected",
    [
        ("mosi", {"batch_size": 16, "fusion_layers": 2, "encoder_layers": 1}),
        ("sims", {"batch_size": 16}),
        ("mosei", {"fusion_layers": 3, "encoder_layers": 3, "batch_size": 8}),
    ],
)
def test_dataset_configs(key, expected):
    model_config, train_config = resolve_config("dashfusion", build_config("dashfusion"), [key])
    for name, value in expected.items():
        assert getattr(model_config if hasattr(model_config, name) else train_config, name) == value
