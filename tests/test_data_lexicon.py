"""Sentiment-lexicon descriptors of transcripts (msalign.data.lexicon), the loader options
--text-lexicon / --group-context end to end (train, evaluate, the checkpoint's record, predict's
features) and their one-line refusals."""

from __future__ import annotations

import json
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from msalign.cli import main
from msalign.data import load_dataset
from msalign.data.feature_dir import read_label_csv
from msalign.data.feature_spec import ModalitySpec
from msalign.data.lexicon import FEATURES, append_descriptors, feature_names, lexicon_features
from msalign.data.text_encoder import TextEncoder
from msalign.inference.predict import predict_clips, with_made_dims
from msalign.training.checkpoint import checkpoint_feature_spec, load_checkpoint, read_checkpoint_meta
from support import error, make_folder, mmsa_data, write_pickle, write_review_folder

vader_module = pytest.importorskip("vaderSentiment.vaderSentiment", reason="the lexicon extra is not installed")
textblob = pytest.importorskip("textblob", reason="the lexicon extra is not installed")

SENTENCES = [
    "the movie was really great",
    "i didnt like it at all it was boring",
    "not bad but not good either",
    "The acting was SUPERB!!! :)",
]


def test_vader_and_textblob_as_called_directly():
    analyzer = vader_module.SentimentIntensityAnalyzer()
    got = lexicon_features(SENTENCES, ["vader", "textblob"])
    assert got.shape == (len(SENTENCES), 6) and got.dtype == np.float32
    for row, text in zip(got, SENTENCES, strict=True):
        scores = analyzer.polarity_scores(text)
        blob = textblob.TextBlob(text).sentiment
        want = [scores["compound"], scores["pos"], scores["neg"], scores["neu"], blob.polarity, blob.subjectivity]
        np.testing.assert_allclose(row, want, rtol=1e-6)


def test_valence_statistics_by_hand():
    # VADER's lexicon: didnt 0 (a negation, not listed), like 1.5, boring -1.3, great 3.1; other words unlisted
    lexicon = vader_module.SentimentIntensityAnalyzer().lexicon
    assert (lexicon["like"], lexicon["boring"], lexicon["great"]) == (1.5, -1.3, 3.1)
    row = lexicon_features(["i didnt like it but great never boring"], ["valence"])[0]
    # sum, max, min, positive words, negative words, negations (didnt, never), words
    np.testing.assert_allclose(row, [1.5 - 1.3 + 3.1, 3.1, -1.3, 2, 1, 2, 8], rtol=1e-6)
    assert feature_names(["valence"])[0] == "valence.sum"
    # an ASR transcript's case and punctuation: looked up lower-cased without it
    np.testing.assert_array_equal(lexicon_features(["I didn't like it, but GREAT! never boring."], ["valence"])[0], row)
    # MOSI writes negations without apostrophes; VADER's NEGATE holds those forms too
    assert {"didnt", "dont", "isnt", "wasnt", "cant", "wouldnt", "doesnt"} <= set(vader_module.NEGATE)


def test_an_empty_transcript_is_all_zero():
    row = lexicon_features([""])[0]
    assert row.shape == (len(feature_names()),) and not row.any()


def test_feature_names_match_the_columns():
    for groups in (["vader"], ["textblob", "valence"], list(FEATURES)):
        assert lexicon_features(SENTENCES, groups).shape[1] == len(feature_names(groups))
    assert len(feature_names()) == 13 and feature_names()[:2] == ["vader.compound", "vader.pos"]


def test_unknown_name_and_missing_extra_are_one_line(monkeypatch):
    assert "unknown lexicon 'afinn' (known: vader, textblob, valence)" in error(lexicon_features, ["x"], ["afinn"])
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import fails as if not installed
    assert "bash scripts/setup.sh lexicon" in error(lexicon_features, ["x"])


def test_descriptors_go_to_real_positions_only():
    x = np.ones((2, 3, 2), dtype=np.float32)
    out = append_descriptors(x, np.array([1, 3]), np.array([[5.0], [-7.0]]))
    np.testing.assert_array_equal(out[..., 2], [[5, 0, 0], [-7, -7, -7]])
    np.testing.assert_array_equal(out[..., :2], x)


# -- the loader, train, evaluate, predict -----------------------------------------------------------


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    root = tmp_path_factory.mktemp("reviews")
    return write_review_folder(root / "data", clips_per_video=3), root / "cache"


def test_loader_appends_the_transcripts_descriptors(reviews):
    data, cache = reviews
    plain = load_dataset(str(data), standardize=False, cache_dir=str(cache))
    lex = load_dataset(str(data), standardize=False, cache_dir=str(cache), text_lexicon="vader,valence")
    width = plain.dims["text"]
    assert lex.dims["text"] == width + 11 and lex.feature_spec.modality("text").dim == width + 11
    assert lex.feature_spec.to_json()["options"]["text_lexicon"] == ["vader", "valence"]
    for name in ("train", "valid", "test"):
        a, b = plain.split(name), lex.split(name)
        np.testing.assert_array_equal(b.features["text"][..., :width], a.features["text"])
        want = lexicon_features(a.raw_text, ["vader", "valence"])
        real = a.mask("text")
        for i in range(len(a)):
            np.testing.assert_array_equal(b.features["text"][i, real[i], width:], np.tile(want[i], (real[i].sum(), 1)))
            assert not b.features["text"][i, ~real[i], width:].any()
        np.testing.assert_array_equal(b.features["audio"], a.features["audio"])
    assert "text_lexicon" not in plain.feature_spec.to_json()["options"]


def test_descriptors_come_from_the_transcript_not_the_description(reviews, tmp_path):
    data, cache = reviews
    described = tmp_path / "described"
    shutil.copytree(data, described)
    table = {row.id: "a terrible awful horrible face" for row in read_label_csv(described / "label.csv")}
    notes = {"describer": {"describer": "test"}, "descriptions": table}
    (described / "descriptions.json").write_text(json.dumps(notes))
    ds = load_dataset(
        str(described), descriptions=True, text_lexicon=["vader"], standardize=False, cache_dir=str(cache)
    )
    split = ds.split("train")
    transcripts = [text.split(" [SEP] ")[0] for text in split.raw_text or []]
    np.testing.assert_array_equal(split.features["text"][:, 0, -4:], lexicon_features(transcripts, ["vader"]))


def test_loader_refuses_text_from_a_file_and_without_text(tmp_path):
    make_folder(tmp_path / "d")  # text.npz
    assert "text comes from text.npz" in error(load_dataset, str(tmp_path / "d"), text_lexicon=True)
    assert "modality 'text' is not loaded" in error(
        load_dataset, str(tmp_path / "d"), modalities="audio", text_lexicon=True
    )


def _stub_clip(text: str, audio: np.ndarray):
    transcript = SimpleNamespace(text=text, words=[])
    return SimpleNamespace(transcript=transcript, audio=audio, vision=None, missing={})


def test_train_evaluate_and_predict_with_both_options(reviews, tmp_path, capsys):
    data, cache = reviews
    out = tmp_path / "run"
    options = ["--text-lexicon", "--group-context", "text,audio", "--cache-dir", str(cache)]
    argv = ["train", "--model", "late_fusion", "--dataset", str(data), *options, "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    width = TextEncoder("minilm", 50, cache_dir=cache).dim
    assert f"x{2 * (width + 13)}" in err and "audio 1x10" in err, err  # the summary line's dims
    checkpoint = out / "seed_1111" / "model.safetensors"
    info = read_checkpoint_meta(checkpoint)
    recorded = checkpoint_feature_spec(info).load_options
    assert list(recorded.text_lexicon or []) == ["vader", "textblob", "valence"]
    assert list(recorded.group_context or []) == ["text", "audio"] and recorded.group_column == "video_id"
    assert info.dims == {"text": 2 * (width + 13), "audio": 10}

    # evaluate reloads the data with the checkpoint's options, none given again
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(data), "--cache-dir", str(cache)]) == 0
    capsys.readouterr()

    # predict's features for the clips of one video, given in one call, are the loader's test features
    dataset = load_dataset(str(data), cache_dir=str(cache), **checkpoint_feature_spec(info).load_kwargs())
    test = dataset.split("test")
    video = [i for i, k in enumerate(test.ids) if k.startswith("v6_")]
    model, info = load_checkpoint(checkpoint)
    model.eval()
    loaded_predictions = []
    for i in video:
        features = {m: torch.from_numpy(test.features[m][i : i + 1, : test.lengths[m][i]]) for m in model.modalities}
        masks = {m: torch.ones(1, test.lengths[m][i], dtype=torch.bool) for m in model.modalities}
        with torch.inference_mode():
            loaded_predictions.append(float(model(features, masks).prediction.reshape(-1)[0]))
    raw_audio = np.load(data / "audio_utterance.npz")
    audio_of = dict(zip(raw_audio["ids"].tolist(), raw_audio["audio"], strict=True))
    clips = [_stub_clip(test.raw_text[i], audio_of[test.ids[i]][None].astype(np.float32)) for i in video]
    encoder = TextEncoder("minilm", 50, cache_dir=cache)
    rows = predict_clips(model, info, clips, encoder)
    np.testing.assert_allclose([r["score"] for r in rows], loaded_predictions, atol=2e-3)
    # a clip without audio gets the feature-directory placeholder (one zero frame of the extracted width)
    clips[0].audio = None
    assert all("score" in row for row in predict_clips(model, info, clips, encoder))
    # what predict expects of the checkpoint's modalities: the widths the loader options made
    made = with_made_dims(
        {"text": ModalitySpec(dim=width), "audio": ModalitySpec(dim=5), "vision": ModalitySpec(dim=3)}, recorded
    )
    assert {m: s.dim for m, s in made.items()} == {"text": 2 * (width + 13), "audio": 10, "vision": 3}


def test_one_line_refusals(reviews, tmp_path, capsys):
    data, cache = reviews
    common = ["--model", "late_fusion", "--epochs", "1", "--cache-dir", str(cache)]
    store = tmp_path / "store"
    assert main(["convert", str(data), str(store), "--cache-dir", str(cache)]) == 0
    pickle_path = write_pickle(tmp_path / "mosi.pkl", mmsa_data())
    cases = [
        (["--dataset", str(store), "--text-lexicon"], "a feature store holds the features it was converted with"),
        (["--dataset", str(pickle_path), "--group-context"], "not to an MMSA pickle"),
        (["--dataset", str(data), "--text-lexicon", "vader,afinn"], "unknown lexicon 'afinn'"),
        (["--dataset", str(data), "--group-context", "--group-column", "speaker"], "no column 'speaker'"),
        (
            ["--dataset", str(data), "--text-lexicon", "--set", "train.finetune_layers=1"],
            "train.finetune_layers: dataset",
        ),
        (["--dataset", str(data), "--group-context", "--set", "train.finetune_text=true"], "train.finetune_text"),
    ]
    capsys.readouterr()
    for i, (argv, culprit) in enumerate(cases):
        assert main(["train", *common, *argv, "--out", str(tmp_path / f"r{i}")]) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        # one error line, last (fine-tuning is refused once the data is loaded, after its summary line)
        errors = [line for line in lines if line.startswith("msalign: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0] and culprit in errors[0], (argv, lines)
        assert not any("Traceback" in line for line in lines)
    # a store converted with the option holds those features: accepted, and recorded alike
    lexicon_store = tmp_path / "lexicon_store"
    assert main(["convert", str(data), str(lexicon_store), "--text-lexicon", "--cache-dir", str(cache)]) == 0
    ds = load_dataset(str(lexicon_store), text_lexicon=True)
    assert list(ds.feature_spec.load_options.text_lexicon or []) == ["vader", "textblob", "valence"]
