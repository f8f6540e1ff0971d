"""Datasets: the in-memory representation, loaders for every source, and the text encoder."""

from msalign.data.spec import load_dataset
from msalign.data.text_encoder import TextEncoder
from msalign.data.types import MODALITIES, SPLITS, MultimodalDataset, Split

__all__ = ["MODALITIES", "SPLITS", "MultimodalDataset", "Split", "TextEncoder", "load_dataset"]
