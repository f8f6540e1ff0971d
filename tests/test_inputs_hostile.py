"""Hostile inputs (issue 17): files crafted to crash, exhaust, hang or steer msalign.

Every file is built here at test time. Each case goes through the real CLI in a child interpreter
and must end with exit status 2 and ONE stderr line naming the file or key, within a bounded time
and peak memory (conftest.run_cli_batch). A crash by signal or a hang fails the batch.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from msalign.data import safe_pickle
from support import assert_refused, run_cli_batch

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
    stub = (
        GLOBAL(module, "_reconstruct")
        + MARK
        + GLOBAL("numpy", "ndarray")
        + MARK
        + INT(0)
        + TUPLE
        + BYTES(b"b")
        + TUPLE
        + REDUCE
    )
    shape_ops = MARK + b"".join(INT(n) if n < 2**31 else LONG(n) for n in shape) + TUPLE
    return stub + MARK + INT(1) + shape_ops + dt + FALSE + data + TUPLE + BUILD


def as_dataset(value: bytes) -> bytes:
    """{'train': VALUE} as a whole pickle: the hostile value sits where the loader reads features."""
    return PROTO2 + EMPTY_DICT + STR("train") + value + SETITEM + STOP


def hostile_pickles() -> dict[str, bytes]:
    files = {
        # issue 17.1: an object dtype with zeroed flags, as a scalar and as an array over raw bytes
        "object_scalar.pkl": as_dataset(
            GLOBAL("numpy._core.multiarray", "scalar") + MARK + dtype("O8") + BYTES(b"\x41" * 8) + TUPLE + REDUCE
        ),
        "object_array.pkl": as_dataset(reconstruct((4,), dtype("O8"), BYTES(b"\x10" * 32))),
        "structured_dtype.pkl": as_dataset(
            reconstruct(
                (1,), GLOBAL("numpy", "dtype") + MARK + STR("V8") + FALSE + TRUE + TUPLE + REDUCE, BYTES(b"\0" * 8)
            )
        ),
        "ndarray_call.pkl": as_dataset(
            GLOBAL("numpy", "ndarray") + MARK + MARK + INT(2) + TUPLE + dtype("f8") + TUPLE + REDUCE
        ),
        # issue 17.2: nesting deep enough to overflow the C stack when hashed (tuple as a dict key)
        "deep_key.pkl": PROTO2 + EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * 300_000 + NONE + SETITEM + STOP,
        "deep_list.pkl": as_dataset(MARK * 50_000 + b"l" * 50_000),
        "deep_frozenset.pkl": b"\x80\x04"
        + EMPTY_DICT
        + b"\x8f"
        + MARK
        + EMPTY_TUPLE
        + TUPLE1 * 200_000
        + b"\x90"
        + NONE
        + SETITEM
        + STOP,
        # issue 17.3: tiny files that declare gigabytes
        "memo_index.pkl": PROTO2 + b"j" + struct.pack("<I", 0xFFFFFFF0) + STOP,
        "memo_put_huge.pkl": PROTO2
        + NONE
        + b"r"
        + struct.pack("<I", 0xFFFFFFF0)
        + b"j"
        + struct.pack("<I", 0xFFFFFFF0)
        + STOP,
        "bytearray_n.pkl": as_dataset(GLOBAL("builtins", "bytearray") + MARK + LONG(2**32) + TUPLE + REDUCE),
        "bytes8_declared.pkl": b"\x80\x04" + b"\x8e" + struct.pack("<Q", 2**40) + b"x" * 100 + STOP,
        "unicode8_declared.pkl": b"\x80\x04" + b"\x8d" + struct.pack("<Q", 2**33) + b"x" * 100 + STOP,
        "array_declares_more.pkl": as_dataset(
            reconstruct((40, 14000, 1000), dtype("f4", byteorder="<", elsize=4), BYTES(b"\0" * 4096))
        ),
        "array_shape_overflow.pkl": as_dataset(
            reconstruct((2**40, 2**40), dtype("f4", byteorder="<", elsize=4), BYTES(b""))
        ),
    }
    # a reference bomb: each level is a list of 1000 references to the previous one (5 levels, ~10 KB,
    # 10^15 floats once expanded by np.asarray or repr)
    bomb = (
        PROTO2 + EMPTY_DICT + STR("train") + EMPTY_DICT + STR("text") + b"G" + struct.pack(">d", 1.0) + b"q\x00" + b"0"
    )
    for level in range(1, 6):
        bomb += (
            MARK + (b"h" + bytes([level - 1])) * 1000 + b"l" + b"q" + bytes([level]) + b"0"
        )  # built, memoised, popped
    files["list_bomb.pkl"] = bomb + b"h\x05" + SETITEM + SETITEM + STOP
    return files


# ---- the other hostile files (each builder writes into ``tmp`` and returns argv and culprits)

TINY = "synthetic:n_train=32,n_valid=16,n_test=16"


def _npy(shape, dtype="<f4", data: bytes = b"") -> bytes:
    """A .npy file whose header declares ``shape`` whatever data follows."""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def _zip(members: dict[str, bytes], compress: bool = False) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _lie_about_size(blob: bytes, member: str, declared: int) -> bytes:
    """Set ``member``'s uncompressed size in the zip's central directory (what zipfile trusts)."""
    name = member.encode()
    at = blob.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack("<H", blob[at + 28 : at + 30])[0]
        if blob[at + 46 : at + 46 + name_len] == name:
            return blob[: at + 24] + struct.pack("<I", declared) + blob[at + 28 :]
        at = blob.find(b"PK\x01\x02", at + 4)
    raise AssertionError(member)


def _folder(tmp: Path, name: str) -> Path:
    from test_data_feature_dir import make_folder

    folder = tmp / name
    make_folder(folder)
    return folder


def _dir_args(folder: Path) -> list[str]:
    return [*TRAIN, "--dataset", str(folder), "--out", str(folder) + "_out"]


def _audio_ids(folder: Path) -> np.ndarray:
    with np.load(folder / "audio_utterance.npz") as z:
        return z["ids"]


def npz_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    cases = {}
    # issue 17.3: a 4 KB member whose header declares 40 x 14000 x 1000 float32 (2.2 GB)
    folder = _folder(tmp, "npz_declares")
    ids = _audio_ids(folder)
    np_ids = _npy(ids.shape, ids.dtype.str, ids.tobytes())
    (folder / "audio_utterance.npz").write_bytes(
        _zip({"ids.npy": np_ids, "audio.npy": _npy((40, 14000, 1000), data=b"\0" * 4096)})
    )
    cases["npz_declares"] = (_dir_args(folder), ("audio_utterance.npz", "(40, 14000, 1000)"))
    # a zip member whose directory entry claims 3 GB from 1 KB (a zip bomb / crafted size)
    folder = _folder(tmp, "npz_zip_bomb")
    rows = np.zeros((len(ids), 7), np.float32)
    blob = _zip({"ids.npy": np_ids, "audio.npy": _npy(rows.shape, data=rows.tobytes())}, compress=True)
    (folder / "audio_utterance.npz").write_bytes(_lie_about_size(blob, "audio.npy", 3 * 2**30))
    cases["npz_zip_bomb"] = (_dir_args(folder), ("audio_utterance.npz",))
    # issue 17.10: byte-string ids that are not UTF-8
    folder = _folder(tmp, "npz_bad_ids")
    bad = np.array([b"\xff\xfe" + i.encode() for i in ids.tolist()])
    with np.load(folder / "audio_utterance.npz") as z:
        np.savez(folder / "audio_utterance.npz", ids=bad, audio=z["audio"])
    cases["npz_bad_ids"] = (_dir_args(folder), ("audio_utterance.npz", "'ids'", "UTF-8"))
    return cases


def fifo_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """issue 17.8: FIFOs where data files belong; opening one would block forever."""
    cases = {}
    folder = _folder(tmp, "fifo_npz")
    (folder / "audio_utterance.npz").unlink()
    os.mkfifo(folder / "audio_utterance.npz")
    cases["fifo_npz"] = (_dir_args(folder), ("audio_utterance.npz", "not a regular file"))
    folder = _folder(tmp, "fifo_label")
    (folder / "label.csv").unlink()
    os.mkfifo(folder / "label.csv")
    cases["fifo_label"] = (_dir_args(folder), ("label.csv", "not a regular file"))
    os.mkfifo(tmp / "fifo.pkl")
    cases["fifo_pkl"] = ([*TRAIN, "--dataset", str(tmp / "fifo.pkl"), "--out", "fifo_pkl_out"], ("fifo.pkl",))
    os.mkfifo(tmp / "fifo.yaml")
    cases["fifo_config"] = (
        [*TRAIN, "--dataset", TINY, "--config", str(tmp / "fifo.yaml"), "--out", "fifo_cfg_out"],
        ("fifo.yaml",),
    )
    os.mkfifo(tmp / "fifo.safetensors")
    cases["fifo_checkpoint"] = (
        ["evaluate", "--checkpoint", str(tmp / "fifo.safetensors"), "--dataset", TINY],
        ("fifo.safetensors",),
    )
    return cases


def yaml_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """issue 17.4: alias bombs (a billion-laughs list and a mapping merge) and a huge scalar."""
    laughs = "a: &a [" + ",".join(["lol"] * 10) + "]\n"
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        laughs += f"{level}: &{level} [" + ",".join([f"*{previous}"] * 10) + "]\n"
    (tmp / "laughs.yaml").write_text(laughs + "model:\n  width: *i\n")
    merge = "base: &b {width: 64}\nmodel:\n  <<: *b\n"
    (tmp / "merge.yaml").write_text(merge)
    (tmp / "long.yaml").write_text("model:\n  width: '" + "9" * 500_000 + "'\n")
    cases = {}
    for name in ("laughs.yaml", "merge.yaml", "long.yaml"):
        cases[name] = ([*TRAIN, "--dataset", TINY, "--config", str(tmp / name), "--out", f"out_{name}"], (name,))
    return cases


def settings_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """issue 17.6: each value out of range is refused up front, naming its key."""
    sets = {
        "lr=-1": "train.lr",
        "lr=nan": "train.lr",
        "text_lr=inf": "train.text_lr",
        "batch_size=0": "train.batch_size",
        "dropout=1.5": "model.dropout",
        "width=0": "model.width",
        "num_workers=-2": "train.num_workers",
        "epochs=²": "train.epochs",
        "patience=-1": "train.patience",
        "grad_clip=-0.5": "train.grad_clip",
        "max_train_batches=0": "train.max_train_batches",
        "max_train_batches=2.5": "train.max_train_batches",
        "train.threads=100000": "train.threads",
        "layers=100000": "model.layers",
        "weight_decay=-1": "train.weight_decay",
    }
    cases = {f"set {k}": ([*TRAIN, "--dataset", TINY, "--set", k, "--out", "out_set"], (v,)) for k, v in sets.items()}
    for model in ("mult", "text_only", "decalign", "dashfusion"):
        cases[f"heads {model}"] = (
            ["train", "--model", model, "--dataset", TINY, "--set", "width=30", "heads=4", "--out", "out_heads"],
            (f"{model}: width 30", "heads 4"),
        )
    return cases


def checkpoint_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """issue 17.5: tampered checkpoint metadata, refused before anything is built."""
    import json

    from safetensors.torch import load_file, save_file

    from msalign.models import create_model
    from msalign.training.checkpoint import CheckpointMeta, read_checkpoint_meta, save_checkpoint

    model = create_model("late_fusion", dims={"text": 8, "audio": 4}, output_dim=1)
    base = tmp / "good.safetensors"
    save_checkpoint(base, model, CheckpointMeta.describe(model, {"width": 64}, feature_spec={}))
    info, state = read_checkpoint_meta(base).to_json(), load_file(str(base))
    tampered = {
        "layers_1e6": ("model_config", {"layers": 1_000_000}),
        "width_huge": ("model_config", {"width": 16384}),
        "dims_1e9": ("dims", {"text": 10**9, "audio": 4}),
        "dims_negative": ("dims", {"text": -3, "audio": 4}),
        "dims_string": ("dims", {"text": "8", "audio": 4}),
        "dims_list": ("dims", [8, 4]),
        "config_list": ("model_config", [64]),
        "config_unknown": ("model_config", {"depth": 3}),
        "config_type": ("model_config", {"dropout": "high"}),
        "spec_not_dict": ("feature_spec", "x"),
        "output_str": ("output_dim", "1"),
        "output_huge": ("output_dim", 10**12),
        "model_int": ("model", 3),
        "options_list": ("feature_spec", {"options": [1]}),
    }
    cases = {}
    for name, (key, value) in tampered.items():
        meta = {**info, key: value}
        save_file(state, str(tmp / f"{name}.safetensors"), metadata={"msalign": json.dumps(meta)})
        cases[f"ckpt {name}"] = (
            ["evaluate", "--checkpoint", str(tmp / f"{name}.safetensors"), "--dataset", TINY],
            (f"{name}.safetensors", key),
        )
    return cases


def path_cases(tmp: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """issue 17.7: a benchmark label that would write outside --out; label.csv ids leaving the folder."""
    cases = {}
    for i, label in enumerate(["late_fusion[dropout=0.1]/../../escaped", "..", "late_fusion[x=a\\b]"]):
        cases[f"label {i}"] = (
            [
                "benchmark",
                "--models",
                label,
                "--dataset",
                TINY,
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--out",
                str(tmp / "bench" / "out"),
            ],
            ("--models",),
        )
    for key, value in (("video_id", "../../outside"), ("video_id", "/etc"), ("clip_id", "..")):
        folder = tmp / f"extract_{key}_{len(value)}"
        folder.mkdir()
        (folder / "label.csv").write_text(
            f"video_id,clip_id,text,label,annotation,mode\n"
            f"{value if key == 'video_id' else 'v'},{value if key == 'clip_id' else '1'},"
            "hi,0.5,Positive,train\n"
        )
        cases[f"extract {key} {value}"] = (["extract", str(folder), "--out", str(folder) + "_out"], ("label.csv", key))
    return cases


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple]:
    """Every hostile case of this module through one child interpreter: name -> (run, culprits)."""
    tmp = tmp_path_factory.mktemp("hostile")
    cases: dict[str, tuple[list[str], tuple[str, ...]]] = {}
    for name, blob in hostile_pickles().items():
        (tmp / name).write_bytes(blob)
        cases[name] = ([*TRAIN, "--dataset", name, "--out", f"out_{name}"], (name,))
    for build in (npz_cases, fifo_cases, yaml_cases, settings_cases, checkpoint_cases, path_cases):
        cases.update(build(tmp))
    names = list(cases)
    runs = run_cli_batch([cases[n][0] for n in names], tmp, timeout=300)
    return {"tmp": tmp, **{n: (run, cases[n][1]) for n, run in zip(names, runs, strict=True)}}


def _check(hostile: dict, prefix: str | tuple[str, ...], max_mb: float = 1500) -> None:
    names = [n for n in hostile if n != "tmp" and n.startswith(prefix)]
    assert names
    for name in names:
        run, culprits = hostile[name]
        line = assert_refused(run, *culprits, max_mb=max_mb, max_seconds=30)
        if name.startswith("object_"):  # issue 17.1: refused before numpy sees the dtype
            assert "refusing" in line and "object" in line, line


def test_hostile_pickles(hostile):
    _check(hostile, tuple(hostile_pickles()))
    assert not list(hostile["tmp"].glob("out_*.pkl/results.json"))


def test_npz_sizes_and_ids(hostile):
    _check(hostile, "npz_")


def test_special_files_do_not_hang(hostile):
    _check(hostile, "fifo_")


def test_yaml_alias_bombs(hostile):
    _check(hostile, ("laughs.yaml", "merge.yaml", "long.yaml"))


def test_settings_out_of_range(hostile):
    _check(hostile, ("set ", "heads "))
    for name in [n for n in hostile if n.startswith(("set ", "heads "))]:
        assert hostile[name][0].seconds < 10  # refused before any data loads or a model is built


def test_tampered_checkpoint_metadata(hostile):
    _check(hostile, "ckpt ")


def test_paths_stay_inside(hostile):
    _check(hostile, ("label ", "extract "))
    tmp = hostile["tmp"]
    assert not (tmp / "escaped").exists() and not (tmp / "bench" / "escaped").exists()


def test_allocation_limit_is_configurable_and_out_is_locked(tmp_path):
    """A valid 8 MB array is refused under MSALIGN_MAX_ALLOC=1M, naming its shape; and while one run
    holds --out (issue 17.10), a second is refused with one line naming --out and the holder. One
    child interpreter for both (the CLI's imports are the slow part)."""
    from msalign.atomic import locked_dir

    blob = pickle.dumps({"train": {"text": np.zeros((8, 256, 1024), np.float32)}}, protocol=4)
    (tmp_path / "big.pkl").write_bytes(blob)
    with locked_dir(tmp_path / "out"):
        runs = run_cli_batch(
            [
                [*TRAIN, "--dataset", "big.pkl", "--out", "o"],
                [*TRAIN, "--dataset", TINY, "--out", str(tmp_path / "out")],
            ],
            tmp_path,
            env={"MSALIGN_MAX_ALLOC": "1M"},
        )
    assert_refused(runs[0], "big.pkl", "(8, 256, 1024)", "MSALIGN_MAX_ALLOC")
    line = assert_refused(runs[1], "--out", str(tmp_path / "out"), f"PID {os.getpid()}")
    assert "another msalign run" in line
    with locked_dir(tmp_path / "out"):  # released when its holder is done
        pass


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
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def _oracle_value() -> dict:
    rng = np.random.default_rng(0)
    shared = "shared"
    plain = [
        1,
        -1,
        255,
        65536,
        2**40,
        -(2**70),
        1.5,
        float("nan"),
        float("-inf"),
        None,
        True,
        False,
        "héllo",
        "",
        b"by",
        b"",
        bytearray(b"ba"),
        (1, (2,)),
        frozenset({1, 2}),
        {3, 4},
        1 + 2j,
        (),
        [],
        {},
        shared,
        shared,
    ]
    return {
        "train": {
            "text": rng.random((3, 4, 5), dtype=np.float32),
            "id": list(np.array(["a_1", "b_22"])),  # numpy.str_ scalars, as MMSA's build scripts write ids
            "raw_text": np.array(["x", "yé"], dtype=object),
            "u": np.array(["ab", "c"]),
            "s": np.array([b"ab", b"c"]),
            "big_endian": np.arange(5, dtype=">i8"),
            "fortran": np.asfortranarray(np.ones((2, 3))),
            "bool": np.array([True, False]),
            "complex": np.array([1 + 2j], np.complex64),
            "f16": np.arange(3, dtype=np.float16),
            "scalars": [np.float32(2.5), np.int64(-3), np.bool_(True), np.uint8(7)],
            "empty": np.zeros((0, 3)),
            "zero_d": np.array(3.0),
            "large": rng.random((300, 700)),
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


# ---- issue 17.9: resume after moving a run folder; 17.10: leftovers, modes, BOM, locks


def test_resume_after_moving_the_run_folder(tmp_path, monkeypatch, capsys):
    """A run interrupted after its first epoch, moved, resumed: the best epoch so far is kept
    (Lightning would forget it: the checkpoint's dirpath is the old folder) and the results equal
    an uninterrupted run's."""
    import shutil

    import torch

    from msalign.cli import main
    from msalign.training import module as module_mod
    from msalign.training.run import AtomicCheckpointIO

    args = [
        "train",
        "--model",
        "late_fusion",
        "--dataset",
        TINY,
        "--epochs",
        "3",
        "--seeds",
        "1111",
        "--set",
        "train.threads=1",
        "train.patience=5",
    ]
    original = module_mod.MSALightningModule.on_train_epoch_start

    def interrupt(self):
        if self.current_epoch == 2:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(module_mod.MSALightningModule, "on_train_epoch_start", interrupt)
    assert main([*args, "--out", str(tmp_path / "first")]) == 1
    monkeypatch.setattr(module_mod.MSALightningModule, "on_train_epoch_start", original)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    last = tmp_path / "moved" / "seed_1111" / "lightning" / "last.ckpt"
    state = AtomicCheckpointIO().load_checkpoint(last)
    saved = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert saved["dirpath"] == os.path.realpath(last.parent) and Path(saved["best_model_path"]).parent == Path(
        saved["dirpath"]
    )
    assert torch.load(last, weights_only=True)["callbacks"] != state["callbacks"]  # rewritten, not as stored
    assert main([*args, "--out", str(tmp_path / "moved"), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    for name in ("results.json", "seed_1111/history.json"):
        assert (tmp_path / "moved" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_atomic_writes_get_the_umask_mode_and_clean_dead_writers_leftovers(tmp_path):
    from msalign.atomic import _host, atomic_savez, atomic_write_text

    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        atomic_savez(tmp_path / "a.npz", x=np.ones(2))
    finally:
        os.umask(previous)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o640
    dead = tmp_path / f".r.json.{_host()}-{2**22 + 12345}.abcd.tmp"  # above pid_max's default: not running
    live = tmp_path / f".r.json.{_host()}-{os.getpid()}.efgh.tmp"
    remote = tmp_path / ".r.json.otherhost-1.ijkl.tmp"
    old = tmp_path / ".r.json.mnop.tmp"
    for p in (dead, live, remote, old):
        p.write_text("half")
    os.utime(old, (0, 0))
    atomic_write_text(tmp_path / "r.json", "{}")
    assert not dead.exists() and not old.exists() and live.exists() and remote.exists()


def test_label_csv_with_a_byte_order_mark_loads(tmp_path):
    from msalign.data import load_dataset

    folder = _folder(tmp_path, "bom")
    text = (folder / "label.csv").read_text(encoding="utf-8")
    (folder / "label.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert len(load_dataset(str(folder), standardize=False).splits["train"]) == 6


def test_media_named_like_an_option_reaches_ffprobe_as_a_path(tmp_path, monkeypatch):
    """issue 17.7: "-version.mp4" (or "concat:a|b") must not be read as an option or protocol."""
    import subprocess

    from msalign.extract import media

    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, b"", b"Invalid data found when processing input")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(media, "ffmpeg_tool", lambda name, **kw: name)
    monkeypatch.setattr(media.subprocess, "run", fake_run)
    (tmp_path / "-version.mp4").write_bytes(b"\0" * 64)
    with pytest.raises(Exception, match="not a readable media file"):
        media.probe("-version.mp4")
    assert seen[0][-1] == str(tmp_path / "-version.mp4")
    assert not any(arg.startswith("-version") for arg in seen[0])


def test_interpreter_pushes_memoised_and_duplicated_none():
    """GET / DUP of None must push it (handlers use None for "nothing pushed")."""
    blob = PROTO2 + NONE + b"q\x00" + b"0" + MARK + b"h\x00" + NONE + b"2" + b"l" + STOP  # [memo None, None, DUP]
    assert safe_pickle.loads(blob) == [None, None, None] == pickle.loads(blob)
