"""``msalign evaluate``: a checkpoint's metrics on a split, or its modality ablation."""

from __future__ import annotations

import argparse
import json

from msalign import metrics
from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_dataset_options, dataset_options, print_table
from msalign.evaluation.ablation import format_contribution
from msalign.evaluation.scoring import EvaluationRequest, evaluate_checkpoint


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign evaluate`` to the subcommands."""
    parser = sub.add_parser("evaluate", help=SUMMARIES["evaluate"])
    parser.add_argument("--checkpoint", required=True)
    add_dataset_options(parser)
    parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--modality-ablation",
        action="store_true",
        help="also score with each modality permuted across clips / set to its train mean",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign evaluate``; returns the exit status."""
    result = evaluate_checkpoint(
        EvaluationRequest(args.checkpoint, dataset_options(args), args.split, args.modality_ablation)
    )
    if result.contribution is not None:
        if args.json:
            print(
                json.dumps(
                    {"checkpoint": result.checkpoint, "split": result.split, "modality_ablation": result.contribution}
                )
            )
        else:
            print(format_contribution(result.contribution, metrics.headline_keys(result.metric_set)))
    elif args.json:
        print(
            json.dumps(
                {"checkpoint": result.checkpoint, "split": result.split, "n": result.n, "metrics": result.metrics}
            )
        )
    else:
        assert result.metrics is not None  # scored without the ablation
        print_table({f"{result.model_name} ({result.split}, n={result.n})": result.metrics}, result.metric_set)
    return 0
