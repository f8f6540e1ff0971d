"""Fine-tuning the text encoder during training (``--set train.finetune_text=true``).

The papers fine-tune BERT end to end; by default msalign trains on cached, frozen token features
(fast on CPU). With fine-tuning, a trainable copy of the dataset's text encoder (the one named in
its feature spec: ``minilm``, ``mpnet`` or a local folder) is attached to the model as
``model.text_encoder``; every batch's transcripts are re-encoded by it and replace the cached
text features. Its output goes through the same train-split standardisation as the cached
features, so at the first step the model sees exactly the features it would have seen frozen.
The encoder trains with its own learning rate (``train.text_lr``), is saved inside the
checkpoint (``text_tuning`` in the metadata says how to rebuild it) and is used by evaluate,
report and predict.

``--set train.finetune_layers=k`` fine-tunes only the encoder's top ``k`` transformer layers, at
CPU cost (:class:`TopLayersTextEncoder`): the frozen embeddings and lower ``n - k`` layers run
ONCE over every transcript of the dataset (cached in memory, and on disk beside the text
features, keyed by encoder identity, ``max_length`` and depth ``n - k``); each step runs only
trainable copies of the top ``k`` layers on the cached hidden states. It is the computation of
fine-tuning those ``k`` layers end to end with everything below them frozen AND in eval mode: a
cache cannot hold dropout, so the lower layers never drop out (tests/test_finetune_layers.py
checks outputs and gradients against the end-to-end encoder). ``finetune_text`` (the whole
encoder, embeddings included, end to end) and ``finetune_layers`` are exclusive: set one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from msalign.data.feature_spec import FeatureSpec
from msalign.data.text_encoder import TextEncoder, _offline, encoder_layers, resolve_encoder, text_key
from msalign.errors import MsalignError
from msalign.models.base import MSAModel, TextEncoderModule


def register_standardisation(
    module: nn.Module, standardize: dict[str, Any] | None, width: int, encoder: str, what: str
) -> None:
    """The train-split standardisation of the frozen text features as ``module.mean`` / ``module.std``
    buffers, so a tuned encoder's first output equals the frozen features. persistent=False: they
    are rebuilt from the checkpoint's metadata, not stored twice."""
    mean, std = torch.zeros(width), torch.ones(width)
    if standardize:
        mean, std = torch.tensor(standardize["mean"]), torch.tensor(standardize["std"])
        if mean.shape != (width,) or std.shape != (width,):
            raise MsalignError(
                f"{what}: standardisation statistics of width {tuple(mean.shape)} do not "
                f"fit encoder {encoder!r} of width {width}"
            )
    module.register_buffer("mean", mean, persistent=False)
    module.register_buffer("std", std, persistent=False)


class TunedTextEncoder(TextEncoderModule):
    """A trainable Hugging Face encoder: transcripts -> standardised token features and mask."""

    mean: Tensor  # buffers set by register_standardisation
    std: Tensor

    def __init__(
        self, encoder: str, max_length: int, standardize: dict[str, Any] | None = None, cache_dir: str | None = None
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer  # heavy: loaded only when text is fine-tuned

        _offline()
        path, self.label = resolve_encoder(encoder, cache_dir)
        self.encoder_name = encoder
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # from_pretrained returns eval mode; the training loop switches modes from here on
        self.transformer = AutoModel.from_pretrained(path, local_files_only=True).float().train()
        register_standardisation(self, standardize, self.transformer.config.hidden_size, encoder, "text fine-tuning")

    def metadata(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder_name,
            "max_length": self.max_length,
            "standardize": {"mean": self.mean.tolist(), "std": self.std.tolist()},
        }

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(features (B, L, D) zero at padding, mask (B, L)), L <= max_length, [CLS]/[SEP] included."""
        device = self.mean.device
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = self.transformer(**tokens).last_hidden_state
        mask = tokens["attention_mask"].bool()
        features = ((hidden - self.mean) / self.std) * mask.unsqueeze(-1)
        return features, mask


class _PassThrough(nn.Module):
    """Stands in for the embeddings of the top-layers model: its input is already a hidden state."""

    def forward(self, input_ids=None, inputs_embeds=None, **_: Any) -> Tensor:
        return inputs_embeds


class TopLayersTextEncoder(TextEncoderModule):
    """Transcripts -> standardised token features, fine-tuning only the top ``k`` layers.

    The frozen part (embeddings + the first ``n - k`` layers, in eval mode: no dropout) is a
    :class:`~msalign.data.text_encoder.TextEncoder` stopped after ``n - k`` layers; its hidden
    states are computed once per distinct transcript (:meth:`prefill` for a whole dataset, else on
    first sight, e.g. new text at predict time) and kept in memory. ``self.top`` is the encoder's
    own model class with its embeddings replaced by a pass-through and only the top ``k`` layers:
    calling it with ``inputs_embeds=<cached states>`` makes the attention mask (and MPNet's
    relative position bias) exactly as the full model does. Parameters shared with the frozen
    layers (MPNet's relative attention bias) stay frozen, or the cache would go stale. The output
    is the encoder's last hidden state, z-scored with the train-split statistics of the frozen
    features and zeroed at padding, as :class:`TunedTextEncoder` gives it. Only ``self.top`` is
    saved in a checkpoint; the frozen part is rebuilt from the encoder (its identity is checked).
    """

    mean: Tensor  # buffers set by register_standardisation
    std: Tensor

    def __init__(
        self,
        encoder: str,
        max_length: int,
        layers: int,
        standardize: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        identity: str | None = None,
        disk_cache: bool = True,
    ):
        super().__init__()
        from transformers import AutoModel  # heavy: loaded only when text is fine-tuned

        _offline()
        probe = TextEncoder(encoder, max_length, cache_dir=cache_dir, cache=False)
        total = probe.num_layers
        if total is None or not 1 <= int(layers) <= total:
            raise MsalignError(
                f"train.finetune_layers={layers}: text encoder {encoder!r} has {total} layers; choose 1..{total}"
            )
        if identity is not None and probe.identity != identity:
            raise MsalignError(
                f"text encoder {encoder!r}: the local encoder is {probe.identity!r}, the checkpoint's "
                f"tuned layers sit on {identity!r}"
            )
        self.encoder_name, self.max_length, self.layers, self.label = encoder, int(max_length), int(layers), probe.label
        self.identity = probe.identity
        # the frozen lower part; a plain attribute, so it is neither trained nor saved
        self.lower = TextEncoder(encoder, max_length, cache_dir=cache_dir, cache=disk_cache, layers=total - self.layers)
        top = AutoModel.from_pretrained(probe.path, local_files_only=True).float()
        top.embeddings = _PassThrough()
        top.encoder.layer = nn.ModuleList(encoder_layers(top, encoder)[total - self.layers :])
        top.pooler = None  # our models read the token sequence; the pooler would only cost time
        for name, p in top.named_parameters():
            p.requires_grad_(name.startswith("encoder.layer."))
        self.top = top.train()
        register_standardisation(self, standardize, top.config.hidden_size, encoder, "train.finetune_layers")
        self._states: dict[str, Tensor] = {}  # text_key -> (length, D) hidden state after the lower layers

    def metadata(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder_name,
            "max_length": self.max_length,
            "finetune_layers": self.layers,
            "identity": self.identity,
            "standardize": {"mean": self.mean.tolist(), "std": self.std.tolist()},
        }

    def prefill(self, texts: list[str]) -> None:
        """Run the frozen lower layers once over ``texts`` (batched by length, disk-cached)."""
        wanted = {text_key(t): t for t in map(str, texts)}
        missing = [t for k, t in wanted.items() if k not in self._states]
        if missing:
            vectors = self.lower.encode_tokens(missing)
            self._states.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in vectors.items()})

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(features (B, L, D) zero at padding, mask (B, L)), L <= max_length, [CLS]/[SEP] included."""
        texts = [str(t) for t in texts]
        self.prefill(texts)
        states = [self._states[text_key(t)] for t in texts]
        device = self.mean.device
        lengths = torch.tensor([len(s) for s in states], device=device)
        hidden = nn.utils.rnn.pad_sequence(states, batch_first=True).to(device)
        mask = torch.arange(hidden.shape[1], device=device)[None, :] < lengths[:, None]
        out = self.top(inputs_embeds=hidden, attention_mask=mask.long()).last_hidden_state
        features = ((out - self.mean) / self.std) * mask.unsqueeze(-1)
        return features, mask


def check_text_tuning(train_config: Any) -> None:
    """One line naming the key for a fine-tuning setting that cannot run (before any work)."""
    k = train_config.finetune_layers
    if k < 0:
        raise MsalignError(f"train.finetune_layers={k}: must be 0 (off) or the number of top layers to tune")
    if k and train_config.finetune_text:
        raise MsalignError(
            "train.finetune_layers and train.finetune_text: set one (finetune_text tunes the whole "
            "encoder end to end, finetune_layers=k only its top k layers)"
        )


def attach_text_encoder(
    model: nn.Module,
    dataset_spec: FeatureSpec,
    source: str,
    cache_dir: str | None = None,
    finetune_layers: int = 0,
    texts: list[str] | None = None,
) -> TextEncoderModule:
    """Attach a trainable copy of the dataset's text encoder to ``model`` (as ``model.text_encoder``):
    the whole encoder, or with ``finetune_layers=k`` its top k layers over cached lower states
    (``texts``: the transcripts to run the lower layers on now, e.g. every split's)."""
    key = "train.finetune_layers" if finetune_layers else "train.finetune_text"
    text = dataset_spec.modality("text")
    options = dataset_spec.load_options
    if "text" not in getattr(model, "modalities", ()):
        raise MsalignError(f"{key}: model {model.name} does not use the text modality")
    if text.source != "text_encoder" or options.text_encoder is None:
        raise MsalignError(
            f"{key}: dataset {source} has precomputed text features ({text.source or 'none'}); "
            "fine-tuning needs a feature directory whose text is encoded from label.csv transcripts"
        )
    if "text" in (options.group_standardize or {}):
        raise MsalignError(
            f"{key}: dataset {source} group-standardises its text features, which a tuned encoder "
            "would not reproduce; group-standardise only the other modalities"
        )
    if options.text_lexicon:
        raise MsalignError(
            f"{key}: dataset {source} appends lexicon descriptors to its text features (--text-lexicon), which "
            "a tuned encoder would not reproduce; load it without --text-lexicon"
        )
    if "text" in (options.group_context or ()):
        raise MsalignError(
            f"{key}: dataset {source} appends its group's context to the text features (--group-context), which "
            "a tuned encoder would not reproduce; give --group-context only the other modalities"
        )
    standardize = options.standardize or {}
    stats = standardize.get("text") if isinstance(standardize, dict) else None
    encoder: TextEncoderModule
    if finetune_layers:
        encoder = TopLayersTextEncoder(
            options.text_encoder,
            _or(options.max_text_len, 50),
            finetune_layers,
            stats,
            cache_dir,
            identity=text.encoder,
        )
        if texts:
            encoder.prefill(texts)
    else:
        encoder = TunedTextEncoder(options.text_encoder, _or(options.max_text_len, 50), stats, cache_dir)
    model.text_encoder = encoder
    return encoder


def _or(value: Any, default: Any) -> Any:
    """``value`` unless the spec leaves it unset (None)."""
    return default if value is None else value


def rebuild_text_encoder(model: nn.Module, meta: dict[str, Any]) -> None:
    """Re-attach a checkpoint's fine-tuned encoder (its weights come with the checkpoint's state)."""
    if meta.get("finetune_layers"):
        model.text_encoder = TopLayersTextEncoder(
            meta["encoder"],
            meta["max_length"],
            meta["finetune_layers"],
            meta.get("standardize"),
            identity=meta.get("identity"),
        )
    else:
        model.text_encoder = TunedTextEncoder(meta["encoder"], meta["max_length"], meta.get("standardize"))


def model_inputs(model: MSAModel, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The (features, masks) a model is called with: the batch's, with the text re-encoded by a
    fine-tuned encoder when the model carries one."""
    features, masks = batch["features"], batch["masks"]
    encoder = model.text_encoder
    if encoder is None:
        return features, masks
    if batch.get("texts") is None:
        raise MsalignError("the model fine-tunes its text encoder but the batch carries no transcripts")
    text, mask = encoder(batch["texts"])
    return {**features, "text": text}, {**masks, "text": mask}


__all__ = [
    "TopLayersTextEncoder",
    "TunedTextEncoder",
    "attach_text_encoder",
    "check_text_tuning",
    "model_inputs",
    "rebuild_text_encoder",
]
