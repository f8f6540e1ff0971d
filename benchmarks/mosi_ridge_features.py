"""How much each text feature setting carries on real CMU-MOSI, measured with a linear probe.

    .venv/bin/python benchmarks/mosi_ridge_features.py

For each loader setting (text encoder, ``--text-lexicon``, ``--group-context``, with or without the
audio) the features come from :func:`msalign.data.spec.load_dataset` exactly as training sees them
(z-scored on the training split); each clip's text is mean-pooled over its real tokens, and a ridge
regression (scikit-learn) is fitted on the training split with its alpha chosen on VALIDATION MAE.
The test split is scored once, with MMSA's metrics (:func:`msalign.metrics.compute`). No network is
trained, so the figures isolate the features from the models. Writes
``benchmarks/results/mosi_ridge_features.{md,json}``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge

from msalign.atomic import atomic_write_text
from msalign.data.spec import load_dataset
from msalign.data.types import Split
from msalign.metrics import compute

ROOT = Path(__file__).resolve().parent.parent
DATA = str(ROOT.parent / "shared" / "data" / "mosi")
ALPHAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
SETTINGS: dict[str, dict] = {
    "MiniLM": {"text_encoder": "minilm"},
    "MPNet": {"text_encoder": "mpnet"},
    "MPNet + lexicon": {"text_encoder": "mpnet", "text_lexicon": True},
    "MPNet + context": {"text_encoder": "mpnet", "group_context": ["text"]},
    "MPNet + lexicon + context": {"text_encoder": "mpnet", "text_lexicon": True, "group_context": ["text"]},
    "MiniLM + lexicon + context": {"text_encoder": "minilm", "text_lexicon": True, "group_context": ["text"]},
}


def pooled(split: Split, modalities: list[str]) -> np.ndarray:
    """(N, sum of dims): each modality's features averaged over the clip's real positions."""
    blocks = []
    for m in modalities:
        x, n = split.features[m], split.lengths[m]
        real = np.arange(x.shape[1])[None, :] < n[:, None]
        blocks.append((x * real[..., None]).sum(1) / np.maximum(n, 1)[:, None])
    return np.concatenate(blocks, axis=1)


def probe(options: dict, modalities: list[str]) -> dict:
    ds = load_dataset(DATA, modalities=modalities, progress=False, **options)
    x = {name: pooled(ds.splits[name], modalities) for name in ("train", "valid", "test")}
    y = {name: ds.splits[name].labels.astype(np.float64) for name in ("train", "valid", "test")}
    fits = [
        (float(np.abs(Ridge(alpha=a).fit(x["train"], y["train"]).predict(x["valid"]) - y["valid"]).mean()), a)
        for a in ALPHAS
    ]
    valid_mae, alpha = min(fits)
    model = Ridge(alpha=alpha).fit(x["train"], y["train"])
    test = compute(model.predict(x["test"]), y["test"], "mosi")
    return {"alpha": alpha, "valid_MAE": round(valid_mae, 4), "test": {k: round(float(v), 4) for k, v in test.items()}}


def main() -> None:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {
        "revision": rev.strip(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": {},
    }
    for name, options in SETTINGS.items():
        for modalities in (["text"], ["text", "audio"]):
            label = name + (" + audio" if "audio" in modalities else "")
            record["rows"][label] = probe(options, modalities)
            print(label, record["rows"][label], flush=True)
    results = ROOT / "benchmarks" / "results"
    atomic_write_text(results / "mosi_ridge_features.json", json.dumps(record, indent=1) + "\n")
    lines = [
        "# A linear probe of the text features on real CMU-MOSI",
        "",
        f"`benchmarks/mosi_ridge_features.py`, revision {record['revision']}, {record['date']}, {record['machine']}.",
        "Ridge regression on each clip's mean-pooled loader features (z-scored on train), alpha chosen on",
        "validation MAE; test scored once with MMSA's metrics. No network: this isolates the features.",
        "",
        "| features | alpha | valid MAE | test Non0 Acc-2 | test Non0 F1 | test MAE | test Corr |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in record["rows"].items():
        t = row["test"]
        lines.append(
            f"| {label} | {row['alpha']:g} | {row['valid_MAE']:.3f} | {100 * t['Non0_acc_2']:.2f} | "
            f"{100 * t['Non0_F1_score']:.2f} | {t['MAE']:.3f} | {t['Corr']:.3f} |"
        )
    atomic_write_text(results / "mosi_ridge_features.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
    sys.exit(0)
