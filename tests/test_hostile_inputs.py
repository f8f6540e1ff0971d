"""Hostile inputs (issue 17): files crafted to crash, exhaust, hang or steer msalign.

Every file is built here at test time. Each case goes through the real CLI in a child interpreter
and must end with exit status 2 and ONE stderr line naming the file or key, within a bounded time
and peak memory (conftest.run_cli / run_cli_batch). A crash by signal or a hang fails the batch.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused, run_cli, run_cli_batch

from msalign.data import safe_pickle

TRAIN = ["train", "--model", "late_fusion", "--epochs", "1", "--seeds", "1111", "--metric-set", "mosi"]

# ---- a tiny pickle assembler: hostile files are written opcode by opcode


def GLOBAL(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def STR(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def INT(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def LONG(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def BYTES(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


PROTO2, MARK, TUPLE, REDUCE, BUILD, NONE, STOP = b"\x80\x02", b"(", b"t", b"R", b"b", b"N", b"."
TRUE, FALSE, EMPTY_DICT, SETITEM, EMPTY_TUPLE, TUPLE1 = b"\x88", b"\x89", b"}", b"s", b")", b"\x85"


def dtype(spec: str, flags: int = 0, byteorder: str = "|", elsize: int = 8) -> bytes:
    """numpy.dtype(spec) with a chosen state (its flags are what the SIGSEGV attack zeroes)."""
    state = MARK + INT(3) + STR(byteorder) + NONE * 3 + INT(elsize) + INT(8) + INT(flags) + TUPLE
    return GLOBAL("numpy", "dtype") + MARK + STR(spec) + FALSE + TRUE + TUPLE + REDUCE + state + BUILD


def reconstruct(shape: tuple[int, ...], dt: bytes, data: bytes, module: str = "numpy.core.multiarray") -> bytes:
    stub = GLOBAL(module, "_reconstruct") + MARK + GLOBAL("numpy", "ndarray") + MARK + INT(0) + TUPLE + BYTES(b"b") + TUPLE + REDUCE
    shape_ops = MARK + b"".join(INT(n) if n < 2**31 else LONG(n) for n in shape) + TUPLE
    return stub + MARK + INT(1) + shape_ops + dt + FALSE + data + TUPLE + BUILD


def as_dataset(value: bytes) -> bytes:
    """{'train': VALUE} as a whole pickle: the hostile value sits where the loader reads features."""
    return PROTO2 + EMPTY_DICT + STR("train") + value + SETITEM + STOP


def hostile_pickles() -> dict[str, bytes]:
    files = {
        # issue 17.1: an object dtype with zeroed flags, as a scalar and as an array over raw bytes
        "object_scalar.pkl": as_dataset(GLOBAL("numpy._core.multiarray", "scalar") + MARK + dtype("O8") + BYTES(b"\x41" * 8)
                                        + TUPLE + REDUCE),
        "object_array.pkl": as_dataset(reconstruct((4,), dtype("O8"), BYTES(b"\x10" * 32))),
        "structured_dtype.pkl": as_dataset(reconstruct((1,), GLOBAL("numpy", "dtype") + MARK + STR("V8") + FALSE + TRUE
                                                         + TUPLE + REDUCE, BYTES(b"\0" * 8))),
        "ndarray_call.pkl": as_dataset(GLOBAL("numpy", "ndarray") + MARK + MARK + INT(2) + TUPLE + dtype("f8") + TUPLE + REDUCE),
        # issue 17.2: nesting deep enough to overflow the C stack when hashed (tuple as a dict key)
        "deep_key.pkl": PROTO2 + EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * 300_000 + NONE + SETITEM + STOP,
        "deep_list.pkl": as_dataset(MARK * 50_000 + b"l" * 50_000),
        "deep_frozenset.pkl": b"\x80\x04" + EMPTY_DICT + b"\x8f" + MARK + EMPTY_TUPLE + TUPLE1 * 200_000 + b"\x90"
                              + NONE + SETITEM + STOP,
        # issue 17.3: tiny files that declare gigabytes
        "memo_index.pkl": PROTO2 + b"j" + struct.pack("<I", 0xFFFFFFF0) + STOP,
        "memo_put_huge.pkl": PROTO2 + NONE + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"j" + struct.pack("<I", 0xFFFFFFF0) + STOP,
        "bytearray_n.pkl": as_dataset(GLOBAL("builtins", "bytearray") + MARK + LONG(2**32) + TUPLE + REDUCE),
        "bytes8_declared.pkl": b"\x80\x04" + b"\x8e" + struct.pack("<Q", 2**40) + b"x" * 100 + STOP,
        "unicode8_declared.pkl": b"\x80\x04" + b"\x8d" + struct.pack("<Q", 2**33) + b"x" * 100 + STOP,
        "array_declares_more.pkl": as_dataset(reconstruct((40, 14000, 1000), dtype("f4", byteorder="<", elsize=4),
                                                          BYTES(b"\0" * 4096))),
        "array_shape_overflow.pkl": as_dataset(reconstruct((2**40, 2**40), dtype("f4", byteorder="<", elsize=4),
                                                           BYTES(b""))),
    }
    # a reference bomb: each level is a list of 1000 references to the previous one (5 levels, ~10 KB,
    # 10^15 floats once expanded by np.asarray or repr)
    bomb = PROTO2 + EMPTY_DICT + STR("train") + EMPTY_DICT + STR("text") + b"G" + struct.pack(">d", 1.0) + b"q\x00" + b"0"
    for level in range(1, 6):
        bomb += MARK + (b"h" + bytes([level - 1])) * 1000 + b"l" + b"q" + bytes([level]) + b"0"  # built, memoised, popped
    files["list_bomb.pkl"] = bomb + b"h\x05" + SETITEM + SETITEM + STOP
    return files


def test_hostile_pickles_are_refused_in_one_line(tmp_path):
    files = hostile_pickles()
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    names = sorted(files)
    runs = run_cli_batch([[*TRAIN, "--dataset", name, "--out", f"out_{name}"] for name in names], tmp_path)
    for name, run in zip(names, runs):
        line = assert_refused(run, name, max_mb=1200, max_seconds=20)
        if name.startswith("object_"):  # issue 17.1: refused before numpy sees the dtype
            assert "refusing" in line and "object" in line
        assert not (tmp_path / f"out_{name}" / "results.json").exists()


def test_allocation_limit_is_configurable(tmp_path):
    """A valid 8 MB array is refused under MSALIGN_MAX_ALLOC=1M and its shape is named."""
    blob = pickle.dumps({"train": {"text": np.zeros((8, 256, 1024), np.float32)}}, protocol=4)
    (tmp_path / "big.pkl").write_bytes(blob)
    runs = run_cli_batch([[*TRAIN, "--dataset", "big.pkl", "--out", "o"]], tmp_path, env={"MSALIGN_MAX_ALLOC": "1M"})
    assert_refused(runs[0], "big.pkl", "(8, 256, 1024)", "MSALIGN_MAX_ALLOC")


# ---- the interpreter against the stdlib oracle


def _equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        same_layout = a.dtype == b.dtype and a.shape == b.shape and a.flags.f_contiguous == b.flags.f_contiguous
        if a.dtype == object:
            return same_layout and a.tolist() == b.tolist()
        return same_layout and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def _oracle_value() -> dict:
    rng = np.random.default_rng(0)
    shared = "shared"
    plain = [1, -1, 255, 65536, 2**40, -(2**70), 1.5, float("nan"), float("-inf"), None, True, False, "héllo", "",
             b"by", b"", bytearray(b"ba"), (1, (2,)), frozenset({1, 2}), {3, 4}, 1 + 2j, (), [], {}, shared, shared]
    return {
        "train": {
            "text": rng.random((3, 4, 5), dtype=np.float32),
            "id": list(np.array(["a_1", "b_22"])),  # numpy.str_ scalars, as MMSA's build scripts write ids
            "raw_text": np.array(["x", "yé"], dtype=object),
            "u": np.array(["ab", "c"]), "s": np.array([b"ab", b"c"]), "big_endian": np.arange(5, dtype=">i8"),
            "fortran": np.asfortranarray(np.ones((2, 3))), "bool": np.array([True, False]),
            "complex": np.array([1 + 2j], np.complex64), "f16": np.arange(3, dtype=np.float16),
            "scalars": [np.float32(2.5), np.int64(-3), np.bool_(True), np.uint8(7)],
            "empty": np.zeros((0, 3)), "zero_d": np.array(3.0), "large": rng.random((300, 700)),
        },
        "plain": plain,
        "again": plain,
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_interpreter_equals_pickle_loads(protocol):
    blob = pickle.dumps(_oracle_value(), protocol=protocol)
    assert _equal(safe_pickle.loads(blob), pickle.loads(blob))


def test_interpreter_arrays_never_alias_the_file(tmp_path):
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(100_000, dtype=np.float64)}, protocol=5))
    value = safe_pickle.load_file(path)
    assert value["a"].flags.owndata and value["a"].flags.writeable
    os.unlink(path)  # the mapping is closed; the array is still whole
    assert value["a"][-1] == 99_999


def test_depth_limit_allows_real_nesting():
    value = [[[[{"a": (1, (2, (3,)))}]]]]
    assert safe_pickle.loads(pickle.dumps(value, protocol=2)) == value
    deep: list = []
    for _ in range(safe_pickle.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(Exception, match="levels deep"):
        safe_pickle.loads(pickle.dumps(deep, protocol=4))
