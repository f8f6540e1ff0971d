"""msalign describe: fitted rule thresholds, explicit "no face" / "no voice", descriptions in the
feature-directory loader, and textalign trained on a tiny generated image-text dataset and on a
dataset made by ``msalign extract`` from Megamind.avi (skipped only when the media is absent)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from msalign.cli import main
from msalign.data import load_dataset
from msalign.describe.rules import (
    PERCENTILES,
    ClipSignals,
    RuleDescriber,
    clip_statistics,
)
from msalign.describe.run import describe_dataset
from msalign.describe.sources import read_image_dataset
from msalign.errors import MsalignError
from msalign.extract.vision import feature_names as vision_names
from support import MEGAMIND, ffmpeg, megamind_features

MOSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi"
FACE = vision_names()
AUDIO = [f"mfcc_{i}" for i in range(3)] + ["log2_f0", "voicing", "log_rms"]
TRAIN = ["--epochs", "2", "--set", "width=16", "heads=4", "head_hidden=16", "top_k=8", "--seeds", "0"]


def face_clip(cid: str, smile: float, frames: int = 5, pitch_std: float = 0.0) -> ClipSignals:
    face = np.zeros((frames, len(FACE)), dtype=np.float32)
    face[:, FACE.index("mouthSmileLeft")] = smile
    face[:, FACE.index("mouthSmileRight")] = smile
    face[:, FACE.index("head_pitch")] = pitch_std * np.resize([1.0, -1.0], frames)
    return ClipSignals(cid, face=face, face_names=FACE)


def voice_clip(cid: str, hz: float, loud: float, voiced: float = 0.6) -> ClipSignals:
    frames = 100
    audio = np.zeros((frames, len(AUDIO)), dtype=np.float32)
    on = np.arange(frames) % 10 < voiced * 10
    audio[on, AUDIO.index("log2_f0")] = np.log2(hz) + 0.01 * np.sin(np.arange(on.sum()))
    audio[:, AUDIO.index("log_rms")] = loud
    return ClipSignals(cid, audio=audio, audio_names=AUDIO, audio_frame_rate=31.25)


# -- rules -----------------------------------------------------------------------------------------


def test_thresholds_are_training_percentiles_and_words_follow_them():
    clips = [face_clip(f"c{i}", smile=i / 10, pitch_std=i) for i in range(10)]
    train = [True] * 8 + [False] * 2
    rules = RuleDescriber().fit(clips, train)
    assert rules.thresholds["smile"] == pytest.approx(np.percentile([i / 10 for i in range(8)], PERCENTILES))
    assert rules.fitted_on["smile"] == "train"
    assert rules.describe(clips[0]).startswith("Face: neutral expression. Head: still.")
    assert "smiling strongly" in rules.describe(clips[9])  # above the training 90th percentile
    assert "Face: smiling." in rules.describe(clips[6]) and "nodding" in rules.describe(clips[6])
    assert "Voice: none (no audio)." in rules.describe(clips[0])
    # stored and reloaded: the same words
    again = RuleDescriber.from_json(json.loads(json.dumps(rules.to_json())))
    assert [again.describe(c) for c in clips] == [rules.describe(c) for c in clips]


def test_missing_face_and_voice_are_said_and_constant_signals_never_named():
    clips = [voice_clip(f"v{i}", hz=100 + 20 * i, loud=-6 + 0.5 * i) for i in range(6)]
    clips.append(ClipSignals("silent", audio=np.zeros((50, len(AUDIO)), np.float32), audio_names=AUDIO))
    clips.append(ClipSignals("image", face=np.zeros((1, len(FACE)), np.float32), face_names=FACE, is_image=True))
    rules = RuleDescriber().fit(clips)
    low, high = rules.describe(clips[0]), rules.describe(clips[5])
    assert low.startswith("Face: none detected.") and "low pitch" in low and "quiet" in low
    assert "high pitch" in high and "loud" in high
    assert rules.describe(clips[6]).endswith("Voice: no speech.")
    # every blendshape is 0 on the only face: constant statistics never cross their thresholds
    assert rules.describe(clips[7]).startswith("Face: neutral expression. Head: facing the camera.")
    assert math.isnan(clip_statistics(clips[7])["nod"])  # a still image has no motion
    with pytest.raises(MsalignError, match="fit it"):
        RuleDescriber().describe(clips[0])


def write_feature_dir(folder: Path, n: int = 12, audio: bool = True) -> Path:
    """MOSI-like: transcripts + one opaque acoustic vector per clip, no video."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    modes = ["train"] * (n - 4) + ["valid"] * 2 + ["test"] * 2
    with open(folder / "label.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for i in range(n):
            w.writerow(["v", i, "it was good" if i % 2 else "it was bad", 1.5 if i % 2 else -1.5, "", modes[i]])
    if audio:
        np.savez(
            folder / "audio_utterance.npz",
            ids=np.array([f"v_{i}" for i in range(n)]),
            audio=rng.normal(size=(n, 9)).astype(np.float32),
        )
    return folder


def test_opaque_utterance_audio_and_no_video_like_mosi(tmp_path):
    folder = write_feature_dir(tmp_path / "mosi_like")
    out = describe_dataset(folder, out=tmp_path / "elsewhere.json")
    record = json.loads(out.read_text())
    texts = list(record["descriptions"].values())
    assert all(t.startswith("Face: no video. Voice: acoustic component 1 ") for t in texts)
    assert record["describer"]["opaque"] is not None and len(record["describer"]["opaque"]["axes"]) == 3
    ds = load_dataset(folder, descriptions=str(out))
    assert ds.split("train").raw_text[0] == f"it was bad [SEP] {record['descriptions']['v_0']}"
    spec = ds.feature_spec.to_json()
    assert spec["modalities"]["text"]["descriptions"]["file"] == "elsewhere.json"
    assert spec["options"]["descriptions"] == str(out)
    assert spec["modalities"]["text"]["max_len"] == 50 + 48


def test_loader_errors_name_the_file(tmp_path):
    folder = write_feature_dir(tmp_path / "d", audio=False)
    with pytest.raises(MsalignError, match=r"descriptions.json: no such file .*msalign describe"):
        load_dataset(folder, descriptions=True)
    (folder / "descriptions.json").write_text(json.dumps({"descriptions": {"v_0": "Face: no video."}}))
    with pytest.raises(MsalignError, match=r"descriptions.json: 11 clips have no description, e.g. 'v_1'"):
        load_dataset(folder, descriptions=True)
    (folder / "descriptions.json").write_text("[1, 2]")
    with pytest.raises(MsalignError, match="not a descriptions file"):
        load_dataset(folder, descriptions=True)


@pytest.mark.skipif(not (MOSI / "label.csv").is_file(), reason="../shared/data/mosi not present")
def test_real_mosi_gets_voice_components_and_no_face(tmp_path):
    out = describe_dataset(MOSI, out=tmp_path / "mosi_descriptions.json")
    texts = json.loads(out.read_text())["descriptions"]
    assert len(texts) == 2199
    assert all(t.startswith("Face: no video. Voice: acoustic component 1") for t in texts.values())


def test_model_describer_not_available_offline_is_one_line(tmp_path, capsys):
    folder = write_feature_dir(tmp_path / "d")
    assert main(["describe", str(folder), "--describer", "no-such-org/no-such-captioner", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not in the Hugging Face cache" in err and "--describer rules" in err and "Traceback" not in err


# -- image-text dataset ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory) -> Path:
    """Synthetic pictures (no face) plus, when the media is there, frames of Megamind (a face)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("mvsa_like")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    names = []
    for i in range(8):
        pixels = (
            (rng.random((64, 96, 3)) * 255).astype(np.uint8)
            if i % 2
            else np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 1, 3))
        )
        Image.fromarray(pixels).save(folder / "images" / f"syn{i}.png")
        names.append(f"syn{i}")
    if MEGAMIND.exists() and shutil.which("ffmpeg"):
        for i in range(4):
            ffmpeg(
                "-ss",
                f"{0.3 + 2.5 * i:.1f}",
                "-i",
                str(MEGAMIND),
                "-frames:v",
                "1",
                str(folder / "images" / f"mm{i}.jpg"),
            )
            names.append(f"mm{i}.jpg")
    modes = ["train", "train", "train", "train", "valid", "test"]
    for i, name in enumerate(names):
        positive = i % 2 == 0
        rows.append(
            [
                name,
                "what a lovely day" if positive else "this is awful",
                "positive" if positive else "negative",
                modes[i % len(modes)],
            ]
        )
    with open(folder / "labels.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["image_id", "text", "label", "mode"])
        w.writerows(rows)
    return folder


def test_image_text_dataset_described_and_trained(image_dataset, tmp_path):
    pytest.importorskip("mediapipe", reason="face analysis needs the media extra")
    out = tmp_path / "features"
    assert main(["describe", str(image_dataset), "--out", str(out)]) == 0
    record = json.loads((out / "descriptions.json").read_text())["descriptions"]
    for i in range(8):
        assert record[f"image_syn{i}"] == "Face: none detected. Voice: none (no audio)."
    if (image_dataset / "images" / "mm0.jpg").exists():
        faces = [record[f"image_mm{i}"] for i in range(4)]
        assert all("Face: none detected" not in d and "Head: " in d for d in faces), faces
    ds = load_dataset(out, descriptions=True)
    assert ds.task == "classification" and ds.feature_spec.to_json()["classes"] == ["negative", "positive"]
    assert ds.split("train").raw_text[0].startswith("what a lovely day [SEP] Face: ")
    run = tmp_path / "run"
    assert (
        main(["train", "--model", "textalign", "--dataset", str(out), "--descriptions", "--out", str(run), *TRAIN]) == 0
    )
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["mean"]["WAcc"] <= 1
    # the checkpoint remembers the descriptions: evaluate reloads them from the recorded options
    assert main(["evaluate", "--checkpoint", str(run / "seed_0" / "model.safetensors"), "--dataset", str(out)]) == 0
    # the "no descriptions" ablation: the same folder, text only
    assert main(["train", "--model", "textalign", "--dataset", str(out), "--out", str(tmp_path / "plain"), *TRAIN]) == 0


def test_twitter_style_tsv_with_aspect_targets(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "17.jpg")
    header = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n"
    for name in ("train", "dev", "test"):
        (tmp_path / f"{name}.tsv").write_text(
            header + "1\t2\t17.jpg\t$T$ is great\tRT @Coco\n2\t0\t17.jpg\tnot a fan of $T$\tthe show\n"
        )
    items = read_image_dataset(tmp_path)
    assert [it.text for it in items[:2]] == ["RT @Coco is great", "not a fan of the show"]
    assert [it.mode for it in items] == ["train", "train", "valid", "valid", "test", "test"]
    assert len({it.image_id for it in items}) == 6  # one image, several aspects: distinct clip ids
    with pytest.raises(MsalignError, match=re.escape("image 'x.jpg' not found")):
        (tmp_path / "labels.csv").write_text("image_id,text,label\nx.jpg,hi,positive\n")
        read_image_dataset(tmp_path)


# -- a feature directory made by msalign extract ---------------------------------------------------


def test_extracted_megamind_described_and_trained(tmp_path):
    features = megamind_features(
        tmp_path,
        ["i like it", "bad stuff", "so good", "terrible", "great", "meh"],
        ["train", "train", "train", "valid", "test", "test"],
        step=1.8,
        length=1.6,
    )
    record = json.loads((features / "descriptions.json").read_text())
    descriptions = record["descriptions"]
    assert set(descriptions) == {f"mm_{i}" for i in range(6)}
    for text in descriptions.values():
        assert text.startswith("Face: ") and " Head: " in text and " Voice: " in text
        assert any(w in text for w in ("low pitch", "medium pitch", "high pitch")), text
    assert {"smile", "nod", "pitch", "loudness", "rate"} <= set(record["describer"]["thresholds"])
    run = tmp_path / "run"
    assert (
        main(["train", "--model", "textalign", "--dataset", str(features), "--descriptions", "--out", str(run), *TRAIN])
        == 0
    )
    assert math.isfinite(json.loads((run / "results.json").read_text())["mean"]["MAE"])
    # thresholds reused instead of refitted: the same descriptions
    again = tmp_path / "again.json"
    assert (
        main(["describe", str(features), "--thresholds", str(features / "descriptions.json"), "--out", str(again)]) == 0
    )
    assert json.loads(again.read_text())["descriptions"] == descriptions


def test_describe_never_writes_into_the_dataset_unless_out_points_there(tmp_path, capsys):
    """issue 19 item 11."""
    folder = write_feature_dir(tmp_path / "d")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["describe", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --out" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == before
    assert main(["describe", str(folder), "--out", str(tmp_path / "notes")]) == 0
    assert (tmp_path / "notes" / "descriptions.json").is_file() and sorted(p.name for p in folder.iterdir()) == before
