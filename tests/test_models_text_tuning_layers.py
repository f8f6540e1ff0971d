"""train.finetune_layers=k: the top k layers tuned over cached lower-layer states (models/text_tuning.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from msalign.config import TrainConfig
from msalign.data import load_dataset
from msalign.errors import MsalignError
from msalign.models import build_config, create_model
from msalign.models.text_tuning import (
    TopLayersTextEncoder,
    TunedTextEncoder,
    attach_text_encoder,
    model_inputs,
)
from msalign.training import RunSpec, train
from msalign.training.checkpoint import load_checkpoint
from msalign.training.data import collate_rows, eval_loader
from msalign.training.module import MSALightningModule, predict_split
from support import write_review_folder

WORDS = [
    "great",
    "awful",
    "fine",
    "boring",
    "lovely",
    "bad",
    "superb",
    "dull",
    "the",
    "movie",
    "was",
    "really",
    "and",
    "long",
    "plot",
    "acting",
]
SENTENCES = [
    "the movie was really great",
    "awful",
    "the plot was boring and long and dull",
    "lovely acting",
    "bad bad movie the plot",
]


def _tiny_encoder(folder, kind: str, layers: int = 4):
    """A random 32-wide BERT or MPNet with a word-level tokenizer, saved as a local HF folder."""
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        MPNetConfig,
        MPNetModel,
    )

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    shape = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.2,
        "attention_probs_dropout_prob": 0.2,
        "pad_token_id": 0,
    }
    torch.manual_seed(0)
    model = BertModel(BertConfig(**shape)) if kind == "bert" else MPNetModel(MPNetConfig(**shape))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def tiny(request, tmp_path_factory):
    return str(_tiny_encoder(tmp_path_factory.mktemp(request.param) / "enc", request.param))


def _reference(encoder: str, k: int, standardize) -> TunedTextEncoder:
    """The end-to-end encoder with everything below the top k layers frozen and in eval mode."""
    reference = TunedTextEncoder(encoder, 16, standardize)
    transformer = reference.transformer
    layers = transformer.encoder.layer
    top = {id(p) for layer in layers[len(layers) - k :] for p in layer.parameters()}
    for p in transformer.parameters():
        p.requires_grad_(id(p) in top)
    transformer.embeddings.eval()
    for layer in layers[: len(layers) - k]:
        layer.eval()
    return reference


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("train_mode", [False, True])
def test_cached_top_layers_equal_end_to_end_tuning(tiny, tmp_path, k, train_mode):
    rng = np.random.default_rng(k)
    standardize = {"mean": rng.normal(size=32).tolist(), "std": rng.uniform(0.5, 2, size=32).tolist()}
    reference = _reference(tiny, k, standardize)
    cached = TopLayersTextEncoder(tiny, 16, k, standardize, cache_dir=str(tmp_path))
    cached.prefill([*SENTENCES, "lovely"])  # states computed in other batches than the training batch
    cached.train(train_mode)
    if not train_mode:
        reference.eval()
    weights = torch.randn(len(SENTENCES), 1, 32)

    outputs, grads = [], []
    for encoder, layers in ((reference, reference.transformer.encoder.layer[-k:]), (cached, cached.top.encoder.layer)):
        torch.manual_seed(7)  # the same dropout masks in the top layers (the lower ones never drop out)
        features, mask = encoder(SENTENCES)
        (features * weights).sum().backward()
        outputs.append((features.detach(), mask))
        grads.append([p.grad.clone() for p in layers.parameters()])
    (f_ref, m_ref), (f_cached, m_cached) = outputs
    assert torch.equal(m_ref, m_cached)
    assert not f_cached[~m_cached].any()
    torch.testing.assert_close(f_cached, f_ref, atol=1e-5, rtol=1e-5)
    assert len(grads[0]) == len(grads[1]) and any(g.abs().sum() > 0 for g in grads[1])
    for g_ref, g_cached in zip(*grads, strict=True):
        torch.testing.assert_close(g_cached, g_ref, atol=1e-5, rtol=1e-5)
    # only the top layers train: nothing below them has a trainable parameter
    trainable = {n for n, p in cached.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("top.encoder.layer.") for n in trainable)
    assert {n.split(".")[3] for n in trainable} == {str(i) for i in range(k)}


def test_lower_states_are_cached_on_disk_and_reused(tmp_path):
    encoder = str(_tiny_encoder(tmp_path / "enc", "bert"))
    first = TopLayersTextEncoder(encoder, 16, 2, cache_dir=str(tmp_path / "cache"))
    first.prefill(SENTENCES)
    shards = list((tmp_path / "cache" / "text").rglob("*.npz"))
    assert shards
    second = TopLayersTextEncoder(encoder, 16, 2, cache_dir=str(tmp_path / "cache"))
    second.lower._load = None  # a cache hit must not load the model
    second.prefill(SENTENCES)
    assert set(second._states) == set(first._states)
    # another depth is another cache entry, never a stale hit
    third = TopLayersTextEncoder(encoder, 16, 1, cache_dir=str(tmp_path / "cache"))
    assert third.lower.shard_dir != first.lower.shard_dir


@pytest.mark.parametrize("k", [0, 5, -1])
def test_finetune_layers_out_of_range_names_the_key(tmp_path, k):
    encoder = str(_tiny_encoder(tmp_path / "enc", "bert"))
    if k < 0:  # refused where the config is built (config.check_ranges)
        with pytest.raises(MsalignError, match=r"'train\.finetune_layers': -1 is out of range"):
            TrainConfig(finetune_layers=k)
        return
    with pytest.raises(MsalignError, match=rf"^train\.finetune_layers={k}: .* has 4 layers; choose 1\.\.4"):
        TopLayersTextEncoder(encoder, 16, k, cache_dir=str(tmp_path))


def test_finetune_layers_and_finetune_text_are_exclusive():
    from msalign.models.text_tuning import check_text_tuning

    with pytest.raises(MsalignError, match=re.escape("train.finetune_layers and train.finetune_text")):
        check_text_tuning(TrainConfig(finetune_layers=2, finetune_text=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 clips with real sentences, utterance audio; text from the tiny BERT."""
    root = tmp_path_factory.mktemp("layers")
    encoder = _tiny_encoder(root / "enc", "bert")
    data = write_review_folder(root / "tiny")
    return data, root / "cache", str(encoder)


def _load(folder):
    data, cache, encoder = folder
    return load_dataset(str(data), cache_dir=str(cache), max_text_len=16, text_encoder=encoder)


@pytest.mark.parametrize("name", ["text_only", "late_fusion", "mult", "decalign", "dashfusion", "textalign"])
def test_every_text_model_starts_from_the_frozen_features(folder, name):
    dataset = _load(folder)
    model = create_model(name, dims=dataset.dims, config=build_config(name, {}))
    _, cache, _ = folder
    attach_text_encoder(model, dataset.feature_spec, "tiny", cache_dir=str(cache), finetune_layers=2)
    model.eval()
    batch = collate_rows(dataset.split("train"), model.modalities, np.arange(8))
    features, masks = model_inputs(model, batch)
    torch.testing.assert_close(masks["text"], batch["masks"]["text"])
    torch.testing.assert_close(features["text"], batch["features"]["text"], atol=2e-4, rtol=1e-4)
    module = MSALightningModule(model, TrainConfig(lr=1e-3, text_lr=2e-5, scheduler="none"), dataset.metric_set)
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-3, 2e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.text_encoder.top.encoder.layer.parameters()}
    output = model(features, masks)
    output.prediction.sum().backward()
    assert model.text_encoder.top.encoder.layer[-1].output.dense.weight.grad is not None


def test_tuned_layers_train_and_travel_in_the_checkpoint(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MSALIGN_CACHE", str(tmp_path / "cache"))  # the run caches lower states there
    dataset = _load(folder)
    train_config = TrainConfig(
        epochs=2, batch_size=6, lr=1e-3, threads=1, accelerator="cpu", finetune_layers=2, text_lr=1e-2
    )
    results = train(
        RunSpec("text_only", build_config("text_only", {"width": 16}), train_config, [0], tmp_path),
        dataset,
        False,
        lambda *a: None,
    )
    model, info = load_checkpoint(tmp_path / "seed_0" / "model.safetensors")
    meta = info.text_tuning
    assert meta is not None
    assert (
        meta["finetune_layers"] == 2
        and meta["identity"] == dataset.feature_spec.to_json()["modalities"]["text"]["encoder"]
    )
    assert isinstance(model.text_encoder, TopLayersTextEncoder) and not model.text_encoder._states
    # the checkpoint holds the tuned top layers only, and they moved away from the encoder's own
    from safetensors.torch import load_file

    saved = [k for k in load_file(str(tmp_path / "seed_0" / "model.safetensors")) if k.startswith("text_encoder.")]
    assert saved and all(k.startswith("text_encoder.top.encoder.layer.") for k in saved)
    fresh = TopLayersTextEncoder(folder[2], 16, 2, cache_dir=str(tmp_path / "cache"))
    assert not torch.allclose(
        model.text_encoder.top.encoder.layer[0].output.dense.weight, fresh.top.encoder.layer[0].output.dense.weight
    )
    # reloaded, it runs the frozen lower layers on the text it is given and scores as the run did
    from msalign import metrics

    loader = eval_loader(dataset, model.modalities, "test")
    preds, labels = predict_split(model, loader, "cpu")
    assert metrics.compute(preds, labels, dataset.metric_set)["MAE"] == pytest.approx(results.mean["MAE"], abs=1e-6)
    # msalign predict on a new clip: frozen lower layers, then the tuned top layers, on its transcript
    from types import SimpleNamespace

    from msalign.data.text_encoder import TextEncoder
    from msalign.inference.predict import predict_clips

    clip = SimpleNamespace(
        transcript=SimpleNamespace(text=dataset.split("test").raw_text[1]), audio=None, vision=None, missing={}
    )
    row = predict_clips(model, info, [clip], TextEncoder(folder[2], 16, cache_dir=str(tmp_path / "cache")))[0]
    assert row["score"] == pytest.approx(float(preds[1]), abs=1e-4)


def test_checkpoint_on_another_encoder_is_refused(folder, tmp_path):
    _, _, encoder = folder
    with pytest.raises(MsalignError, match="tuned layers sit on 'other sha256:0'"):
        TopLayersTextEncoder(encoder, 16, 2, identity="other sha256:0", cache_dir=str(tmp_path))
