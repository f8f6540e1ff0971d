"""Give the peers the inputs our best rows read: an MMSA pickle of the loader's features.

    .venv/bin/python benchmarks/mosi_peer_features.py OUT.pkl [--group-standardize]

The rows of ``benchmarks/results/mosi_real.md`` with ``--text-encoder mpnet --text-lexicon
--group-context`` read richer text than the peers were given (MiniLM tokens, ../shared/peer).
This writes those same features in the layout of ../shared/peer/build_pkl.py's
``mosi_real_std.pkl``, so a peer can be run on them with its own, unmodified script:

* text: the loader's (N, 50, 1562) text exactly as training sees it (MPNet tokens, the 13 lexicon
  descriptors and the video context; z-scored on the training split; zero at padding);
* audio: the loader's 73-d vector (z-scored on train; per speaker with ``--group-standardize``),
  as a sequence of length 1;
* vision: the all-zero (N, 1, 1) placeholder the peers need;
* the standard folds, labels and MMSA's annotation fields.

Then, in the MMSA venv (../shared/peer/README.md):

    python ../shared/peer/run_mmsa.py mult OUT.json OUT.pkl 1111 1112 1113 1114 1115 \\
        --set 'feature_dims=[1562,73,1]' --set conv1d_kernel_size_a=1 --set conv1d_kernel_size_v=1

Nothing here trains; the pickle is a comparison input, outside the repository.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from msalign.atomic import atomic_path
from msalign.data.spec import load_dataset
from msalign.data.types import Split

ROOT = Path(__file__).resolve().parent.parent
DATA = str(ROOT.parent / "shared" / "data" / "mosi")
OPTIONS = {"text_encoder": "mpnet", "text_lexicon": True, "group_context": ["text"]}


def annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def mmsa_split(split: Split) -> dict:
    """One split in MMSA's pickle layout (the keys its data loader reads for a non-BERT model)."""
    n = len(split)
    labels = split.labels.astype(np.float32)
    text = split.features["text"].astype(np.float32)
    if split.raw_text is None:
        raise SystemExit("the MOSI feature directory gave no transcripts")
    return {
        "id": list(split.ids),
        "raw_text": np.array(split.raw_text, dtype=object),
        "text": text,
        # token ids are read only by BERT-based peers; MulT's MOSI config has use_bert false
        "text_bert": np.zeros((n, 3, text.shape[1]), dtype=np.int64),
        "audio": split.features["audio"].astype(np.float32),
        "vision": np.zeros((n, 1, 1), dtype=np.float32),
        "audio_lengths": split.lengths["audio"].astype(np.int64),
        "vision_lengths": np.ones(n, dtype=np.int64),
        "regression_labels": labels,
        "annotations": np.array([annotation(float(y)) for y in labels], dtype=object),
        "classification_labels": np.array([0 if y < 0 else 1 if y == 0 else 2 for y in labels], dtype=np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the pickle to write (outside the repository)")
    parser.add_argument("--group-standardize", action="store_true", help="audio z-scored per speaker (video_id)")
    args = parser.parse_args()
    options = dict(OPTIONS, group_standardize=True) if args.group_standardize else OPTIONS
    dataset = load_dataset(DATA, modalities=["text", "audio"], progress=False, **options)
    record = {name: mmsa_split(dataset.split(name)) for name in ("train", "valid", "test")}
    with atomic_path(args.out) as tmp, open(tmp, "wb") as handle:
        pickle.dump(record, handle, protocol=4)
    shapes = {name: (s["text"].shape, s["audio"].shape) for name, s in record.items()}
    print(f"{args.out}: {shapes}; {dataset.describe()}")


if __name__ == "__main__":
    main()
