"""``msalign profile``: parameters and multiply-adds per sample, per module."""

from __future__ import annotations

import argparse
import sys

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_config_options, add_dataset_options, load_dataset, resolve, summary
from msalign.evaluation.profiling import format_costs, parse_shapes, profile_model, sample_inputs, write_costs_json
from msalign.models import create_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign profile`` to the subcommands."""
    parser = sub.add_parser("profile", help=SUMMARIES["profile"])
    parser.add_argument("--model", required=True)
    add_dataset_options(parser, required=False)
    parser.add_argument(
        "--shapes",
        help="profile on random inputs of these shapes instead of the dataset's, "
        "e.g. text=39x768,audio=400x33,vision=55x709 (--dataset still picks the config files)",
    )
    parser.add_argument("--depth", type=int, default=2, help="module nesting depth to list (default 2)")
    parser.add_argument(
        "--format",
        choices=["text", "md"],
        default=None,
        help="text (aligned columns; the default in a terminal) or md (Markdown; the default otherwise)",
    )
    parser.add_argument("--json", help="also write the table as JSON to this file")
    add_config_options(parser, "override config fields (repeatable), as for train")
    # the dataset defaults to synthetic without --shapes (run); the training options do not apply
    parser.set_defaults(func=run, dataset=None, epochs=None)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign profile``; returns the exit status."""
    # the config resolution of train: the dataset's configs/<model>/<key>.yaml, --config, --set
    if args.shapes:
        shapes = parse_shapes(args.shapes)
        dims = {m: dim for m, (_, dim) in shapes.items()}
        dataset = load_dataset(args) if args.dataset is not None else None  # only for its config files
        model_config, _ = resolve(args.model, dataset, args)
        model = create_model(
            args.model, dims=dims, output_dim=dataset.output_dim if dataset else 1, config=model_config
        )
    else:
        if args.dataset is None:
            args.dataset = "synthetic"
        dataset = load_dataset(args)
        model_config, _ = resolve(args.model, dataset, args)
        model = create_model(args.model, dims=dataset.dims, output_dim=dataset.output_dim, config=model_config)
        # a full-length sample: every modality at the dataset's padded length
        shapes = {m: dataset.split("train").features[m].shape[1:] for m in model.modalities}
    line = summary(dataset, [args.model], args)
    if dataset is None:
        line += " (--dataset or --metric-set applies a dataset's file, as train does)"
    print(line, file=sys.stderr)
    features, masks = sample_inputs({m: shapes[m] for m in model.modalities})
    costs = profile_model(model, features, masks, args.depth)
    shape_text = ", ".join(f"{m} {shapes[m][0]}x{shapes[m][1]}" for m in model.modalities)
    print(f"{args.model}: one sample ({shape_text}); 1 multiply-add = 2 FLOPs\n")
    fmt = args.format or ("text" if sys.stdout.isatty() else "md")
    print(format_costs(costs, fmt))
    if args.json:
        write_costs_json(args.json, args.model, shapes, costs)
    return 0
