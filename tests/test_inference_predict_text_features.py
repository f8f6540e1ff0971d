"""msalign predict with a checkpoint trained on --text-lexicon and --group-context: new media get
the lexicon descriptors of their ASR transcript, and the inputs of one predict call are one group
(one video's context). Real media (Megamind.avi); skipped only when the media or the media extra
is absent."""

from __future__ import annotations

import json
import math
import shutil

from msalign.cli import main
from support import megamind_features

TINY = ["--epochs", "1", "--set", "width=16", "heads=4", "layers=1", "--seeds", "0"]


def test_predict_with_lexicon_and_context_like_training(tmp_path, capsys):
    texts = ["i really like it", "bad stuff", "so good", "terrible acting"]
    features = megamind_features(
        tmp_path,
        texts,
        ["train", "train", "valid", "test"],
        step=2.5,
        length=1.5,
        needs=("librosa", "mediapipe", "faster_whisper", "vaderSentiment", "textblob"),
    )
    run = tmp_path / "run"
    options = ["--text-lexicon", "--group-context", "text,audio"]
    assert main(["train", "--model", "decalign", "--dataset", str(features), *options, "--out", str(run), *TINY]) == 0
    checkpoint = run / "seed_0" / "model.safetensors"
    capsys.readouterr()

    raw = tmp_path / "ds" / "Raw" / "mm"
    clips = []
    for i in (0, 1):  # two clips of one video, with their transcripts beside them (no speech recognition)
        clip = tmp_path / f"clip{i}.mp4"
        shutil.copy(raw / f"{i}.mp4", clip)
        clip.with_suffix(".txt").write_text(texts[i])
        clips.append(clip)

    assert main(["predict", "--checkpoint", str(checkpoint), str(clips[0])]) == 0
    alone = json.loads(capsys.readouterr().out.splitlines()[0])
    assert main(["predict", "--checkpoint", str(checkpoint), *map(str, clips)]) == 0
    together = [json.loads(line) for line in capsys.readouterr().out.splitlines()[:2]]
    assert all(math.isfinite(row["score"]) for row in [alone, *together])
    assert together[0]["transcript"] == texts[0] and alone["transcript"] == texts[0]
    # the first clip's context is the call: alone it is its own context, with the second clip it is not
    assert alone["score"] != together[0]["score"]
