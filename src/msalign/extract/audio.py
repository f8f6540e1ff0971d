"""Frame-level acoustic features with librosa at a fixed hop (MMSA-FET's librosa set, CH-SIMS style).

Per frame: ``n_mfcc`` MFCCs, f0 (log2 Hz, 0 where unvoiced) and voicing probability (pyin; with
yin the voicing is 1 where the f0 estimate lies inside [fmin, fmax)), 12 chroma bins and log RMS
energy. A clip of T seconds gives about ``T / hop_seconds`` frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from msalign.errors import MsalignError


@dataclass(frozen=True)
class AudioFeatureConfig:
    sample_rate: int = 16000
    hop_seconds: float = 0.032  # 512 samples at 16 kHz
    window_seconds: float = 0.064
    n_mfcc: int = 20
    f0: str = "pyin"  # "pyin" (probabilistic, slower) or "yin"
    fmin: float = 65.0
    fmax: float = 500.0

    def __post_init__(self) -> None:
        if self.f0 not in ("pyin", "yin"):
            raise MsalignError(f"audio f0 method {self.f0!r}: choose pyin or yin")
        if self.hop_seconds <= 0 or self.window_seconds < self.hop_seconds:
            raise MsalignError(
                f"audio hop {self.hop_seconds} s / window {self.window_seconds} s: need 0 < hop <= window"
            )
        if self.n_mfcc < 1:
            raise MsalignError(f"audio n_mfcc must be >= 1, got {self.n_mfcc}")

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate))

    @property
    def frame_length(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def feature_names(self) -> list[str]:
        return (
            [f"mfcc_{i}" for i in range(self.n_mfcc)]
            + ["log2_f0", "voicing"]
            + [f"chroma_{n}" for n in ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")]
            + ["log_rms"]
        )

    @property
    def dim(self) -> int:
        return self.n_mfcc + 15

    def to_json(self) -> dict:
        return asdict(self)


def audio_features(samples: np.ndarray, config: AudioFeatureConfig = AudioFeatureConfig()) -> np.ndarray:
    """(frames, config.dim) float32 for mono ``samples`` at ``config.sample_rate``."""
    try:
        import librosa  # optional (the media extra)
    except ImportError:
        raise MsalignError("audio features need librosa: bash scripts/setup.sh dev,media") from None
    y = np.asarray(samples, dtype=np.float32)
    n_fft, hop = config.frame_length, config.hop_length
    if y.size < n_fft:  # librosa needs at least one window
        y = np.pad(y, (0, n_fft - y.size))
    sr = config.sample_rate
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=config.n_mfcc, n_fft=n_fft, hop_length=hop)
    if config.f0 == "pyin":
        f0, _, voicing = librosa.pyin(y, fmin=config.fmin, fmax=config.fmax, sr=sr, frame_length=n_fft, hop_length=hop)
        voiced = np.isfinite(f0)
    else:
        f0 = librosa.yin(y, fmin=config.fmin, fmax=config.fmax, sr=sr, frame_length=n_fft, hop_length=hop)
        voiced = (f0 > config.fmin * 1.01) & (f0 < config.fmax * 0.99)
        voicing = voiced.astype(np.float32)
    log_f0 = np.where(voiced, np.log2(np.where(voiced, f0, 1.0)), 0.0)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, n_fft=n_fft, hop_length=hop)
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)
    frames = min(mfcc.shape[1], len(log_f0), chroma.shape[1], rms.shape[1])
    stacked = np.concatenate(
        [
            mfcc[:, :frames],
            log_f0[None, :frames],
            np.nan_to_num(voicing)[None, :frames],
            chroma[:, :frames],
            np.log(rms[:, :frames] + 1e-5),
        ],
        axis=0,
    ).T
    return np.ascontiguousarray(stacked, dtype=np.float32)
