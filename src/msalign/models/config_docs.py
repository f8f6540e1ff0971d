"""What each config field means, read from the config dataclass's own source (``msalign models NAME``).

One mechanism for every model config and :class:`msalign.config.TrainConfig`: a field's meaning is
the comment on its own line (``width: int = 64  # shared width d``), else the comment lines
directly above it (no blank line between). Only the first sentence is shown, so a long
rationale can follow it. ``tests/test_config_docs.py`` checks that every field has one.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from typing import Any, cast

from msalign.config import CONFIG_DIR, TrainConfig
from msalign.models.registry import build_config, get_model_class

_MAX = 110


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    # a sentence ends at ". " before a capital, except after an abbreviation (Sec. IV, Fig. 4, eq. 2)
    match = re.search(r"(?<!\bSec)(?<!\bFig)(?<!\bTab)(?<!\beq)(?<!\bEq)(?<!\bal)\.\s+(?=[A-Z])", text)
    if match:
        text = text[: match.start()]
    text = text.rstrip(".")
    return text if len(text) <= _MAX else text[: _MAX - 3].rstrip() + "..."


def field_help(cls: type) -> dict[str, str]:
    """``{field: one-line meaning}`` for a dataclass, from the comments in its source ('' if none)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {f.name: "" for f in dataclasses.fields(cls)}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(token.start[0])
    lines = source.splitlines()
    docs: dict[str, str] = {}
    (statement,) = ast.parse(source).body
    node = cast(ast.ClassDef, statement)  # the source of a class is one class statement
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        line = item.lineno
        text = comments.get(line, "") if line in code_lines else ""
        if not text:
            above: list[str] = []
            row = line - 1
            while row >= 1 and row in comments and lines[row - 1].lstrip().startswith("#"):
                above.insert(0, comments[row])
                row -= 1
            text = " ".join(above)
        docs[item.target.id] = _first_sentence(text)
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}


def type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def describe_fields(config: Any, section: str) -> list[tuple[str, str, str, str]]:
    """``[(key, type, default, meaning)]`` for every field of the dataclass instance ``config``."""
    hints = typing.get_type_hints(type(config))
    docs = field_help(type(config))
    rows = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        rows.append(
            (f"{section}.{f.name}" if section == "train" else f.name, type_name(hints[f.name]), default, docs[f.name])
        )
    return rows


def modality_summary(cls: Any) -> str:
    """What a model class needs and uses, e.g. ``needs text + 1 of audio,vision; uses text,audio,vision``."""
    required = [m for m in cls.supported_modalities if m in cls.required_modalities]
    optional = [m for m in cls.supported_modalities if m not in cls.required_modalities]
    extra = cls.min_modalities - len(required)
    needs = ["+".join(required)] if required else []
    if extra > 0 and optional:
        needs.append(f"{extra} of {','.join(optional)}")
    return f"needs {' + '.join(needs)}; uses {','.join(cls.supported_modalities)}"


def format_model_help(name: str) -> str:
    """The text ``msalign models NAME`` prints: modalities, then every model and train field."""
    cls = get_model_class(name)
    doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    rows = describe_fields(build_config(name), "model") + describe_fields(TrainConfig(), "train")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    files = sorted(p.name for p in (CONFIG_DIR / name).glob("*.yaml")) if (CONFIG_DIR / name).is_dir() else []
    out = [
        doc[0] if doc else name,
        f"modalities: {modality_summary(cls)} (others in the dataset are ignored)",
        f"dataset config files (configs/{name}/): {', '.join(files) if files else 'none'}",
        "config keys (--set KEY=VALUE; a bare key means model.KEY, else train.KEY):",
        "  " + "  ".join(h.ljust(w) for h, w in zip(("key", "type", "default"), widths, strict=True)) + "  meaning",
    ]
    for key, kind, default, meaning in rows:
        cells = "  ".join(v.ljust(w) for v, w in zip((key, kind, default), widths, strict=True))
        out.append("  " + cells + "  " + meaning)
    return "\n".join(line.rstrip() for line in out)
