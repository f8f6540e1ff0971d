"""msalign --version, msalign models [NAME] and the unknown-key errors (issue 19, items 2 and 3)."""

from __future__ import annotations

import dataclasses

import pytest

from msalign import __version__
from msalign.cli import main
from msalign.config import TrainConfig, resolve_config
from msalign.errors import MsalignError
from msalign.models import build_config, get_model_class, list_models
from msalign.models.config_docs import field_help, format_model_help


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"msalign {__version__}"


@pytest.mark.parametrize(
    "cls", [TrainConfig, *(get_model_class(n).Config for n in list_models())], ids=lambda c: c.__name__
)
def test_every_config_field_has_a_one_line_meaning(cls):
    docs = field_help(cls)
    assert list(docs) == [f.name for f in dataclasses.fields(cls)]
    missing = [k for k, v in docs.items() if not v]
    assert not missing, f"{cls.__name__}: fields without a comment: {missing}"
    assert all("\n" not in v and len(v) <= 110 for v in docs.values())


def test_field_help_reads_trailing_then_preceding_comments():
    @dataclasses.dataclass
    class Example:
        a: int = 1  # the trailing one. More detail here.
        # the block above
        # continues here
        b: float = 2.0

        c: str = "x"

    assert field_help(Example) == {"a": "the trailing one", "b": "the block above continues here", "c": ""}


def test_models_name_prints_every_key_with_type_default_and_meaning(capsys):
    assert main(["models", "decalign"]) == 0
    out = capsys.readouterr().out
    assert "needs 2 of text,audio,vision" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for f in dataclasses.fields(build_config("decalign")):
        assert f.name in rows
    assert rows["alpha"].split()[1:3] == ["float", "0.05"] and "heterogeneity" in rows["alpha"]
    assert rows["train.epochs"].split()[1:3] == ["int", "30"]
    assert format_model_help("dashfusion").splitlines()[1].startswith("modalities: needs text + 1 of audio,vision")


def test_models_list_shows_what_each_model_needs(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "needs text + 1 of audio,vision" in lines["dashfusion"]
    assert "needs 2 of text,audio,vision" in lines["decalign"]
    assert set(list_models()) <= set(lines)


def test_unknown_set_key_is_short_and_suggests(capsys):
    with pytest.raises(MsalignError) as error:
        resolve_config("decalign", build_config("decalign"), (), None, ["alpah=0.1"])
    message = str(error.value)
    assert "'alpha'" in message and "msalign models decalign" in message and len(message) < 200
    assert (
        main(["train", "--model", "decalign", "--dataset", "synthetic", "--out", "unused", "--set", "train.epoch=1"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "did you mean 'train.epochs'" in err and len(err) < 250
