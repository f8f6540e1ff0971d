"""A describer that captions pictures with any Hugging Face image-to-text model.

``ModelDescriber("Salesforce/blip-image-captioning-base")`` (a hub name already in the local
Hugging Face cache) or ``ModelDescriber("/models/my-vlm")`` (a local folder) runs the
``transformers`` image-to-text pipeline on the clip's image, or on ``frames`` frames sampled
evenly from its video, and returns "Scene: <caption>; <caption>." plus the rule describer's
voice part when one is given (captions do not hear). Nothing is downloaded: models load with
``local_files_only``; a model that is not available offline is a one-line error. ``transformers``
is imported only when the first clip is described; the tests never need a model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from msalign.describe.rules import ClipSignals, Describer, RuleDescriber
from msalign.describe.sources import load_image
from msalign.errors import MsalignError
from msalign.extract import media

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def resolve_model(name_or_path: str) -> str:
    """A local folder for ``name_or_path``: the folder itself, or the cached snapshot of a hub name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MsalignError(
                f"describer model {name_or_path!r}: folder has no config.json (not a Hugging Face model folder)"
            )
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise MsalignError(f"describer model {name_or_path!r}: no such folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import snapshot_download  # optional: only to fetch a model not in the cache

        return snapshot_download(name_or_path, local_files_only=True)
    except Exception:
        raise MsalignError(
            f"describer model {name_or_path!r}: not a local folder and not in the Hugging Face cache "
            "(msalign never downloads models; pass a local image-to-text model folder, or use --describer rules)"
        ) from None


class ModelDescriber(Describer):
    name = "model"

    def __init__(self, model: str, frames: int = 3, max_new_tokens: int = 30, voice: RuleDescriber | None = None):
        if frames < 1:
            raise MsalignError(f"describer: frames must be >= 1, got {frames}")
        self.model, self.frames, self.max_new_tokens, self.voice = model, frames, max_new_tokens, voice
        self.path = resolve_model(model)  # fail before any clip is read
        self._pipe: Any = None

    def identity(self) -> dict[str, Any]:
        return {
            "describer": self.name,
            "model": self.model,
            "frames": self.frames,
            "max_new_tokens": self.max_new_tokens,
            "voice": self.voice.identity() if self.voice else None,
        }

    def _pipeline(self) -> Any:
        if self._pipe is None:
            try:
                from transformers import pipeline  # heavy, optional until a model describer runs
            except ImportError:
                raise MsalignError("a model describer needs transformers (pip install transformers)") from None
            errors = []
            for task in ("image-to-text", "image-text-to-text"):
                try:
                    # transformers overloads pipeline() per literal task name, with no overload for a str
                    self._pipe = pipeline(task, model=self.path, device="cpu")  # type: ignore[call-overload]
                    break
                except Exception as error:  # unknown task in this transformers, or not that kind of model
                    errors.append(f"{task}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            if self._pipe is None:
                raise MsalignError(
                    f"describer model {self.model!r}: cannot load as an image-to-text model ({'; '.join(errors)})"
                )
        return self._pipe

    def pictures(self, signals: ClipSignals) -> list[np.ndarray]:
        if not signals.media:
            raise MsalignError(
                f"clip {signals.clip_id!r}: no media path recorded, so no picture to caption "
                "(a model describer needs feature directories made by msalign extract or msalign describe)"
            )
        path = Path(signals.media)
        if not path.is_file():
            raise MsalignError(f"clip {signals.clip_id!r}: media {path} no longer exists")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            return [load_image(path)]
        info = media.probe(path)
        duration = max(info.duration or 1.0, 1e-3)
        fps = self.frames / duration
        return [frame for _, frame in media.iter_frames(path, fps, info=info)][: self.frames]

    def describe(self, signals: ClipSignals) -> str:
        from PIL import Image  # optional (the media extra)

        pipe = self._pipeline()
        captions: list[str] = []
        for picture in self.pictures(signals):
            result = pipe(Image.fromarray(picture), generate_kwargs={"max_new_tokens": self.max_new_tokens})
            text = (result[0].get("generated_text", "") if result else "").strip()
            if text and text not in captions:
                captions.append(text)
        scene = f"Scene: {'; '.join(captions) if captions else 'not described'}."
        if self.voice is not None:
            return f"{scene} {self.voice._voice(signals, self.voice.statistics(signals))}"
        return scene
