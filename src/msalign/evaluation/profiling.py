"""Parameters and multiply-adds per sample, per module, counted by torch's FLOP counter.

One multiply-add = 2 FLOPs. The forward runs once in eval mode on one sample (batch of 1, every
position real). Attention is counted on SDPA's math path: the fused CPU flash kernel is invisible
to ``torch.utils.flop_counter``, and the math path does the same multiply-adds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from msalign.atomic import atomic_write_text
from msalign.config import parse_key_values
from msalign.errors import MsalignError
from msalign.models import MSAModel


@dataclass
class ModuleCost:
    name: str  # dotted module path, "" for the whole model
    params: int
    macs: int


def parse_shapes(text: str) -> dict[str, tuple[int, int]]:
    """``"text=39x768,audio=400x33"`` -> {"text": (39, 768), "audio": (400, 33)} (length x dim)."""
    shapes = dict(
        parse_key_values(
            text,
            lambda item: f"--shapes item {item!r}: expected modality=LENGTHxDIM, e.g. audio=400x33",
            _length_by_dim,
        )
    )
    if not shapes:
        raise MsalignError(f"--shapes {text!r}: no modality given")
    return shapes


def _length_by_dim(text: str) -> tuple[int, int]:
    """``"400x33"`` -> (400, 33); ValueError unless both are positive integers."""
    length, _, dim = text.partition("x")
    if not (length.isdigit() and dim.isdigit() and int(length) > 0 and int(dim) > 0):
        raise ValueError(text)
    return int(length), int(dim)


def sample_inputs(shapes: dict[str, tuple[int, int]], device: torch.device | str = "cpu", seed: int = 0):
    """One random sample (batch of 1) of the given shapes, every position real."""
    generator = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(1, length, dim, generator=generator).to(device) for m, (length, dim) in shapes.items()}
    masks = {m: torch.ones(1, length, dtype=torch.bool, device=device) for m, (length, _) in shapes.items()}
    return features, masks


def profile_model(
    model: MSAModel, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], depth: int = 2
) -> list[ModuleCost]:
    """Costs of the model and of its submodules down to ``depth`` levels, in module order."""
    if any(x.shape[0] != 1 for x in features.values()):
        raise MsalignError("profile_model: give one sample (batch of 1) so the counts are per sample")
    model.eval()
    # depth None: every nesting level (torch handles None, though it annotates the parameter int)
    counter = FlopCounterMode(display=False, depth=None)  # type: ignore[arg-type]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(features, masks)
    counted = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__

    def flops(name: str, module: torch.nn.Module) -> int:
        key = f"{root}.{name}" if name else root
        if key in counted:  # the module ran: its count includes its children
            return counted[key]
        # a container (ModuleDict / ModuleList) never runs itself: the sum of its children
        return sum(flops(f"{name}.{child}" if name else child, sub) for child, sub in module.named_children())

    costs = []
    for name, module in model.named_modules():
        if name.count(".") >= depth:
            continue
        cost = ModuleCost(name, sum(p.numel() for p in module.parameters()), flops(name, module) // 2)
        if cost.params or cost.macs or not name:  # skip parameter-free, cost-free layers (dropout, ReLU)
            costs.append(cost)
    return costs


def format_costs(costs: list[ModuleCost], fmt: str = "md") -> str:
    """The table as Markdown (``md``: nesting shown with ``&nbsp;``, for rendered pages) or aligned
    plain ``text`` (nesting shown with spaces, for a terminal)."""
    if fmt == "text":
        names = [("  " * (c.name.count(".") + 1) if c.name else "") + (c.name or "total") for c in costs]
        params = [f"{c.params:,}" for c in costs]
        macs = [f"{c.macs / 1e6:.2f}" for c in costs]
        header = ("module", "parameters", "multiply-adds (M)")
        rows = [header, *zip(names, params, macs, strict=True)]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows)
    lines = ["| module | parameters | multiply-adds (M) |", "|---|---:|---:|"]
    for cost in costs:
        indent = "&nbsp;&nbsp;" * (cost.name.count(".") + 1) if cost.name else ""
        lines.append(f"| {indent}{cost.name or 'total'} | {cost.params:,} | {cost.macs / 1e6:.2f} |")
    return "\n".join(lines)


def write_costs_json(
    path: str | Path, model_name: str, shapes: dict[str, tuple[int, int]], costs: list[ModuleCost]
) -> None:
    """The table as JSON (``msalign profile --json``): the model, the input shapes, one entry per module."""
    atomic_write_text(
        path,
        json.dumps(
            {
                "model": model_name,
                "shapes": {m: list(shapes[m]) for m in shapes},
                "modules": [asdict(c) for c in costs],
            },
            indent=1,
        ),
    )


__all__ = ["ModuleCost", "format_costs", "parse_shapes", "profile_model", "sample_inputs", "write_costs_json"]
