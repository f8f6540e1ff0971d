"""Sentiment-lexicon descriptors of a transcript (loader option ``text_lexicon``, ``--text-lexicon``).

A small registry of descriptor groups; each is a pure function of one transcript string (never of
a label) with named features:

* ``vader`` - VADER's ``polarity_scores`` (Hutto & Gilbert 2014): ``compound``, ``pos``, ``neg``, ``neu``;
* ``textblob`` - TextBlob's default PatternAnalyzer (the lexicon bundled in the package, no NLTK
  corpus needed, offline): ``polarity``, ``subjectivity``;
* ``valence`` - over the transcript's whitespace words, with VADER's lexicon valences
  (0 for a word it does not list): their ``sum``, ``max`` and ``min`` (0 for an empty transcript),
  the counts of words with positive and with negative valence, the count of negation words
  (VADER's ``NEGATE`` list, which also holds the apostrophe-less forms MOSI's lower-case
  transcripts use: didnt, dont, isnt, wasnt, cant, ...) and the word count. A word is looked up
  as written and, when the lexicon does not list it, lower-cased with surrounding punctuation
  stripped (ASR transcripts: "Great," -> great); MOSI's transcripts are lower case without
  punctuation, so there the lookup is the word as written.

The loader (:mod:`msalign.data.feature_dir_loader`) appends a clip's descriptor vector to every real
position of its text sequence (zero at padding) before the train-split standardisation, so the
descriptors are z-scored with training statistics like every other channel; ``msalign predict``
computes them alike from the ASR transcript. They come from the transcript only: with textalign's
descriptions, from the transcript, not the appended description.

The packages are the optional extra ``lexicon`` (``bash scripts/setup.sh lexicon``).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from msalign.errors import MsalignError

FEATURES: dict[str, tuple[str, ...]] = {
    "vader": ("compound", "pos", "neg", "neu"),
    "textblob": ("polarity", "subjectivity"),
    "valence": ("sum", "max", "min", "positive_words", "negative_words", "negations", "words"),
}
DEFAULT_GROUPS: tuple[str, ...] = tuple(FEATURES)
MISSING_EXTRA = (
    "--text-lexicon needs the optional extra 'lexicon' (vaderSentiment, textblob): bash scripts/setup.sh lexicon"
)


def resolve_groups(option: bool | str | Sequence[str] | None, source: str = "text_lexicon") -> tuple[str, ...]:
    """The descriptor groups an option names: True (or an empty name list) -> every group; a
    comma-separated string or a list -> those, in the order given; an unknown name is one line."""
    if option is None or option is False:
        return ()
    if option is True:
        return DEFAULT_GROUPS
    names = [n.strip() for n in option.split(",")] if isinstance(option, str) else [str(n).strip() for n in option]
    names = [n for n in names if n]
    if not names:
        return DEFAULT_GROUPS
    for name in names:
        if name not in FEATURES:
            raise MsalignError(f"{source}: unknown lexicon {name!r} (known: {', '.join(FEATURES)})")
    if len(set(names)) != len(names):
        raise MsalignError(f"{source}: lexicon named twice in {','.join(names)}")
    return tuple(names)


def feature_names(groups: Sequence[str] = DEFAULT_GROUPS) -> list[str]:
    """``group.feature`` for every column :func:`lexicon_features` returns, in order."""
    return [f"{group}.{name}" for group in resolve_groups(list(groups)) for name in FEATURES[group]]


def _analyzers() -> tuple[Any, Any, frozenset[str]]:
    """(VADER analyzer, TextBlob class, VADER's negation words); one line naming the extra when missing."""
    try:
        # the optional extra 'lexicon': imported only when --text-lexicon is used
        from textblob import TextBlob
        from vaderSentiment.vaderSentiment import NEGATE, SentimentIntensityAnalyzer
    except ImportError:
        raise MsalignError(MISSING_EXTRA) from None
    return SentimentIntensityAnalyzer(), TextBlob, frozenset(NEGATE)


_STRIP = string.punctuation


def _lookup(word: str, table: Any) -> str:
    """``word`` as written when ``table`` lists it, else lower-cased without surrounding punctuation."""
    return word if word in table else word.lower().strip(_STRIP)


def _valence(text: str, lexicon: dict[str, float], negate: frozenset[str]) -> list[float]:
    words = text.split()
    values = np.array([float(lexicon.get(_lookup(w, lexicon), 0.0)) for w in words], dtype=np.float64)
    if not len(values):
        values = np.zeros(1)
    return [
        float(values.sum()),
        float(values.max()),
        float(values.min()),
        float((values > 0).sum()),
        float((values < 0).sum()),
        float(sum(_lookup(w, negate) in negate for w in words)),
        float(len(words)),
    ]


def lexicon_features(texts: Sequence[str], groups: Sequence[str] = DEFAULT_GROUPS) -> np.ndarray:
    """(N, k) float32: the descriptors of ``groups`` (see the module docstring) for each transcript;
    ``k == len(feature_names(groups))``."""
    chosen = resolve_groups(list(groups))
    vader, textblob, negate = _analyzers()
    lexicon: dict[str, float] = vader.lexicon
    compute: dict[str, Callable[[str], list[float]]] = {
        "vader": lambda t: [float(v) for v in map(vader.polarity_scores(t).get, FEATURES["vader"])],
        "textblob": lambda t: [float(v) for v in textblob(t).sentiment],
        "valence": lambda t: _valence(t, lexicon, negate),
    }
    rows = [[value for group in chosen for value in compute[group](str(text))] for text in texts]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(feature_names(chosen)))


def append_descriptors(features: np.ndarray, lengths: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
    """(N, L, D + k): each clip's descriptor vector (N, k) appended at its real positions, zero at padding."""
    n, steps, _ = features.shape
    real = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    tiled = np.broadcast_to(np.asarray(descriptors, dtype=np.float32)[:, None, :], (n, steps, descriptors.shape[1]))
    return np.concatenate([features.astype(np.float32, copy=False), np.where(real[:, :, None], tiled, 0.0)], axis=2)


__all__ = [
    "DEFAULT_GROUPS",
    "FEATURES",
    "MISSING_EXTRA",
    "append_descriptors",
    "feature_names",
    "lexicon_features",
    "resolve_groups",
]
