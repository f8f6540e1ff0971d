"""``msalign predict``: sentiment of raw media files with a trained checkpoint.

The features are made exactly as for training: the checkpoint must have been trained on a
feature directory written by ``msalign extract``; the extraction settings are read from that
directory's ``extract.json`` (found through the run folder's ``results.json``, or given with
``--extract-spec``). A checkpoint trained on other features (an MMSA pickle, utterance-level
functionals, another text encoder or face model) is refused with a message naming the difference.

A missing modality (no face, no audio track, no speech) is never hidden: it is left out of
``modalities_used``, named with its reason under ``missing``, and the model is given the
feature-directory placeholder for it (one all-zero frame, what a training clip with the same gap
holds). ``--missing error`` refuses such inputs instead; an input with none of the model's modalities is
refused unless ``--missing mask`` is given explicitly (a score from nothing is no score).

A checkpoint trained with descriptions (``msalign describe``, loader option ``descriptions``,
model ``textalign``) has each input described by the SAME describer with the SAME fitted
thresholds as in training, read from the checkpoint's ``feature_spec.describer`` (older
checkpoints: the training folder's descriptions.json, checked against the recorded sha256); the
description is appended to the transcript exactly as the loader does and printed under
``description``. A model describer whose model is not available offline is a one-line error.

A checkpoint trained with ``--text-lexicon`` gets the same lexicon descriptors
(:func:`msalign.data.lexicon.lexicon_features`) of each input's ASR transcript (as the loader reads
it from label.csv: whitespace-normalised, without any description) appended to its text. One
trained with ``--group-context`` has the clips given to one predict call form ONE group (as for
group standardisation: e.g. one video's segments), through the loader's own
:func:`msalign.data.group_context.append_group_context`; a single input is its own context.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msalign.data.descriptions_file import (
    DESCRIPTION_TOKENS,
    DESCRIPTIONS_FILE,
    descriptions_digest,
    read_descriptions_file,
    with_description,
)
from msalign.data.feature_spec import FeatureSpec, LoadOptions, ModalitySpec
from msalign.data.group_context import append_group_context
from msalign.data.group_norm import DEFAULT_STRENGTH, standardize_groups
from msalign.data.lexicon import append_descriptors, feature_names, lexicon_features
from msalign.data.text_encoder import TextEncoder
from msalign.describe.rules import ClipSignals
from msalign.describe.run import describer_from_identity
from msalign.errors import MsalignError
from msalign.extract.pipeline import ExtractOptions, collect_jobs, run_jobs
from msalign.extract.vision import DIM as VISION_DIM
from msalign.extract.vision import feature_names as vision_names
from msalign.limits import read_regular_json
from msalign.models.text_tuning import model_inputs
from msalign.training.checkpoint import (
    CheckpointMeta,
    check_feature_spec,
    checkpoint_feature_spec,
    load_checkpoint,
)

# |score| below this is "neutral": MOSI/MOSEI scores round to 0 there; SIMS uses MMSA's 3-class cut.
NEUTRAL_BAND = {"mosi": 0.5, "mosei": 0.5, "sims": 0.1}


def find_extraction_record(checkpoint: Path, info: CheckpointMeta, given: str | Path | None) -> tuple[dict | None, str]:
    """(extract.json contents, where it came from) for the checkpoint's training features, or (None, why not)."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / "extract.json"
        return read_regular_json(path, "extraction record"), str(path)
    recorded = checkpoint_feature_spec(info).extraction
    if isinstance(recorded, dict):
        return recorded, f"checkpoint {checkpoint}"
    folder = _training_folder(checkpoint)
    if folder is not None and (folder / "extract.json").is_file():
        return read_regular_json(folder / "extract.json", "extraction record"), str(folder / "extract.json")
    return None, "no extract.json found for its training features"


def _training_folder(checkpoint: Path) -> Path | None:
    """The feature directory the checkpoint was trained on, from its run's results.json (if still there)."""
    for results in (checkpoint.parent / "results.json", checkpoint.parent.parent / "results.json"):
        if results.is_file():
            dataset = read_regular_json(results, "results").get("dataset")
            if dataset and Path(dataset).is_dir():
                return Path(dataset)
    return None


def resolve_describer(checkpoint: Path, info: CheckpointMeta):
    """The describer (with its fitted thresholds) whose descriptions the checkpoint's text carried, or None."""
    spec = checkpoint_feature_spec(info)
    given = spec.load_options.descriptions
    if not given:
        return None
    identity = spec.describer
    if isinstance(identity, dict):  # recorded at load time: the checkpoint is self-contained
        return describer_from_identity(identity, f"checkpoint {checkpoint}")
    # a checkpoint from before the describer was recorded: its training folder's descriptions.json
    folder = _training_folder(checkpoint)
    path = Path(given) if given is not True else folder / DESCRIPTIONS_FILE if folder else None
    recorded = spec.modality("text").descriptions
    if path is None or not path.is_file():
        raise MsalignError(
            f"checkpoint {checkpoint}: trained with descriptions, but it does not record its describer and "
            f"{path or 'its training folder'} is gone; retrain it to record the describer's thresholds"
        )
    raw = path.read_bytes()
    if recorded is not None and recorded.sha256 and descriptions_digest(raw) != recorded.sha256:
        raise MsalignError(
            f"checkpoint {checkpoint}: {path} changed since training (sha256 differs); "
            "retrain it to record the describer's thresholds"
        )
    return describer_from_identity(dict(read_descriptions_file(path).describer), str(path))


def clip_signals(clip, options, media_path: str | Path):
    """What a describer reads off one extracted clip, as :func:`msalign.describe.sources.feature_dir_signals`
    reads it off a feature directory written by msalign extract."""
    signals = ClipSignals(
        clip_id=str(media_path),
        face_note="no video" if clip.vision is None else "none detected",
        audio_note="none (no audio track)",
        media=str(media_path),
    )
    if clip.transcript.words:
        signals.words = [(float(w.start), float(w.end)) for w in clip.transcript.words]
    if clip.vision is not None and len(clip.vision) > 0:
        names = vision_names()
        signals.face = np.asarray(clip.vision, dtype=np.float32)
        signals.face_names = names if signals.face.shape[1] == len(names) else None
    if clip.audio is not None and len(clip.audio) > 0:
        names = options.audio.feature_names()
        if clip.audio.shape[1] == len(names):
            signals.audio, signals.audio_names = np.asarray(clip.audio, dtype=np.float32), names
            signals.audio_frame_rate = options.audio.frame_rate
        else:
            signals.utterance_audio = np.asarray(clip.audio, dtype=np.float32).mean(axis=0)
    return signals


def _differences(trained: Any, local: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(trained, dict) and isinstance(local, dict):
        out = []
        for key in sorted(set(trained) | set(local)):
            out += _differences(trained.get(key), local.get(key), f"{prefix}{key}.")
        return out
    return [] if trained == local else [(prefix.rstrip("."), trained, local)]


def resolve_options(
    checkpoint: Path,
    info: CheckpointMeta,
    given: str | Path | None,
    threads: int | None,
    warn=lambda line: print(line, file=sys.stderr),
):
    """The ExtractOptions that reproduce the checkpoint's training features; refuses what cannot be reproduced."""
    spec = checkpoint_feature_spec(info)
    if spec.format != "feature_dir":
        raise MsalignError(
            f"checkpoint {checkpoint}: trained on {spec.format or info.dataset or 'unknown'} features "
            f"(dataset {info.dataset!r}), not on a feature directory made by msalign extract, "
            "so predict cannot make matching features from media"
        )
    record, where = find_extraction_record(checkpoint, info, given)
    text_options = spec.load_options
    if record is None:
        options = ExtractOptions(
            text_encoder=_or(text_options.text_encoder, "minilm"),
            max_text_len=int(_or(text_options.max_text_len, 50)),
            threads=threads,
        )
        warn(
            f"msalign: warning: checkpoint {checkpoint}: {where}; assuming msalign extract's default settings "
            "(pass --extract-spec TRAINING_DIR/extract.json to check them)"
        )
        return options
    try:
        options = ExtractOptions.from_json(record["options"], threads)
    except (KeyError, TypeError) as error:
        raise MsalignError(f"{where}: not an extraction record written by msalign extract ({error})") from None
    for key, trained, local in _differences(record.get("spec", {}), options.spec()):
        raise MsalignError(
            f"checkpoint {checkpoint}: its features were extracted with {key}={trained!r}, "
            f"this installation makes {key}={local!r} (record: {where})"
        )
    return options


def _or(value: Any, default: Any) -> Any:
    """``value`` unless it is unset (None)."""
    return default if value is None else value


def expected_modalities(options, encoder) -> dict[str, ModalitySpec]:
    """How each modality appears in a feature directory written by msalign extract (loader's spec entries)."""
    return {
        "text": ModalitySpec(source="text_encoder", kind="sequence", encoder=encoder.identity, dim=encoder.dim),
        "audio": ModalitySpec(source="audio.npz", kind="sequence", dim=options.audio.dim),
        "vision": ModalitySpec(source="vision.npz", kind="sequence", dim=VISION_DIM),
    }


def made_dim(modality: str, dim: int, options: LoadOptions) -> int:
    """The width the loader makes from a ``dim``-wide ``modality`` under ``options``: the lexicon
    descriptors added to the text, then doubled by the group context."""
    if modality == "text" and options.text_lexicon:
        dim += len(feature_names(options.text_lexicon))
    return 2 * dim if modality in (options.group_context or ()) else dim


def with_made_dims(expected: dict[str, ModalitySpec], options: LoadOptions) -> dict[str, ModalitySpec]:
    """``expected`` (what msalign extract makes) with the widths the loader's options give them."""
    return {
        m: replace(spec, dim=made_dim(m, int(spec.dim), options)) if spec.dim is not None else spec
        for m, spec in expected.items()
    }


def _base_dim(modality: str, dim: int, options: LoadOptions) -> int:
    """The inverse of :func:`made_dim`: the width before the lexicon and the group context."""
    if modality in (options.group_context or ()):
        dim //= 2
    if modality == "text" and options.text_lexicon:
        dim -= len(feature_names(options.text_lexicon))
    return dim


def check_modalities(checkpoint: Path, info: CheckpointMeta, expected: dict[str, ModalitySpec]) -> FeatureSpec:
    """Refuse a checkpoint whose modalities were made differently; returns the matching feature spec."""
    spec = checkpoint_feature_spec(info)
    modalities = dict(spec.modalities or {})  # modalities the model does not use are not made here
    for modality in info.dims:
        trained = spec.modality(modality).to_json()
        for key, value in expected[modality].to_json().items():
            if trained.get(key) != value:
                raise MsalignError(
                    f"checkpoint {checkpoint}: trained on {modality} features with {key}={trained.get(key)!r}, "
                    f"msalign extract makes {key}={value!r}"
                )
        # Sequence length is not a property of how features are made: any clip length is scored.
        modalities[modality] = replace(expected[modality], max_len=spec.modality(modality).max_len)
    rebuilt = replace(spec, modalities=modalities)
    check_feature_spec(info, rebuilt, {m: int(expected[m].dim or 0) for m in info.dims}, checkpoint)
    return rebuilt


def sentiment_label(score: float, metric_set: str, band: float | None) -> str:
    band = NEUTRAL_BAND.get(metric_set, 0.5) if band is None else band
    return "neutral" if abs(score) < band else "positive" if score > 0 else "negative"


def predict_clips(
    model, info: CheckpointMeta, clips: list, encoder, band: float | None = None, descriptions: list[str] | None = None
) -> list[dict[str, Any]]:
    """One result dict per extracted clip (score, label, modalities_used, missing, transcript[, description])."""
    spec = checkpoint_feature_spec(info)
    stats = _or(spec.load_options.standardize, False)
    # the training split's statistics, as arrays once (not per clip)
    norms = (
        {m: (np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32)) for m, s in stats.items()}
        if isinstance(stats, dict)
        else {}
    )
    if descriptions is None:
        transcripts = [clip.transcript.text for clip in clips]
    else:  # as the loader: label.csv's text (whitespace-normalised by extract) "[SEP]" the description
        transcripts = [
            with_description(" ".join(clip.transcript.text.split()), d)
            for clip, d in zip(clips, descriptions, strict=True)
        ]
    texts, text_lengths = encoder.encode(transcripts)
    loaded = spec.load_options
    if loaded.text_lexicon:  # from the transcript as label.csv holds it (no description), as the loader
        spoken = [" ".join(clip.transcript.text.split()) for clip in clips]
        texts = append_descriptors(texts, text_lengths, lexicon_features(spoken, loaded.text_lexicon))
    per_clip = []
    for i, clip in enumerate(clips):
        sequences = {"text": texts[i, : text_lengths[i]], "audio": clip.audio, "vision": clip.vision}
        for modality in model.modalities:
            x = sequences[modality]
            if x is None or len(x) == 0:  # the feature-directory placeholder for a missing modality
                x = np.zeros((1, _base_dim(modality, info.dims[modality], loaded)), dtype=np.float32)
            sequences[modality] = np.asarray(x, dtype=np.float32)
        per_clip.append(sequences)
    _group_standardize(per_clip, info)
    group_context(per_clip, loaded.group_context or ())
    results = []
    for i, clip in enumerate(clips):
        features, masks = {}, {}
        for modality in model.modalities:
            x = per_clip[i][modality]
            if modality in norms:
                x = (x - norms[modality][0]) / norms[modality][1]
            features[modality] = torch.from_numpy(np.ascontiguousarray(x))[None]
            masks[modality] = torch.ones(1, len(x), dtype=torch.bool)
        with torch.inference_mode():
            # a fine-tuned text encoder in the checkpoint re-encodes the transcript (model_inputs)
            batch = {"features": features, "masks": masks, "texts": [transcripts[i]]}
            prediction = model(*model_inputs(model, batch)).prediction.float().reshape(-1).numpy()
        missing = {m: why for m, why in clip.missing.items() if m in model.modalities}
        result: dict[str, Any] = {}
        if (info.task or "regression") == "regression":
            score = float(prediction[0])
            result.update(score=round(score, 4), label=sentiment_label(score, info.metric_set or "mosi", band))
        else:
            probabilities = torch.softmax(torch.from_numpy(prediction), dim=0).numpy()
            best = int(probabilities.argmax())
            classes = spec.classes
            result.update(score=round(float(probabilities[best]), 4), label=classes[best] if classes else str(best))
        result.update(
            modalities_used=[m for m in model.modalities if m not in missing],
            missing=missing,
            transcript=clip.transcript.text,
        )
        if descriptions is not None:
            result["description"] = descriptions[i]
        results.append(result)
    return results


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The clips of one call as the loader holds them: (N, longest, D) zero-padded, and the lengths."""
    lengths = np.array([len(x) for x in rows])
    padded = np.zeros((len(rows), int(lengths.max()), rows[0].shape[1]), dtype=np.float32)
    for i, x in enumerate(rows):
        padded[i, : len(x)] = x
    return padded, lengths


def _group_standardize(per_clip: list[dict[str, Any]], info: CheckpointMeta) -> None:
    """A checkpoint trained on per-group z-scores (msalign.data.group_norm): the clips given to one
    predict call form one group (one speaker's clips, e.g. a video's segments), shrunk toward the
    training prior; a single clip falls back smoothly to the training statistics."""
    options = checkpoint_feature_spec(info).load_options
    priors = options.group_standardize
    if not isinstance(priors, dict):
        return
    for modality, prior in priors.items():
        if not per_clip or modality not in per_clip[0]:
            continue
        padded, lengths = _padded([clip[modality] for clip in per_clip])
        standardize_groups(
            padded, lengths, ["predict"] * len(padded), prior, float(_or(options.group_strength, DEFAULT_STRENGTH))
        )
        for clip, x, n in zip(per_clip, padded, lengths, strict=True):
            clip[modality] = x[:n]


def group_context(per_clip: list[dict[str, Any]], modalities: Any) -> None:
    """The loader's group context (msalign.data.group_context) over the clips of one predict call,
    which form one group: each clip's ``modalities`` get the call's mean appended (in place)."""
    for modality in modalities:
        if not per_clip or modality not in per_clip[0]:
            continue
        padded, lengths = _padded([clip[modality] for clip in per_clip])
        widened = append_group_context(padded, lengths, ["predict"] * len(padded))
        for clip, x, n in zip(per_clip, widened, lengths, strict=True):
            clip[modality] = x[:n]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'input':28s} {'score':>7s}  {'label':9s} {'modalities used':22s} transcript"
    lines = [header, "-" * len(header)]
    for row in rows:
        name = Path(row["input"]).name[:28]
        if "error" in row:
            lines.append(f"{name:28s} {'-':>7s}  {'error':9s} {row['error']}")
            continue
        text = row["transcript"] if len(row["transcript"]) <= 60 else row["transcript"][:57] + "..."
        used = ",".join(row["modalities_used"]) or "none"
        lines.append(f"{name:28s} {row['score']:7.3f}  {row['label']:9s} {used:22s} {text}")
        if "description" in row:
            lines.append(f"{'':28s} {'':7s}  {'':9s} description: {row['description']}")
        for modality, why in row["missing"].items():
            lines.append(f"{'':28s} {'':7s}  {'':9s} missing {modality}: {why}")
    return "\n".join(lines)


def predict(
    checkpoint: str | Path,
    inputs: list[str],
    *,
    extract_spec: str | Path | None = None,
    missing: str | None = None,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    neutral_band: float | None = None,
    progress: bool | None = None,
    warn=lambda line: print(line, file=sys.stderr),
) -> list[dict[str, Any]]:
    """One result per input, in input order; an input that fails has ``error`` instead of a score."""
    checkpoint = Path(checkpoint)
    model, info = load_checkpoint(checkpoint)
    options = resolve_options(checkpoint, info, extract_spec, None, warn)
    describer = resolve_describer(checkpoint, info)  # before extraction: a missing describer model fails fast
    spec = checkpoint_feature_spec(info)
    loaded = spec.load_options  # the loader's text options decide the text features
    extra = DESCRIPTION_TOKENS if describer is not None else 0  # the loader's room for the description
    encoder = TextEncoder(
        _or(loaded.text_encoder, options.text_encoder),
        int(_or(loaded.max_text_len, options.max_text_len)) + extra,
        cache_dir=cache_dir,
    )
    expected = with_made_dims(expected_modalities(options, encoder), loaded)
    if describer is not None:  # which descriptions.json trained it is a record, not something made here
        expected["text"] = replace(expected["text"], descriptions=spec.modality("text").descriptions)
    check_modalities(checkpoint, info, expected)
    jobs, _ = collect_jobs(inputs)
    outcomes = run_jobs(jobs, options, workers=workers, missing=missing or "mask", cache_dir=None, progress=progress)
    if missing is None:  # the default masks a missing modality, but a score from none at all is no score
        for outcome in outcomes:
            if outcome.clip is not None and all(m in outcome.clip.missing for m in model.modalities):
                reasons = "; ".join(f"{m}: {outcome.clip.missing[m]}" for m in model.modalities)
                outcome.clip, outcome.error = (
                    None,
                    (f"no modality the model reads could be extracted ({reasons}); --missing mask scores it anyway"),
                )
    notes: list[str] | None = None
    if describer is not None:
        notes = []
        for outcome in outcomes:
            if outcome.clip is None:
                continue
            try:
                notes.append(
                    describer.describe(clip_signals(outcome.clip, options, outcome.job.media or outcome.job.id))
                )
            except MsalignError as error:  # e.g. a model describer cannot read this input's frames
                outcome.clip, outcome.error = None, f"describing it: {error}"
    done = [o for o in outcomes if o.clip is not None]
    scored = iter(predict_clips(model, info, [o.clip for o in done], encoder, neutral_band, notes) if done else [])
    rows = []
    for outcome in outcomes:
        name = str(outcome.job.media or outcome.job.id)
        if outcome.clip is None:
            rows.append({"input": name, "error": outcome.error})
        else:
            rows.append({"input": name, **next(scored)})
    return rows
