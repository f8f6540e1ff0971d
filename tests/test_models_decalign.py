"""DecAlign: outputs and loss weighting, ablations, gradient routing, M = 2 / 3, padding, the
padding-removal machinery of the shared attention blocks, and one end-to-end training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import msalign.models.attention as attention_module
import msalign.models.decalign as decalign_module
from msalign.data.synthetic import generate_synthetic
from msalign.errors import MsalignError
from msalign.models import create_model
from msalign.models.attention import (
    Attention,
    CrossModalEncoder,
    key_padding_bias,
    length_groups,
    pack_keys,
)
from msalign.models.base import task_loss
from msalign.models.registry import build_config
from msalign.training.data import collate_rows
from support import set_packing, train_two_epochs

TINY = {"width": 16, "heads": 4, "layers": 1}
SWITCHES = ("decoupling", "hete", "homo", "proto_ot", "cross_transformer", "sem", "mmd")


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0, n_train=64, n_valid=32, n_test=32)


def batch(dataset, rows=range(16), modalities=("text", "audio", "vision"), split="train"):
    return collate_rows(dataset.split(split), tuple(modalities), np.asarray(list(rows), dtype=np.int64))


def model_for(dataset, modalities=("text", "audio", "vision"), output_dim=1, **overrides):
    torch.manual_seed(0)
    dims = {m: dataset.dims[m] for m in modalities}
    return create_model("decalign", dims=dims, output_dim=output_dim, **{**TINY, **overrides})


def train_step(model, b):
    """One step as the training loop does it; returns (loss, aux)."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(b["features"], b["masks"])
    loss = task_loss(out.prediction, b["labels"], model.output_dim)
    for value in out.aux_losses.values():
        loss = loss + value
    loss.backward()
    return loss, out.aux_losses


def assert_finite_step(model, b):
    loss, aux = train_step(model, b)
    assert torch.isfinite(loss), loss
    assert all(torch.isfinite(v) for v in aux.values()), aux
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    return aux


def grad_norm(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# --- outputs -------------------------------------------------------------------------------------


def test_train_mode_returns_weighted_aux_losses(data):
    model = model_for(data, dec_weight=0.5, alpha=0.3, beta=0.7)
    model.train()
    b = batch(data)
    out = model(b["features"], b["masks"])
    assert set(out.aux_losses) == {"dec", "hete", "homo"}
    d = out.diagnostics
    torch.testing.assert_close(out.aux_losses["dec"], 0.5 * d["dec"])
    torch.testing.assert_close(out.aux_losses["hete"], 0.3 * (d["ot"] + d["proto"]))
    torch.testing.assert_close(out.aux_losses["homo"], 0.7 * (d["sem"] + d["mmd"]))
    assert out.prediction.shape == (16,)


def test_eval_mode_has_no_aux_losses(data):
    model = model_for(data).eval()
    b = batch(data)
    with torch.no_grad():
        out = model(b["features"], b["masks"])
    assert out.aux_losses == {} and out.diagnostics == {}
    assert out.prediction.shape == (16,)
    assert {f"{kind}_{m}" for kind in ("unique", "common", "fused") for m in ("text", "audio", "vision")} <= set(
        out.representations
    )


def test_classification_gives_logits():
    dataset = generate_synthetic(seed=0, n_train=64, n_valid=32, n_test=32, task="classification")
    model = model_for(dataset, output_dim=6, num_prototypes=6)
    b = batch(dataset, range(8))
    aux = assert_finite_step(model, b)
    assert set(aux) == {"dec", "hete", "homo"}
    model.eval()
    with torch.no_grad():
        assert model(b["features"], b["masks"]).prediction.shape == (8, 6)


def test_default_config_is_the_papers():
    c = build_config("decalign")
    paper = (64, 8, 5, 0.05, 0.05, 1.0, 7)
    assert (c.width, c.heads, c.layers, c.alpha, c.beta, c.dec_weight, c.num_prototypes) == paper
    assert all(getattr(c, s) for s in SWITCHES)
    # the official code's architecture where the paper does not say otherwise
    assert (c.cross_context, c.self_layers, c.projection_norm, c.sem_reduction) == ("concat", 0, False, "mean")


@pytest.mark.parametrize(
    "options", [{"projection_norm": True}, {"sem_reduction": "sum"}, {"cross_context": "pairwise", "self_layers": 1}]
)
def test_architecture_options_train(data, options):
    assert set(assert_finite_step(model_for(data, **options), batch(data))) == {"dec", "hete", "homo"}


# --- ablations -----------------------------------------------------------------------------------

TABLE_3 = {
    "MFD+Hete": {"homo": False},
    "MFD+Homo": {"hete": False},
    "MFD only": {"hete": False, "homo": False},
    "none": {"decoupling": False, "hete": False, "homo": False},
}
ABLATIONS = {f"no_{s}": {s: False} for s in SWITCHES} | TABLE_3


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_trains(data, name):
    switches = ABLATIONS[name]
    model = model_for(data, **switches)
    aux = assert_finite_step(model, batch(data))
    c = model.config
    expected = set()
    if c.decoupling:
        expected.add("dec")
    if c.hete and c.proto_ot:
        expected.add("hete")
    if c.homo and (c.sem or c.mmd):
        expected.add("homo")
    assert set(aux) == expected
    assert hasattr(model, "transformer") == (c.hete and c.cross_transformer)
    assert hasattr(model, "common") == c.decoupling


# --- gradient routing ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routed(data):
    """Gradient norms per part of the model when only one aux loss is back-propagated."""
    model = model_for(data, dropout=0.0)
    model.train()
    b = batch(data)
    norms = {}
    for key in ("dec", "hete", "homo"):
        model.zero_grad(set_to_none=True)
        model(b["features"], b["masks"]).aux_losses[key].backward()
        norms[key] = {
            "common": grad_norm(model.common),
            "transformer": grad_norm(model.transformer),
            "head": grad_norm(model.head),
            **{f"unique_{m}": grad_norm(model.unique[m]) for m in model.modalities},
            **{f"project_{m}": grad_norm(model.project[m]) for m in model.modalities},
        }
    return norms


def test_hete_reaches_unique_encoders_not_common(routed):
    g = routed["hete"]
    for m in ("text", "audio", "vision"):
        assert g[f"unique_{m}"] > 0 and g[f"project_{m}"] > 0
    assert g["common"] == 0 and g["transformer"] == 0 and g["head"] == 0


def test_homo_reaches_common_encoder_not_unique(routed):
    g = routed["homo"]
    assert g["common"] > 0
    for m in ("text", "audio", "vision"):
        assert g[f"unique_{m}"] == 0 and g[f"project_{m}"] > 0
    assert g["transformer"] == 0 and g["head"] == 0


def test_dec_reaches_both_encoders(routed):
    g = routed["dec"]
    assert g["common"] > 0
    for m in ("text", "audio", "vision"):
        assert g[f"unique_{m}"] > 0 and g[f"project_{m}"] > 0


def test_hete_off_has_no_hete_key(data):
    model = model_for(data, hete=False).train()
    b = batch(data)
    assert "hete" not in model(b["features"], b["masks"]).aux_losses


# --- number of modalities --------------------------------------------------------------------------


def utterance_batch(dataset, rows=range(16), dim=73, seed=0):
    """Text sequences plus audio as one utterance vector per clip (length-1 sequences), like the
    real MOSI folder."""
    b = batch(dataset, rows, ("text",))
    generator = torch.Generator().manual_seed(seed)
    n = len(b["labels"])
    b["features"]["audio"] = torch.randn(n, 1, dim, generator=generator)
    b["masks"]["audio"] = torch.ones(n, 1, dtype=torch.bool)
    return b


def test_two_modalities_with_utterance_audio(data):
    torch.manual_seed(0)
    model = create_model("decalign", dims={"text": data.dims["text"], "audio": 73}, **TINY)
    assert model.modalities == ("text", "audio")
    b = utterance_batch(data)
    assert set(assert_finite_step(model, b)) == {"dec", "hete", "homo"}
    model.eval()
    with torch.no_grad():
        assert model(b["features"], b["masks"]).prediction.shape == (16,)


def test_three_modalities(data):
    model = model_for(data)
    assert model.modalities == ("text", "audio", "vision")
    assert_finite_step(model, batch(data))


def test_one_modality_is_refused(data):
    with pytest.raises(MsalignError, match="at least 2"):
        create_model("decalign", dims={"text": data.dims["text"]}, **TINY)


# --- padding ---------------------------------------------------------------------------------------


def scramble_padding(b, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for m, x in b["features"].items():
        noise = 100 * torch.randn(x.shape, generator=generator)
        features[m] = torch.where(b["masks"][m].unsqueeze(-1), x, noise)
    return features


@pytest.mark.parametrize(
    "kernel, context, self_layers", [(1, "pairwise", 1), (3, "pairwise", 0), (3, "concat", 1), (1, "concat", 0)]
)
def test_padding_does_not_change_predictions(data, kernel, context, self_layers):
    model = model_for(data, projection_kernel=kernel, cross_context=context, self_layers=self_layers).eval()
    b = batch(data)
    assert any(not bool(m.all()) for m in b["masks"].values())
    with torch.no_grad():
        clean = model(b["features"], b["masks"]).prediction
        noisy = model(scramble_padding(b), b["masks"]).prediction
    torch.testing.assert_close(clean, noisy, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_aux_losses(data):
    model = model_for(data, dropout=0.0).train()
    b = batch(data)
    with torch.no_grad():
        clean = model(b["features"], b["masks"]).aux_losses
        noisy = model(scramble_padding(b), b["masks"]).aux_losses
    for key in clean:
        torch.testing.assert_close(clean[key], noisy[key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context", ["pairwise", "concat"])
def test_dropping_padding_is_exact(data, monkeypatch, context):
    """Packed queries and length groups give the same predictions as the plain padded batch."""
    model = model_for(data, layers=2, cross_context=context)
    b = batch(data, range(32))
    model.eval()
    encoders = [m for m in model.modules() if isinstance(m, CrossModalEncoder)]
    assert encoders

    def run(pack: bool, groups: bool):
        model.pack_below = 1.0 if pack else 0.0
        set_packing(monkeypatch, encoders, (decalign_module, attention_module), pack=pack, groups=groups)
        with torch.no_grad():
            return model(b["features"], b["masks"]).prediction

    plain = run(False, False)
    assert len(length_groups(torch.randint(1, 40, (32,)), torch.randint(1, 70, (32,)), 16, 4, overhead=0.0)) > 1
    torch.testing.assert_close(run(True, False), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(True, True), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(False, True), plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [1, 3])
def test_packed_frames_give_the_same_losses_and_gradients(data, kernel):
    """Real-frames-only processing (before the transformer too) changes nothing in training."""
    model = model_for(data, projection_kernel=kernel, dropout=0.0)
    b = batch(data)
    results = []
    for pack in (0.0, 1.0):
        model.pack_below = pack
        loss, aux = train_step(model, b)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), {k: v.detach() for k, v in aux.items()}, grads))
    (loss0, aux0, grads0), (loss1, aux1, grads1) = results
    torch.testing.assert_close(loss0, loss1, atol=1e-5, rtol=1e-5)
    for key in aux0:
        torch.testing.assert_close(aux0[key], aux1[key], atol=1e-5, rtol=1e-5)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        torch.testing.assert_close(grads0[name], grads1[name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("rows", [[0], [0, 1]])
def test_tiny_batches_train(data, rows):
    """N < K: the GMM has fewer samples than prototypes."""
    model = model_for(data)
    assert len(rows) < model.config.num_prototypes
    assert set(assert_finite_step(model, batch(data, rows))) == {"dec", "hete", "homo"}


def test_full_covariance_trains(data):
    assert_finite_step(model_for(data, covariance="full"), batch(data))


def test_batched_prototypes_match_one_by_one(data):
    """The vmapped GMM fit (diagonal covariances) equals fit_gmm per modality."""
    model = model_for(data)
    generator = torch.Generator().manual_seed(0)
    pooled = [torch.randn(12, 16, generator=generator) * (i + 1) for i in range(3)]
    batched = model.prototypes(pooled)
    for x, g in zip(pooled, batched, strict=True):
        single = decalign_module.fit_gmm(x, 7, num_steps=5, covariance="diag", var_floor=1e-4)
        for a, e in zip(g, single, strict=True):
            torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


# --- attention blocks --------------------------------------------------------------------------------


def test_single_key_shortcut_matches_sdpa():
    torch.manual_seed(0)
    attention = Attention(16, 4).eval()
    query, context = torch.randn(3, 5, 16), torch.randn(3, 1, 16)
    for mask in (torch.ones(3, 1, dtype=torch.bool), torch.tensor([[True], [False], [True]])):
        got = attention(query, context, mask)
        width = 16
        q = attention.to_q(query).unflatten(-1, (4, -1)).transpose(1, 2)
        k, v = (t.unflatten(-1, (4, -1)).transpose(1, 2) for t in attention.to_kv(context).split(width, -1))
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_bias(mask))
        torch.testing.assert_close(got, attention.out(expected.transpose(1, 2).flatten(-2)))


def test_encoder_ignores_padded_keys_and_queries():
    torch.manual_seed(0)
    # positions=False as in DecAlign (positions are added before keys are reordered)
    encoder = CrossModalEncoder(16, 4, 2, dropout=0.0, positions=False).eval()
    query, context = torch.randn(4, 6, 16), torch.randn(4, 9, 16)
    query_mask = torch.arange(6)[None] < torch.tensor([6, 2, 4, 1])[:, None]
    context_mask = torch.rand(4, 9, generator=torch.Generator().manual_seed(1)) < 0.6
    context_mask[:, 0] = True  # not a prefix mask
    out = encoder(query, query_mask, context, context_mask)
    noisy_query = torch.where(query_mask[..., None], query, 50 * torch.randn_like(query))
    noisy_context = torch.where(context_mask[..., None], context, 50 * torch.randn_like(context))
    torch.testing.assert_close(out, encoder(noisy_query, query_mask, noisy_context, context_mask))
    assert bool((out[~query_mask] == 0).all())
    packed, packed_mask = pack_keys(context, context_mask)
    assert packed.shape[1] == int(context_mask.sum(1).max())
    torch.testing.assert_close(out, encoder(query, query_mask, packed, packed_mask))


# --- end to end ------------------------------------------------------------------------------------


def test_train_end_to_end_writes_results(data, tmp_path):
    results = train_two_epochs("decalign", build_config("decalign", {**TINY, "num_prototypes": 3}), data, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["model"] == "decalign" and saved["seeds"] == [0]
    assert saved["config"]["model"]["width"] == 16
    (seed,) = saved["per_seed"]
    assert seed["epochs_run"] == 2 and np.isfinite(seed["test"]["MAE"])
    history = json.loads((tmp_path / "seed_0" / "history.json").read_text())
    assert {"train/dec", "train/hete", "train/homo", "train/task"} <= set(history[0])
    assert results.mean == seed["test"]


def test_attention_dropout_still_trains(data):
    """attn_dropout > 0 takes SDPA's unfused path; it still trains, with one-key contexts too."""
    torch.manual_seed(0)
    model = create_model("decalign", dims={"text": data.dims["text"], "audio": 73}, attn_dropout=0.3, **TINY)
    assert_finite_step(model, utterance_batch(data))
    assert_finite_step(model_for(data, attn_dropout=0.3), batch(data))


@pytest.mark.parametrize(
    "key, expected",
    [
        ("mosi", {"width": 64, "heads": 8, "layers": 5, "projection_kernel": 1, "batch_size": 32}),
        ("mosei", {"width": 64, "batch_size": 128}),
        ("sims", {"width": 32, "batch_size": 24}),
        ("iemocap", {"num_prototypes": 6}),
    ],
)
def test_dataset_configs(key, expected):
    from msalign.config import resolve_config

    model_config, train_config = resolve_config("decalign", build_config("decalign"), [key])
    assert model_config.alpha == model_config.beta == 0.05
    for name, value in expected.items():
        assert getattr(model_config if hasattr(model_config, name) else train_config, name) == value


# --- few-key cross-modal path (DecAlign._cross_modal_small / CrossModalEncoder.forward_frames) -------


def few_key_batch(dataset, modalities, empty_every=0, second_frame=False):
    """Utterance-level (length-1) audio / vision as in the MMSA pickle with a zero vision placeholder;
    optionally some rows without audio (``empty_every``) and a ragged second vision frame."""
    b = batch(dataset, range(32), modalities)
    for m in (m for m in ("audio", "vision") if m in modalities):
        b["features"][m] = b["features"][m][:, :1].clone()
        b["masks"][m] = torch.ones(32, 1, dtype=torch.bool)
    if empty_every:
        b["masks"]["audio"][::empty_every] = False
        b["features"]["audio"][::empty_every] = 0.0
    if second_frame:
        extra = torch.rand(32, 1, generator=torch.Generator().manual_seed(3)) < 0.5
        frame = torch.randn(32, 1, b["features"]["vision"].shape[-1]) * extra[..., None]
        b["features"]["vision"] = torch.cat([b["features"]["vision"], frame], 1)
        b["masks"]["vision"] = torch.cat([b["masks"]["vision"], extra], 1)
    return b


def _assert_same_outputs_and_gradients(reference, other) -> None:
    """Two runs' (prediction, loss, {parameter: gradient}) agree."""
    (p0, l0, g0), (p1, l1, g1) = reference, other
    torch.testing.assert_close(p1, p0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "modalities, empty_every, second_frame",
    [
        (("text", "audio", "vision"), 0, False),
        (("text", "audio"), 0, False),
        (("text", "audio"), 4, False),
        (("text", "audio", "vision"), 3, True),
        (("text", "audio", "vision"), 0, True),
        (("text", "audio", "vision"), 3, False),  # text: two keys, one in every third row
    ],
)
def test_few_key_path_matches_the_sdpa_encoders(data, modalities, empty_every, second_frame):
    """Keys/values folded into the queries (few queries) or projected once per row (many queries)
    give the predictions, losses and gradients of the padded SDPA encoders."""
    model = model_for(data, modalities, layers=2, dropout=0.0, projection_kernel=1)
    b = few_key_batch(data, modalities, empty_every, second_frame)
    used = []
    small = model._cross_modal_small
    model._cross_modal_small = lambda *a: used.append(sorted(a[3])) or small(*a)
    results = []
    for budget in (0, 10**9):
        model.small_attention = budget
        model.eval()
        with torch.no_grad():
            prediction = model(b["features"], b["masks"]).prediction
        loss, _ = train_step(model, b)
        results.append(
            (prediction, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    assert used == [sorted(modalities)] * 2  # the reference run (budget 0) never took the path
    _assert_same_outputs_and_gradients(*results)


@pytest.mark.parametrize(("queries", "key_counts"), [(1, (5, 2, 3)), (7, (5, 2, 3)), (1, (2, 1, 0)), (7, (2, 1, 0))])
def test_forward_frames_matches_forward_with_attention_dropout_weights(queries, key_counts, monkeypatch):
    """The attention-dropout branches scale the value bias by the kept weights' sum: with a fixed
    'dropout' (a deterministic mask) both paths still agree with SDPA's weights times the values.
    Two keys as well, including a row with one key and a row without any."""
    torch.manual_seed(0)
    encoder = CrossModalEncoder(16, 4, 2, dropout=0.0, attn_dropout=0.5, positions=False).train()
    query = torch.randn(3, queries, 16)
    length = max(key_counts)
    context = torch.randn(3, length, 16)
    context_mask = torch.arange(length)[None] < torch.tensor(key_counts)[:, None]
    keep = context_mask | ~context_mask.any(dim=1, keepdim=True)  # a row without keys attends to its zeros
    context = context * context_mask[..., None]
    pattern = torch.Generator().manual_seed(1)

    def fixed_dropout(x, p, training=True):
        keep = (torch.rand(x.shape, generator=pattern) > p).to(x.dtype)
        return x * keep / (1 - p)

    monkeypatch.setattr(attention_module, "dropout", fixed_dropout)
    normalised = F.layer_norm(context, (16,)) * context_mask[..., None]
    rows = torch.arange(3).repeat_interleave(queries)
    got = encoder.forward_frames(query.reshape(-1, 16), rows, normalised, context_mask)
    # reference: the explicit attention with the same weights' mask, block by block
    pattern.manual_seed(1)
    hidden = query.reshape(-1, 16)
    for block in encoder.blocks:
        a = block.attention
        k, v = a.to_kv(block.norm_context(context)).split(16, -1)
        k, v = k[rows].unflatten(-1, (4, -1)), v[rows].unflatten(-1, (4, -1))
        q = a.to_q(block.norm_query(hidden)).unflatten(-1, (4, -1))
        scores = torch.einsum("nhd,nkhd->nhk", q, k) / 2.0
        scores = scores.masked_fill(~keep[rows][:, None, :], float("-inf"))
        weights = (
            fixed_dropout(scores.softmax(-1), 0.5)
            if queries <= length  # forward_frames folds the keys into the queries (else: the query-heavy layout)
            else fixed_dropout(scores.softmax(-1).transpose(1, 2), 0.5).transpose(1, 2)
        )
        hidden = hidden + a.out(torch.einsum("nhk,nkhd->nhd", weights, v).flatten(-2))
        hidden = hidden + block.feed_forward(block.norm_ff(hidden))
    torch.testing.assert_close(got, encoder.norm(hidden), atol=1e-5, rtol=1e-5)


# --- row-by-row attention (CrossModalEncoder.forward_rows) ----------------------------------------------


def ragged_batch():
    """Long-ish ragged streams with a row without text, rows whose context is empty for some target, and a row
    without vision: every edge of the row-by-row path."""
    generator = torch.Generator().manual_seed(5)
    dims = {"text": 12, "audio": 5, "vision": 7}
    lengths = {"text": [5, 0, 3, 8, 1, 2], "audio": [9, 4, 0, 12, 3, 1], "vision": [0, 6, 0, 2, 7, 3]}
    features, masks = {}, {}
    for m, dim in dims.items():
        counts = torch.tensor(lengths[m])
        masks[m] = torch.arange(int(counts.max()))[None] < counts[:, None]
        features[m] = torch.randn(6, int(counts.max()), dim, generator=generator) * masks[m][..., None]
    return dims, features, masks


@pytest.mark.parametrize("self_layers", [0, 1])
def test_row_by_row_attention_matches_the_padded_encoders(monkeypatch, self_layers):
    """Each row attending to its own real keys gives the predictions, losses and gradients of the
    padded (length-grouped) SDPA encoders, including rows without queries or without keys."""
    dims, features, masks = ragged_batch()
    torch.manual_seed(0)
    model = create_model(
        "decalign", dims=dims, output_dim=1, width=16, heads=4, layers=2, self_layers=self_layers, dropout=0.0
    )
    model.small_attention = 0  # the few-key path would take these small targets
    rows = CrossModalEncoder.forward_rows
    calls = []
    monkeypatch.setattr(CrossModalEncoder, "forward_rows", lambda *a, **k: calls.append(1) or rows(*a, **k))
    results = []
    for by_row in (False, True):
        monkeypatch.setattr(decalign_module, "row_by_row_pays", lambda *a, by_row=by_row, **k: by_row)
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(features, masks)
        loss = out.prediction.square().sum() + sum(out.aux_losses.values())
        loss.backward()
        results.append(
            (
                out.prediction.detach(),
                loss.detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
    assert calls  # the second run took the path
    _assert_same_outputs_and_gradients(*results)


def test_row_by_row_is_chosen_for_long_ragged_batches_only():
    """The cost model takes rows for MOSEI-like lengths and keeps the padded groups for short, even ones."""
    generator = torch.Generator().manual_seed(0)
    long_q = torch.randint(50, 500, (32,), generator=generator)
    long_k = torch.randint(50, 550, (32,), generator=generator)
    short_q, short_k = torch.full((32,), 20), torch.full((32,), 70)
    for q, k, expected in ((long_q, long_k, True), (short_q, short_k, False)):
        groups = length_groups(q, k, 64, 8)
        assert attention_module.row_by_row_pays(q.tolist(), k.tolist(), groups, q, k, 64, 8) is expected


def test_functional_block_layers_match_the_modules():
    """forward_frames calls a block's feed-forward and dropouts as functions: the same values and random draws as
    the module calls, in training (both dropout implementations' sizes) and in eval mode."""
    block = attention_module.CrossModalBlock(16, 4, dropout=0.3)
    for rows in (40, 200):  # 200 x 64 hidden units take the 16-bit-lane dropout, 40 x 64 F.dropout
        x = torch.randn(rows, 16)
        for train in (True, False):
            block.train(train)
            torch.manual_seed(0)
            want = x + block.dropout(block.feed_forward(block.norm_ff(x)))
            torch.manual_seed(0)
            got = x + attention_module._dropout(attention_module._feed_forward(block, x), block.dropout)
            torch.testing.assert_close(got, want, atol=0, rtol=0)
