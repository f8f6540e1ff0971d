"""msalign tune: declared search spaces, an Optuna search on validation only (the test split is never
read), resumable studies, the best configuration over seeds, the tuned config file and its record."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from msalign import config as config_module
from msalign.cli import main
from msalign.config import TrainConfig, resolve_config
from msalign.data import load_dataset
from msalign.data.types import Split
from msalign.errors import MsalignError
from msalign.experiments.tune import tune
from msalign.experiments.tune_record import read_search_record, tuned_sections
from msalign.experiments.tune_search import (
    STUDY_FILE,
    STUDY_NAME,
    TuneSettings,
    distributions,
    fixed_keys,
    search,
    search_space_for,
    validation_view,
)
from msalign.models import build_config, create_model, get_model_class, list_models
from msalign.models.search_space import (
    CategoricalParam,
    FloatParam,
    SearchSpace,
    apply_params,
)
from support import init_local_ray

TINY = "synthetic:n_train=96,n_valid=32,n_test=32"
SMALL = ["--epochs", "1", "--set", "width=16", "heads=2", "train.threads=1"]


def _tiny_configs(model: str = "text_only"):
    model_config = dataclasses.replace(build_config(model), width=16, heads=2)
    return model_config, TrainConfig(epochs=1, threads=1)


def _tune_argv(trials: int, out: Path, options: list[str] = SMALL) -> list[str]:
    """``msalign tune`` of text_only on TINY with two final seeds."""
    head = ["tune", "--model", "text_only", "--dataset", TINY, "--trials", str(trials), "--seeds", "1111,1112"]
    return [*head, *options, "--out", str(out)]


def _quiet(line: str) -> None:
    pass


# --- the declared spaces ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_a_space_with_the_training_keys_and_its_own(name):
    space = get_model_class(name).search_space
    assert isinstance(space, SearchSpace)
    keys = space.keys
    assert {"train.lr", "train.weight_decay", "train.batch_size", "model.dropout"} <= set(keys)
    assert any(k.startswith("model.") and k != "model.dropout" for k in keys)
    lr = next(p for p in space.params if p.key == "train.lr")
    assert isinstance(lr, FloatParam) and lr.log  # learning rates are searched on a log scale


@pytest.mark.parametrize("name", list_models())
def test_sampled_points_are_valid_configurations(name):
    """Points drawn by Optuna from the declared space go through config.py's override path and
    build a model: every value has its field's type and passes the config's own checks."""
    model_config, train_config = resolve_config(name, build_config(name), ["mosi"])
    train_config = dataclasses.replace(train_config, finetune_text=True)  # text_lr is searched too
    space = search_space_for(name, model_config, train_config)
    assert "train.text_lr" in space.keys
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    dims = {"text": 12, "audio": 6, "vision": 5}
    for i in range(25):
        params = study.ask(distributions(space)).params
        model, train = apply_params(model_config, train_config, params)
        for key, value in params.items():
            section, _, field = key.partition(".")
            assert getattr(model if section == "model" else train, field) == value
        assert 5e-5 <= train.lr <= 3e-3 and train.batch_size in (16, 32, 64)
        if i < 3:
            create_model(name, dims=dims, output_dim=1, config=model)


def test_without_finetuning_the_text_lr_is_not_searched():
    model_config, train_config = _tiny_configs()
    assert "train.text_lr" not in search_space_for("text_only", model_config, train_config).keys


def test_apply_params_refuses_unknown_keys_and_bad_values():
    model_config, train_config = _tiny_configs()
    with pytest.raises(MsalignError, match="unknown model config key 'nope'"):
        apply_params(model_config, train_config, {"model.nope": 1})
    with pytest.raises(MsalignError, match=r"train\.batch_size.*expected an integer"):
        apply_params(model_config, train_config, {"train.batch_size": "big"})
    with pytest.raises(MsalignError, match=re.escape("not 'model.NAME'")):
        apply_params(model_config, train_config, {"lr": 1e-3})
    with pytest.raises(ValueError):
        CategoricalParam("model.width", (32,))


def test_keys_given_with_set_are_held_fixed():
    model_config, train_config = _tiny_configs()
    fixed = fixed_keys(model_config, train_config, ["lr=1e-3", "dropout=0.2", "train.batch_size=32"])
    assert fixed == ["train.lr", "model.dropout", "train.batch_size"]
    keys = search_space_for("text_only", model_config, train_config, fixed).keys
    assert not set(fixed) & set(keys) and "model.layers" in keys


def test_a_key_left_out_of_records_at_its_default_is_written_when_set():
    """train.ema_decay is absent from config dicts at its default (config.OMITTED_WHEN_DEFAULT): the
    tuned file carries it when it was set, and not otherwise."""
    model_config, train_config = _tiny_configs()
    with_ema = tuned_sections("text_only", model_config, dataclasses.replace(train_config, ema_decay=0.9), [])
    assert with_ema["train"]["ema_decay"] == 0.9
    assert "ema_decay" not in tuned_sections("text_only", model_config, train_config, []).get("train", {})


# --- the test split is never read during the search ----------------------------------------------
class RecordingSplit(Split):
    """A split that records every read of its rows (features, lengths, labels, ids, text)."""

    def __init__(self, split: Split, reads: list[str]):
        super().__init__(split.name, split.features, split.lengths, split.labels, split.ids, split.raw_text)
        object.__setattr__(self, "_reads", reads)

    def __getattribute__(self, name):
        if name in ("features", "lengths", "labels", "ids", "raw_text"):
            object.__getattribute__(self, "_reads").append(name)
        return object.__getattribute__(self, name)


def test_the_search_never_reads_the_test_split_and_the_final_run_does(tmp_path):
    reads: list[str] = []
    dataset = load_dataset(TINY)
    dataset.splits["test"] = RecordingSplit(dataset.splits["test"], reads)
    len(dataset.split("test"))
    assert reads, "the recording split must notice a read"
    reads.clear()
    model_config, train_config = _tiny_configs()
    settings = TuneSettings(trials=2, seeds=(1111,))
    space = search_space_for("text_only", model_config, train_config)
    study = search("text_only", dataset, model_config, train_config, space, settings, tmp_path, log=_quiet)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2
    assert reads == []  # two trials trained and scored: not one test row was touched
    for run in (tmp_path / "search").iterdir():
        saved = json.loads((run / "seed_1111" / "result.json").read_text())["result"]
        assert saved["valid"] and saved["test"] == {}
        with __import__("numpy").load(run / "seed_1111" / "predictions.npz") as arrays:
            assert not any(name.startswith("test_") for name in arrays.files)
    result = tune("text_only", dataset, model_config, train_config, settings, tmp_path, log=_quiet)
    assert reads and "labels" in reads  # the final run scores the test split
    assert len(result.trials) == 2  # the finished search was resumed, not repeated
    assert result.final["test"]["MAE"] > 0


def test_validation_view_has_no_test_split():
    dataset = load_dataset(TINY)
    view = validation_view(dataset)
    assert set(view.splits) == {"train", "valid"} and set(dataset.splits) == {"train", "valid", "test"}
    with pytest.raises(MsalignError, match="no split 'test'"):
        view.split("test")


# --- end to end through the CLI ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tune") / "run"
    assert main(_tune_argv(3, out)) == 0
    return out


def test_tune_writes_the_config_and_the_search_record(tuned):
    record = read_search_record(tuned / "synthetic.search.json")
    assert record.model == "text_only" and record.dataset_key == "synthetic"
    assert record.inputs["describe"].startswith("synthetic: train 96, valid 32, test 32; text 20x32")
    assert record.selection["split"] == "valid" and record.selection["metric"] == "MAE"
    assert record.config is not None and record.final is not None and record.best is not None
    assert record.budget == {
        "trials": 3,
        "epochs": 1,
        "patience": record.config["train"]["patience"],
        "search_seeds": [1111],
    }
    assert record.seeds == [1111, 1112] and record.git_revision and record.date
    declared = search_space_for("text_only", *_tiny_configs()).keys
    assert [s["key"] for s in record.space] == [k for k in declared if k != "model.width"]  # fixed with --set
    assert record.fixed == ["model.width"]
    trials = record.trials
    assert len(trials) == 3 and all(t.state == "COMPLETE" and t.value is not None and t.value > 0 for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    best = min(trials, key=lambda t: t.value or 0.0)
    assert record.best.number == best.number and record.best.params == best.params
    for t in trials:  # each trial's score is its own run's validation MAE
        saved = json.loads((tuned / str(t.run_dir) / "seed_1111" / "result.json").read_text())["result"]
        assert saved["valid"]["MAE"] == pytest.approx(t.value) and saved["test"] == {}
        assert t.valid is not None and t.valid["MAE"] == pytest.approx(t.value)
    results = json.loads((tuned / "final" / "results.json").read_text())
    assert results["seeds"] == [1111, 1112] and results["config"] == record.config
    assert record.final["test"] == results["mean"]
    for key, value in best.params.items():
        section, _, name = key.partition(".")
        assert results["config"][section][name] == value


def test_the_tuned_file_alone_reproduces_the_chosen_configuration(tuned):
    record = read_search_record(tuned / "synthetic.search.json")
    text = (tuned / "synthetic.yaml").read_text()
    assert text.startswith("# text_only on synthetic: tuned by `msalign tune` on the VALIDATION split only")
    assert "synthetic.search.json" in text
    model, train = resolve_config("text_only", build_config("text_only"), [], tuned / "synthetic.yaml")
    assert {"model": config_module.config_to_dict(model), "train": config_module.config_to_dict(train)} == record.config
    assert set(yaml.safe_load(text)) == {"model", "train"}


def test_rerun_resumes_and_write_config_lands_in_configs(tuned, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(tuned, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("search/*/seed_*/result.json")}
    assert len(stamps) == 3
    configs = tmp_path / "configs"
    shutil.copytree(config_module.CONFIG_DIR, configs)  # the same files: the same starting configuration
    monkeypatch.setattr(config_module, "CONFIG_DIR", configs)
    assert main([*_tune_argv(4, out), "--write-config"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished trials were not trained again
    record = read_search_record(out / "synthetic.search.json")
    old = read_search_record(tuned / "synthetic.search.json")
    assert record.trials[:3] == old.trials and len(record.trials) == 4
    assert len(list(out.glob("search/*/seed_*/result.json"))) == 4
    written = configs / "text_only" / "synthetic.yaml"
    assert written.read_text() == (out / "synthetic.yaml").read_text()
    assert read_search_record(configs / "text_only" / "synthetic.search.json") == record
    # config.py now picks the tuned file for this dataset
    model, train = resolve_config("text_only", build_config("text_only"), ["synthetic", "mosi"])
    assert {"model": config_module.config_to_dict(model), "train": config_module.config_to_dict(train)} == record.config
    # and the same command still resumes the same search (the tuned file changes only searched keys)
    assert main(_tune_argv(4, out)) == 0
    assert read_search_record(out / "synthetic.search.json").trials == record.trials


def _search(dataset, model_config, train_config, space, out: Path, trials: int):
    """A quiet search of text_only over ``space`` with one seed."""
    return search(
        "text_only",
        dataset,
        model_config,
        train_config,
        space,
        TuneSettings(trials=trials, seeds=(1111,)),
        out,
        log=_quiet,
    )


def test_an_interrupted_search_gives_the_trials_of_an_uninterrupted_one(tmp_path):
    """Resume: a trial cut off mid-run is tried again with the same values (not counted), and the
    re-seeded sampler draws what one uninterrupted search draws."""
    dataset = load_dataset(TINY)
    model_config, train_config = _tiny_configs()
    space = search_space_for("text_only", model_config, train_config)
    whole = _search(dataset, model_config, train_config, space, tmp_path / "whole", 3)
    parts = tmp_path / "parts"
    _search(dataset, model_config, train_config, space, parts, 2)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{parts / STUDY_FILE}")
    cut = study.ask(distributions(space))  # a trial that was running when its tune was killed
    resumed = _search(dataset, model_config, train_config, space, parts, 3)
    states = [t.state.name for t in resumed.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert resumed.trials[3].params == cut.params  # tried again with the same values
    assert [t.params for t in whole.trials][:2] == [t.params for t in resumed.trials][:2]
    assert [t.value for t in whole.trials][:2] == [t.value for t in resumed.trials][:2]


def test_a_resumed_search_draws_like_an_uninterrupted_one(tmp_path):
    dataset = load_dataset(TINY)
    model_config, train_config = _tiny_configs()
    space = search_space_for("text_only", model_config, train_config)
    whole = _search(dataset, model_config, train_config, space, tmp_path / "whole", 3)
    _search(dataset, model_config, train_config, space, tmp_path / "parts", 1)
    resumed = _search(dataset, model_config, train_config, space, tmp_path / "parts", 3)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]


def test_failed_trials_use_up_the_budget_and_are_recorded(tmp_path, monkeypatch):
    """Trials that raise are told failed with their error and counted (the search ends); when no
    trial finished, tune says so in one line."""
    import msalign.training.run as run_module

    def failing_seed(*args, **kwargs):
        raise MsalignError("the model diverged")

    # every trial fails inside training (configs are valid: they are checked before any trial)
    monkeypatch.setattr(run_module, "run_seed", failing_seed)
    dataset = load_dataset(TINY)
    model_config = build_config("text_only")
    train_config = TrainConfig(epochs=1, threads=1)
    with pytest.raises(MsalignError, match=r"^msalign tune: no trial finished \(seed 1111: "):
        tune(
            "text_only",
            dataset,
            model_config,
            train_config,
            TuneSettings(trials=2, seeds=(1111,)),
            tmp_path,
            log=_quiet,
        )
    record = read_search_record(tmp_path / "synthetic.search.json")
    assert [t.state for t in record.trials] == ["FAIL", "FAIL"]
    assert all(t.error is not None and t.error.startswith("seed 1111: ") and t.value is None for t in record.trials)
    assert record.final is None and not (tmp_path / "synthetic.yaml").exists()


def test_another_search_in_the_same_directory_is_refused(tuned, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tuned, out)
    code = main(_tune_argv(3, out, ["--epochs", "2", "--set", "width=16", "heads=2", "train.threads=1"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2
        and err[-1].startswith("msalign: error: --out ")
        and "another base_config.train.epochs (1 there, 2 now)" in err[-1]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trials", "0"], "--trials 0: must be at least 1"),
        (["--trials", "2", "--set", "nope=1"], "--set nope"),
        (["--trials", "2", "--seeds", "1111,1111"], "--seeds: a seed is listed twice"),
        (["--trials", "2", "--model", "nope"], "unknown model 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    base = ["tune", "--model", "text_only", "--dataset", TINY, "--out", str(tmp_path / "o")]
    code = main(base + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and err[-1].startswith("msalign: error:")


# --- Ray: trials as tasks through msalign.experiments.scheduling's Ray backend ------------------------------------
try:
    import ray
except ImportError:
    ray = None


@pytest.mark.slow  # a local Ray instance starts in 10-80 s on 2 shared cores
@pytest.mark.skipif(ray is None, reason="the ray extra is not installed (bash scripts/setup.sh ray)")
def test_tune_on_ray_asks_a_batch_and_scores_as_this_process_does(tmp_path, monkeypatch):
    """On a 2-CPU Ray instance two trials are asked at once and run as Ray tasks; each trial's
    validation score is what the same configuration gives trained in this process."""
    import os

    from msalign.experiments.scheduling import Backend
    from msalign.training.run import run_seed
    from msalign.training.run_spec import RunSpec

    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01"}.items():
        monkeypatch.setitem(os.environ, key, value)
    dataset = load_dataset(TINY)
    model_config, train_config = _tiny_configs()
    lines: list[str] = []
    init_local_ray(ray)
    try:
        result = tune(
            "text_only",
            dataset,
            model_config,
            train_config,
            TuneSettings(trials=2, seeds=(1111,)),
            tmp_path / "ray",
            backend=Backend("ray"),
            log=lines.append,
        )
        assert ray.is_initialized()  # a Ray connection tune did not open is left open
    finally:
        ray.shutdown()
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    # both trials were asked before either was told: the batch's log lines come after both trained
    assert [line.startswith("[tune ") for line in lines[:4]] == [False, False, True, True]
    for record in result.trials:
        model, train = apply_params(model_config, train_config, record.params)
        here = run_seed(
            RunSpec("text_only", model, train, [1111], tmp_path / "here" / str(record.number)),
            1111,
            validation_view(dataset),
            log=_quiet,
        )
        assert here.valid["MAE"] == pytest.approx(record.value)
