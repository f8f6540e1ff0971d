"""A MOSEI-sized dataset larger than comfortable memory: write it with the streaming store writer,
train decalign on it for one epoch through the normal training path, and measure memory.

Usage::

    .venv/bin/python benchmarks/mosei_scale.py                        # full sizes, one full epoch
    .venv/bin/python benchmarks/mosei_scale.py --dir /big/disk --keep  # keep the 8.5 GB store
    .venv/bin/python benchmarks/mosei_scale.py --train 2000 --valid 300 --test 300 --max-train-batches 5  # a quick look

What it does:

1. *Write*: a synthetic dataset in MOSEI's shapes (default 16326 train / 1871 valid / 4659 test
   clips; text 50 x 768, audio 500 x 74, vision 500 x 35 float32; labels in [-3, 3] carried by a
   latent factor every modality sees through noise; text lengths 8..50, audio and vision
   50..500 frames) is generated 256 clips at a time and appended with
   :class:`msalign.data.store.StoreWriter` into ``--dir`` (default a fresh folder under /tmp,
   removed at the end unless ``--keep``). Never more than one chunk is in memory.
2. *Train*: a fresh subprocess (so its peak RSS is its own) loads the store with
   ``load_dataset`` and runs ``msalign.training.train("decalign", ...)`` with the MOSEI config
   (``configs/decalign/mosei.yaml``: width 64, batch 128; ``metric_set="mosei"``), ``epochs=1``,
   ``threads=1``, ``num_workers=0``: one training epoch, one validation pass, then the final
   valid and test scoring that ``train`` always does. ``--max-train-batches`` caps the training
   batches (default: the full epoch; the result says so when capped).
   Measured in that process: ``ru_maxrss`` (peak RSS), the maxima of ``VmRSS``, ``RssAnon`` and
   ``RssFile`` from ``/proc/self/status`` sampled every 0.1 s by a background thread, the time of
   the training epoch and of each validation/test pass (a Lightning callback added to the
   trainer), the time spent inside DiskArray reads, and training samples/s.
3. *Reading alone, two ways* (``--no-read-compare`` skips it): one epoch of shuffled batches of
   128 training clips read exactly as the training collate reads them (``x[rows, :longest]``
   per modality), in a fresh process each, once through DiskArray (positioned reads) and once
   through ``np.load(mmap_mode="r")``; peak RSS and RssFile of each. This isolates what the
   reader itself costs in memory.

The page cache: the machine's free memory may hold much of the files after they were written,
so reads are mostly served from the page cache (warm), unless ``--evict`` asks the kernel to drop
these files' cached pages (``posix_fadvise(DONTNEED)`` on our own files only) before each
measured phase. Either way page-cache pages are not the process's RSS; mapped pages are.

Results: ``benchmarks/results/mosei_scale.md`` and ``.json`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}
MIN_LENGTH = {"text": 8, "audio": 50, "vision": 50}
CHUNK = 256


class RssSampler:
    """Maxima of VmRSS / RssAnon / RssFile (MB) of this process, sampled in a background thread."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        values = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in self.peak:
                    values[key] = int(rest.split()[0]) / 1024
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in self.sample().items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in self.sample().items():
            self.peak[key] = max(self.peak[key], value)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def evict(folder: Path) -> None:
    """Ask the kernel to drop the cached pages of the store's files (ours only)."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# --- 1. write ----------------------------------------------------------------------------------


def write_dataset(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict:
    from msalign.data.store import StoreWriter, store_sizes

    rng = np.random.default_rng(seed)
    directions = {m: (rng.standard_normal(d) / np.sqrt(d) * 4).astype(np.float32) for m, (_, d) in SHAPES.items()}
    spec = {"kind": "mosei_scale_benchmark", "seed": seed, "shapes": {m: list(s) for m, s in SHAPES.items()}}
    started = time.perf_counter()
    with StoreWriter(
        folder,
        modalities=SHAPES,
        name="mosei-scale-synthetic",
        metric_set="mosei",
        feature_spec=spec,
        source="benchmarks/mosei_scale.py",
    ) as writer:
        for split, n in sizes.items():
            for start in range(0, n, CHUNK):
                rows = min(CHUNK, n - start)
                factor = rng.normal(0, 1.2, rows).astype(np.float32)
                labels = np.clip(1.5 * factor + rng.normal(0, 0.4, rows), -3, 3).astype(np.float32)
                features, lengths = {}, {}
                for m, (length, dim) in SHAPES.items():
                    n_real = rng.integers(MIN_LENGTH[m], length + 1, rows)
                    x = rng.standard_normal((rows, length, dim), dtype=np.float32)
                    x += factor[:, None, None] * directions[m][None, None, :]
                    x[np.arange(length)[None, :] >= n_real[:, None]] = 0
                    features[m], lengths[m] = x, n_real
                ids = [f"{split}_{start + i:06d}" for i in range(rows)]
                writer.append(split, features, lengths, labels, ids)
            print(f"  wrote {split}: {n} clips ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
        writer.finish()
    seconds = time.perf_counter() - started
    on_disk = store_sizes(folder)
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb_writer_process": round(peak_rss_mb(), 1),
        "bytes": {s: v.bytes for s, v in on_disk.items()},
        "rows": {s: v.rows for s, v in on_disk.items()},
    }


# --- 2. train (in a subprocess) ------------------------------------------------------------------


def train_child(folder: Path, max_train_batches: int | None, out: Path, batch_size: int = 0, threads: int = 1) -> dict:
    import lightning
    import torch

    torch.set_num_threads(threads)
    from msalign.config import resolve_config
    from msalign.data import load_dataset
    from msalign.data.store import DiskArray
    from msalign.models import build_config
    from msalign.training import RunSpec, train

    read_seconds = [0.0]
    original_read = DiskArray.read_rows

    def timed_read(self, rows, start=0, stop=None):
        t = time.perf_counter()
        try:
            return original_read(self, rows, start, stop)
        finally:
            read_seconds[0] += time.perf_counter() - t

    DiskArray.read_rows = timed_read
    phases: list[dict] = []  # finished phases; validation runs inside the training epoch
    running: dict[str, dict] = {}

    class PhaseTimer(lightning.Callback):
        def _start(self, name):
            running[name] = {"phase": name, "start": time.perf_counter(), "read_start": read_seconds[0]}

        def _end(self, name):
            phase = running.pop(name)
            phase["seconds"] = time.perf_counter() - phase.pop("start")
            phase["read_seconds"] = read_seconds[0] - phase.pop("read_start")
            phases.append(phase)
            return phase

        def on_train_epoch_start(self, trainer, module):
            self._start("train_epoch")
            self.validation_before = len([p for p in phases if p["phase"] == "validation"])

        def on_train_epoch_end(self, trainer, module):
            phase = self._end("train_epoch")
            inside = [p for p in phases if p["phase"] == "validation"][self.validation_before :]
            phase["seconds"] -= sum(p["seconds"] for p in inside)  # the training batches only
            phase["read_seconds"] -= sum(p["read_seconds"] for p in inside)
            phase["batches"] = int(trainer.num_training_batches)

        def on_validation_epoch_start(self, trainer, module):
            self._start("validation")

        def on_validation_epoch_end(self, trainer, module):
            self._end("validation")

        def on_test_epoch_start(self, trainer, module):
            self._start("test")

        def on_test_epoch_end(self, trainer, module):
            self._end("test")

    original_trainer = lightning.Trainer

    class TimedTrainer(original_trainer):  # msalign.training.run builds L.Trainer(...): add the timer
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), PhaseTimer()], **kwargs)

    lightning.Trainer = TimedTrainer
    with RssSampler() as sampler:
        t = time.perf_counter()
        dataset = load_dataset(folder, metric_set="mosei")
        load_seconds = time.perf_counter() - t
        rss_after_load = sampler.sample()
        overrides = ["epochs=1", f"threads={threads}", "num_workers=0"]
        if max_train_batches:
            overrides.append(f"max_train_batches={max_train_batches}")
        if batch_size:  # else the MOSEI config's (128)
            overrides.append(f"batch_size={batch_size}")
        model_config, train_config = resolve_config(
            "decalign", build_config("decalign"), (dataset.name, dataset.metric_set), None, overrides
        )
        t = time.perf_counter()
        results = train(
            RunSpec("decalign", model_config, train_config, [1111], out),
            dataset,
            progress=False,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        total_seconds = time.perf_counter() - t
    epoch = next(p for p in phases if p["phase"] == "train_epoch")
    train_rows = len(dataset.split("train"))
    trained = min(train_rows, epoch["batches"] * train_config.batch_size)
    return {
        "load_seconds": round(load_seconds, 3),
        "rss_after_load_mb": {k: round(v, 1) for k, v in rss_after_load.items()},
        "config": {
            "model": "decalign",
            "width": model_config.width,
            "batch_size": train_config.batch_size,
            "alpha": model_config.alpha,
            "beta": model_config.beta,
            "threads": train_config.threads,
            "max_train_batches": max_train_batches,
        },
        "train_batches": epoch["batches"],
        "train_samples": trained,
        "full_epoch": trained == train_rows,
        "train_epoch_seconds": round(epoch["seconds"], 1),
        "train_epoch_read_seconds": round(epoch["read_seconds"], 1),
        "train_samples_per_second": round(trained / epoch["seconds"], 1),
        "eval_passes": [
            {
                "split": "valid" if p["phase"] == "validation" else "test",
                "seconds": round(p["seconds"], 1),
                "read_seconds": round(p["read_seconds"], 1),
            }
            for p in phases
            if p["phase"] != "train_epoch"
        ],
        "train_call_seconds": round(total_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "sampled_peak_mb": {k: round(v, 1) for k, v in sampler.peak.items()},
        "test_metrics": {k: round(v, 4) for k, v in results.per_seed[0].test.items()},
    }


# --- 3. reading alone -----------------------------------------------------------------------------


def read_child(folder: Path, how: str, batch_size: int = 128) -> dict:
    from msalign.data.store import load_store

    dataset = load_store(folder)
    train = dataset.split("train")
    arrays = {m: (np.load(x.path, mmap_mode="r") if how == "memmap" else x) for m, x in train.features.items()}
    order = np.random.default_rng(0).permutation(len(train))
    checksum = 0.0
    with RssSampler() as sampler:
        t = time.perf_counter()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            for m, x in arrays.items():
                longest = int(train.lengths[m][rows].max())
                batch = np.ascontiguousarray(x[rows, :longest])
                checksum += float(batch[:, 0, 0].sum())
        seconds = time.perf_counter() - t
    return {
        "how": how,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "sampled_peak_mb": {k: round(v, 1) for k, v in sampler.peak.items()},
        "checksum": checksum,
    }


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------------


def render(result: dict) -> str:
    w, t = result["write"], result["train"]
    gb = {s: b / 1e9 for s, b in w["bytes"].items()}
    total = sum(gb.values())
    lines = [
        "# A MOSEI-sized dataset on disk: decalign, one epoch",
        "",
        f"`benchmarks/mosei_scale.py` ({result['date']}, {result['machine']}). A synthetic dataset in MOSEI's shapes "
        "(text 50x768, audio 500x74, vision 500x35 float32; lengths vary) written with the streaming "
        "`StoreWriter` and read row by row (`DiskArray`, positioned reads) by the normal training path "
        "(`msalign.training.train`, decalign with `configs/decalign/mosei.yaml`: width 64, "
        f"batch {t['config']['batch_size']}; {t['config']['threads']} torch thread(s), "
        "no DataLoader workers).",
        "",
        "| | |",
        "|---|---|",
        f"| clips (train / valid / test) | {w['rows']['train']} / {w['rows']['valid']} / {w['rows']['test']} |",
        f"| store on disk | **{total:.2f} GB** "
        f"(train {gb['train']:.2f} GB, valid {gb['valid']:.2f}, test {gb['test']:.2f}) |",
        f"| write time (generate + check + write) | {w['seconds']:.0f} s ({total / w['seconds'] * 1000:.0f} MB/s) |",
        f"| load time (`load_dataset` on the store) | {t['load_seconds']:.2f} s, "
        f"RSS after load {t['rss_after_load_mb']['VmRSS']:.0f} MB |",
        f"| training epoch | {'full epoch' if t['full_epoch'] else '**CAPPED**'}: {t['train_batches']} batches, "
        f"{t['train_samples']} clips in {t['train_epoch_seconds']:.0f} s = "
        f"**{t['train_samples_per_second']:.1f} samples/s** "
        f"(of which {t['train_epoch_read_seconds']:.1f} s reading) |",
        "| scoring passes | "
        + ", ".join(f"{p.get('split', 'valid')} {p['seconds']:.0f} s" for p in t["eval_passes"])
        + f" (valid {w['rows']['valid']} clips, test {w['rows']['test']}); the whole `train` call "
        f"(fit, final valid and test scoring, checkpoint) {t['train_call_seconds']:.0f} s |",
        f"| **peak RSS of the training process** | **{t['peak_rss_mb'] / 1024:.2f} GB** (ru_maxrss); sampled maxima "
        f"VmRSS {t['sampled_peak_mb']['VmRSS'] / 1024:.2f} GB, "
        f"RssAnon {t['sampled_peak_mb']['RssAnon'] / 1024:.2f} GB, "
        f"RssFile {t['sampled_peak_mb']['RssFile'] / 1024:.2f} GB |",
        f"| peak RSS / data on disk | {t['peak_rss_mb'] / 1024 / total:.1%} of all data, "
        f"{t['peak_rss_mb'] / 1024 / gb['train']:.1%} of the training split |",
        f"| writer process peak RSS | {w['peak_rss_mb_writer_process'] / 1024:.2f} GB |",
        "| test metrics after the epoch | "
        + ", ".join(
            f"{k} {v}" for k, v in t["test_metrics"].items() if k in ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2")
        )
        + " |",
    ]
    if not t["full_epoch"]:
        full = w["rows"]["train"] / t["train_samples_per_second"]
        lines += [
            "",
            f"**The training epoch was capped at {t['train_batches']} of "
            f"{-(-w['rows']['train'] // t['config']['batch_size'])} batches** (`--max-train-batches "
            f"{t['config']['max_train_batches']}`): at {t['train_samples_per_second']:.1f} samples/s "
            f"a full epoch on {t['config']['threads']} "
            f"thread(s) would take about {full / 60:.0f} minutes. samples/s are over the capped batches only; the "
            "memory figures do not depend on how many batches run (each batch is read, used and dropped).",
        ]
    lines += [
        "",
        "Reading the figures: the training process's peak is the model's working memory (RssAnon: decalign's "
        f"activations and gradients for a batch of {t['config']['batch_size']} clips of up to 500 frames, "
        "cross-modal attention included), "
        "not the data: RssFile, where mapped data would show, "
        f"stays at {t['sampled_peak_mb']['RssFile'] / 1024:.2f} GB "
        f"(the interpreter's and torch's libraries), RSS after loading the store is "
        f"{t['rss_after_load_mb']['VmRSS'] / 1024:.2f} GB, and reading took {t['train_epoch_read_seconds']:.1f} s of "
        f"the {t['train_epoch_seconds']:.0f} s of training. The same model on in-memory data would need the "
        f"{total:.1f} GB of features on top.",
    ]
    if result.get("note"):
        lines += ["", result["note"]]
    if result.get("read"):
        lines += [
            "",
            "Reading alone: one epoch of shuffled batches of 128 training clips (all of the "
            f"{gb['train']:.2f} GB training split), each modality read as the collate reads it (`x[rows, :longest]`), "
            "in a fresh process per reader. The memory map's RSS grows with every page the epoch touches:",
            "",
            "| reader | seconds | peak RSS (ru_maxrss) | max RssFile | max RssAnon |",
            "|---|---|---|---|---|",
        ]
        for r in result["read"]:
            name = {"diskarray": "DiskArray (positioned reads)", "memmap": "np.load(mmap_mode='r')"}[r["how"]]
            lines.append(
                f"| {name} | {r['seconds']:.0f} | {r['peak_rss_mb'] / 1024:.2f} GB | "
                f"{r['sampled_peak_mb']['RssFile'] / 1024:.2f} GB | {r['sampled_peak_mb']['RssAnon'] / 1024:.2f} GB |"
            )
    lines += ["", f"Page cache: {result['cache_note']}", ""]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("_train", "_read"):
        folder = Path(sys.argv[2])
        if sys.argv[1] == "_train":
            cap = int(sys.argv[3]) or None
            result = train_child(
                folder,
                cap,
                Path(sys.argv[4]),
                int(sys.argv[5]) if len(sys.argv) > 5 else 0,
                int(sys.argv[6]) if len(sys.argv) > 6 else 1,
            )
        else:
            result = read_child(folder, sys.argv[3])
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to build the store (default: a fresh folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--train", type=int, default=16326)
    parser.add_argument("--valid", type=int, default=1871)
    parser.add_argument("--test", type=int, default=4659)
    parser.add_argument(
        "--max-train-batches", type=int, default=0, help="cap the training batches (default: full epoch)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process (default 1)")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="training batch (default: configs/decalign/mosei.yaml's 128)"
    )
    parser.add_argument("--no-read-compare", action="store_true", help="skip the DiskArray vs memmap reading epochs")
    parser.add_argument(
        "--evict", action="store_true", help="drop the store's pages from the page cache before each phase"
    )
    parser.add_argument("--note", default="", help="a sentence added to the report (e.g. the machine's load)")
    parser.add_argument("--render-only", action="store_true", help="re-render the .md from the .json (with --note)")
    parser.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results" / "mosei_scale"),
        help="output path without extension (.md and .json are written)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from msalign.atomic import atomic_write_text

    out = Path(args.results)
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
        if args.note:
            result["note"] = args.note
        atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
        atomic_write_text(out.with_suffix(".md"), render(result))
        print(render(result))
        return 0
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    row_bytes = sum(L * D * 4 for L, D in SHAPES.values())
    need = sum(sizes.values()) * row_bytes
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="msalign-mosei-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if free < need * 1.05:
        raise SystemExit(f"{base}: {free / 1e9:.1f} GB free, the store needs {need / 1e9:.1f} GB")
    folder = base / "store"
    work = Path(tempfile.mkdtemp(prefix="msalign-mosei-scale-run-"))
    try:
        print(f"writing {need / 1e9:.2f} GB to {folder}", file=sys.stderr, flush=True)
        written = write_dataset(folder, sizes)
        reads = []
        if not args.no_read_compare:
            for how in ("diskarray", "memmap"):
                if args.evict:
                    evict(folder)
                print(f"reading one epoch via {how}", file=sys.stderr, flush=True)
                reads.append(run_child(["_read", str(folder), how]))
        if args.evict:
            evict(folder)
        print("training decalign for one epoch", file=sys.stderr, flush=True)
        trained = run_child(
            [
                "_train",
                str(folder),
                str(args.max_train_batches),
                str(work / "run"),
                str(args.batch_size),
                str(args.threads),
            ]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            if not args.dir:
                shutil.rmtree(base, ignore_errors=True)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cache_note = (
        "the store's pages were dropped from the page cache before each phase (--evict), so the reads went to disk."
        if args.evict
        else f"not dropped: the machine has {mem:.0f} GiB of RAM, so much of the freshly written store stays in the "
        "(reclaimable) page cache and reads are mostly warm; that memory is the kernel's, not the process's RSS."
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM",
        "sizes": sizes,
        "write": written,
        "train": trained,
        "read": reads,
        "evict": args.evict,
        "cache_note": cache_note,
        "note": args.note,
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
