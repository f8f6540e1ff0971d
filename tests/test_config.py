import pytest

from msalign.config import TrainConfig, coerce, parse_overrides, resolve_config
from msalign.errors import MsalignError
from msalign.models import build_config


def test_bare_key_goes_to_model_then_train():
    model, train = resolve_config("text_only", build_config("text_only"), (), None, ["width=48", "lr=0.01"])
    assert model.width == 48 and train.lr == 0.01


def test_explicit_sections():
    model, train = resolve_config(
        "late_fusion", build_config("late_fusion"), (), None, ["model.dropout=0.3", "train.epochs=3"]
    )
    assert model.dropout == 0.3 and train.epochs == 3


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(MsalignError, match="widht"):
        resolve_config("text_only", build_config("text_only"), (), None, ["widht=3"])
    with pytest.raises(MsalignError, match="unknown config key 'nope'"):
        build_config("text_only", {"nope": 1})


@pytest.mark.parametrize(
    "override, message",
    [
        ("width=abc", "expected an integer"),
        ("width=1.5", "expected an integer"),
        ("train.lr=fast", "expected a number"),
        ("dropout=true", "expected a number"),
        ("novalue", "expected key=value"),
    ],
)
def test_wrong_types_are_errors(override, message):
    with pytest.raises(MsalignError, match=message):
        resolve_config("text_only", build_config("text_only"), (), None, [override])


def test_bool_and_tuple_coercion():
    assert coerce("false", bool, "k") is False and coerce("on", bool, "k") is True
    with pytest.raises(MsalignError):
        coerce("maybe", bool, "k")
    assert coerce("1,2.5", tuple[float, ...], "k") == (1.0, 2.5)
    assert coerce(None, tuple[float, ...] | None, "k") is None


def test_config_files_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  width: 40\ntrain:\n  batch_size: 8\n")
    model, train = resolve_config("text_only", build_config("text_only"), ("synthetic",), path, ["train.batch_size=4"])
    # synthetic.yaml sets epochs 20, the file sets width and batch size, --set wins last
    assert (model.width, train.batch_size, train.epochs) == (40, 4, 20)


def test_only_most_specific_dataset_file_applies():
    _, train = resolve_config("text_only", build_config("text_only"), ("synthetic", "mosi"), None, [])
    assert train.epochs == 20
    _, default = resolve_config("text_only", build_config("text_only"), ("nothing-here",), None, [])
    assert default == TrainConfig()


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: [1, 2]\n", "must be a mapping"),
        ("other:\n  a: 1\n", "top-level sections"),
        ("model: {width: 3\n", "not valid YAML"),
        ("model:\n  nope: 3\n", "unknown model config key 'nope'"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MsalignError, match=message):
        resolve_config("text_only", build_config("text_only"), (), path, [])


def test_missing_config_file():
    with pytest.raises(MsalignError, match="no such file"):
        resolve_config("text_only", build_config("text_only"), (), "/nonexistent/x.yaml", [])


def test_yaml_values_parse():
    assert parse_overrides(["a=1", "b=1e-3", "c=true", "d=x,y"]) == [("a", 1), ("b", 1e-3), ("c", True), ("d", "x,y")]
