"""CPU cost of text fine-tuning on real MOSI transcripts: frozen features vs train.finetune_layers=k
vs train.finetune_text (the whole encoder end to end).

Measures this process's CPU time (time.process_time, 1 thread), which other jobs on a shared
machine do not inflate: the one-off cost of running the frozen lower layers over every transcript
(``prefill``), and the cost of a training step (forward, backward, AdamW step) of text_only on
the same batches of 32 training clips; ``epoch`` extrapolates to MOSI's 41 training batches.

    python benchmarks/finetune_speed.py --dataset ../shared/data/mosi --steps 8 \
        --out benchmarks/results/finetune_speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from msalign.config import TrainConfig
from msalign.data import load_dataset
from msalign.models import build_config, create_model
from msalign.models.text_tuning import attach_text_encoder, model_inputs
from msalign.training.data import collate_rows
from msalign.training.module import MSALightningModule


def measure(dataset, setting: str, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = create_model("text_only", dims=dataset.dims, config=build_config("text_only", {}))
    k = int(setting[1:]) if setting.startswith("k") else 0
    texts = [t for s in ("train", "valid", "test") for t in dataset.split(s).raw_text]
    prefill = 0.0
    if setting != "frozen":
        started = time.process_time()
        encoder = attach_text_encoder(model, dataset.feature_spec, "mosi", cache_dir=None, finetune_layers=k)
        if k:
            encoder.lower.cache = False  # the one-off lower-layer pass is measured, not read from disk
            encoder.prefill(texts)
        prefill = time.process_time() - started
    module = MSALightningModule(model, TrainConfig(scheduler="none"), dataset.metric_set)
    optimizer = module.configure_optimizers()
    model.train()
    split = dataset.split("train")
    rng = np.random.default_rng(0)
    batches = [
        collate_rows(split, model.modalities, rng.choice(len(split), batch, replace=False)) for _ in range(steps + 1)
    ]
    times = []
    for i, b in enumerate(batches):
        started = time.process_time()
        out = model(*model_inputs(model, b))
        loss = torch.nn.functional.l1_loss(out.prediction.reshape(-1), b["labels"].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up allocators
            times.append(time.process_time() - started)
    step = float(np.mean(times))
    return {
        "setting": setting,
        "prefill_cpu_s": round(prefill, 2),
        "step_cpu_s": round(step, 4),
        "epoch_cpu_s": round(step * int(np.ceil(len(split) / batch)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="../shared/data/mosi")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--settings", default="frozen,k1,k2,k3,full")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset)
    rows = []
    for setting in args.settings.split(","):
        rows.append(measure(dataset, setting, args.steps, args.batch))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"threads": 1, "batch": args.batch, "steps": args.steps, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
