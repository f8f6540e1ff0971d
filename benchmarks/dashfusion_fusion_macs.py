"""Multiply-adds of DashFusion's fusion variants (paper Table V) at CH-SIMS shapes.

One sample of lengths 39 / 400 / 55 (text / audio / vision) and dims 768 / 33 / 709, the
paper's setting (128-d, 8 heads, p = 8, 2 fusion layers). Counted with torch's FLOP counter via
``msalign.evaluation.profiling`` (1 multiply-add = 2 FLOPs; attention on SDPA's math path). Writes
benchmarks/results/dashfusion_fusion_macs.{md,json}.

    .venv/bin/python benchmarks/dashfusion_fusion_macs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from msalign.evaluation.profiling import ModuleCost, profile_model, sample_inputs
from msalign.models import create_model
from msalign.models.dashfusion import FUSIONS

SHAPES = {"text": (39, 768), "audio": (400, 33), "vision": (55, 709)}
PAPER_MADDS_M = {"concat": 0, "concat_sa": 324, "ca": 73, "bf": 162, "hbf": 145}  # Table V
OUT = Path(__file__).resolve().parent / "results"


def measure() -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    features, masks = sample_inputs(SHAPES)
    rows = {}
    for fusion in FUSIONS:
        model = create_model("dashfusion", dims={m: d for m, (_, d) in SHAPES.items()}, fusion=fusion)
        costs = {c.name: c for c in profile_model(model, features, masks, depth=1)}
        costs.setdefault("fusion", ModuleCost("fusion", 0, 0))  # Concat has neither parameters nor MAdds
        rows[fusion] = {
            "fusion_macs_M": round(costs["fusion"].macs / 1e6, 2),
            "fusion_params": costs["fusion"].params,
            "model_macs_M": round(costs[""].macs / 1e6, 2),
            "model_params": costs[""].params,
            "paper_fusion_madds_M": PAPER_MADDS_M[fusion],
        }
    return rows


def main() -> None:
    rows = measure()
    names = {"concat": "Concat", "concat_sa": "Concat&SA", "ca": "CA", "bf": "BF", "hbf": "HBF"}
    lines = [
        "# DashFusion fusion variants: multiply-adds per sample at CH-SIMS shapes",
        "",
        "Lengths 39 / 400 / 55 and dims 768 / 33 / 709 (text / audio / vision), width 128, 8 heads, "
        "p = 8, 2 fusion layers; one sample, counted by torch.utils.flop_counter "
        "(`msalign profile`; 1 multiply-add = 2 FLOPs). Produced by benchmarks/dashfusion_fusion_macs.py.",
        "",
        "| fusion (`--set fusion=`) | fusion MAdds (M) | paper Table V (M) | fusion params "
        "| whole model MAdds (M) | model params |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fusion, row in rows.items():
        lines.append(
            f"| {names[fusion]} (`{fusion}`) | {row['fusion_macs_M']:.1f} | {row['paper_fusion_madds_M']} | "
            f"{row['fusion_params']:,} | {row['model_macs_M']:.1f} | {row['model_params']:,} |"
        )
    hbf, sa = rows["hbf"]["fusion_macs_M"], rows["concat_sa"]["fusion_macs_M"]
    lines += [
        "",
        f"HBF costs {hbf:.1f}M multiply-adds, {hbf / sa:.2f} of Concat&SA's {sa:.1f}M (paper: 145M vs 324M, 0.45).",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dashfusion_fusion_macs.md").write_text("\n".join(lines) + "\n")
    (OUT / "dashfusion_fusion_macs.json").write_text(json.dumps({"shapes": SHAPES, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
