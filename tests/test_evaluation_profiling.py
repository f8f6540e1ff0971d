"""`msalign profile`: multiply-adds per module against closed forms, and the CLI."""

import pytest
import torch

from msalign.cli import main
from msalign.errors import MsalignError
from msalign.evaluation.profiling import parse_shapes, profile_model, sample_inputs
from msalign.models import create_model
from msalign.models.attention import Attention


class TwoLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.parts = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 16), "b": torch.nn.Linear(16, 4)})
        self.attention = Attention(16, 4)

    def forward(self, features, masks):
        hidden = self.parts["a"](features["text"])
        hidden = hidden + self.attention(hidden, hidden, masks["text"])
        return self.parts["b"](hidden)


def test_macs_match_the_closed_form():
    features, masks = sample_inputs({"text": (5, 8)})
    costs = {c.name: c for c in profile_model(TwoLinears(), features, masks, depth=2)}
    length, width = 5, 16
    attention = 4 * length * width * width + 2 * length * length * width  # q, k, v, out + scores, weighted sum
    assert costs["parts.a"].macs == length * 8 * 16
    assert costs["parts.b"].macs == length * 16 * 4
    assert costs["parts"].macs == costs["parts.a"].macs + costs["parts.b"].macs  # a container sums its children
    assert costs["attention"].macs == attention
    assert costs[""].macs == costs["parts"].macs + attention
    assert costs[""].params == sum(p.numel() for p in TwoLinears().parameters())


def test_batch_must_be_one_sample():
    features, masks = sample_inputs({"text": (5, 8)})
    features["text"] = features["text"].repeat(2, 1, 1)
    with pytest.raises(MsalignError, match="one sample"):
        profile_model(TwoLinears(), features, masks)


def test_hbf_costs_less_than_concat_self_attention():
    shapes = {"text": (20, 32), "audio": (120, 8), "vision": (30, 16)}
    features, masks = sample_inputs(shapes)
    macs = {}
    for fusion in ("concat", "concat_sa", "hbf"):
        model = create_model("dashfusion", dims={m: d for m, (_, d) in shapes.items()}, fusion=fusion)
        macs[fusion] = {c.name: c.macs for c in profile_model(model, features, masks, depth=1)}.get("fusion", 0)
    assert macs["concat"] == 0 < macs["hbf"] < macs["concat_sa"]


def test_parse_shapes():
    assert parse_shapes("text=39x768, audio=400x33") == {"text": (39, 768), "audio": (400, 33)}
    for bad in ("text=39", "text=0x5", "=3x4", ""):
        with pytest.raises(MsalignError):
            parse_shapes(bad)


def test_cli_profile(capsys):
    assert (
        main(["profile", "--model", "dashfusion", "--shapes", "text=12x16,audio=30x8", "--set", "width=32", "heads=4"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| total |" in out and "fusion" in out and "multiply-adds" in out
    assert main(["profile", "--model", "decalign", "--depth", "1"]) == 0  # the synthetic dataset by default
    assert main(["profile", "--model", "dashfusion", "--shapes", "text=12"]) == 2
    assert "expected modality=LENGTHxDIM" in capsys.readouterr().err


def test_profile_resolves_configs_as_train_and_prints_plain_text(tmp_path, capsys):
    """issue 19 item 12: the config files it applied, the same counts with --shapes and --dataset, plain
    text on request (the default in a terminal), and only its own options in --help."""
    assert main(["profile", "--model", "decalign", "--depth", "1", "--format", "text"]) == 0
    captured = capsys.readouterr()
    assert "config files: configs/decalign/synthetic.yaml" in captured.err
    assert "&nbsp;" not in captured.out and "|" not in captured.out
    total = next(line for line in captured.out.splitlines() if line.startswith("total")).split()[1]
    assert (
        main(
            [
                "profile",
                "--model",
                "decalign",
                "--depth",
                "1",
                "--format",
                "text",
                "--dataset",
                "synthetic",
                "--shapes",
                "text=20x32,audio=40x8,vision=30x12",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "config files: configs/decalign/synthetic.yaml" in captured.err
    assert next(line for line in captured.out.splitlines() if line.startswith("total")).split()[1] == total
    assert main(["profile", "--model", "decalign", "--shapes", "text=20x32,audio=40x8"]) == 0
    assert "config files: none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    text = capsys.readouterr().out
    assert "--set" in text and "--epochs" not in text and "--devices" not in text and "--strategy" not in text
