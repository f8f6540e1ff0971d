"""Rebuild benchmarks/results/mosi_real.{md,json} rows from run directories.

Each argument is LABEL::RUN_DIR[::NOTE] (a ``msalign train`` / ``benchmark`` entry directory holding
results.json). Rows already in mosi_real.json that are not given keep their recorded values and
gain ``"revision": "previous"`` unless they already carry one. Prints the Markdown rows.

    .venv/bin/python benchmarks/mosi_real_table.py decalign::runs/mosi/decalign "dashfusion::runs/mosi_df/dashfusion::a note"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "mosi_real.json"
KEYS = ["Has0_acc_2", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]


def row_from_run(run_dir: Path) -> dict:
    """From results.json, or (a run still going) from the finished seeds' seed_N/result.json."""
    if (run_dir / "results.json").is_file():
        per_seed = json.loads((run_dir / "results.json").read_text())["per_seed"]
    else:
        per_seed = [json.loads(p.read_text())["result"] for p in sorted(run_dir.glob("seed_*/result.json"))]
    if not per_seed:
        raise SystemExit(f"{run_dir}: no finished seed")
    tests = {k: [seed["test"][k] for seed in per_seed] for k in per_seed[0]["test"]}
    valid = [seed["valid"]["MAE"] for seed in per_seed]
    return {"mean": {k: round(float(np.mean(v)), 4) for k, v in tests.items()},
            "std": {k: round(float(np.std(v)), 4) for k, v in tests.items()},
            "valid_MAE_mean": round(float(np.mean(valid)), 4), "seeds": [seed["seed"] for seed in per_seed]}


def fmt(key: str, value: float) -> str:
    return f"{value:.3f}" if key in ("MAE", "Corr") else f"{100 * value:.2f}"


def main(arguments: list[str]) -> None:
    table = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for argument in arguments:
        label, _, rest = argument.partition("::")
        run_dir, _, note = rest.partition("::")
        row = row_from_run(Path(run_dir))
        row["note"] = note or table.get(label, {}).get("note", "")
        row["revision"] = "current"
        table[label] = row
    for row in table.values():
        row.setdefault("revision", "previous")
    RESULTS.write_text(json.dumps(table, indent=1) + "\n")
    for label, row in table.items():
        cells = [f"{fmt(k, row['mean'][k])} ± {fmt(k, row['std'][k])}" for k in KEYS]
        seeds = len(row["seeds"])
        print(f"| {label} | " + " | ".join(cells) + f" | {row['valid_MAE_mean']:.3f} | {seeds} | {row['revision']} | {row['note']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
