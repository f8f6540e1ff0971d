"""Shared fixtures: one torch thread (small models on 2 shared cores run fastest so), the real
MOSI folder beside the repo, and one text-feature cache for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import MOSI


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mosi_dir() -> Path:
    if not (MOSI / "label.csv").exists():
        pytest.skip(f"real MOSI folder not present at {MOSI}")
    return MOSI


@pytest.fixture(scope="session")
def mosi_cache(tmp_path_factory) -> Path:
    """Text features of MOSI are encoded once per session and shared by every test that needs them."""
    return tmp_path_factory.mktemp("mosi_text_cache")
