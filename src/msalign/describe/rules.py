"""Clip signals, the Describer interface and the default rule-based describer.

A :class:`ClipSignals` holds what a clip offers to describe: face frames (52 MediaPipe
blendshapes + head yaw / pitch / roll, face frames only), named audio frames (librosa:
``log2_f0``, ``voicing``, ``log_rms``, ...), word timestamps, or only an opaque utterance-level
acoustic vector. :func:`clip_statistics` reduces it to named scalars; :class:`RuleDescriber`
turns those into words by comparing them with thresholds FITTED on the data (per statistic, the
33rd / 66th / 90th percentiles over the training clips that have it; :meth:`RuleDescriber.fit`),
never with hand-picked constants, and stores them as JSON (:meth:`RuleDescriber.to_json`).
Descriptions are therefore relative to the dataset: "smiling" means "smiles more than two thirds
of the training clips", the same convention as z-scored features.

Levels of a statistic v with fitted percentiles (p33, p66, p90): 0 if v <= p33, 1 if v <= p66,
2 if v <= p90, else 3. Face attributes are named at level >= 2 ("smiling"), with a stronger
wording at 3 ("smiling strongly"); voice attributes use three bands (low / medium / high).
A statistic that is constant over the data never crosses its own threshold, so it is never named.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msalign.errors import MsalignError

PERCENTILES = (33.0, 66.0, 90.0)
FORMAT = 1

# statistic -> blendshape names averaged per frame (MediaPipe's ARKit names)
BLENDSHAPE_GROUPS: dict[str, tuple[str, ...]] = {
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "brows_raised": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"),
    "frown": ("browDownLeft", "browDownRight"),
    "eyes_wide": ("eyeWideLeft", "eyeWideRight"),
    "eyes_closed": ("eyeBlinkLeft", "eyeBlinkRight"),
    "jaw_open": ("jawOpen",),
}
# face statistic -> (wording at level 2, wording at level 3)
FACE_WORDS: dict[str, tuple[str, str]] = {
    "smile": ("smiling", "smiling strongly"),
    "brows_raised": ("brows raised", "brows raised high"),
    "frown": ("frowning", "frowning strongly"),
    "eyes_wide": ("eyes wide", "eyes very wide"),
    "eyes_closed": ("eyes closing", "eyes shut"),
    "jaw_open": ("mouth open", "mouth wide open"),
}
HEAD_WORDS: dict[str, tuple[str, str]] = {
    "nod": ("nodding", "nodding strongly"),  # pitch movement over frames
    "shake": ("shaking", "shaking strongly"),  # yaw movement over frames
    "tilt": ("tilted", "tilted strongly"),  # |mean roll|
    "turn": ("turned aside", "turned far aside"),  # |mean yaw|
}
# voice statistic -> (low, medium, high) band words; None = not said
VOICE_WORDS: dict[str, tuple[str | None, str | None, str | None]] = {
    "pitch": ("low pitch", "medium pitch", "high pitch"),
    "pitch_range": ("monotone", None, "varied pitch"),
    "loudness": ("quiet", "moderate loudness", "loud"),
    "rate": ("slow", "moderate pace", "fast"),
}
OPAQUE_COMPONENTS = 3  # principal components of an unnamed acoustic vector that are described


@dataclass
class ClipSignals:
    """What one clip (or image) offers a describer. Absent parts are None, with the reason."""

    clip_id: str
    face: np.ndarray | None = None  # (F, 55) face frames only: blendshapes then yaw, pitch, roll
    face_names: Sequence[str] | None = None
    face_note: str = "none detected"  # said when face is None: "none detected", "no video", ...
    audio: np.ndarray | None = None  # (T, D) frames
    audio_names: Sequence[str] | None = None
    audio_frame_rate: float | None = None
    audio_note: str = "none (no audio)"
    words: list[tuple[float, float]] | None = None  # (start, end) seconds of recognised words
    utterance_audio: np.ndarray | None = None  # (D,) an opaque acoustic vector with no names
    media: str | None = None  # the source video / image, for describers that look at pixels
    is_image: bool = False  # one still picture: no motion to describe


def _columns(names: Sequence[str] | None, wanted: Iterable[str]) -> list[int] | None:
    if names is None:
        return None
    lookup = {n: i for i, n in enumerate(names)}
    index = [lookup[w] for w in wanted if w in lookup]
    return index or None


def clip_statistics(signals: ClipSignals) -> dict[str, float]:
    """Named per-clip scalars (NaN where the clip lacks the signal). See the module docstring."""
    nan = math.nan
    stats: dict[str, float] = {}
    face = signals.face
    has_face = face is not None and len(face) > 0
    for key, group in BLENDSHAPE_GROUPS.items():
        cols = _columns(signals.face_names, group) if has_face else None
        stats[key] = float(face[:, cols].mean()) if cols and face is not None else nan
    yaw, pitch, roll = (
        _columns(signals.face_names, [n]) if has_face else None for n in ("head_yaw", "head_pitch", "head_roll")
    )
    if face is not None and has_face and yaw and pitch and roll:
        y, p, r = face[:, yaw[0]], face[:, pitch[0]], face[:, roll[0]]
        moving = not signals.is_image and len(face) >= 3
        stats["nod"] = float(np.std(p)) if moving else nan
        stats["shake"] = float(np.std(y)) if moving else nan
        stats["tilt"] = float(abs(np.mean(r)))
        stats["turn"] = float(abs(np.mean(y)))
    else:
        stats.update(nod=nan, shake=nan, tilt=nan, turn=nan)
    stats.update(pitch=nan, pitch_range=nan, loudness=nan, rate=nan, voiced=nan)
    audio = signals.audio
    if audio is not None and len(audio) > 0 and signals.audio_names is not None:
        f0c = _columns(signals.audio_names, ["log2_f0"])
        rmsc = _columns(signals.audio_names, ["log_rms"])
        if f0c:
            f0 = audio[:, f0c[0]]
            voiced = f0 > 0
            stats["voiced"] = float(voiced.mean())
            if voiced.sum() >= 2:
                stats["pitch"] = float(f0[voiced].mean())
                stats["pitch_range"] = float(f0[voiced].std())
                if rmsc:
                    stats["loudness"] = float(audio[voiced, rmsc[0]].mean())
            rate = _speaking_rate(signals, voiced)
            stats["rate"] = rate if rate is not None else nan
        elif rmsc:
            stats["loudness"] = float(audio[:, rmsc[0]].mean())
    return stats


def _speaking_rate(signals: ClipSignals, voiced: np.ndarray) -> float | None:
    """Words per second of speech (first word start to last word end) from word timestamps; without
    them, voiced-segment onsets per voiced second (a syllable-rate proxy)."""
    words = signals.words or []
    if len(words) >= 2:
        span = words[-1][1] - words[0][0]
        if span > 0:
            return len(words) / span
    if signals.audio_frame_rate and voiced.sum() >= 2:
        onsets = int(voiced[0]) + int(np.sum(voiced[1:] & ~voiced[:-1]))
        return onsets / (voiced.sum() / signals.audio_frame_rate)
    return None


class Describer:
    """Interface: ``describe(signals) -> str``; ``fit`` on the training clips first when needed."""

    name = "describer"

    def describe(self, signals: ClipSignals) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What made the descriptions, recorded in descriptions.json."""
        return {"describer": self.name}


@dataclass
class RuleDescriber(Describer):
    """Offline, deterministic rules over blendshapes, head pose and prosody with fitted thresholds."""

    thresholds: dict[str, list[float]] = field(default_factory=dict)  # statistic -> [p33, p66, p90]
    fitted_on: dict[str, str] = field(default_factory=dict)  # statistic -> "train" | "all"
    # an opaque acoustic vector: standardisation and principal axes fitted on the training clips
    opaque: dict[str, list] | None = None
    name = "rules"

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, signals: Sequence[ClipSignals], train: Sequence[bool] | None = None) -> RuleDescriber:
        """Percentiles of every statistic over the ``train`` clips that have it (all clips when
        fewer than two training clips do; no labels are read, so nothing leaks)."""
        train_mask = np.ones(len(signals), dtype=bool) if train is None else np.asarray(train, dtype=bool)
        if len(train_mask) != len(signals):
            raise MsalignError(f"describe: {len(train_mask)} train flags for {len(signals)} clips")
        vectors = [s.utterance_audio for s in signals]
        if any(v is not None for v in vectors):
            self._fit_opaque(vectors, train_mask)
        table = [self.statistics(s) for s in signals]
        keys = sorted({k for row in table for k in row})
        self.thresholds, self.fitted_on = {}, {}
        for key in keys:
            values = np.array([row.get(key, math.nan) for row in table], dtype=np.float64)
            finite = np.isfinite(values)
            pick, where = (finite & train_mask, "train") if (finite & train_mask).sum() >= 2 else (finite, "all")
            if pick.sum() == 0:
                continue
            self.thresholds[key] = [float(v) for v in np.percentile(values[pick], PERCENTILES)]
            self.fitted_on[key] = where
        # fitted even when no clip had a face or a voice: every clip is then described as such
        self._fitted = True
        return self

    def _fit_opaque(self, vectors: list[np.ndarray | None], train_mask: np.ndarray) -> None:
        rows = [i for i, v in enumerate(vectors) if v is not None]
        use = [i for i in rows if train_mask[i]] if sum(train_mask[i] for i in rows) >= 2 else rows
        x = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in use])
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        _, _, vt = np.linalg.svd((x - mean) / std, full_matrices=False)
        axes = vt[: min(OPAQUE_COMPONENTS, len(vt))]
        axes *= np.where(axes.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)  # deterministic sign
        self.opaque = {"mean": mean.tolist(), "std": std.tolist(), "axes": axes.tolist()}

    def statistics(self, signals: ClipSignals) -> dict[str, float]:
        stats = clip_statistics(signals)
        if self.opaque is not None and signals.utterance_audio is not None:
            z = (np.asarray(signals.utterance_audio, np.float64) - np.asarray(self.opaque["mean"])) / np.asarray(
                self.opaque["std"]
            )
            for i, axis in enumerate(np.asarray(self.opaque["axes"])):
                stats[f"acoustic_{i + 1}"] = float(z @ axis)
        return stats

    # -- describing ---------------------------------------------------------------------------

    def level(self, key: str, value: float) -> int | None:
        """0..3 against the fitted (p33, p66, p90); None when unknown or not fitted."""
        if not math.isfinite(value) or key not in self.thresholds:
            return None
        p33, p66, p90 = self.thresholds[key]
        return 0 if value <= p33 else 1 if value <= p66 else 2 if value <= p90 else 3

    def describe(self, signals: ClipSignals) -> str:
        if not self.thresholds and not getattr(self, "_fitted", False):
            raise MsalignError("describe: the rule describer has no thresholds; fit it on the data first")
        stats = self.statistics(signals)
        return " ".join(
            p for p in (self._face(signals, stats), self._head(signals, stats), self._voice(signals, stats)) if p
        )

    def _named(self, words: dict[str, tuple[str, str]], stats: dict[str, float]) -> list[str]:
        said = []
        for key, (mild, strong) in words.items():
            lv = self.level(key, stats.get(key, math.nan))
            if lv is not None and lv >= 2:
                said.append(strong if lv == 3 else mild)
        return said

    def _face(self, signals: ClipSignals, stats: dict[str, float]) -> str:
        if signals.face is None or len(signals.face) == 0:
            return f"Face: {signals.face_note}."
        if signals.face_names is None:
            return "Face: present, not described (unnamed visual features)."
        said = self._named(FACE_WORDS, stats)
        return f"Face: {', '.join(said) if said else 'neutral expression'}."

    def _head(self, signals: ClipSignals, stats: dict[str, float]) -> str:
        if signals.face is None or len(signals.face) == 0 or signals.face_names is None:
            return ""
        said = self._named(HEAD_WORDS, stats)
        if not said:
            said = ["facing the camera" if signals.is_image else "still"]
        return f"Head: {', '.join(said)}."

    def _voice(self, signals: ClipSignals, stats: dict[str, float]) -> str:
        if signals.audio is None and signals.utterance_audio is None:
            return f"Voice: {signals.audio_note}."
        if signals.audio is None:  # only an opaque vector: its principal components, unnamed
            parts = []
            for i in range(OPAQUE_COMPONENTS):
                lv = self.level(f"acoustic_{i + 1}", stats.get(f"acoustic_{i + 1}", math.nan))
                if lv is not None:
                    parts.append(f"acoustic component {i + 1} {('low', 'medium', 'high', 'high')[lv]}")
            return f"Voice: {', '.join(parts)}." if parts else "Voice: not described."
        if math.isfinite(stats.get("voiced", math.nan)) and not math.isfinite(stats.get("pitch", math.nan)):
            return "Voice: no speech."
        said = []
        for key, words in VOICE_WORDS.items():
            lv = self.level(key, stats.get(key, math.nan))
            if lv is None:
                continue
            word = words[min(lv, 2)]
            if word:
                said.append(word)
        return f"Voice: {', '.join(said)}." if said else "Voice: not described."

    # -- storage ------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "describer": self.name,
            "format": FORMAT,
            "percentiles": list(PERCENTILES),
            "thresholds": self.thresholds,
            "fitted_on": self.fitted_on,
            "opaque": self.opaque,
        }

    def to_json(self) -> dict[str, Any]:
        return self.identity()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleDescriber:
        if not isinstance(data, dict) or data.get("describer") != "rules" or "thresholds" not in data:
            raise MsalignError(
                "describe: not a rule describer's thresholds (expected 'describer': 'rules' and 'thresholds')"
            )
        return cls(
            thresholds={k: list(map(float, v)) for k, v in data["thresholds"].items()},
            fitted_on=dict(data.get("fitted_on", {})),
            opaque=data.get("opaque"),
        )
