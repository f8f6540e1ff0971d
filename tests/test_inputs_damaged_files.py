"""Bounded fuzzing of the untrusted-file loaders: byte flips, truncations, insertions and deletions
of a small MMSA pickle and of a feature directory's label.csv / .npz files. Every mutated input
either loads (and is then a validated dataset) or raises MsalignError; nothing else may escape."""

from __future__ import annotations

import io
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msalign.data import load_dataset
from msalign.errors import MsalignError
from support import make_folder, mmsa_data, mutate, mutations

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def loads_or_refuses(path: Path, **options) -> None:
    try:
        ds = load_dataset(str(path), **options)
    except MsalignError as error:
        assert "\n" not in str(error)
        return
    assert set(ds.splits) == {"train", "valid", "test"}


def _small_pickle() -> bytes:
    data = mmsa_data()
    for split in data.values():  # keep the file small, so flips land in structure as often as in floats
        for key in ("text", "audio", "vision"):
            split[key] = split[key][:, :4, :3].copy()
        split.pop("text_bert")
        split.pop("audio_lengths", None)
        split.pop("vision_lengths", None)
    return pickle.dumps(data, protocol=4)


PICKLE = _small_pickle()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(edits=mutations(len(PICKLE)))
def test_fuzzed_pickle_loads_or_raises_msalign_error(edits, workdir):
    path = workdir / "mutated.pkl"
    path.write_bytes(mutate(PICKLE, edits))
    loads_or_refuses(path, metric_set="mosi")


@pytest.fixture(scope="module")
def folder_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("base") / "feats"
    make_folder(folder)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@FUZZ
@given(data=st.data())
def test_fuzzed_feature_dir_loads_or_raises_msalign_error(data, folder_files):
    names = sorted(folder_files)
    target = data.draw(st.sampled_from(names))
    edits = data.draw(mutations(len(folder_files[target])))
    folder = Path(tempfile.mkdtemp(prefix="fuzzdir"))
    try:
        for name, blob in folder_files.items():
            (folder / name).write_bytes(mutate(blob, edits) if name == target else blob)
        loads_or_refuses(folder, metric_set="mosi", standardize=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _members(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzzed_npy_inside_a_valid_zip_loads_or_raises_msalign_error(data, folder_files):
    """Mutations inside one array of an .npz, re-zipped with valid checksums: the .npy header and
    data are parsed (flips of the raw zip mostly stop at the CRC check)."""
    target = data.draw(st.sampled_from(sorted(n for n in folder_files if n.endswith(".npz"))))
    members = _members(folder_files[target])
    member = data.draw(st.sampled_from(sorted(members)))
    header = data.draw(st.booleans())  # most edits in the first 128 bytes: magic, version, header dict
    edits = data.draw(mutations(min(128, len(members[member])) if header else len(members[member])))
    members[member] = mutate(members[member], edits)
    folder = Path(tempfile.mkdtemp(prefix="fuzzdir"))
    try:
        for name, blob in folder_files.items():
            (folder / name).write_bytes(_zip(members) if name == target else blob)
        loads_or_refuses(folder, metric_set="mosi")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_mutate_helper():
    assert mutate(b"abcdef", [("flip", 0, ord("x")), ("cut", 4)]) == b"xbcd"
    assert mutate(b"abc", [("insert", 1, b"ZZ"), ("delete", 0, 1)]) == b"ZZbc"
