"""Models x seeds on one dataset: per-model runs (resumable per seed) and a comparison table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msalign import metrics
from msalign.checkpoint import atomic_write_text
from msalign.data.types import MultimodalDataset
from msalign.training import train


def run_benchmark(
    models: list[str],
    dataset: MultimodalDataset,
    configs: dict[str, tuple[Any, Any]],
    seeds: list[int],
    out_dir: str | Path,
    progress: bool | None = None,
    log=print,
) -> str:
    """Trains each model over ``seeds`` into ``out_dir/<model>`` (finished seeds are skipped) and
    writes ``out_dir/table.md`` and ``table.json`` (test mean and population std per model)."""
    out_dir = Path(out_dir)
    table: dict[str, dict[str, Any]] = {}
    for name in models:
        model_config, train_config = configs[name]
        results = train(name, dataset, model_config, train_config, seeds, out_dir / name, progress, log)
        table[name] = {"mean": results["mean"], "std": results["std"], "seeds": seeds}
    keys = metrics.headline_keys(dataset.metric_set)
    text = (
        f"Test metrics on {dataset.source or dataset.name}, mean ± population std over seeds {seeds}\n\n"
        + metrics.format_table({n: r["mean"] for n, r in table.items()}, keys, std={n: r["std"] for n, r in table.items()})
    )
    atomic_write_text(out_dir / "table.md", text + "\n")
    atomic_write_text(out_dir / "table.json", json.dumps({"dataset": dataset.source or dataset.name, "models": table}, indent=2))
    return text
