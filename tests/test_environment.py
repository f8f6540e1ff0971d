"""The extras scripts/setup.sh installed import: tests of an extra skip when it is missing, so
without this check a broken install (in CI, say) would look like a green run with skips."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

MODULES = {
    "dev": ["pytest", "hypothesis", "ot"],
    "media": ["librosa", "faster_whisper", "mediapipe"],
    "ray": ["ray"],
    "lexicon": ["vaderSentiment", "textblob"],
}


def test_every_extra_setup_sh_installed_imports():
    stamp = Path(sys.prefix) / ".msalign-installed"
    if not stamp.is_file():
        pytest.skip("not a venv made by scripts/setup.sh")
    fields = dict(part.split("=", 1) for part in stamp.read_text().split() if "=" in part)
    extras = [e for e in fields.get("extras", "").split(",") if e]
    for extra in extras:
        for module in MODULES.get(extra, []):
            importlib.import_module(module)  # an ImportError here names the module and the extra's install
