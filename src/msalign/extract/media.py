"""ffmpeg through subprocess: probe a media file, decode its audio (16 kHz mono) and its frames.

Every failure is a :class:`MsalignError` naming the file: ffmpeg missing, a file ffprobe cannot
read (corrupt, or an mp4 cut before its index), a file whose decoded audio or video stops well
before the duration its container declares (truncated), and a file with no audio track
(:class:`NoAudioTrackError`) or no video track when frames are asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msalign.errors import MsalignError

INSTALL_HINT = "install it with 'apt-get install ffmpeg' (or bash scripts/media_assets.sh)"
# Decoded media shorter than the declared duration by more than this is reported as truncated.
TRUNCATION_SLACK_SECONDS = 1.0
TRUNCATION_SLACK_FRACTION = 0.1


class NoAudioTrackError(MsalignError):
    """The file has no audio stream."""


class NoVideoTrackError(MsalignError):
    """The file has no video stream."""


def ffmpeg_tool(name: str = "ffmpeg", *, for_file: str | Path | None = None) -> str:
    """Absolute path of ``ffmpeg`` / ``ffprobe`` (``$MSALIGN_FFMPEG_DIR`` first, then PATH)."""
    folder = os.environ.get("MSALIGN_FFMPEG_DIR")
    found = shutil.which(name, path=folder) if folder else shutil.which(name)
    if found is None:
        about = f" (needed to read {for_file})" if for_file is not None else ""
        raise MsalignError(f"{name} not found on PATH{about}; {INSTALL_HINT}")
    return found


def _reason(stderr: bytes) -> str:
    """The most telling line of ffmpeg's stderr, for a one-line message."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return "no error output"
    line = lines[-1]
    return line.split(": ", 1)[1] if line.startswith("/") and ": " in line else line


def media_arg(path: str | Path) -> str:
    """``path`` as an ffmpeg / ffprobe argument: absolute, so a file named ``-x.mp4`` is not read as
    an option and one named ``concat:a|b`` or ``http:...`` is not read as a protocol."""
    return str(Path(path).absolute())


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file."""

    path: Path
    duration: float | None  # seconds, as the container declares it
    has_audio: bool
    has_video: bool
    video_fps: float | None
    width: int | None
    height: int | None


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    num, _, den = text.partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of ``path``; a clear error for a missing, unreadable or empty file."""
    path = Path(path)
    if not path.is_file():
        raise MsalignError(f"{path}: no such file")
    tool = ffmpeg_tool("ffprobe", for_file=path)
    done = subprocess.run(
        [tool, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", media_arg(path)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise MsalignError(f"{path}: not a readable media file, corrupt or truncated ({_reason(done.stderr)})")
    try:
        report = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        raise MsalignError(f"{path}: ffprobe gave unreadable output") from None
    streams = report.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    # Cover art in mp3/flac files is a video stream with a single attached picture.
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not audio and not video:
        raise MsalignError(f"{path}: no audio or video stream (corrupt, or not a media file)")
    durations = [report.get("format", {}).get("duration")] + [s.get("duration") for s in streams]
    duration = next((float(d) for d in durations if d not in (None, "N/A")), None)
    first = video[0] if video else {}
    return MediaInfo(
        path=path,
        duration=duration,
        has_audio=bool(audio),
        has_video=bool(video),
        video_fps=_rate(first.get("avg_frame_rate")) or _rate(first.get("r_frame_rate")),
        width=first.get("width"),
        height=first.get("height"),
    )


def _check_complete(info: MediaInfo, decoded: float, what: str) -> None:
    declared = info.duration
    if declared is None or declared <= 0:
        return
    if declared - decoded > max(TRUNCATION_SLACK_SECONDS, TRUNCATION_SLACK_FRACTION * declared):
        raise MsalignError(
            f"{info.path}: truncated or corrupt: "
            f"decoded {decoded:.1f} s of {what} of the {declared:.1f} s the file declares"
        )


def _decode_command(info: MediaInfo, stream: str, *output: str) -> list[str]:
    """The ffmpeg command that decodes ``stream`` (e.g. ``0:a:0``) of ``info``'s file to stdout, as ``output`` says."""
    tool = ffmpeg_tool("ffmpeg", for_file=info.path)
    return [tool, "-nostdin", "-v", "error", "-i", media_arg(info.path), "-map", stream, *output, "-"]


def load_audio(path: str | Path, sample_rate: int = 16000, info: MediaInfo | None = None) -> np.ndarray:
    """The first audio track as mono float32 samples at ``sample_rate`` Hz."""
    info = info or probe(path)
    if not info.has_audio:
        raise NoAudioTrackError(f"{info.path}: no audio track")
    done = subprocess.run(
        _decode_command(info, "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le"),
        capture_output=True,
    )
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
    if done.returncode != 0 or samples.size == 0:
        raise MsalignError(f"{info.path}: cannot decode the audio track, corrupt or truncated ({_reason(done.stderr)})")
    _check_complete(info, samples.size / sample_rate, "audio")
    return samples


def iter_frames(
    path: str | Path, fps: float, max_width: int = 640, info: MediaInfo | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB frame (H, W, 3) uint8) sampled at ``fps``, frames at most ``max_width`` wide.

    Frame k is the picture shown at time k / fps (ffmpeg's fps filter). Frames are streamed, so
    memory stays at one frame whatever the length of the video.
    """
    info = info or probe(path)
    if not info.has_video:
        raise NoVideoTrackError(f"{info.path}: no video track")
    if fps <= 0:
        raise MsalignError(f"frame rate must be positive, got {fps}")
    if not info.width or not info.height:
        raise MsalignError(f"{info.path}: video stream has no frame size (corrupt?)")
    width = min(int(info.width), max_width)
    height = int(round(info.height * width / info.width / 2)) * 2
    width -= width % 2
    frame_bytes = width * height * 3
    command = _decode_command(
        info, "0:v:0", "-an", "-vf", f"fps={fps},scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24"
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    count = 0
    try:
        assert process.stdout is not None
        while True:
            chunk = process.stdout.read(frame_bytes)
            if len(chunk) < frame_bytes:
                break
            yield count / fps, np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
            count += 1
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.stderr.read() if process.stderr else b""
        process.wait()
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
    if count == 0:
        raise MsalignError(f"{info.path}: no decodable video frames, corrupt or truncated ({_reason(stderr)})")
    _check_complete(info, count / fps, "video")
