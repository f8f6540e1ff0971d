"""Trials of sweeps and benchmarks on a local process pool or on Ray (msalign.experiments.scheduling): the same
result files as one after another in this process, finished trials skipped after a kill -9,
selection on validation, failed trials named, the dataset shipped once, Ray optional."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from msalign.cli import main
from msalign.data import load_dataset
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.experiments import scheduling as execution
from msalign.training.run_spec import RunSpec
from support import init_local_ray

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="the ray extra is not installed (bash scripts/setup.sh ray)")

TINY = "synthetic:n_train=64,n_valid=24,n_test=24"
# big enough that a trial takes about a second, so a kill lands between the first and the last trial
SWEEP_DATA = "synthetic:n_train=160,n_valid=32,n_test=32"
SWEEP = [
    "sweep",
    "--model",
    "late_fusion",
    "--dataset",
    SWEEP_DATA,
    "--grid",
    "dropout=0.0,0.3",
    "--seeds",
    "1111,1112",
    "--epochs",
    "4",
    "--set",
    "width=16",
    "train.threads=1",
]
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    # the local instance's object store: 1% of memory instead of 30% (the dataset is tiny)
    "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01",
    "PYTHONWARNINGS": "ignore",
}


def _session_processes(session: int) -> list[tuple[int, str]]:
    """Live (not zombie) processes of a session: (pid, command line)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            found.append((int(stat.parent.name), cmdline))
    return found


def _kill_session(session: int) -> None:
    """SIGKILL to the process group, then to the session's other groups (Ray puts each worker in
    its own): the whole run stops at once, as when its machine goes down."""
    os.killpg(session, signal.SIGKILL)
    for pid, _ in _session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _assert_session_ends(session: int) -> None:
    """Every process of the session (the driver, Ray's GCS, raylet, workers) is gone within 30 s;
    any left over is killed, and the test fails naming it."""
    deadline = time.monotonic() + 30
    while (left := _session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def _results(out: Path) -> dict[str, dict]:
    """Per sweep point: the test/valid means and every seed's metrics (no timings)."""
    summary = json.loads((out / "sweep.json").read_text())
    return {
        p["label"]: {
            "valid": p["valid"],
            "test": p["test"],
            "per_seed": json.loads((out / p["dir"] / "results.json").read_text())["per_seed"],
        }
        for p in summary["points"]
    }


def _assert_same_numbers(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _assert_same_numbers(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-6, f"{where}: {a} != {b}"
    else:
        assert a == b, where


@needs_ray
@pytest.mark.slow
def test_ray_sweep_killed_then_rerun_skips_finished_trials_and_matches_local(tmp_path):
    """MUST-SHOW: a 2 x 2 sweep (2 grid values x 2 seeds) on a local Ray instance of 2 CPUs is
    killed (SIGKILL to all its processes) after its first trial finished, then run again: the
    finished trials are skipped and left untouched, the rest run, and the sweep ends complete, with
    the point best on validation chosen and every number equal to the same sweep run locally."""
    out = tmp_path / "ray"
    ray_tmp = tempfile.mkdtemp(prefix="msr", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, **RAY_ENV)
    command = [sys.executable, "-m", "msalign.cli", *SWEEP, "--backend", "ray", "--ray-cpus", "2", "--out", str(out)]
    try:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 240
        while not list(out.glob("*/seed_*/result.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill_session(proc.pid)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
        _assert_session_ends(proc.pid)

        finished = {p.parent: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*/seed_*/result.json")}
        assert 1 <= len(finished) < 4, sorted(map(str, finished))
        partial = out / "sweep.json"
        assert not partial.exists() or json.loads(partial.read_text())["complete"] is False

        started = time.perf_counter()
        rerun = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        _, log = rerun.communicate(timeout=300)
        ray_seconds = time.perf_counter() - started
        assert rerun.returncode == 0, log[-3000:]
        _assert_session_ends(rerun.pid)  # ray.shutdown() at the end stopped the local instance
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    for seed_dir, (content, mtime) in finished.items():
        label, seed = seed_dir.parent.name, seed_dir.name.removeprefix("seed_")
        assert f"[{label}] [late_fusion seed {seed}] already finished in {seed_dir}, skipped" in log, log
        assert (seed_dir / "result.json").read_bytes() == content
        assert (seed_dir / "result.json").stat().st_mtime_ns == mtime
    assert log.count("already finished") == len(finished)
    assert log.count("best epoch") == 4 - len(finished)  # the rest ran, each logged once in the driver
    for seed_dir in {p.parent for p in out.glob("*/seed_*/result.json")} - set(finished):
        label, seed = seed_dir.parent.name, seed_dir.name.removeprefix("seed_")
        assert f"[{label}] [late_fusion seed {seed}] best epoch" in log

    summary = json.loads((out / "sweep.json").read_text())
    assert summary["complete"] is True and [p["label"] for p in summary["points"]] == ["dropout=0", "dropout=0.3"]
    best_on_valid = min(summary["points"], key=lambda p: p["valid"]["MAE"])
    assert summary["best"]["label"] == best_on_valid["label"]
    assert summary["best"]["valid"] == best_on_valid["valid"]

    started = time.perf_counter()
    assert main([*SWEEP, "--backend", "local", "--out", str(tmp_path / "local")]) == 0
    local_seconds = time.perf_counter() - started
    _assert_same_numbers(_results(out), _results(tmp_path / "local"))
    assert json.loads((tmp_path / "local" / "sweep.json").read_text())["best"]["label"] == summary["best"]["label"]
    print(
        f"2x2 sweep: ray rerun (2 CPUs, {4 - len(finished)} trials) {ray_seconds:.1f}s, "
        f"local jobs=1 (4 trials, in process) {local_seconds:.1f}s"
    )


def _count_dataset_pickles(monkeypatch) -> list[int]:
    """Counts every pickling of a MultimodalDataset in this process (a worker's copy, or Ray's)."""
    count = []

    def getstate(self):
        count.append(1)
        return dict(self.__dict__)

    monkeypatch.setattr(MultimodalDataset, "__getstate__", getstate, raising=False)
    return count


# text_only and late_fusion, two seeds each: four (model, seed) trials
_TWO_BY_TWO = [
    *["benchmark", "--models", "text_only,late_fusion", "--dataset", TINY, "--seeds", "1111,1112", "--epochs", "1"],
    *["--set", "width=16", "train.threads=1"],
]


@pytest.mark.slow
def test_local_pool_gives_the_same_tables_as_one_process(tmp_path, monkeypatch):
    """--jobs 2: four (model, seed) trials in two spawned workers, the dataset pickled once per
    worker; table.json and every results.json equal those of --jobs 1 byte for byte."""
    pickles = _count_dataset_pickles(monkeypatch)
    assert main([*_TWO_BY_TWO, "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    assert len(pickles) == 2
    assert main([*_TWO_BY_TWO, "--out", str(tmp_path / "one")]) == 0
    for name in ("table.json", "table.md", "text_only/results.json", "late_fusion/results.json"):
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def _foreign_checkpoint(run_dir: Path, seed: int) -> None:
    """A last.ckpt that another run left (its run.json differs): --resume must refuse it."""
    seed_dir = run_dir / f"seed_{seed}"
    (seed_dir / "lightning").mkdir(parents=True)
    (seed_dir / "lightning" / "last.ckpt").write_bytes(b"not this run's checkpoint")
    (seed_dir / "run.json").write_text(json.dumps({"model": "another run"}))


def test_a_failed_trial_is_named_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "bench"
    _foreign_checkpoint(out / "late_fusion", 1112)
    args = [*_TWO_BY_TWO, "--resume", "--out", str(out)]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("msalign: error: 1 trial failed (late_fusion seed 1112); first error: --resume: ")
    assert "is from another run" in err[-1]
    assert sum("[late_fusion seed 1112] failed: --resume:" in line for line in err) == 1
    assert "Traceback" not in "\n".join(err)
    # the other trials finished: text_only has its results.json, late_fusion its seed 1111
    assert json.loads((out / "text_only" / "results.json").read_text())["seeds"] == [1111, 1112]
    assert (out / "late_fusion" / "seed_1111" / "result.json").is_file()
    assert not (out / "late_fusion" / "results.json").exists()
    # the finished entries' table is still written and printed, the failed row marked
    table = json.loads((out / "table.json").read_text())["models"]
    assert "mean" in table["text_only"] and table["late_fusion"]["failed"].startswith("seed 1112: --resume: ")
    assert "| text_only | " in captured.out and "| late_fusion (FAILED) | – |" in captured.out
    assert (out / "table.md").read_text().strip() == captured.out.strip()
    assert main(["report", str(out)]) == 0  # the report of the finished entries, the failed one noted
    assert "late_fusion: failed (seed 1112: --resume: " in (out / "report" / "report.md").read_text()


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs, 100 MB object store) for the in-process Ray tests of this module."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    init_local_ray(ray)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@needs_ray
def test_ray_trials_dataset_put_once_failure_reported_others_match(ray_instance, tmp_path, monkeypatch):
    """Three trials as Ray tasks on an instance that is already running (left running): the
    dataset goes into the object store once, a failing trial comes back with its one-line error,
    and the others give the same summaries as in this process."""
    from msalign.config import TrainConfig
    from msalign.models import build_config

    dataset = load_dataset(TINY)
    train = TrainConfig(epochs=1, threads=1)
    model = build_config("text_only")
    model.width = 16
    trials = [
        *execution.seed_trials("text_only", RunSpec("text_only", model, train, [1111, 1112], tmp_path / "ray")),
        *execution.seed_trials("broken", RunSpec("text_only", model, train, [1111], tmp_path / "broken", resume=True)),
    ]
    _foreign_checkpoint(tmp_path / "broken", 1111)
    pickles = _count_dataset_pickles(monkeypatch)
    lines: list[str] = []
    outcomes = list(execution.run_trials(trials, dataset, execution.Backend("ray"), lines.append))
    assert len(pickles) == 1 and ray.is_initialized()
    by_name = {o.trial.name: o for o in outcomes}
    assert sorted(by_name) == ["broken seed 1111", "text_only seed 1111", "text_only seed 1112"]
    assert by_name["broken seed 1111"].error.startswith("--resume: ") and by_name["broken seed 1111"].summary is None
    assert any(line.startswith("[broken seed 1111] failed: --resume: ") for line in lines)
    with pytest.raises(MsalignError, match=r"^1 trial failed \(broken seed 1111\); first error: --resume: "):
        execution.raise_for_failures(outcomes)

    here = execution.seed_trials("text_only", RunSpec("text_only", model, train, [1111, 1112], tmp_path / "here"))
    for outcome in execution.run_trials(here, dataset, execution.Backend(), lambda line: None):
        remote = by_name[outcome.trial.name]
        assert any(line.startswith(f"[text_only seed {outcome.trial.seed}] best epoch") for line in remote.log_lines)
        _assert_same_numbers(remote.summary.to_dict(), outcome.summary.to_dict())


def test_backend_ray_without_ray_installed_is_one_line(tmp_path, monkeypatch, capsys):
    """`import msalign`, the parser and --backend local need no Ray; --backend ray says how to install it."""
    no_ray = (
        "import sys; sys.modules['ray'] = None; "
        "import msalign, msalign.experiments.scheduling, msalign.experiments.sweep; print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", no_ray], capture_output=True, text=True, timeout=60).stdout == "ok\n"

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    from msalign.cli import build_parser

    build_parser().format_help()
    out = tmp_path / "never"
    sweep = ["sweep", "--model", "text_only", "--dataset", TINY, "--grid", "dropout=0.1"]
    assert main([*sweep, "--backend", "ray", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "msalign: error: --backend ray: Ray is not installed; install it with pip install 'msalign[ray]' "
        "(or pip install 'ray[client]>=2.9')"
    ]
    assert not out.exists()
    assert main([*sweep, "--epochs", "1", "--set", "width=16", "--backend", "local", "--out", str(out)]) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--backend", "ray", "--jobs", "2"], "--jobs: only with --backend local"),
        (["--ray-cpus", "2"], "--ray-cpus: only with --backend ray"),
        (["--ray-address", "auto"], "--ray-address: only with --backend ray"),
        (["--gpus-per-trial", "1"], "--gpus-per-trial: only with --backend ray"),
        (["--backend", "ray", "--ray-address", "auto", "--ray-cpus", "2"], "--ray-cpus: only for a local Ray instance"),
        (["--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial 0: must be more than 0"),
        (["--seeds", "1111,1111"], "--seeds: seed 1111 is listed twice"),
        (
            ["--jobs", "2", "--devices", "2"],
            "trial text_only seed 1111: train.devices 2 x train.num_nodes 1: trials on --jobs N",
        ),
    ],
)
def test_bad_backend_options_are_one_line_errors(tmp_path, capsys, options, message):
    out = tmp_path / "never"
    assert (
        main(["benchmark", "--models", "text_only", "--dataset", TINY, "--epochs", "1", *options, "--out", str(out)])
        == 2
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("msalign:")]
    assert len(errors) == 1 and errors[0].startswith(f"msalign: error: {message}"), errors
    assert not out.exists()
