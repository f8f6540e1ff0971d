"""msalign: multimodal sentiment analysis built around cross-modal alignment."""

from msalign.errors import MsalignError

__version__ = "0.1.0"
__all__ = ["MsalignError", "__version__"]
