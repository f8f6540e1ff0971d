"""Parameters and multiply-adds per sample, per module, counted by torch's FLOP counter.

One multiply-add = 2 FLOPs. The forward runs once in eval mode on one sample (batch of 1, every
position real). Attention is counted on SDPA's math path: the fused CPU flash kernel is invisible
to ``torch.utils.flop_counter``, and the math path does the same multiply-adds.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from msalign.errors import MsalignError
from msalign.models import MSAModel


@dataclass
class ModuleCost:
    name: str  # dotted module path, "" for the whole model
    params: int
    macs: int


def parse_shapes(text: str) -> dict[str, tuple[int, int]]:
    """``"text=39x768,audio=400x33"`` -> {"text": (39, 768), "audio": (400, 33)} (length x dim)."""
    shapes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, shape = item.partition("=")
        length, _, dim = shape.partition("x")
        if not (name and length.isdigit() and dim.isdigit() and int(length) > 0 and int(dim) > 0):
            raise MsalignError(f"--shapes item {item!r}: expected modality=LENGTHxDIM, e.g. audio=400x33")
        shapes[name.strip()] = (int(length), int(dim))
    if not shapes:
        raise MsalignError(f"--shapes {text!r}: no modality given")
    return shapes


def sample_inputs(shapes: dict[str, tuple[int, int]], device: torch.device | str = "cpu", seed: int = 0):
    """One random sample (batch of 1) of the given shapes, every position real."""
    generator = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(1, length, dim, generator=generator).to(device) for m, (length, dim) in shapes.items()}
    masks = {m: torch.ones(1, length, dtype=torch.bool, device=device) for m, (length, _) in shapes.items()}
    return features, masks


def profile_model(model: MSAModel, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  depth: int = 2) -> list[ModuleCost]:
    """Costs of the model and of its submodules down to ``depth`` levels, in module order."""
    if any(x.shape[0] != 1 for x in features.values()):
        raise MsalignError("profile_model: give one sample (batch of 1) so the counts are per sample")
    model.eval()
    counter = FlopCounterMode(display=False, depth=None)
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
        rows = [header, *zip(names, params, macs)]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows)
    lines = ["| module | parameters | multiply-adds (M) |", "|---|---:|---:|"]
    for cost in costs:
        indent = "&nbsp;&nbsp;" * (cost.name.count(".") + 1) if cost.name else ""
        lines.append(f"| {indent}{cost.name or 'total'} | {cost.params:,} | {cost.macs / 1e6:.2f} |")
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    import sys

    from msalign.cli.app import _load_dataset, _resolve, _summary
    from msalign.models import create_model

    # the config resolution of train: the dataset's configs/<model>/<key>.yaml, --config, --set
    if args.shapes:
        shapes = parse_shapes(args.shapes)
        dims = {m: dim for m, (_, dim) in shapes.items()}
        dataset = _load_dataset(args) if args.dataset is not None else None  # only for its config files
        model_config, _ = _resolve(args.model, dataset, args)
        model = create_model(args.model, dims=dims, output_dim=dataset.output_dim if dataset else 1, config=model_config)
    else:
        if args.dataset is None:
            args.dataset = "synthetic"
        dataset = _load_dataset(args)
        model_config, _ = _resolve(args.model, dataset, args)
        model = create_model(args.model, dims=dataset.dims, output_dim=dataset.output_dim, config=model_config)
        # a full-length sample: every modality at the dataset's padded length
        shapes = {m: dataset.split("train").features[m].shape[1:] for m in model.modalities}
    summary = _summary(dataset, [args.model], args)
    if dataset is None:
        summary += " (--dataset or --metric-set applies a dataset's file, as train does)"
    print(summary, file=sys.stderr)
    features, masks = sample_inputs({m: shapes[m] for m in model.modalities})
    costs = profile_model(model, features, masks, args.depth)
    shape_text = ", ".join(f"{m} {shapes[m][0]}x{shapes[m][1]}" for m in model.modalities)
    print(f"{args.model}: one sample ({shape_text}); 1 multiply-add = 2 FLOPs\n")
    fmt = args.format or ("text" if sys.stdout.isatty() else "md")
    print(format_costs(costs, fmt))
    if args.json:
        from msalign.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"model": args.model, "shapes": {m: list(shapes[m]) for m in shapes},
                                                 "modules": [asdict(c) for c in costs]}, indent=1))
    return 0


def add_parser(sub, dataset_options) -> None:
    parser = sub.add_parser("profile", help="parameters and multiply-adds per sample, per module")
    parser.add_argument("--model", required=True)
    dataset_options(parser, required=False)
    parser.add_argument("--shapes", help="profile on random inputs of these shapes instead of the dataset's, "
                                         "e.g. text=39x768,audio=400x33,vision=55x709 (--dataset still picks the config files)")
    parser.add_argument("--depth", type=int, default=2, help="module nesting depth to list (default 2)")
    parser.add_argument("--format", choices=["text", "md"], default=None,
                        help="text (aligned columns; the default in a terminal) or md (Markdown; the default otherwise)")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    parser.add_argument("--config", default=None, help="YAML file with 'model' and 'train' sections")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config fields (repeatable), as for train")
    # the dataset defaults to synthetic without --shapes (cmd_profile); the training options do not apply
    parser.set_defaults(func=cmd_profile, dataset=None, epochs=None)


__all__ = ["ModuleCost", "format_costs", "parse_shapes", "profile_model", "sample_inputs"]
