"""benchmark / sweep check every entry before training; "± std" only over several seeds (issue 19, items 6, 7)."""

from __future__ import annotations

import json

from msalign.cli import main

TINY = "synthetic:n_train=64,n_valid=24,n_test=24"


def test_benchmark_checks_every_entry_before_training(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--models",
                "late_fusion,dashfusion",
                "--dataset",
                TINY,
                "--modalities",
                "audio,vision",
                "--epochs",
                "1",
                "--seeds",
                "1111",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert "--models entry 'dashfusion'" in err[-1] and "needs modality ['text']" in err[-1]
    assert not (out / "late_fusion").exists()  # nothing trained


def test_sweep_checks_every_point_before_training(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--model",
                "dashfusion",
                "--dataset",
                TINY,
                "--modalities",
                "audio,vision",
                "--grid",
                "temperature=0.1,0.5",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "needs modality ['text']" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_std_only_over_several_seeds(tmp_path, capsys):
    common = ["--dataset", TINY, "--epochs", "1", "--set", "width=8", "train.threads=1"]
    assert main(["benchmark", "--models", "text_only", *common, "--seeds", "1111", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "±" not in out and "seed 1111" in out
    assert main(["train", "--model", "text_only", *common, "--seeds", "1111,1112", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    std = json.loads((tmp_path / "t" / "results.json").read_text())["std"]["MAE"]
    assert "mean ± population std over seeds [1111, 1112]" in out and f"± {std:.3f}" in out
    assert main(["train", "--model", "text_only", *common, "--seeds", "1111", "--out", str(tmp_path / "t1")]) == 0
    assert "±" not in capsys.readouterr().out


def test_changed_config_into_an_existing_run_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "text_only",
        "--dataset",
        TINY,
        "--epochs",
        "1",
        "--set",
        "train.threads=1",
        "--out",
        str(out),
    ]
    assert main([*args, "--set", "width=8"]) == 0
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("stale")
    before = (out / "results.json").read_text()
    capsys.readouterr()
    assert main([*args, "--set", "width=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds another run (seed_1111 was trained with model.width 8 -> 16)" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == before and (out / "report" / "report.md").exists()
    assert main([*args, "--set", "width=8", "--seeds", "1111,1112"]) == 0  # same run, one more seed: fine
    capsys.readouterr()
    assert main([*args, "--set", "width=16", "--overwrite"]) == 0
    assert "removed seed_1111, seed_1112, results.json, report" in capsys.readouterr().err
    assert not (out / "report").exists() and not (out / "seed_1112").exists()
    assert json.loads((out / "results.json").read_text())["config"]["model"]["width"] == 16


def test_logger_csv_writes_lightning_metrics_beside_history(tmp_path, monkeypatch, capsys):
    """issue 19 item 13: --logger csv|tensorboard; history.json stays; not part of the run's identity."""
    import csv
    import importlib.util

    args = [
        "train",
        "--model",
        "text_only",
        "--dataset",
        TINY,
        "--epochs",
        "2",
        "--set",
        "width=8",
        "train.threads=1",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--logger", "csv"]) == 0
    seed = tmp_path / "run" / "seed_1111"
    rows = list(csv.DictReader((seed / "logs" / "metrics.csv").open()))
    assert {"0", "1"} <= {r["epoch"] for r in rows if r.get("valid/MAE")}  # per epoch (then the final scoring)
    assert (seed / "history.json").is_file()
    capsys.readouterr()
    assert main(args) == 0 and "already finished" in capsys.readouterr().err  # same run without the logger
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("tensorboard") else real(name, *a)
    )
    assert main([*args, "--logger", "tensorboard", "--out", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorboard package is not installed" in err[0]
    assert not (tmp_path / "tb").exists()


def test_checkpoint_folder_is_a_clear_line_or_its_seed_file(tmp_path, capsys):
    """issue 19: --checkpoint with a folder: a seed folder means its model.safetensors; a run folder names the files."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "text_only",
                "--dataset",
                TINY,
                "--epochs",
                "1",
                "--set",
                "width=8",
                "train.threads=1",
                "--seeds",
                "1111,1112",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"is a run folder; pass a seed's file, e.g. {out / 'seed_1111' / 'model.safetensors'}" in err[0]
    )
    assert main(["evaluate", "--checkpoint", str(out / "seed_1112"), "--dataset", TINY, "--json"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["metrics"]
        == json.loads((out / "results.json").read_text())["per_seed"][1]["test"]
    )


def test_sweep_failures_keep_the_finished_points_table_and_changed_configs_need_overwrite(
    tmp_path, monkeypatch, capsys
):
    from msalign.errors import MsalignError
    from msalign.training import run

    real = run.run_seed

    def flaky(spec, *args, **kwargs):
        if spec.model_config.width == 16:
            raise MsalignError("this point breaks")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(run, "run_seed", flaky)
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--model",
        "text_only",
        "--dataset",
        TINY,
        "--grid",
        "width=8,16",
        "--epochs",
        "1",
        "--set",
        "train.threads=1",
        "--out",
        str(out),
    ]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "1 trial failed (width=16 seed 1111)" in captured.err.strip().splitlines()[-1]
    assert "| 8 |" in captured.out and "| 16 | – |" in captured.out and "FAILED" in captured.out
    assert json.loads((out / "sweep.json").read_text())["failed"]["width=16"]["error"] == "seed 1111: this point breaks"
    monkeypatch.setattr(run, "run_seed", real)
    assert main([*args[:-2], "--set", "train.lr=0.01", "--out", str(out)]) == 2
    assert "holds another run (seed_1111 was trained with train.lr 0.001 -> 0.01)" in capsys.readouterr().err
    assert main([*args[:-2], "--set", "train.lr=0.01", "--overwrite", "--out", str(out)]) == 0
    assert not json.loads((out / "sweep.json").read_text()).get("failed")
