"""Models: one file each, registered by name. ``create_model(name, dims, output_dim, **overrides)``."""

# Built-in models register themselves on import.
from msalign.models import dashfusion, decalign, late_fusion, mult, text_only, textalign  # noqa: F401
from msalign.models.base import ModelOutput, MSAModel
from msalign.models.registry import build_config, create_model, get_model_class, list_models, register_model

__all__ = [
    "MSAModel",
    "ModelOutput",
    "build_config",
    "create_model",
    "get_model_class",
    "list_models",
    "register_model",
]
