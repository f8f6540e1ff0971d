"""msalign predict with a checkpoint trained on descriptions (textalign + msalign describe): new media
are described by the checkpoint's own describer and fitted thresholds, with or without the training
folder. Real media (Megamind.avi); skipped only when the media or the media extra is absent."""

from __future__ import annotations

import json
import math
import shutil

from msalign.cli import main
from support import MEGAMIND, megamind_features

TINY = ["--epochs", "1", "--set", "width=16", "heads=4", "head_hidden=16", "top_k=8", "--seeds", "0"]


def test_predict_describes_new_media_like_training(tmp_path, capsys):
    texts = ["i like it", "bad stuff", "so good", "terrible"]
    features = megamind_features(
        tmp_path,
        texts,
        ["train", "train", "valid", "test"],
        step=2.5,
        length=1.5,
        needs=("librosa", "mediapipe", "faster_whisper"),
    )
    raw = tmp_path / "ds" / "Raw" / "mm"
    trained = json.loads((features / "descriptions.json").read_text())["descriptions"]
    run = tmp_path / "run"
    assert (
        main(["train", "--model", "textalign", "--dataset", str(features), "--descriptions", "--out", str(run), *TINY])
        == 0
    )
    checkpoint = run / "seed_0" / "model.safetensors"
    capsys.readouterr()

    assert main(["predict", "--checkpoint", str(checkpoint), str(MEGAMIND)]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "book" in row["transcript"].lower(), row
    assert row["description"].startswith("Face: ") and " Head: " in row["description"], row
    assert "none detected" not in row["description"] and "no video" not in row["description"], row
    assert math.isfinite(row["score"])

    # self-contained: the training folder's descriptions.json is gone; a training clip, with its
    # label.csv transcript beside it, gets exactly its training description
    saved = (features / "descriptions.json").read_bytes()
    (features / "descriptions.json").unlink()
    clip = tmp_path / "clip0.mp4"
    shutil.copy(raw / "0.mp4", clip)
    clip.with_suffix(".txt").write_text(texts[0])
    assert main(["predict", "--checkpoint", str(checkpoint), str(clip)]) == 0
    again = json.loads(capsys.readouterr().out.splitlines()[0])
    assert again["description"] == trained["mm_0"] and again["transcript"] == texts[0]
    assert math.isfinite(again["score"])

    # a checkpoint whose descriptions came from an image-to-text model that is not available: one line naming it
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(checkpoint), framework="pt") as handle:
        info = json.loads(handle.metadata()["msalign"])
    info["feature_spec"]["describer"] = {
        "describer": "model",
        "model": "no-such-org/no-such-captioner",
        "frames": 3,
        "max_new_tokens": 30,
        "voice": info["feature_spec"]["describer"],
    }
    other = tmp_path / "model_described.safetensors"
    save_file(load_file(str(checkpoint)), str(other), metadata={"msalign": json.dumps(info)})
    assert main(["predict", "--checkpoint", str(other), str(clip)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-org/no-such-captioner" in err and "not in the Hugging Face cache" in err, err
    assert "\n" not in err and "Traceback" not in err

    # a checkpoint from before the describer was recorded needs its training descriptions.json, which is gone
    del info["feature_spec"]["describer"]
    older = run / "seed_0" / "older.safetensors"  # found through the run's results.json
    save_file(load_file(str(checkpoint)), str(older), metadata={"msalign": json.dumps(info)})
    assert main(["predict", "--checkpoint", str(older), str(clip)]) == 2
    assert "does not record its describer" in capsys.readouterr().err
    (features / "descriptions.json").write_bytes(saved)
    assert main(["predict", "--checkpoint", str(older), str(clip)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["description"] == trained["mm_0"]
