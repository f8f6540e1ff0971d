"""Training speed and peak memory of decalign on CPU, with the alignment losses timed apart.

Usage::

    .venv/bin/python benchmarks/decalign_speed.py --label after            # everything, 1 thread
    .venv/bin/python benchmarks/decalign_speed.py --threads 1,2 --scenarios real --steps 40 --epochs 0
    .venv/bin/python benchmarks/decalign_speed.py --label after --merge --scenarios "" --epochs 3
    .venv/bin/python benchmarks/decalign_speed.py --render-only --notes notes.md

Scenarios (random data, fixed seed; each batch is trimmed to its longest real sequence exactly as
``msalign.training.data.collate_rows`` does, and every padded position is zero):

* ``unaligned``: MMSA's unaligned MOSI shapes: text 50 x 768, audio 375 x 5, vision 500 x 20.
  True lengths are ``ceil(L * f)`` with f log-normal (median 0.4, sigma 0.5) clipped to (0, 1],
  i.e. mostly short clips and a few full-length ones (a batch of 32 is padded to ~L).
* ``real``: the shapes of OUR real MOSI data (../shared/data/mosi), on which the official
  DecAlign figure (6.2 s per epoch, 1.18 GB) was measured: text = MiniLM token sequences
  50 x 384 (same length law), audio = one 73-d utterance vector (length 1); no vision (the
  official run fed an all-zero placeholder, decalign runs on the two real modalities).

Configurations: ``official`` = the official MOSI config (d 64, 8 heads, 5 cross-attention layers
and no self-attention ones, kernel-1 projections, i.e. ``projection_kernel: 1``; everything else at
our defaults), ``default`` = our ``DecAlignConfig()``.

Method (each scenario x configuration x thread count runs in a fresh subprocess, so the peak RSS,
``ru_maxrss``, belongs to that run alone; it includes the interpreter, torch and the data):

1. *Throughput*: a training step is what Lightning runs: forward in train mode, task MSE plus the
   model's weighted aux losses, ``backward``, ``clip_grad_norm_(1.0)``, AdamW step (as in
   ``training/module.py``). After warm-up steps, ``--repeats`` rounds of ``--steps`` steps are
   timed; the median round gives seconds per step and training samples/s. Eval throughput
   (``no_grad``, eval mode) is measured the same way. Every figure is taken twice: from wall time
   and from this process's CPU time (``time.process_time``). With one torch thread the two agree
   on an idle machine; when other jobs share the cores, wall time is inflated and the CPU-time
   figure is the reproducible one.
2. *Alignment share, marginal*: rounds of the same step with the model's ``alignment_losses``
   replaced by one that returns no losses (same architecture, same task loss), interleaved with
   the normal rounds so both see the same background load. ``1 - t_without / t_with`` is the
   share of the step that the alignment losses cost, forward AND backward.
3. *Breakdown*: a few further steps with the loss functions that ``msalign.models.decalign``
   calls wrapped in CPU-time timers (CPU ops run synchronously, so this is exact for the forward
   computation of each): dec (``decoupling_loss``), gmm (``fit_gmm``, all modalities), cost
   (``pairwise_prototype_cost`` + ``joint_cost`` + ``ot_loss``), sinkhorn
   (``multimarginal_sinkhorn``), calibration (``prototype_loss``), moments (``moment_matching``),
   mmd (``pairwise_mmd``); plus the forward / backward / optimizer times of the step. The backward
   of the losses is not attributable per loss (autograd interleaves it); item 2 covers it.
4. *Epoch estimate* for MOSI's 1284 training + 229 validation clips:
   ``1284 / train_sps + 229 / eval_sps`` seconds (no data loading, no Lightning bookkeeping),
   to set beside the official code's 6.2 s per epoch.
5. *Full training loop* (``--epochs``, default 3): ``msalign.training.train`` itself (Lightning,
   data loading, validation, checkpoints) for that many epochs on random data in the ``real``
   shapes with MOSI's 1284 / 229 / 686 clips; wall and CPU seconds per epoch (the first epoch's
   start-up included) and the peak RSS of that process: the figures that compare directly with
   the official 6.2 s per epoch and 1.18 GB.

Results go to ``benchmarks/results/decalign_speed.{json,md}``; runs are kept by ``--label`` so a
"before" and an "after" measurement sit side by side.

Same-window comparison with another git revision (``--compare``, issue 18)::

    .venv/bin/python benchmarks/decalign_speed.py --compare --baseline-rev 9530bfc \
        --datasets three=CACHE/mosi_real_std.pkl,two=../shared/data/mosi --rounds 3 --epochs 3
    .venv/bin/python benchmarks/decalign_speed.py --compare --baseline-rev 9530bfc --shapes mosei --steps 3

The baseline revision is checked out with ``git worktree add`` into a temporary folder, and every
measurement runs in a fresh subprocess with ``PYTHONPATH`` at one arm's ``src``; the arms alternate
round by round (A B A B ...), so both see the same background load and every speed-up is a ratio
measured in one window (the median round of each arm is kept). ``three`` is the three-stream MMSA
pickle that ``../shared/peer/build_pkl.py`` builds (text, audio, an all-zero (N, 1, 1) vision
placeholder); ``two`` the text + audio folder. Each epoch run is ``msalign.training.train`` at the
official MOSI config (d 64, 8 heads, 5 layers, batch 32, kernel-1 projections, attention dropout
0.1, lr 6e-5) for ``--epochs`` epochs: seconds per epoch (training + validation, wall and CPU),
then training samples/s from one further pass of training steps over the training split, and the
peak RSS of the training run. The import floor is the peak RSS of a process that only imports
python, torch, lightning and msalign. ``--shapes mosei`` times training steps on random tensors of
MOSEI's unaligned shapes (text 50 x 768, audio 500 x 74, vision 500 x 35; lengths as in the
``unaligned`` scenario; the model of configs/decalign/mosei.yaml, batch ``--batch-size``) instead;
``--options`` adds arms of the current code with speed options
(``bf16``: CPU autocast to bfloat16; ``compile``: ``torch.compile`` of the model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OFFICIAL = {"seconds_per_epoch": 6.2, "train_clips": 1284, "valid_clips": 229, "peak_rss_mb": 1180.0}
SCENARIOS = {
    "unaligned": {
        "dims": {"text": 768, "audio": 5, "vision": 20},
        "lengths": {"text": 50, "audio": 375, "vision": 500},
        "steps": 3,
        "repeats": 3,
    },
    "real": {"dims": {"text": 384, "audio": 73}, "lengths": {"text": 50, "audio": 1}, "steps": 30, "repeats": 5},
}
SCENARIOS["mosei"] = {
    "dims": {"text": 768, "audio": 74, "vision": 35},
    "lengths": {"text": 50, "audio": 500, "vision": 500},
    "steps": 3,
    "repeats": 1,
}
OFFICIAL_MOSI = {"width": 64, "heads": 8, "layers": 5, "self_layers": 0, "projection_kernel": 1, "attn_dropout": 0.1}
CONFIGS = {
    "official": {"width": 64, "heads": 8, "layers": 5, "self_layers": 0, "projection_kernel": 1},
    "default": {},
}


def train_any_revision(model_config, train_config, dataset, seed: int, out: str) -> None:
    """``msalign.training.train`` of the checked-out revision: RunSpec since b0555fe, the older
    positional signature before it (the ``--baseline-rev`` revisions, e.g. 9530bfc)."""
    import msalign.training as training

    spec_type = getattr(training, "RunSpec", None)
    if spec_type is not None:
        run = spec_type("decalign", model_config, train_config, seeds=[seed], out_dir=Path(out))
        training.train(run, dataset, progress=False, log=lambda *a: None)
    else:
        training.train(
            "decalign",
            dataset,
            model_config,
            train_config,
            seeds=[seed],
            out_dir=out,
            progress=False,
            log=lambda *a: None,
        )


def config_overrides(name: str) -> dict:
    """CONFIGS[name] restricted to the fields this checkout's DecAlignConfig has, so that the same
    script measures an older revision (PYTHONPATH=OLD/src) for a before/after comparison."""
    import dataclasses

    from msalign.models.decalign import DecAlignConfig

    known = {f.name for f in dataclasses.fields(DecAlignConfig)}
    return {k: v for k, v in CONFIGS[name].items() if k in known}


LOSS_FUNCTIONS = {
    "decoupling_loss": "dec",
    "fit_gmm": "gmm",
    "pairwise_prototype_cost": "cost",
    "joint_cost": "cost",
    "ot_loss": "cost",
    "multimarginal_sinkhorn": "sinkhorn",
    "prototype_loss": "calibration",
    "moment_matching": "moments",
    "pairwise_mmd": "mmd",
}


# ---------------------------------------------------------------------------------------------
# worker: one scenario x configuration x thread count


def make_batches(torch, scenario: dict, batch_size: int, count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        features, masks = {}, {}
        for m, dim in scenario["dims"].items():
            full = scenario["lengths"][m]
            frac = torch.exp(math.log(0.4) + 0.5 * torch.randn(batch_size, generator=generator)).clamp(max=1.0)
            lengths = torch.ceil(full * frac).long().clamp(1, full)
            longest = int(lengths.max())
            mask = torch.arange(longest)[None, :] < lengths[:, None]
            features[m] = torch.randn(batch_size, longest, dim, generator=generator) * mask[..., None]
            masks[m] = mask
        labels = torch.randn(batch_size, generator=generator).clamp(-3, 3)
        batches.append((features, masks, labels))
    return batches


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import msalign
    import msalign.models.decalign as decalign_module
    from msalign.models import create_model

    scenario = SCENARIOS[args.scenario]
    torch.manual_seed(0)
    model = create_model("decalign", dims=scenario["dims"], output_dim=1, **config_overrides(args.config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)  # as training/module.py
    batches = make_batches(torch, scenario, args.batch_size, 4, seed=1)
    steps = args.steps or scenario["steps"]
    repeats = args.repeats or scenario["repeats"]
    timers: dict[str, float] = {}
    clock = time.process_time  # CPU seconds of this process: insensitive to other jobs' load

    def train_step(batch, split: bool = False) -> None:
        features, masks, labels = batch
        t0 = clock()
        out = model(features, masks)
        loss = torch.nn.functional.mse_loss(out.prediction, labels)
        for value in out.aux_losses.values():
            loss = loss + value
        t1 = clock()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        t3 = clock()
        if split:
            for key, value in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
                timers[key] = timers.get(key, 0.0) + value
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss in the benchmark")

    def eval_step(batch) -> None:
        with torch.no_grad():
            model(batch[0], batch[1])

    def no_alignment(*args, **kwargs):
        return {}, {}

    def round_of(fn, train: bool) -> tuple[float, float]:
        """(wall, CPU) seconds per step over one round of ``steps`` steps."""
        model.train(train)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(steps):
            fn(batches[i % len(batches)])
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps

    def set_alignment(on: bool) -> None:
        if on:
            model.__dict__.pop("alignment_losses", None)
        else:
            model.alignment_losses = no_alignment

    # warm-up, then rounds with and without the alignment losses interleaved, so both see the
    # same background load; the median round of each is kept
    for on in (True, False):
        set_alignment(on)
        model.train()
        for i in range(args.warmup):
            train_step(batches[i % len(batches)])
    rounds: dict[str, list[tuple[float, float]]] = {"with": [], "without": [], "eval": []}
    for _ in range(repeats):
        for on, key in ((True, "with"), (False, "without")):
            set_alignment(on)
            rounds[key].append(round_of(train_step, True))
        set_alignment(True)
        rounds["eval"].append(round_of(eval_step, False))
    set_alignment(True)
    median = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rounds.items()}
    with_losses, without_losses, eval_time = median["with"][0], median["without"][0], median["eval"][0]
    with_rounds = [w for w, _ in rounds["with"]]
    without_rounds = [w for w, _ in rounds["without"]]

    # breakdown: wrap the loss functions decalign calls
    originals = {}
    for name, key in LOSS_FUNCTIONS.items():
        if not hasattr(decalign_module, name):
            continue
        original = getattr(decalign_module, name)
        originals[name] = original

        def wrapped(*a, __original=original, __key=key, **k):
            t = clock()
            try:
                return __original(*a, **k)
            finally:
                timers[__key] = timers.get(__key, 0.0) + clock() - t

        setattr(decalign_module, name, wrapped)
    model.train()
    breakdown_steps = max(3, steps)
    for i in range(breakdown_steps):
        train_step(batches[i % len(batches)], split=True)
    for name, original in originals.items():
        setattr(decalign_module, name, original)
    per_step_ms = {k: round(1000 * v / breakdown_steps, 3) for k, v in timers.items()}
    loss_keys = sorted(set(LOSS_FUNCTIONS.values()))
    loss_forward = sum(per_step_ms.get(k, 0.0) for k in loss_keys)

    train_sps = args.batch_size / with_losses
    eval_sps = args.batch_size / eval_time
    epoch = OFFICIAL["train_clips"] / train_sps + OFFICIAL["valid_clips"] / eval_sps
    cpu_train_sps = args.batch_size / median["with"][1]
    cpu_eval_sps = args.batch_size / median["eval"][1]
    cpu_epoch = OFFICIAL["train_clips"] / cpu_train_sps + OFFICIAL["valid_clips"] / cpu_eval_sps
    return {
        "scenario": args.scenario,
        "config": args.config,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "msalign": str(Path(msalign.__file__).parent),
        "steps": steps,
        "repeats": repeats,
        "seconds_per_step": round(with_losses, 5),
        "seconds_per_step_rounds": [round(r, 5) for r in with_rounds],
        "train_samples_per_s": round(train_sps, 2),
        "eval_samples_per_s": round(eval_sps, 2),
        "cpu_seconds_per_step": round(median["with"][1], 5),
        "cpu_train_samples_per_s": round(cpu_train_sps, 2),
        "cpu_eval_samples_per_s": round(cpu_eval_sps, 2),
        "cpu_mosi_epoch_seconds_estimate": round(cpu_epoch, 2),
        "cpu_alignment_share_marginal": round(max(0.0, 1 - median["without"][1] / median["with"][1]), 4),
        "seconds_per_step_without_alignment": round(without_losses, 5),
        "seconds_per_step_without_alignment_rounds": [round(r, 5) for r in without_rounds],
        "alignment_share_marginal": round(max(0.0, 1 - without_losses / with_losses), 4),
        "breakdown_ms_per_step": per_step_ms,
        "alignment_forward_ms_per_step": round(loss_forward, 3),
        "alignment_forward_share": round(
            loss_forward / (1000 * sum(timers[k] for k in ("forward", "backward", "optimizer")) / breakdown_steps), 4
        ),
        "mosi_epoch_seconds_estimate": round(epoch, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_mb": round(rss_start, 1),
    }


def epoch_worker(args: argparse.Namespace) -> dict:
    """Seconds per epoch of ``msalign.training.train`` (Lightning fit: data loading, training,
    validation, checkpoints) on random data in the scenario's shapes with MOSI's split sizes."""
    import tempfile

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from msalign.data.types import MultimodalDataset, Split
    from msalign.models.registry import build_config

    scenario = SCENARIOS[args.scenario]
    rng = np.random.default_rng(0)
    splits = {}
    for name, size in (("train", OFFICIAL["train_clips"]), ("valid", OFFICIAL["valid_clips"]), ("test", 686)):
        features, lengths = {}, {}
        for m, dim in scenario["dims"].items():
            full = scenario["lengths"][m]
            frac = np.minimum(np.exp(np.log(0.4) + 0.5 * rng.standard_normal(size)), 1.0)
            lengths[m] = np.clip(np.ceil(full * frac), 1, full).astype(np.int64)
            x = rng.standard_normal((size, full, dim)).astype(np.float32)
            x[np.arange(full)[None, :] >= lengths[m][:, None]] = 0.0
            features[m] = x
        labels = np.clip(rng.normal(0, 1.5, size), -3, 3).astype(np.float32)
        splits[name] = Split(name, features, lengths, labels, [f"{name}_{i}" for i in range(size)])
    dataset = MultimodalDataset("speed", splits, metric_set="mosi", source="random", feature_spec={"kind": "random"})
    model_config = build_config("decalign", config_overrides(args.config))
    train_config = official_train_config(args)
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        train_any_revision(model_config, train_config, dataset, 0, out)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "scenario": args.scenario,
        "config": args.config,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seconds_per_epoch": round(wall / args.epochs, 2),
        "cpu_seconds_per_epoch": round(cpu / args.epochs, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def official_train_config(args: argparse.Namespace):
    """The official MOSI training settings (lr 6e-5) for ``args.epochs`` epochs without early stopping."""
    from msalign.config import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=6e-5,
        patience=args.epochs + 1,
        threads=args.threads,
        accelerator="cpu",
    )


def official_model_config():
    """The official MOSI configuration (issue 18), restricted to this checkout's fields."""
    import dataclasses

    from msalign.models.decalign import DecAlignConfig
    from msalign.models.registry import build_config

    known = {f.name for f in dataclasses.fields(DecAlignConfig)}
    return build_config("decalign", {k: v for k, v in OFFICIAL_MOSI.items() if k in known})


def floor_worker(args: argparse.Namespace) -> dict:
    """Peak RSS of importing python + torch + lightning + msalign, nothing else."""
    import lightning  # noqa: F401
    import torch  # noqa: F401

    import msalign.training  # noqa: F401

    return {"kind": "floor", "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def dataset_epoch_worker(args: argparse.Namespace) -> dict:
    """``msalign.training.train`` at the official config on ``--dataset`` (s/epoch, peak RSS), then
    one pass of training steps over its training split (training samples/s)."""
    import tempfile

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import msalign
    from msalign.data import load_dataset
    from msalign.models import create_model
    from msalign.training.data import collate_rows

    dataset = load_dataset(args.dataset)
    model_config = official_model_config()
    train_config = official_train_config(args)
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        train_any_revision(model_config, train_config, dataset, 1111, out)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    split = dataset.split("train")
    modalities = tuple(m for m in ("text", "audio", "vision") if m in split.features)
    order = np.random.default_rng(0).permutation(len(split.labels))
    batches = [
        collate_rows(split, modalities, order[i : i + args.batch_size]) for i in range(0, len(order), args.batch_size)
    ]
    torch.manual_seed(0)
    model = create_model(
        "decalign",
        dims={m: split.features[m].shape[-1] for m in modalities},
        output_dim=1,
        **{k: getattr(model_config, k) for k in OFFICIAL_MOSI if hasattr(model_config, k)},
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, fused=True)

    def step(b) -> None:
        out = model(b["features"], b["masks"])
        loss = torch.nn.functional.mse_loss(out.prediction, b["labels"].float())
        for value in out.aux_losses.values():
            loss = loss + value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for b in batches[:3]:
        step(b)
    step_wall, step_cpu = time.perf_counter(), time.process_time()
    for b in batches:
        step(b)
    step_wall, step_cpu = time.perf_counter() - step_wall, time.process_time() - step_cpu
    return {
        "kind": "epoch",
        "dataset": args.dataset,
        "modalities": list(modalities),
        "msalign": str(Path(msalign.__file__).parent),
        "epochs": args.epochs,
        "seconds_per_epoch": round(wall / args.epochs, 3),
        "cpu_seconds_per_epoch": round(cpu / args.epochs, 3),
        "train_samples_per_s": round(len(order) / step_wall, 1),
        "cpu_train_samples_per_s": round(len(order) / step_cpu, 1),
        "peak_rss_mb": round(peak, 1),
    }


def shapes_worker(args: argparse.Namespace) -> dict:
    """Training steps on random tensors of ``--scenario``'s shapes: samples/s."""
    import contextlib
    import dataclasses

    import torch

    torch.set_num_threads(args.threads)
    import msalign
    from msalign.models import create_model
    from msalign.models.registry import build_config

    scenario = SCENARIOS[args.scenario]
    options = [o for o in args.option.split("+") if o]
    # MOSEI: configs/decalign/mosei.yaml's model (the paper defaults: no attention dropout, kernel 3)
    model_config = build_config("decalign", {}) if args.scenario == "mosei" else official_model_config()
    torch.manual_seed(0)
    model = create_model("decalign", dims=scenario["dims"], output_dim=1, **dataclasses.asdict(model_config)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, fused=True)
    forward = torch.compile(model) if "compile" in options else model
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in options else contextlib.nullcontext
    batches = make_batches(torch, scenario, args.batch_size, 2, seed=1)

    def step(b) -> None:
        features, masks, labels = b
        with autocast():
            out = forward(features, masks)
            loss = torch.nn.functional.mse_loss(out.prediction.float(), labels)
            for value in out.aux_losses.values():
                loss = loss + value.float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss in the benchmark")

    step(batches[0])
    steps = args.steps or scenario["steps"]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(batches[i % len(batches)])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "kind": "shapes",
        "scenario": args.scenario,
        "option": args.option or "none",
        "steps": steps,
        "msalign": str(Path(msalign.__file__).parent),
        "train_samples_per_s": round(steps * args.batch_size / wall, 2),
        "cpu_train_samples_per_s": round(steps * args.batch_size / cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def git_revision(path: Path, rev: str = "HEAD") -> str:
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()


def compare(args: argparse.Namespace) -> None:
    """Interleaved same-window comparison of this checkout with ``--baseline-rev`` (module docstring)."""
    import tempfile

    repo = HERE.parent
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "src"], capture_output=True, text=True
    ).stdout.strip()
    arms = {"current": {"src": repo / "src", "rev": git_revision(repo) + ("+" if dirty else "")}}
    scratch = Path(tempfile.mkdtemp(prefix="decalign_speed_"))
    if args.baseline_rev:
        checkout = scratch / "baseline"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(checkout), args.baseline_rev],
            check=True,
            capture_output=True,
        )
        arms["baseline"] = {"src": checkout / "src", "rev": git_revision(checkout)}
    options = [o for o in args.options.split(",") if o]
    try:
        runs: list[dict] = []
        for round_ in range(args.rounds):
            order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
            for arm in order:
                env_path = str(arms[arm]["src"])
                jobs = []
                if args.shapes:
                    arm_options = ["", *(options if arm == "current" else [])]
                    jobs += [("shapes", {"--scenario": args.shapes, "--option": o}) for o in arm_options]
                else:
                    jobs.append(("floor", {}))
                    jobs += [
                        ("epoch", {"--dataset": path, "__name": name})
                        for name, path in (d.split("=", 1) for d in args.datasets.split(","))
                    ]
                for kind, extra in jobs:
                    cmd = [
                        sys.executable,
                        __file__,
                        f"--{kind}-worker",
                        "--threads",
                        "1",
                        "--epochs",
                        str(args.epochs),
                        "--batch-size",
                        str(args.batch_size),
                        "--steps",
                        str(args.steps),
                    ]
                    for k, v in extra.items():
                        if not k.startswith("__"):
                            cmd += [k, v]
                    env = dict(os.environ, PYTHONPATH=env_path)
                    try:
                        result = run_worker(
                            cmd,
                            1,
                            f"{arm} {kind}",
                            env=env,
                            timeout=args.option_timeout if extra.get("--option") else None,
                        )
                    except SystemExit as failure:  # an option that does not run here (no compiler, ...)
                        if not extra.get("--option"):
                            raise
                        result = {"kind": kind, "option": extra["--option"], "error": str(failure)}
                    result.update(arm=arm, round=round_, name=extra.get("__name", kind))
                    runs.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        if args.baseline_rev:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(checkout)], capture_output=True
            )
    summary = summarize_compare(runs)
    record = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "arms": {k: v["rev"] for k, v in arms.items()},
        "rounds": args.rounds,
        "epochs": args.epochs,
        "datasets": args.datasets if not args.shapes else None,
        "shapes": args.shapes or None,
        "note": args.note,
        "runs": runs,
        "summary": summary,
    }
    json_path = Path(args.json)
    data = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    data.setdefault("compare", {})[args.label] = record
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    md_path.write_text(render_markdown(data))
    print(json.dumps(summary, indent=1))
    print(f"wrote {json_path} and {md_path}")


def summarize_compare(runs: list[dict]) -> dict:
    """Per (arm, name, option): the median over rounds of every figure."""
    groups: dict[str, list[dict]] = {}
    for r in (r for r in runs if "error" not in r):
        groups.setdefault(f"{r['arm']}/{r['name']}" + (f"/{r['option']}" if r.get("option") else ""), []).append(r)
    keys = (
        "seconds_per_epoch",
        "cpu_seconds_per_epoch",
        "train_samples_per_s",
        "cpu_train_samples_per_s",
        "peak_rss_mb",
    )
    return {
        g: {k: statistics.median(r[k] for r in rs) for k in keys if k in rs[0]} | {"n": len(rs)}
        for g, rs in groups.items()
    }


def render_compare(label: str, c: dict) -> list[str]:
    m = c["machine"]
    s = c["summary"]
    lines = [
        f"## {label} (same window, interleaved)",
        "",
        f"{c['date']}; {m['cpu_count']} cores ({m['cpu']}), torch {m['torch']}, python {m['python']}, load "
        f"average at start {m['loadavg_at_start']}; arms: "
        + ", ".join(f"{k} = git {v}" for k, v in c["arms"].items())
        + f"; {c['rounds']} rounds, alternating arm order, medians; 1 torch thread per run."
        + (f" {c['note']}" if c.get("note") else ""),
        "",
    ]
    if c.get("shapes"):
        lines += ["| arm / option | train samples/s (wall) | (CPU) | peak RSS (MB) |", "|---|---|---|---|"]
        for g, v in s.items():
            lines.append(
                f"| {g} | {v['train_samples_per_s']:.2f} | {v['cpu_train_samples_per_s']:.2f} | "
                f"{v['peak_rss_mb']:.0f} |"
            )
        return [*lines, ""]
    floor = {arm: v["peak_rss_mb"] for g, v in s.items() for arm in [g.split("/")[0]] if g.endswith("/floor")}
    lines += [
        "| arm / data | s/epoch (wall) | s/epoch (CPU) | train samples/s (wall / CPU) | peak RSS (MB) | "
        "minus import floor |",
        "|---|---|---|---|---|---|",
    ]
    for g, v in s.items():
        if g.endswith("/floor"):
            lines.append(f"| {g} | | | | {v['peak_rss_mb']:.0f} | |")
            continue
        arm = g.split("/")[0]
        lines.append(
            f"| {g} | {v['seconds_per_epoch']:.2f} | {v['cpu_seconds_per_epoch']:.2f} | "
            f"{v['train_samples_per_s']:.0f} / {v['cpu_train_samples_per_s']:.0f} | {v['peak_rss_mb']:.0f} | "
            f"{v['peak_rss_mb'] - floor.get(arm, 0.0):.0f} |"
        )
    names = sorted({g.split("/")[1] for g in s if not g.endswith("/floor")})
    ratios = []
    for n in names:
        a, b = s.get(f"current/{n}"), s.get(f"baseline/{n}")
        if a and b:
            ratios.append(
                f"{n}: {b['seconds_per_epoch'] / a['seconds_per_epoch']:.2f}x (wall), "
                f"{b['cpu_seconds_per_epoch'] / a['cpu_seconds_per_epoch']:.2f}x (CPU) faster per epoch; "
                f"training samples/s {a['train_samples_per_s'] / b['train_samples_per_s']:.2f}x"
            )
    for arm in ("current", "baseline"):
        three, two = s.get(f"{arm}/three"), s.get(f"{arm}/two")
        if three and two:
            ratios.append(
                f"{arm}: three streams cost {three['seconds_per_epoch'] / two['seconds_per_epoch']:.2f}x "
                f"(wall), {three['cpu_seconds_per_epoch'] / two['cpu_seconds_per_epoch']:.2f}x (CPU) "
                "the two-stream epoch"
            )
    return lines + [""] + [f"- {r}" for r in ratios] + [""]


# ---------------------------------------------------------------------------------------------
# driver


def machine_info() -> dict:
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def render_markdown(data: dict) -> str:
    lines = [
        "# decalign training speed on CPU",
        "",
        "Written by `benchmarks/decalign_speed.py` (method in its docstring). Official DecAlign at its MOSI "
        f"config on our real MOSI data, 2 cores: {OFFICIAL['seconds_per_epoch']} s per epoch of "
        f"{OFFICIAL['train_clips']} + {OFFICIAL['valid_clips']} clips "
        f"(~{OFFICIAL['train_clips'] / OFFICIAL['seconds_per_epoch']:.0f} training samples/s including "
        "validation), "
        f"peak {OFFICIAL['peak_rss_mb'] / 1000:.2f} GB RSS.",
        "",
        "Columns: samples/s from wall time (and, after the slash, from this process's CPU time, which other "
        "jobs on the machine do not inflate); *epoch* = estimated seconds for MOSI's 1284 training + 229 "
        "validation clips; *align.* = share of the training step the alignment losses cost (forward and "
        "backward, from the interleaved with / without timing); *align. fwd* = forward time of the losses "
        "(ms per step) and its parts; fwd / bwd / opt = ms per step (CPU time).",
        "",
    ]
    for label, run in data["runs"].items():
        m = run["machine"]
        lines += [
            f"## {label}",
            "",
            f"{run['date']}; {m['cpu_count']} cores ({m['cpu']}), torch {m['torch']}, python {m['python']}, "
            f"load average at start {m['loadavg_at_start']}." + (f" {run['note']}" if run.get("note") else ""),
            "",
            "| scenario | config | threads | batch | train samples/s | eval samples/s | epoch (s) | "
            "peak RSS (MB) | align. | align. fwd | dec | gmm | cost | sinkhorn | calib. | moments | mmd | "
            "fwd | bwd | opt |",
            "|" + "---|" * 20,
        ]
        for r in run["results"]:
            b = r["breakdown_ms_per_step"]

            def pair(wall_key: str, cpu_key: str, fmt: str = "{:.0f}", factor: float = 1.0, r: dict = r) -> str:
                if cpu_key not in r:
                    return fmt.format(factor * r[wall_key])
                return f"{fmt.format(factor * r[wall_key])} / {fmt.format(factor * r[cpu_key])}"

            cells = [
                r["scenario"],
                r["config"],
                r["threads"],
                r["batch_size"],
                pair("train_samples_per_s", "cpu_train_samples_per_s", "{:.1f}"),
                pair("eval_samples_per_s", "cpu_eval_samples_per_s", "{:.0f}"),
                pair("mosi_epoch_seconds_estimate", "cpu_mosi_epoch_seconds_estimate", "{:.2f}"),
                f"{r['peak_rss_mb']:.0f}",
                pair("alignment_share_marginal", "cpu_alignment_share_marginal", "{:.0f}%", 100.0),
                f"{r['alignment_forward_ms_per_step']:.1f}",
            ]
            cells += [
                f"{b.get(k, 0.0):.1f}"
                for k in (
                    "dec",
                    "gmm",
                    "cost",
                    "sinkhorn",
                    "calibration",
                    "moments",
                    "mmd",
                    "forward",
                    "backward",
                    "optimizer",
                )
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
        if run.get("epochs"):
            lines += [
                "Full training loop (`msalign.training.train`: Lightning, data loading, training, validation, "
                "checkpoints), random data in the *real* shapes with MOSI's 1284 / 229 clips:",
                "",
                "| config | threads | batch | epochs | s/epoch (wall) | s/epoch (CPU) | peak RSS (MB) |",
                "|---|---|---|---|---|---|---|",
            ]
            for e in run["epochs"]:
                lines.append(
                    f"| {e['config']} | {e['threads']} | {e['batch_size']} | {e['epochs']} | "
                    f"{e['seconds_per_epoch']} | {e['cpu_seconds_per_epoch']} | {e['peak_rss_mb']:.0f} |"
                )
            lines.append("")
    for label, c in data.get("compare", {}).items():
        lines += render_compare(label, c)
    if data.get("notes"):
        lines += ["## Notes", "", *data["notes"], ""]
    return "\n".join(lines)


def run_worker(cmd: list[str], threads: int, name: str, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh process (its own peak RSS) and return its JSON result."""
    env = dict(env or os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{name} took more than {timeout} s") from None
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts (default 1)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per repeat (default: per scenario, 3 / 30)")
    parser.add_argument("--repeats", type=int, default=0, help="timed rounds, the median is kept (default 3 / 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scenarios", default="real,unaligned")
    parser.add_argument("--configs", default="official,default")
    parser.add_argument("--label", default="current", help="name of this run in the results (e.g. before, after)")
    parser.add_argument("--note", default="", help="free text stored with the run")
    parser.add_argument(
        "--merge", action="store_true", help="add to the label's stored results instead of replacing them"
    )
    parser.add_argument(
        "--json", default=str(RESULTS / "decalign_speed.json"), help="results JSON (runs are merged by label)"
    )
    parser.add_argument("--md", default=None, help="markdown table (default: the JSON path with .md)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs of the full training loop timed per --epoch-configs entry (0 = skip)",
    )
    parser.add_argument("--epoch-configs", default="official", help="configs timed with the full loop (scenario real)")
    parser.add_argument("--notes", default=None, help="markdown file whose lines become the results' Notes section")
    parser.add_argument(
        "--render-only", action="store_true", help="only rewrite the markdown from the JSON (and --notes)"
    )
    parser.add_argument("--compare", action="store_true", help="same-window interleaved comparison (docstring)")
    parser.add_argument("--baseline-rev", default="", help="git revision of the baseline arm (e.g. 9530bfc)")
    parser.add_argument(
        "--datasets",
        default="two=../shared/data/mosi",
        help="NAME=PATH,... datasets of the --compare epoch runs (three=PICKLE for the three streams)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --compare")
    parser.add_argument("--shapes", default="", help="--compare on random tensors of these shapes instead (mosei)")
    parser.add_argument("--options", default="", help="--shapes: extra arms of the current code: bf16, compile")
    parser.add_argument(
        "--option-timeout", type=float, default=900.0, help="seconds after which an option arm is dropped"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shapes-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--option", default="", help=argparse.SUPPRESS)
    parser.add_argument("--epoch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker or args.epoch_worker or args.floor_worker or args.shapes_worker:
        args.threads = int(args.threads)
        if args.floor_worker:
            result = floor_worker(args)
        elif args.shapes_worker:
            result = shapes_worker(args)
        elif args.epoch_worker and args.dataset:
            result = dataset_epoch_worker(args)
        else:
            result = worker(args) if args.worker else epoch_worker(args)
        print(json.dumps(result))
        return
    if args.compare:
        compare(args)
        return

    json_path = Path(args.json)
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    if args.render_only:
        data = json.loads(json_path.read_text())
        if args.notes:
            data["notes"] = Path(args.notes).read_text().rstrip("\n").splitlines()
            json_path.write_text(json.dumps(data, indent=1) + "\n")
        md_path.write_text(render_markdown(data))
        print(f"wrote {md_path}")
        return

    results = []
    for scenario in (x for x in args.scenarios.split(",") if x):
        for config in args.configs.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--scenario",
                    scenario,
                    "--config",
                    config,
                    "--threads",
                    str(threads),
                    "--steps",
                    str(args.steps),
                    "--repeats",
                    str(args.repeats),
                    "--warmup",
                    str(args.warmup),
                    "--batch-size",
                    str(args.batch_size),
                ]
                result = run_worker(cmd, threads, f"worker {scenario}/{config}/{threads}")
                results.append(result)
                print(
                    f"{scenario:9s} {config:8s} threads {threads}: "
                    f"{result['train_samples_per_s']:8.1f} train samples/s, "
                    f"{result['eval_samples_per_s']:8.1f} eval samples/s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                    f"alignment {100 * result['alignment_share_marginal']:.1f}% of the step, "
                    f"epoch est. {result['mosi_epoch_seconds_estimate']} s",
                    flush=True,
                )

    epochs = []
    if args.epochs > 0:
        for config in args.epoch_configs.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                cmd = [
                    sys.executable,
                    __file__,
                    "--epoch-worker",
                    "--scenario",
                    "real",
                    "--config",
                    config,
                    "--threads",
                    str(threads),
                    "--epochs",
                    str(args.epochs),
                    "--batch-size",
                    str(args.batch_size),
                ]
                result = run_worker(cmd, threads, f"epoch worker {config}/{threads}")
                epochs.append(result)
                print(
                    f"training loop, real shapes, {config}, threads {threads}: {result['seconds_per_epoch']} s/epoch "
                    f"({result['cpu_seconds_per_epoch']} CPU s), peak RSS {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )

    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    previous = data.setdefault("runs", {}).get(args.label) if args.merge else None
    if previous:  # keep the label's earlier results, replacing those measured again

        def key(r):
            return (r["scenario"], r["config"], r["threads"], r["batch_size"])

        results = [r for r in previous["results"] if key(r) not in {key(x) for x in results}] + results
        epochs = [r for r in previous.get("epochs", []) if key(r) not in {key(x) for x in epochs}] + epochs
    data["runs"][args.label] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "note": args.note or (previous or {}).get("note", ""),
        "results": results,
        "epochs": epochs,
    }
    if args.notes:
        data["notes"] = Path(args.notes).read_text().rstrip("\n").splitlines()
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(render_markdown(data))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
