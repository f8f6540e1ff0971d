"""Does the audio help on real MOSI? Test-time modality ablation of trained runs, per split.

For every seed checkpoint of each given run directory (``msalign train`` / ``benchmark`` output),
scores the valid and test splits with all inputs, with audio permuted across clips, and with
audio set to its train mean (``msalign.evaluation.ablation``). Writes
benchmarks/results/mosi_modality_ablation.{md,json}.

    .venv/bin/python benchmarks/mosi_modality_ablation.py runs/mosi/decalign runs/mosi_df/dashfusion
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from msalign.data import load_dataset
from msalign.evaluation.ablation import modality_contribution
from msalign.training.checkpoint import check_feature_spec, load_checkpoint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi"
OUT = Path(__file__).resolve().parent / "results"
KEYS = ("MAE", "Non0_acc_2", "Corr")


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    dataset = load_dataset(str(DATA))
    table: dict[str, dict] = {}
    for run_dir in map(Path, run_dirs):
        checkpoints = sorted(run_dir.glob("seed_*/model.safetensors"))
        if not checkpoints:
            raise SystemExit(f"{run_dir}: no seed_*/model.safetensors")
        per_seed = []
        for path in checkpoints:
            model, info = load_checkpoint(path)
            check_feature_spec(info, dataset.feature_spec, dataset.dims, path)
            per_seed.append(
                {split: modality_contribution(model, dataset, split, repeats=5) for split in ("valid", "test")}
            )
            print(path, {s: {c: round(v["MAE"], 4) for c, v in r.items()} for s, r in per_seed[-1].items()}, flush=True)
        summary = {}
        for split in ("valid", "test"):
            for condition in per_seed[0][split]:
                values = {k: [seed[split][condition][k] for seed in per_seed] for k in KEYS}
                summary[f"{split}/{condition}"] = {k: [float(np.mean(v)), float(np.std(v))] for k, v in values.items()}
        table[run_dir.name] = {"seeds": len(per_seed), "summary": summary}
    names = {
        "full": "as recorded",
        "audio/permute": "audio permuted across clips",
        "audio/mean": "audio = train mean",
        "text/permute": "text permuted across clips",
        "text/mean": "text = train mean",
    }
    lines = [
        "# MOSI: what each modality is worth at test time",
        "",
        "Trained checkpoints scored on the valid and test splits with an input ablated (msalign evaluate "
        "--modality-ablation; permutations averaged over 5 draws); mean ± std over seeds. Produced by "
        "benchmarks/mosi_modality_ablation.py.",
        "",
    ]
    for model, entry in table.items():
        lines += [
            f"## {model} ({entry['seeds']} seeds)",
            "",
            "| input | valid MAE | valid Non0 Acc-2 | test MAE | test Non0 Acc-2 | test Corr |",
            "|---|---|---|---|---|---|",
        ]
        for condition in [c for c in names if f"valid/{c}" in entry["summary"]]:
            v, t = entry["summary"][f"valid/{condition}"], entry["summary"][f"test/{condition}"]
            lines.append(
                f"| {names[condition]} | {v['MAE'][0]:.3f} ± {v['MAE'][1]:.3f} | {100 * v['Non0_acc_2'][0]:.2f} | "
                f"{t['MAE'][0]:.3f} ± {t['MAE'][1]:.3f} | {100 * t['Non0_acc_2'][0]:.2f} | {t['Corr'][0]:.3f} |"
            )
        lines.append("")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mosi_modality_ablation.md").write_text("\n".join(lines))
    (OUT / "mosi_modality_ablation.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
