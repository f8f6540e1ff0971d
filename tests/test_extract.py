"""End-to-end tests of ``msalign extract`` / ``msalign predict`` on real media.

Media come from Debian packages unpacked by scripts/media_assets.sh (Megamind.avi from
opencv-doc, pocketsphinx-testdata speech) plus clips made here with ffmpeg and espeak-ng.
Tests skip, with the reason, only when an asset or a tool is absent; CI installs them.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support import H264_AAC, MEDIA, MEGAMIND, cut_clip, ffmpeg

SPHINX = MEDIA / "pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox"
SETUP = "run bash scripts/setup.sh dev,media && bash scripts/media_assets.sh"

pytest.importorskip("librosa", reason=f"media extra not installed ({SETUP})")
pytest.importorskip("faster_whisper", reason=f"media extra not installed ({SETUP})")
pytest.importorskip("mediapipe", reason=f"media extra not installed ({SETUP})")
if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
    pytest.skip(f"ffmpeg not installed ({SETUP})", allow_module_level=True)

from msalign.cli import main  # noqa: E402
from msalign.errors import MsalignError  # noqa: E402
from msalign.extract.pipeline import ExtractOptions, NoFaceError, extract_clip  # noqa: E402

PHRASE = "judge a book by its cover"
FPS = 5.0
OPTIONS = ExtractOptions(fps=FPS)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present ({SETUP})")
    return path


def speak(text: str, wav: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip(f"espeak-ng not installed ({SETUP})")
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    return wav


def words(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


@pytest.fixture(scope="module")
def megamind_clip():
    return extract_clip(need(MEGAMIND), OPTIONS, missing="error")


@pytest.fixture(scope="module")
def no_face_video(tmp_path_factory) -> Path:
    """A grey picture with espeak-ng speech: real audio, no face anywhere."""
    folder = tmp_path_factory.mktemp("noface")
    wav = speak("I really love this wonderful movie, it made me very happy", folder / "say.wav")
    out = folder / "grey_talk.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=320x240:r=25", "-i", str(wav), "-shortest", *H264_AAC, str(out))
    return out


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """Megamind cut into six clips, MMSA layout (Raw/<video>/<clip>.mp4), made-up labels."""
    folder = tmp_path_factory.mktemp("megamind_ds")
    (folder / "Raw" / "mm").mkdir(parents=True)
    for i in range(6):
        cut_clip(need(MEGAMIND), f"{i * 1.85:.2f}", "1.85", folder / "Raw" / "mm" / f"{i}.mp4")
    labels = [1.5, -1.0, 0.5, -2.0, 2.0, -0.5]
    modes = ["train", "train", "valid", "valid", "test", "test"]
    rows = ["video_id,clip_id,text,label,annotation,mode"] + [
        f"mm,{i},,{y},,{m}" for i, (y, m) in enumerate(zip(labels, modes, strict=True))
    ]
    (folder / "label.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def features_dir(dataset_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "megamind"
    rc = main(
        ["extract", str(dataset_dir), "--out", str(out), "--fps", str(FPS), "--missing", "mask", "--workers", "1"]
    )
    assert rc == 0
    return out


# -- one file --------------------------------------------------------------------------------------


def test_megamind_transcript_faces_and_shapes(megamind_clip):
    clip = megamind_clip
    assert PHRASE in words(clip.transcript.text), clip.transcript.text
    assert clip.missing == {}
    # word timestamps: every word timed, in order, inside the clip
    assert len(clip.transcript.words) >= 30
    starts = [w.start for w in clip.transcript.words]
    assert starts == sorted(starts) and starts[0] >= 0 and clip.transcript.words[-1].end <= clip.duration + 0.5
    # audio: one frame per hop over the 11.2 s clip, MFCC + f0 + voicing + chroma + energy
    hop = OPTIONS.audio.hop_seconds
    assert clip.audio.shape[1] == OPTIONS.audio.dim == 35
    assert abs(clip.audio.shape[0] - clip.duration / hop) <= 2
    assert np.isfinite(clip.audio).all()
    log_f0 = clip.audio[:, OPTIONS.audio.n_mfcc]
    voiced = log_f0 > 0
    assert 0.3 < voiced.mean() < 0.9  # speech with pauses
    assert 80 < 2 ** log_f0[voiced].mean() < 400  # a speaking voice's pitch in Hz
    # vision: frames sampled at the configured rate, a face in nearly every frame of this talking head
    assert abs(len(clip.frame_times) - clip.duration * FPS) <= 2
    assert np.allclose(np.diff(clip.frame_times), 1 / FPS, atol=1e-4)
    assert clip.face_mask.mean() > 0.9
    assert clip.vision.shape == (int(clip.face_mask.sum()), 55)
    blendshapes, pose = clip.vision[:, :52], clip.vision[:, 52:]
    assert blendshapes.min() >= 0 and blendshapes.max() <= 1
    assert (np.abs(pose) < 90).all() and pose.std(axis=0).max() > 0.5  # the head moves


def test_other_frame_rate(tmp_path):
    short = tmp_path / "short.mp4"
    ffmpeg("-t", "3", "-i", str(need(MEGAMIND)), "-c:v", "libx264", "-preset", "ultrafast", "-an", str(short))
    clip = extract_clip(short, ExtractOptions(fps=12.0), missing="mask")
    assert abs(len(clip.frame_times) - 36) <= 1
    assert np.allclose(np.diff(clip.frame_times), 1 / 12, atol=1e-4)
    assert clip.missing["audio"] == "no audio track"


def test_no_face_is_masked_or_refused(no_face_video):
    with pytest.raises(NoFaceError, match=rf"{no_face_video}: no face in any of the \d+ frames"):
        extract_clip(no_face_video, OPTIONS, missing="error")
    clip = extract_clip(no_face_video, OPTIONS, missing="mask")
    assert len(clip.face_mask) >= 10 and not clip.face_mask.any()
    assert clip.vision.shape == (0, 55)  # no made-up face frames
    assert "no face" in clip.missing["vision"]
    assert {"love", "happy"} <= set(words(clip.transcript.text).split()), clip.transcript.text


def test_mask_marks_frames_without_a_face(tmp_path):
    """Two seconds of grey, then three seconds of Megamind: masked exactly where there is no face."""
    out = tmp_path / "grey_then_face.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=720x528:r=24:d=2",
        "-t",
        "3",
        "-i",
        str(need(MEGAMIND)),
        "-filter_complex",
        "[0:v]setsar=1[a];[1:v]setsar=1,fps=24[b];[a][b]concat=n=2:v=1:a=0[v]",
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(out),
    )
    clip = extract_clip(out, OPTIONS, missing="mask")
    grey, talking = clip.frame_times < 1.9, clip.frame_times > 2.1
    assert not clip.face_mask[grey].any()
    assert clip.face_mask[talking].mean() > 0.9
    assert len(clip.vision) == clip.face_mask.sum()


def test_bad_files_give_one_clear_line(tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    whole = tmp_path / "whole.mkv"
    ffmpeg("-i", str(need(MEGAMIND)), *H264_AAC, str(whole))
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size * 4 // 10])
    silent = tmp_path / "silent.mp4"
    ffmpeg("-t", "2", "-i", str(MEGAMIND), "-an", "-c:v", "libx264", "-preset", "ultrafast", str(silent))
    cases = [
        (corrupt, "not a readable media file"),
        (truncated, r"truncated or corrupt: decoded \d+\.\d s of audio"),
        (silent, "no audio track"),
    ]
    for path, message in cases:
        with pytest.raises(MsalignError, match=message) as caught:
            extract_clip(path, OPTIONS, missing="error")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setenv("MSALIGN_FFMPEG_DIR", str(tmp_path))  # a folder without ffmpeg
    with pytest.raises(
        MsalignError, match=r"ffprobe not found on PATH \(needed to read .*whole.mkv\).*apt-get install ffmpeg"
    ):
        extract_clip(whole, OPTIONS)


def test_audio_file_speech_and_transcript_beside(tmp_path):
    wav = need(SPHINX / "sense_and_sensibility_01_austen_64kb-0930.wav")
    clip = extract_clip(wav, OPTIONS, missing="error")  # audio-only input: no vision, not an error
    assert words(clip.transcript.text) == "he might even have been made amiable himself", clip.transcript.text
    assert clip.vision is None and clip.missing == {"vision": "audio-only input"}
    copy = tmp_path / "speech.wav"
    shutil.copy(wav, copy)
    (tmp_path / "speech.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,500\nHe might even\n\n"
        "2\n00:00:01,500 --> 00:00:03,000\nhave been <i>amiable</i>\n"
    )
    out = tmp_path / "out"
    assert main(["extract", str(copy), "--out", str(out), "--workers", "1"]) == 0
    transcripts = json.loads((out / "transcripts.json").read_text())
    assert transcripts["speech_0"]["text"] == "He might even have been amiable"
    assert transcripts["speech_0"]["source"] == "file speech.srt"
    assert transcripts["speech_0"]["words"][1][:3] == ["have been amiable", 1.5, 3.0]
    assert not (out / "vision.npz").exists()


# -- the command -----------------------------------------------------------------------------------


def test_extract_dataset_dir_loads_and_reruns_from_cache(features_dir, dataset_dir, capsys):
    from msalign.data import load_dataset

    ds = load_dataset(features_dir)
    assert ds.dims == {"text": 384, "audio": 35, "vision": 55}
    assert [len(ds.split(s)) for s in ("train", "valid", "test")] == [2, 2, 2]
    record = json.loads((features_dir / "extract.json").read_text())
    assert record["extracted"] == 6 and record["failed"] == [] and record["spec"]["vision"]["fps"] == FPS
    with np.load(features_dir / "vision.npz") as z:
        assert z["face_mask"].shape[0] == 6 and z["face_mask"].sum(axis=1).tolist() == z["lengths"].tolist()
        assert (np.abs(np.diff(z["frame_times"][0][z["frame_times"][0] >= 0]) - 1 / FPS) < 1e-4).all()
    transcripts = json.loads((features_dir / "transcripts.json").read_text())
    assert PHRASE.split()[0] in words(" ".join(t["text"] for t in transcripts.values()))
    capsys.readouterr()
    assert (
        main(
            [
                "extract",
                str(dataset_dir),
                "--out",
                str(features_dir),
                "--fps",
                str(FPS),
                "--missing",
                "mask",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "extracted 6 of 6 clips (6 from cache)" in capsys.readouterr().err
    assert json.loads((features_dir / "extract.json").read_text())["from_cache"] == 6


def test_batch_with_bad_files_goes_on(tmp_path, no_face_video, capsys):
    good = tmp_path / "good.mp4"
    ffmpeg("-t", "4", "-i", str(need(MEGAMIND)), *H264_AAC, str(good))
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF" + bytes(4000))
    out = tmp_path / "out"
    rc = main(
        [
            "extract",
            str(good),
            str(corrupt),
            str(no_face_video),
            str(tmp_path / "absent.mp4"),
            "--out",
            str(out),
            "--fps",
            str(FPS),
            "--workers",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "extracted 1 of 4 clips" in err
    assert f"FAILED  {corrupt}: not a readable media file" in err
    assert f"FAILED  {no_face_video}: no face in any of the" in err
    assert f"FAILED  {tmp_path / 'absent.mp4'}: no such file" in err
    lines = (out / "label.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("good,0,") and PHRASE in words(lines[1])


def test_train_then_predict_on_megamind(features_dir, no_face_video, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["train", "--model", "late_fusion", "--dataset", str(features_dir), "--epochs", "2", "--out", str(run)])
        == 0
    )
    checkpoint = run / "seed_1111" / "model.safetensors"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), str(MEGAMIND), str(no_face_video)]) == 0
    out, err = capsys.readouterr()
    first, second = (json.loads(line) for line in out.splitlines())
    assert PHRASE in words(first["transcript"])
    assert math.isfinite(first["score"]) and first["label"] in ("negative", "neutral", "positive")
    assert first["modalities_used"] == ["text", "audio", "vision"] and first["missing"] == {}
    assert second["modalities_used"] == ["text", "audio"] and "no face" in second["missing"]["vision"]
    assert math.isfinite(second["score"])
    assert "Megamind.avi" in err and "missing vision: no face" in err  # the table

    # No modality at all (no audio track, so no speech either; no face): an error unless --missing mask
    blank = tmp_path / "blank.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=160x120:r=25:d=2", "-c:v", "libx264", "-preset", "ultrafast", str(blank)
    )
    assert main(["predict", "--checkpoint", str(checkpoint), str(blank)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("msalign: error: no input could be scored") and "--missing mask" in err[-1], err
    assert main(["predict", "--checkpoint", str(checkpoint), str(blank), "--missing", "mask"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities_used"] == []

    # A checkpoint whose features this installation cannot reproduce is refused, naming the difference.
    record = json.loads((features_dir / "extract.json").read_text())
    record["spec"]["vision"]["model"] = "mediapipe face_landmarker sha256:0000000000000000"
    other = tmp_path / "extract.json"
    other.write_text(json.dumps(record))
    assert main(["predict", "--checkpoint", str(checkpoint), "--extract-spec", str(other), str(MEGAMIND)]) == 2
    assert "extracted with vision.model='mediapipe face_landmarker sha256:0000000000000000'" in capsys.readouterr().err


def test_predict_refuses_a_checkpoint_of_other_features(tmp_path, capsys):
    run = tmp_path / "synthetic"
    assert (
        main(
            [
                "train",
                "--model",
                "text_only",
                "--dataset",
                "synthetic:n_train=32,n_valid=16,n_test=16",
                "--epochs",
                "1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "seed_1111" / "model.safetensors"), str(need(MEGAMIND))]) == 2
    err = capsys.readouterr().err
    assert "trained on synthetic features" in err and "not on a feature directory made by msalign extract" in err
