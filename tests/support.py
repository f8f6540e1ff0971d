"""Helpers shared by several test modules: small datasets on disk, error capture, file mutation
and the Megamind media clip. Fixtures live in conftest.py; plain functions and constants here."""

from __future__ import annotations

import csv
import functools
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from msalign.cli import main
from msalign.config import TrainConfig
from msalign.data.feature_dir import save_modality
from msalign.errors import MsalignError
from msalign.models.attention import length_groups
from msalign.training import RunSpec, train
from msalign.training.run_folder import RunResults

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOSI = SHARED / "data" / "mosi"


MODES = ["train"] * 6 + ["valid"] * 3 + ["test"] * 3


def write_labels(folder: Path, labels, modes=MODES, texts=None) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with open(folder / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for i, (y, mode) in enumerate(zip(labels, modes, strict=True)):
            video, clip = f"vid{i // 4}", str(i % 4 + 1)
            text = texts[i] if texts else f"clip, number {i}"
            w.writerow([video, clip, text, y, "Positive", mode])
            ids.append(f"{video}_{clip}")
    return ids


def make_folder(folder: Path, labels=None, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-3, 3, len(MODES)).round(2) if labels is None else labels
    ids = write_labels(folder, labels)
    n = len(ids)
    order = rng.permutation(n + 2)  # files may hold extra clips, in any order
    all_ids = np.array([*ids, "extra_1", "extra_2"])[order]
    save_modality(folder, "audio", all_ids, rng.normal(3.0, 2.0, size=(n + 2, 7)))
    lengths = rng.integers(1, 6, n + 2)
    save_modality(folder, "vision", all_ids, rng.normal(size=(n + 2, 5, 4)), lengths)
    save_modality(folder, "text", all_ids, rng.normal(size=(n + 2, 6, 8)), rng.integers(2, 7, n + 2))
    return ids


def error(fn, *args, **kw) -> str:
    with pytest.raises(MsalignError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


SIZES = {"train": 6, "valid": 3, "test": 4}


LT, LA, LV = 8, 10, 12


def mmsa_split(name: str, n: int, *, aligned: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    la, lv = (LT, LT) if aligned else (LA, LV)
    text_len = rng.integers(3, LT + 1, n)
    mask = (np.arange(LT)[None] < text_len[:, None]).astype(np.float64)
    d = {
        "raw_text": np.array([f"clip {name} {i}" for i in range(n)]),
        "audio": rng.normal(size=(n, la, 5)).astype(np.float32),
        "vision": rng.normal(size=(n, lv, 4)).astype(np.float32),
        "id": np.array([f"vid{name}$_${i}" for i in range(n)], dtype=object),
        "text": rng.normal(size=(n, LT, 16)).astype(np.float32),
        "text_bert": np.stack([mask * 100, mask, np.zeros_like(mask)], axis=1),
        "annotations": np.array(["Positive"] * n),
        "classification_labels": rng.integers(0, 3, n).astype(np.float32),
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
    }
    if aligned:
        d["audio"][:, 6:] = 0  # trailing padding
    else:
        d["audio_lengths"] = rng.integers(1, LA + 1, n)
        d["vision_lengths"] = list(rng.integers(1, LV + 1, n))
    return d


def mmsa_data(aligned: bool = False) -> dict:
    return {name: mmsa_split(name, n, aligned=aligned, seed=i) for i, (name, n) in enumerate(SIZES.items())}


def write_pickle(path: Path, data, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@st.composite
def mutations(draw, size: int):
    """A few edits of a ``size``-byte file: ('flip', pos, byte), ('cut', pos), ('insert', pos, bytes),
    ('delete', pos, n)."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, size - 1)))
        if kind == "flip":
            edits.append((kind, pos, draw(st.integers(0, 255))))
        elif kind == "cut":
            edits.append((kind, pos))
        elif kind == "insert":
            edits.append((kind, pos, draw(st.binary(min_size=1, max_size=8))))
        else:
            edits.append((kind, pos, draw(st.integers(1, 16))))
    return edits


def mutate(blob: bytes, edits) -> bytes:
    data = bytearray(blob)
    for edit in edits:
        kind, pos = edit[0], min(edit[1], max(0, len(data) - 1))
        if kind == "flip" and data:
            data[pos] = edit[2]
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = edit[2]
        elif kind == "delete":
            del data[pos : pos + edit[2]]
    return bytes(data)


MEDIA = Path(os.environ.get("MSALIGN_MEDIA") or Path.home() / ".cache" / "msalign" / "media")


MEGAMIND = MEDIA / "opencv-doc/usr/share/doc/opencv-doc/examples/data/Megamind.avi"


# an MP4 that every extraction backend reads, encoded fast
H264_AAC = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]


def ffmpeg(*args: str) -> None:
    """Runs ffmpeg quietly with these arguments, overwriting outputs; fails on its error."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def cut_clip(source: Path, start: str, length: str, out: Path) -> None:
    """``length`` seconds of ``source`` from ``start`` s, as an H.264/AAC MP4 at ``out``."""
    ffmpeg("-ss", start, "-t", length, "-i", str(source), *H264_AAC, str(out))


def megamind_features(tmp_path, texts, modes, step, length, needs=("librosa", "mediapipe")):
    """Megamind.avi cut into len(texts) clips (every ``step`` s, ``length`` s long) with these
    transcripts (so no speech recognition) and modes, extracted and described; the feature dir.
    Skips when the media, ffmpeg or the media extra is absent."""
    for module in needs:
        pytest.importorskip(module, reason="media extra not installed")
    if not MEGAMIND.exists() or shutil.which("ffmpeg") is None:
        pytest.skip(f"{MEGAMIND} or ffmpeg not present (bash scripts/media_assets.sh)")
    raw = tmp_path / "ds" / "Raw" / "mm"
    raw.mkdir(parents=True)
    for i in range(len(texts)):
        cut_clip(MEGAMIND, f"{step * i:.1f}", str(length), raw / f"{i}.mp4")
    (tmp_path / "ds" / "label.csv").write_text(
        "video_id,clip_id,text,label,annotation,mode\n"
        + "".join(f"mm,{i},{t},{(-1) ** i * 1.5},,{m}\n" for i, (t, m) in enumerate(zip(texts, modes, strict=True)))
    )
    features = tmp_path / "features"
    assert (
        main(
            [
                "extract",
                str(tmp_path / "ds"),
                "--out",
                str(features),
                "--fps",
                "4",
                "--missing",
                "mask",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert main(["describe", str(features), "--out", str(features)]) == 0  # into the dataset: asked for
    return features


# ---- hostile inputs: the real CLI in a subprocess, with its exit status, stderr, time and peak memory


SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float


def assert_refused(run: CliRun, *culprits: str, max_mb: float = 1500, max_seconds: float = 60) -> str:
    """Exit 2, exactly one stderr line ``msalign: error: ...`` naming every culprit, no traceback,
    bounded peak memory and time. Returns the line."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, f"exit {run.returncode}, stderr: {run.stderr[-2000:]}"
    assert len(lines) == 1, f"expected one line, got: {run.stderr[-2000:]}"
    line = lines[0]
    assert line.startswith("msalign: error: ") and "internal error" not in line and "Traceback" not in line, line
    for culprit in culprits:
        assert culprit in line, f"{culprit!r} not named in: {line}"
    assert run.peak_mb < max_mb, f"peak RSS {run.peak_mb:.0f} MB"
    assert run.seconds < max_seconds, f"took {run.seconds:.1f} s"
    return line


# Many hostile files through one interpreter: the CLI's imports take seconds on a loaded machine, so
# each case runs msalign.cli.main in the same child, with its own stderr, status, time and the
# child's peak RSS so far (monotonic, so every case is bounded by the last value). A crash by
# signal or a hang still fails the whole batch (returncode / timeout).
_BATCH_WRAPPER = """
import io, json, os, resource, sys, time
from msalign.cli import main
def peak_kb():
    # VmHWM is this process's own peak; ru_maxrss keeps the peak of the forked parent's pages across
    # exec on Linux, so a child of a 3 GB pytest process would report 3 GB
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cases = json.load(open(sys.argv[1]))
out = []
for case in cases:
    os.chdir(case["cwd"])
    err, keep = io.StringIO(), sys.stderr
    sys.stderr = err
    start = time.monotonic()
    try:
        rc = main(case["argv"])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stderr = keep
    out.append({"rc": rc, "stderr": err.getvalue(), "seconds": time.monotonic() - start,
                "peak_kb": peak_kb()})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
"""


def run_cli_batch(cases: list[list[str]], tmp: Path, timeout: float = 180, env: dict | None = None) -> list[CliRun]:
    """``msalign ARGV`` for each case (in ``tmp``) in one fresh interpreter; see _BATCH_WRAPPER."""
    spec, result = tmp / f".cases_{time.monotonic_ns()}.json", tmp / f".results_{time.monotonic_ns()}.json"
    spec.write_text(json.dumps([{"argv": list(map(str, a)), "cwd": str(tmp)} for a in cases]))
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    environment.pop("MSALIGN_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-c", _BATCH_WRAPPER, str(spec), str(result)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=tmp,
        stdin=subprocess.DEVNULL,
    )
    runs = json.loads(result.read_text()) if result.exists() else []
    assert done.returncode == 0 and len(runs) == len(cases), (
        f"batch child died (exit {done.returncode}) after {len(runs)} of {len(cases)} cases; "
        f"next: {cases[len(runs)] if len(runs) < len(cases) else None}; stderr: {done.stderr[-2000:]}"
    )
    spec.unlink()
    result.unlink()
    return [CliRun(r["rc"], "", r["stderr"], r["seconds"], r["peak_kb"] / 1024) for r in runs]


def init_local_ray(ray) -> None:
    """Starts a local Ray instance for in-process tests: 2 CPUs, a 100 MB object store, quiet.
    ``ray`` is the module (an optional extra, so the caller imports it)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        logging_level="WARNING",
    )


SENTIMENT_WORDS = ["great", "awful", "fine", "boring", "lovely", "bad", "superb", "dull"]


def write_review_folder(data: Path, seed: int = 0, clips_per_video: int = 1) -> Path:
    """A feature directory of 24 clips (12 train / 6 valid / 6 test): real review sentences in
    label.csv, labels +-2 alternating, and a random 5-d utterance audio vector. ``clips_per_video``
    consecutive clips share a video_id (3: four videos train, two valid, two test)."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    with open(data / "label.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for i in range(24):
            word = SENTIMENT_WORDS[i % len(SENTIMENT_WORDS)]
            mode = "train" if i < 12 else "valid" if i < 18 else "test"
            writer.writerow(
                [
                    f"v{i // clips_per_video}",
                    str(i % clips_per_video + 1),
                    f"the movie was really {word} " + "and long " * (i % 3),
                    2.0 if i % 2 == 0 else -2.0,
                    "",
                    mode,
                ]
            )
            ids.append(f"v{i // clips_per_video}_{i % clips_per_video + 1}")
    save_modality(data, "audio", ids, rng.normal(size=(24, 5)))
    return data


# ---- models: a short training run, and the padding-free attention paths switched on or off


def train_two_epochs(model_name: str, model_config, data, out_dir: Path) -> RunResults:
    """``model_name`` trained quietly for 2 epochs (batch 16, seed 0, CPU, one thread) into ``out_dir``."""
    train_config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, patience=2, threads=1, accelerator="cpu")
    return train(
        RunSpec(model_name, model_config, train_config, seeds=[0], out_dir=out_dir),
        data,
        progress=False,
        log=lambda *a: None,
    )


def set_packing(monkeypatch, encoders, modules, *, pack: bool, groups: bool) -> None:
    """Every encoder packs its queries (``pack``) or never does, and ``length_groups`` in each of
    ``modules`` splits rows by length with no overhead (``groups``) or keeps one group of all rows."""
    for encoder in encoders:
        encoder.pack_below = 1.0 if pack else 0.0
    grouping = (
        functools.partial(length_groups, overhead=0.0)
        if groups
        else (lambda q, *args, **kw: [torch.arange(q.shape[0])])
    )
    for module in modules:
        monkeypatch.setattr(module, "length_groups", grouping)
