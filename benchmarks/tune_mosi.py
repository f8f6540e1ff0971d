"""Tune every model on CMU-MOSI with ONE budget, then tabulate the tuned models over 5 seeds.

Runs ``msalign tune`` for each model with identical ``--trials``, ``--epochs`` and seeds (so no
model gets more search than another), each into ``OUT/<model>`` (resumable: re-running continues
every study where it stopped and skips finished seeds), and writes ``OUT/table.md`` and
``OUT/table.json``: per model, the best trial's validation MAE and the chosen configuration's test
metrics (mean ± population std over the seeds). Selection is on validation only; the test split is
read only by the final 5-seed runs. Long: start it in the background on one thread, e.g.

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/tune_mosi.py --trials 30 --out runs/tune_mosi \\
        --write-config > runs/tune_mosi.log 2>&1 &

``--write-config`` writes each ``configs/<model>/mosi.yaml`` and its ``mosi.search.json`` record.
Any other option (``--jobs 2``, ``--backend ray``, ``--set train.threads=1``, ...) is passed to
every ``msalign tune`` as is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from msalign import metrics
from msalign.atomic import atomic_write_text
from msalign.cli.app import main as msalign
from msalign.experiments.tune_record import read_search_record
from msalign.models import list_models

DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, required=True, help="search trials per model (the same for every model)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial and per final seed (default: configs)"
    )
    parser.add_argument(
        "--models", default=",".join(list_models()), help="comma-separated (default: every registered model)"
    )
    parser.add_argument("--dataset", default=str(DATASET))
    parser.add_argument("--seeds", default="1111,1112,1113,1114,1115")
    parser.add_argument("--seeds-search", default="1111")
    parser.add_argument("--out", default="runs/tune_mosi")
    parser.add_argument("--write-config", action="store_true")
    args, passed_on = parser.parse_known_args(argv)
    out = Path(args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    budget = ["--trials", str(args.trials), "--seeds", args.seeds, "--seeds-search", args.seeds_search]
    if args.epochs is not None:
        budget += ["--epochs", str(args.epochs)]
    rows, table = {}, {}
    for model in models:
        command = [
            "tune",
            "--model",
            model,
            "--dataset",
            args.dataset,
            *budget,
            "--out",
            str(out / model),
            *(["--write-config"] if args.write_config else []),
            *passed_on,
        ]
        print(f"== msalign {' '.join(command)}", file=sys.stderr, flush=True)
        if msalign(command) != 0:
            print(f"== {model}: failed (see above); the other models go on", file=sys.stderr, flush=True)
            continue
        record = read_search_record(next((out / model).glob("*.search.json")))
        final, best = record.final, record.best
        assert final is not None and best is not None  # a tune that exits 0 has both
        rows[model] = final["test"]
        table[model] = {
            "best_trial": best.number,
            "valid": best.value,
            "params": best.params,
            "test": final["test"],
            "test_std": final["test_std"],
            "seeds": record.seeds,
            "budget": record.budget,
            "git_revision": record.git_revision,
        }
    if not table:
        return 1
    keys = metrics.headline_keys("mosi")
    metric = "MAE"
    first = next(iter(table.values()))
    text = (
        f"Tuned on validation {metric} only: {args.trials} trials per model (Optuna TPE), "
        f"{first['budget']['epochs']} epochs, search seeds {first['budget']['search_seeds']}; "
        f"test metrics of the chosen configuration, mean ± population std over seeds {first['seeds']}.\n\n"
        + metrics.format_table(rows, keys, std={m: table[m]["test_std"] for m in rows})
        + "\n\n| model | best trial | valid MAE |\n|---|---|---|\n"
        + "\n".join(f"| {m} | {r['best_trial']} | {r['valid']:.4f} |" for m, r in table.items())
    )
    atomic_write_text(out / "table.md", text + "\n")
    atomic_write_text(out / "table.json", json.dumps(table, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
