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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from msalign.errors import MsalignError


class TunedTextEncoder(nn.Module):
    """A trainable Hugging Face encoder: transcripts -> standardised token features and mask."""

    def __init__(self, encoder: str, max_length: int, standardize: dict[str, Any] | None = None,
                 cache_dir: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from msalign.data.text_encoder import _offline, resolve_encoder

        _offline()
        path, self.label = resolve_encoder(encoder, cache_dir)
        self.encoder_name = encoder
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # from_pretrained returns eval mode; the training loop switches modes from here on
        self.transformer = AutoModel.from_pretrained(path, local_files_only=True).float().train()
        width = self.transformer.config.hidden_size
        mean, std = torch.zeros(width), torch.ones(width)
        if standardize:
            mean, std = torch.tensor(standardize["mean"]), torch.tensor(standardize["std"])
            if mean.shape != (width,) or std.shape != (width,):
                raise MsalignError(f"text fine-tuning: standardisation statistics of width {tuple(mean.shape)} do not "
                                   f"fit encoder {encoder!r} of width {width}")
        # persistent=False: rebuilt from the checkpoint's metadata, not stored twice
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def metadata(self) -> dict[str, Any]:
        return {"encoder": self.encoder_name, "max_length": self.max_length,
                "standardize": {"mean": self.mean.tolist(), "std": self.std.tolist()}}

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(features (B, L, D) zero at padding, mask (B, L)), L <= max_length, [CLS]/[SEP] included."""
        device = self.mean.device
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = self.transformer(**tokens).last_hidden_state
        mask = tokens["attention_mask"].bool()
        features = ((hidden - self.mean) / self.std) * mask.unsqueeze(-1)
        return features, mask


def attach_text_encoder(model: nn.Module, dataset_spec: dict[str, Any], source: str,
                        cache_dir: str | None = None) -> TunedTextEncoder:
    """Attach a trainable copy of the dataset's text encoder to ``model`` (as ``model.text_encoder``)."""
    text = dataset_spec.get("modalities", {}).get("text", {})
    options = dataset_spec.get("options", {})
    if "text" not in getattr(model, "modalities", ()):
        raise MsalignError(f"train.finetune_text: model {model.name} does not use the text modality")
    if text.get("source") != "text_encoder" or "text_encoder" not in options:
        raise MsalignError(
            f"train.finetune_text: dataset {source} has precomputed text features ({text.get('source', 'none')}); "
            "fine-tuning needs a feature directory whose text is encoded from label.csv transcripts"
        )
    standardize = options.get("standardize") or {}
    encoder = TunedTextEncoder(options["text_encoder"], options.get("max_text_len", 50),
                               standardize.get("text") if isinstance(standardize, dict) else None, cache_dir)
    model.text_encoder = encoder
    return encoder


def rebuild_text_encoder(model: nn.Module, meta: dict[str, Any]) -> None:
    """Re-attach a checkpoint's fine-tuned encoder (its weights come with the checkpoint's state)."""
    model.text_encoder = TunedTextEncoder(meta["encoder"], meta["max_length"], meta.get("standardize"))


def model_inputs(model: nn.Module, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The (features, masks) a model is called with: the batch's, with the text re-encoded by a
    fine-tuned encoder when the model carries one."""
    features, masks = batch["features"], batch["masks"]
    encoder = getattr(model, "text_encoder", None)
    if encoder is None:
        return features, masks
    if batch.get("texts") is None:
        raise MsalignError("the model fine-tunes its text encoder but the batch carries no transcripts")
    text, mask = encoder(batch["texts"])
    return {**features, "text": text}, {**masks, "text": mask}


__all__ = ["TunedTextEncoder", "attach_text_encoder", "model_inputs", "rebuild_text_encoder"]
