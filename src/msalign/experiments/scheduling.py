"""Where the trials of a sweep or benchmark run: in this process, in a local process pool, or on Ray.

A :class:`Trial` is one seed of a :class:`~msalign.training.run_spec.RunSpec`, trained into ``out_dir/seed_N``; it is
executed by :func:`msalign.training.run.run_seed`, which writes only inside ``seed_N/`` and skips a seed that
already finished with the same identity, so trials are independent and a re-run resumes.
:func:`run_trials` yields each trial's :class:`TrialOutcome` as it finishes; the callers
(:mod:`msalign.experiments.benchmark`, :mod:`msalign.experiments.sweep`) write the per-run ``results.json`` and their
tables from those outcomes, so every backend writes the same files.

Backends (:class:`Backend`):

* ``local`` with ``jobs=1`` (the default): one trial after another in this process, with live
  log lines and progress bars.
* ``local`` with ``jobs>1``: :func:`msalign.process_pool.run_in_processes` with ``jobs``
  spawned workers; the dataset is pickled once per worker (the pool's initializer), not per trial.
* ``ray``: every trial is a Ray task with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs,
  sent to a running cluster (``ray_address``, e.g. ``auto`` or ``ray://host:10001``) or to a
  local Ray instance (``ray_cpus`` CPUs); the dataset goes into the object store once. Ray is
  optional (``pip install 'msalign[ray]'``) and imported only here, only for this backend.

Workers set torch's intra-op threads to ``train.threads``, or to the trial's CPU count when that
is 0, so parallel trials do not oversubscribe the cores. A trial that raises is reported (label,
seed, one-line error) and the others go on; :func:`raise_for_failures` then names every failed
trial in one :class:`~msalign.errors.MsalignError`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.process_pool import run_in_processes
from msalign.training import run as training_run  # run_seed looked up at call time (tests replace it)
from msalign.training.run_folder import SeedSummary, finished_seed, run_identity
from msalign.training.run_spec import RunSpec

BACKENDS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'msalign[ray]' (or pip install 'ray[client]>=2.9')"


@dataclass(frozen=True)
class Trial:
    """One seed of one run: ``run_seed(run, seed, dataset)``.

    ``label`` names the run (a benchmark entry or a sweep point; ``run.out_dir`` is its directory)."""

    label: str
    run: RunSpec
    seed: int

    @property
    def name(self) -> str:
        """``label seed N``, as failures are reported."""
        return f"{self.label} seed {self.seed}"


@dataclass
class TrialOutcome:
    """A finished trial: its per-seed summary (as in results.json ``per_seed``), or the one-line
    error it failed with; ``log_lines`` are what the trial logged (already shown when it ran in
    this process)."""

    trial: Trial
    summary: SeedSummary | None = None
    error: str | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Backend:
    """Where trials run; see the module docstring. ``Backend()`` is one trial after another here."""

    kind: Literal["local", "ray"] = "local"
    jobs: int = 1
    ray_address: str | None = None
    ray_cpus: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise MsalignError(f"--backend {self.kind}: expected one of {', '.join(BACKENDS)}")
        if self.jobs < 1:
            raise MsalignError(f"--jobs {self.jobs}: must be at least 1")
        if not self.cpus_per_trial > 0:
            raise MsalignError(f"--cpus-per-trial {self.cpus_per_trial:g}: must be more than 0")
        if not self.gpus_per_trial >= 0:
            raise MsalignError(f"--gpus-per-trial {self.gpus_per_trial:g}: must be 0 or more")
        if self.ray_cpus is not None and self.ray_cpus < 1:
            raise MsalignError(f"--ray-cpus {self.ray_cpus}: must be at least 1")
        if self.kind == "local":
            given = [
                name
                for name, value in (
                    ("--ray-address", self.ray_address),
                    ("--ray-cpus", self.ray_cpus),
                    ("--gpus-per-trial", self.gpus_per_trial or None),
                )
                if value is not None
            ]
            if given:
                raise MsalignError(f"{given[0]}: only with --backend ray")
        else:
            if self.jobs != 1:
                raise MsalignError(
                    "--jobs: only with --backend local (Ray runs as many trials at once as "
                    "the cluster's CPUs / --cpus-per-trial allow)"
                )
            if self.ray_address is not None and self.ray_cpus is not None:
                raise MsalignError(
                    "--ray-cpus: only for a local Ray instance, not with --ray-address "
                    "(a running cluster has its own CPUs)"
                )

    @property
    def in_process(self) -> bool:
        return self.kind == "local" and self.jobs == 1

    @property
    def threads_per_trial(self) -> int:
        """torch threads of a worker's trial when its ``train.threads`` is 0."""
        return max(1, int(self.cpus_per_trial))


# --- running trials ---------------------------------------------------------------------------
def run_trials(
    trials: Iterable[Trial],
    dataset: MultimodalDataset,
    backend: Backend | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> Iterator[TrialOutcome]:
    """Runs ``trials`` on ``backend`` (default: one after another in this process) and yields
    each one's outcome as it finishes (in this process: in order; elsewhere: in finishing order).

    Every log line of a trial reaches ``log`` (live in this process, when the trial finishes
    elsewhere), prefixed with ``[label]`` when the label is not the model's name. A trial that
    raises an ``Exception`` yields an outcome with its one-line error; the others go on.
    Trials whose seed already finished are skipped here, without starting a worker."""
    backend = backend or Backend()
    trials = list(trials)
    for trial in trials:
        if not trial.run.out_dir.is_absolute():
            raise ValueError(f"trial {trial.name}: out_dir must be an absolute Path, got {trial.run.out_dir!r}")
    if not backend.in_process:
        for trial in trials:
            c = trial.run.train_config
            if c.devices * c.num_nodes > 1:
                # Lightning's DDP launcher re-runs the command line in each device's process, which a
                # pool or Ray worker does not have; a DDP run is one msalign train/benchmark command
                raise MsalignError(
                    f"trial {trial.name}: train.devices {c.devices} x train.num_nodes {c.num_nodes}: "
                    "trials on --jobs N or --backend ray use one device each; run a DDP job with "
                    "--backend local --jobs 1 (docs/scaling.md)"
                )
    if backend.in_process:
        for trial in trials:
            outcome = _run_trial(trial, dataset, progress, _trial_log(trial, log))
            if outcome.failed:
                log(_failure_line(outcome))
            yield outcome
        return
    pending = []
    for trial in trials:
        finished = _already_finished(trial, dataset)
        if finished is not None:
            yield _report(finished, log)
        else:
            pending.append(trial)
    if not pending:
        return
    runner = _run_in_pool if backend.kind == "local" else _run_on_ray
    for outcome in runner(pending, dataset, backend):
        yield _report(outcome, log)


def raise_for_failures(outcomes: Iterable[TrialOutcome]) -> None:
    """One MsalignError naming every failed trial (and the first one's error); nothing when none failed."""
    failed = [o for o in outcomes if o.failed]
    if not failed:
        return
    names = ", ".join(o.trial.name for o in failed)
    raise MsalignError(
        f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed ({names}); first error: {failed[0].error}"
    )


def _prefixed(trial: Trial, line: str) -> str:
    return line if trial.label == trial.run.model_name else f"[{trial.label}] {line}"


def _trial_log(trial: Trial, log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` with the trial's label in front of each line (:func:`_prefixed`)."""
    return lambda line: log(_prefixed(trial, line))


def _failure_line(outcome: TrialOutcome) -> str:
    return f"[{outcome.trial.name}] failed: {outcome.error}"


def _report(outcome: TrialOutcome, log: Callable[[str], None]) -> TrialOutcome:
    for line in outcome.log_lines:
        log(_prefixed(outcome.trial, line))
    if outcome.failed:
        log(_failure_line(outcome))
    return outcome


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None)  # a Ray task error wraps the worker's exception
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip().splitlines()
    if isinstance(error, MsalignError):
        return text[0] if text else "error"
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _already_finished(trial: Trial, dataset: MultimodalDataset) -> TrialOutcome | None:
    summary = finished_seed(trial.run.out_dir, trial.seed, run_identity(trial.run, dataset))
    if summary is None:
        return None
    # the line run_seed logs when it skips a finished seed
    return TrialOutcome(
        trial,
        summary,
        log_lines=[
            f"[{trial.run.model_name} seed {trial.seed}] already finished in {trial.run.seed_dir(trial.seed)}, skipped"
        ],
    )


def _run_trial(
    trial: Trial, dataset: MultimodalDataset, progress: bool | None, log: Callable[[str], None]
) -> TrialOutcome:
    """run_seed for one trial; an Exception becomes the outcome's one-line error."""
    try:
        summary = training_run.run_seed(trial.run, trial.seed, dataset, progress, log)
    except Exception as error:
        return TrialOutcome(trial, error=_one_line(error))
    return TrialOutcome(trial, summary)


def _run_trial_in_worker(trial: Trial, dataset, threads: int) -> TrialOutcome:
    """A trial in a pool or Ray worker: torch threads set, log lines captured and returned."""
    threads_wanted = trial.run.train_config.threads
    torch.set_num_threads(threads_wanted if threads_wanted > 0 else threads)
    lines: list[str] = []
    outcome = _run_trial(trial, dataset, False, lines.append)
    outcome.log_lines = lines
    return outcome


# local process pool: the dataset reaches each worker once, through the pool's initializer
_worker_dataset = None


def _set_worker_dataset(dataset) -> None:
    global _worker_dataset
    _worker_dataset = dataset


def _run_trial_in_pool_worker(trial: Trial, threads: int) -> TrialOutcome:
    return _run_trial_in_worker(trial, _worker_dataset, threads)


def _run_in_pool(trials: list[Trial], dataset, backend: Backend) -> Iterator[TrialOutcome]:
    workers = min(backend.jobs, len(trials))
    calls = [(trial, (trial, backend.threads_per_trial)) for trial in trials]
    results = run_in_processes(
        _run_trial_in_pool_worker, calls, workers, initializer=_set_worker_dataset, initargs=(dataset,)
    )
    with closing(results):  # stopping early (or Ctrl-C) kills the running trials at once
        for trial, outcome, error in results:
            if isinstance(error, BrokenProcessPool):
                yield TrialOutcome(trial, error="its worker process died (killed, or out of memory?)")
            elif error is not None:  # an outcome that could not be pickled, Lightning's exit on a signal
                yield TrialOutcome(trial, error=_one_line(error))
            else:
                yield outcome


# Ray: imported here only, when asked for
def import_ray():
    """The ``ray`` module, or a one-line MsalignError telling how to install it."""
    try:
        import ray  # optional heavy dependency (msalign[ray]): imported only for --backend ray
    except ImportError:
        raise MsalignError(f"--backend ray: Ray is not installed; install it with {RAY_INSTALL_HINT}") from None
    return ray


def _check_cluster_answers(address: str | None, seconds: float = 10.0) -> None:
    """A ``host:port`` address must accept a connection: ray.init would wait minutes for a GCS
    that is not there. (``auto`` and ``ray://`` addresses fail within a minute on their own.)"""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except (OSError, ValueError):
        raise MsalignError(
            f"--ray-address {address}: no Ray cluster answers there (start one with "
            "'ray start --head', or use --ray-address auto on a cluster node)"
        ) from None


@contextmanager
def ray_session(backend: Backend) -> Iterator[Any]:
    """The ``ray`` module, connected for the block: to ``backend.ray_address`` or a local instance
    of ``backend.ray_cpus`` CPUs, and shut down after it, unless Ray was already initialised (then
    the block reuses that connection and leaves it open). :func:`run_trials` opens one per call;
    a caller that runs several rounds of trials (msalign tune) opens one around all of them."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        _check_cluster_answers(backend.ray_address)
        options: dict[str, Any] = {"address": backend.ray_address}
        if not (backend.ray_address or "").startswith("ray://"):  # Ray Client passes these on to its server
            options.update(log_to_driver=False, logging_level="WARNING")
        if backend.ray_address is None:
            options.update(num_cpus=backend.ray_cpus, include_dashboard=False)
        try:
            ray.init(**options)
        except Exception as error:
            where = backend.ray_address or "a local instance"
            raise MsalignError(f"--backend ray: cannot start or reach Ray at {where} ({_one_line(error)})") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _run_on_ray(trials: list[Trial], dataset, backend: Backend) -> Iterator[TrialOutcome]:
    with ray_session(backend) as ray:
        remote_trial = ray.remote(_run_trial_in_worker)
        refs: dict[Any, Trial] = {}
        try:
            dataset_ref = ray.put(dataset)
            for trial in trials:
                task = remote_trial.options(
                    num_cpus=backend.cpus_per_trial, num_gpus=backend.gpus_per_trial, name=f"msalign {trial.name}"
                )
                refs[task.remote(trial, dataset_ref, backend.threads_per_trial)] = trial
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    trial = refs.pop(ref)
                    try:
                        yield ray.get(ref)
                    except Exception as error:
                        yield TrialOutcome(trial, error=_one_line(error))
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise


def seed_trials(label: str, run: RunSpec) -> list[Trial]:
    """One trial per seed of ``run`` (its ``out_dir`` made absolute, so workers elsewhere find it)."""
    seeds = list(run.seeds)
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise MsalignError(f"--seeds: seed {repeated[0]} is listed twice")
    run = run.replace(out_dir=run.out_dir.absolute())
    return [Trial(label, run, seed) for seed in seeds]


__all__ = [
    "BACKENDS",
    "Backend",
    "Trial",
    "TrialOutcome",
    "import_ray",
    "raise_for_failures",
    "ray_session",
    "run_trials",
    "seed_trials",
]
