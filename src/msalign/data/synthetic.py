"""A built-in synthetic dataset in MOSI's shapes and label scale, for CPU demos and tests.

The generative process (one per dataset, parameters fixed by the seed):

* Every clip has three latent factors, each N(0, 1): ``shared`` (sentiment visible in every
  modality), ``prosody`` (visible ONLY in audio) and ``expression`` (visible ONLY in vision).
  The label is ``clip(label_std * (w_s*shared + w_a*prosody + w_v*expression + noise) / norm, -3, 3)``
  where ``norm`` makes the pre-clip score have standard deviation ``label_std``. A text-only model
  therefore cannot explain the audio/vision-only part of the variance.
* Each modality is an unaligned, padded sequence with its own maximum length and width, and a
  random true length per clip (zero beyond it). The evidence appears in ONE window of frames per
  clip per modality, at a random offset (so it is not at the same position across modalities),
  shaped by a smooth bump. Inside the window the frames carry
  ``shared_strength * F_m(shared) + unique_strength * G_m(unique)``, where ``F_m`` and ``G_m`` are
  random, seed-fixed, modality-specific nonlinear maps (a tanh layer followed by a linear read-out)
  from the scalar factor to the informative dimensions. Text sees ``shared`` most cleanly (mild
  nonlinearity, little noise); audio and vision see it through stronger distortions and more noise,
  but are the only carriers of ``prosody`` / ``expression``.
* Distractors: a fraction of the dimensions carry no label information; every clip has a per-clip
  nuisance latent ("speaker / recording conditions") that shifts all frames, plus a decoy event
  (a nuisance-driven bump at another random offset); and every frame has AR(1) noise.
* ``raw_text`` is a short English-like sentence whose polarity and strength follow what the text
  modality sees (the ``shared`` factor), so a text encoder run on it sees the same information.

Deterministic: the same arguments give byte-identical arrays. The generator's parameters, and each
split, come from separate child streams of ``numpy.random.SeedSequence(seed)``, so changing one
split's size leaves the other splits unchanged.

With ``task="classification"`` the labels are the pre-clip score binned into ``num_classes``
(default 6, IEMOCAP-like) equal-probability classes, and the metric set is ``"iemocap"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from msalign.data.feature_spec import FeatureSpec
from msalign.data.types import MODALITIES, SPLITS, MultimodalDataset, Split
from msalign.errors import MsalignError

# Bump when the generative process changes, so checkpoints trained on an older synthetic
# dataset are refused (the version is part of ``feature_spec``).
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of :func:`generate_synthetic`; all of them end up in ``feature_spec``."""

    seed: int = 0
    n_train: int = 1200
    n_valid: int = 300
    n_test: int = 400
    # Unaligned shapes: MOSI's are text 50x768, audio 375x5, vision 500x20; these keep the
    # character (text shortest and widest, audio longest and narrowest) at demo size.
    text_len: int = 20
    text_dim: int = 32
    audio_len: int = 40
    audio_dim: int = 8
    vision_len: int = 30
    vision_dim: int = 12
    min_length_frac: float = 0.5  # true length ~ U[ceil(frac * L), L]
    window_frac: float = 0.35  # evidence window length, as a fraction of the true length
    # Label = clip(label_std * (shared_weight*s + audio_weight*p + vision_weight*e + noise) / norm).
    shared_weight: float = 1.0
    audio_weight: float = 0.5
    vision_weight: float = 0.5
    label_noise: float = 0.15
    label_std: float = 1.5
    # How strongly each modality shows the shared factor, its unique factor, and its noise.
    text_shared: float = 1.6
    audio_shared: float = 0.5
    vision_shared: float = 0.5
    audio_unique: float = 1.4
    vision_unique: float = 1.4
    text_noise: float = 0.6
    audio_noise: float = 1.0
    vision_noise: float = 1.0
    noise_corr: float = 0.5  # AR(1) coefficient of the frame noise
    # Distortion of the factor -> feature maps: tanh slopes ~ U(0.5, 1.5) * nonlinearity.
    text_nonlinearity: float = 0.5
    audio_nonlinearity: float = 1.5
    vision_nonlinearity: float = 1.5
    hidden_units: int = 6  # width of each tanh layer
    distractor_frac: float = 0.25  # fraction of dimensions with no label information
    nuisance_dim: int = 3
    nuisance_strength: float = 0.6  # per-clip offset on all frames
    decoy_strength: float = 0.8  # nuisance-driven bump at another random offset
    task: str = "regression"
    num_classes: int | None = None  # classification only; default 6

    def validate(self) -> None:
        for name in ("n_train", "n_valid", "n_test"):
            _check(getattr(self, name) >= 1, name, "must be >= 1")
        for m in MODALITIES:
            _check(getattr(self, f"{m}_len") >= 2, f"{m}_len", "must be >= 2")
            _check(getattr(self, f"{m}_dim") >= 2, f"{m}_dim", "must be >= 2")
        _check(0.0 < self.min_length_frac <= 1.0, "min_length_frac", "must be in (0, 1]")
        _check(0.0 < self.window_frac <= 1.0, "window_frac", "must be in (0, 1]")
        _check(0.0 <= self.distractor_frac < 1.0, "distractor_frac", "must be in [0, 1)")
        _check(-1.0 < self.noise_corr < 1.0, "noise_corr", "must be in (-1, 1)")
        _check(self.label_std > 0, "label_std", "must be > 0")
        _check(self.hidden_units >= 1, "hidden_units", "must be >= 1")
        _check(self.nuisance_dim >= 1, "nuisance_dim", "must be >= 1")
        for name in (
            "shared_weight", "audio_weight", "vision_weight", "label_noise",
            "text_shared", "audio_shared", "vision_shared", "audio_unique", "vision_unique",
            "text_noise", "audio_noise", "vision_noise", "text_nonlinearity", "audio_nonlinearity",
            "vision_nonlinearity", "nuisance_strength", "decoy_strength",
        ):  # fmt: skip
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        _check(
            self.shared_weight + self.audio_weight + self.vision_weight + self.label_noise > 0,
            "shared_weight",
            "the label weights and label_noise are all zero",
        )
        _check(self.task in ("regression", "classification"), "task", "must be 'regression' or 'classification'")
        if self.task == "regression":
            _check(self.num_classes is None, "num_classes", "is only for task='classification'")
        else:
            _check(self.num_classes is None or self.num_classes >= 2, "num_classes", "must be >= 2")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise MsalignError(f"synthetic dataset: {name} {message}")


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name == "num_classes" and value is None:
        return None
    kind = str if isinstance(default, str) else float if isinstance(default, float) else int
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise MsalignError(f"synthetic dataset: {name} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MsalignError(f"synthetic dataset: {name} must be a number, got {value!r}")
        value = float(value)
        _check(bool(np.isfinite(value)), name, "must be finite")
        return value
    if not isinstance(value, str):
        raise MsalignError(f"synthetic dataset: {name} must be a string, got {value!r}")
    return value


def generate_synthetic(
    seed: int = 0, n_train: int = 1200, n_valid: int = 300, n_test: int = 400, **kwargs: Any
) -> MultimodalDataset:
    """The synthetic dataset; see the module docstring and :class:`SyntheticConfig` for kwargs."""
    values = {"seed": seed, "n_train": n_train, "n_valid": n_valid, "n_test": n_test, **kwargs}
    defaults = {f.name: f.default for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise MsalignError(f"synthetic dataset: unknown parameter {unknown[0]!r}; known: {', '.join(sorted(defaults))}")
    # Plain Python ints/floats/strs (numpy scalars are converted; strings where a number belongs
    # are refused), so feature_spec stays JSON/YAML-serialisable and compares equal across runs.
    for name, value in values.items():
        values[name] = _coerce(name, value, defaults[name])
    _check(values["seed"] >= 0, "seed", "must be >= 0")
    config = SyntheticConfig(**values)
    if config.task == "classification" and config.num_classes is None:
        config = dataclasses.replace(config, num_classes=6)
    config.validate()

    param_seq, *split_seqs = np.random.SeedSequence(config.seed).spawn(1 + len(SPLITS))
    params = _draw_parameters(config, np.random.default_rng(param_seq))
    sizes = {"train": config.n_train, "valid": config.n_valid, "test": config.n_test}
    splits = {
        name: _draw_split(config, params, name, sizes[name], seq) for name, seq in zip(SPLITS, split_seqs, strict=True)
    }
    return MultimodalDataset(
        name="synthetic",
        splits=splits,
        metric_set="mosi" if config.task == "regression" else "iemocap",
        task=config.task,  # type: ignore[arg-type]
        num_classes=config.num_classes,
        source="synthetic",
        feature_spec=FeatureSpec(kind="synthetic", version=GENERATOR_VERSION, generator=asdict(config)),
    )


# ----------------------------------------------------------------------------------------------
# Generator parameters (fixed by the seed, shared by all splits)


@dataclass
class _FactorMap:
    """Scalar factor -> (D,) vector ``readout @ (tanh(slope * x + bias) - center)``.

    Normalised so each informative dimension has mean 0 and variance 1 under x ~ N(0, 1).
    """

    slope: np.ndarray  # (H,)
    bias: np.ndarray  # (H,)
    center: np.ndarray  # (H,)
    readout: np.ndarray  # (D, H)

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (N,) -> (N, D)
        return (np.tanh(x[:, None] * self.slope + self.bias) - self.center) @ self.readout.T


def _factor_map(
    rng: np.random.Generator, dim: int, informative: np.ndarray, cfg: SyntheticConfig, nonlin: float
) -> _FactorMap:
    hidden = cfg.hidden_units
    slope = rng.uniform(0.5, 1.5, hidden) * rng.choice([-1.0, 1.0], hidden) * max(nonlin, 1e-3)
    bias = rng.normal(0.0, 0.5, hidden)
    readout = np.zeros((dim, hidden))
    readout[informative] = rng.normal(0.0, 1.0, (len(informative), hidden))
    # Moments under x ~ N(0, 1) by Gauss-Hermite quadrature: deterministic, no sampling.
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    weights = weights / weights.sum()
    hid = np.tanh(nodes[:, None] * slope + bias)  # (Q, H)
    center = weights @ hid
    std = np.sqrt(weights @ ((hid - center) @ readout.T) ** 2)  # (D,)
    scale = np.where(std > 1e-12, 1.0 / np.maximum(std, 1e-12), 0.0)
    return _FactorMap(slope=slope, bias=bias, center=center, readout=readout * scale[:, None])


@dataclass
class _ModalityParams:
    length: int
    dim: int
    shared_map: _FactorMap
    unique_map: _FactorMap | None
    nuisance_offset: np.ndarray  # (K, D)
    decoy_map: np.ndarray  # (K, D)
    noise: float
    shared_strength: float
    unique_strength: float


def _draw_parameters(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, _ModalityParams]:
    params = {}
    for m in MODALITIES:
        length, dim = getattr(cfg, f"{m}_len"), getattr(cfg, f"{m}_dim")
        n_distract = min(int(round(cfg.distractor_frac * dim)), dim - 1)
        informative = np.sort(rng.permutation(dim)[n_distract:])
        nonlin = getattr(cfg, f"{m}_nonlinearity")
        shared_map = _factor_map(rng, dim, informative, cfg, nonlin)
        unique_map = _factor_map(rng, dim, informative, cfg, nonlin) if m != "text" else None
        k = cfg.nuisance_dim
        params[m] = _ModalityParams(
            length=length,
            dim=dim,
            shared_map=shared_map,
            unique_map=unique_map,
            nuisance_offset=rng.normal(0.0, 1.0 / np.sqrt(k), (k, dim)),
            decoy_map=rng.normal(0.0, 1.0 / np.sqrt(k), (k, dim)),
            noise=getattr(cfg, f"{m}_noise"),
            shared_strength=getattr(cfg, f"{m}_shared"),
            unique_strength=getattr(cfg, f"{m}_unique") if m != "text" else 0.0,
        )
    return params


# ----------------------------------------------------------------------------------------------
# One split


def _draw_split(
    cfg: SyntheticConfig, params: dict[str, _ModalityParams], name: str, n: int, seq: np.random.SeedSequence
) -> Split:
    latent_seq, text_seq, *modality_seqs = seq.spawn(2 + len(MODALITIES))
    rng = np.random.default_rng(latent_seq)
    shared, prosody, expression, eps = rng.standard_normal((4, n))
    w = np.array([cfg.shared_weight, cfg.audio_weight, cfg.vision_weight, cfg.label_noise])
    score = (w[0] * shared + w[1] * prosody + w[2] * expression + w[3] * eps) / np.linalg.norm(w) * cfg.label_std
    if cfg.task == "regression":
        labels = np.clip(score, -3.0, 3.0).astype(np.float32)
    else:
        # Equal-probability bins of the pre-clip score, whose distribution is N(0, label_std^2).
        k = int(cfg.num_classes or 6)
        edges = np.array([NormalDist(0.0, cfg.label_std).inv_cdf(i / k) for i in range(1, k)])
        labels = np.searchsorted(edges, score).astype(np.int64)

    unique = {"text": None, "audio": prosody, "vision": expression}
    features, lengths = {}, {}
    for m, mseq in zip(MODALITIES, modality_seqs, strict=True):
        features[m], lengths[m] = _draw_modality(cfg, params[m], shared, unique[m], np.random.default_rng(mseq))

    # What text "sees" is the shared factor, scaled like its contribution to the label.
    text_sentiment = shared * cfg.label_std * cfg.shared_weight / np.linalg.norm(w)
    raw_text = _sentences(text_sentiment, np.random.default_rng(text_seq))
    ids = [f"synthetic_{name}_{i:05d}" for i in range(n)]
    return Split(name=name, features=features, lengths=lengths, labels=labels, ids=ids, raw_text=raw_text)


def _window(start: np.ndarray, win: np.ndarray, length: int) -> np.ndarray:
    """(N, L) envelopes: a half sine peaking at 1 over frames [start, start + win), zero elsewhere."""
    pos = np.arange(length)[None, :] - start[:, None]
    inside = (pos >= 0) & (pos < win[:, None])
    return np.where(inside, np.sin(np.pi * (pos + 0.5) / win[:, None]), 0.0)


def _draw_modality(
    cfg: SyntheticConfig, p: _ModalityParams, shared: np.ndarray, unique: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n, length, dim = len(shared), p.length, p.dim
    lo = max(1, int(np.ceil(cfg.min_length_frac * length)))
    lens = rng.integers(lo, length + 1, n)

    # Evidence vector per clip, and the envelope placing it in a window at a random offset.
    evidence = p.shared_strength * p.shared_map(shared)
    if unique is not None and p.unique_map is not None:
        evidence = evidence + p.unique_strength * p.unique_map(unique)
    nuisance = rng.standard_normal((n, cfg.nuisance_dim))
    decoy = cfg.decoy_strength * (rng.standard_normal((n, cfg.nuisance_dim)) @ p.decoy_map)
    win = np.maximum(1, np.round(cfg.window_frac * lens).astype(np.int64))
    start = (rng.random(n) * (lens - win + 1)).astype(np.int64)
    decoy_start = (rng.random(n) * (lens - win + 1)).astype(np.int64)
    env, decoy_env = _window(start, win, length), _window(decoy_start, win, length)

    # AR(1) frame noise with stationary standard deviation p.noise.
    innov = rng.standard_normal((n, length, dim))
    rho = cfg.noise_corr
    noise = np.empty_like(innov)
    noise[:, 0] = innov[:, 0]
    scale = np.sqrt(1.0 - rho**2)
    for t in range(1, length):
        noise[:, t] = rho * noise[:, t - 1] + scale * innov[:, t]

    x = (
        env[:, :, None] * evidence[:, None, :]
        + decoy_env[:, :, None] * decoy[:, None, :]
        + cfg.nuisance_strength * (nuisance @ p.nuisance_offset)[:, None, :]
        + p.noise * noise
    )
    x[np.arange(length)[None, :] >= lens[:, None]] = 0.0
    return x.astype(np.float32), lens.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Raw text

_TOPICS = (
    "the movie", "the film", "the plot", "the acting", "the story", "the ending", "the soundtrack",
    "the characters", "the dialogue", "the director", "the cast", "the script", "this one",
)  # fmt: skip
_OPENERS = ("", "", "", "honestly", "i think", "well", "um", "so", "i mean", "overall", "you know")
_POSITIVE = {
    1: ("nice", "decent", "pretty good", "fun", "enjoyable", "not bad"),
    2: ("good", "great", "funny", "really enjoyable", "well done", "very good"),
    3: ("amazing", "fantastic", "brilliant", "a masterpiece", "absolutely wonderful", "the best"),
}
_NEGATIVE = {
    1: ("a bit slow", "kind of boring", "not great", "a little weak", "meh", "forgettable"),
    2: ("bad", "boring", "disappointing", "really weak", "pretty bad", "a letdown"),
    3: ("terrible", "awful", "horrible", "a complete waste", "the worst", "unbearable"),
}
_NEUTRAL = (
    "was okay i guess", "was fine", "was about what i expected", "was average", "was alright",
    "had some good parts and some bad parts", "was neither good nor bad",
)  # fmt: skip
_CLOSERS = ("", "", "", "", "to be honest", "i would say", "overall", "in my opinion")


def _sentences(sentiment: np.ndarray, rng: np.random.Generator) -> list[str]:
    n = len(sentiment)
    strength = np.digitize(np.abs(sentiment), [0.35, 1.0, 1.8])  # 0 neutral .. 3 strong

    def pick(options: tuple[str, ...]) -> np.ndarray:  # one draw per clip, whether used or not
        return rng.integers(0, len(options), n)

    opener, topic, neutral, adjective, closer = (
        pick(_OPENERS),
        pick(_TOPICS),
        pick(_NEUTRAL),
        pick(_POSITIVE[1]),
        pick(_CLOSERS),
    )
    out = []
    for i in range(n):
        if strength[i] == 0:
            body = [_TOPICS[topic[i]], _NEUTRAL[neutral[i]]]
        else:
            words = (_POSITIVE if sentiment[i] > 0 else _NEGATIVE)[int(strength[i])]
            body = [_TOPICS[topic[i]], "was", words[adjective[i] % len(words)]]
        out.append(" ".join(w for w in (_OPENERS[opener[i]], *body, _CLOSERS[closer[i]]) if w))
    return out
