"""The bad-input corpus: every kind of broken input, fed through ``msalign.cli.main`` in-process.

Each case must give a non-zero exit, ONE line on stderr starting ``msalign: error:`` that names the
culprit (file, key or shape), no traceback, and nothing half-written in ``--out`` (no results.json,
no temporary files).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from msalign.cli import main
from msalign.data.feature_dir import save_modality
from support import make_folder, mmsa_data

TINY = "synthetic:n_train=64,n_valid=24,n_test=24"
TRAIN = ["train", "--model", "late_fusion", "--epochs", "1", "--seeds", "1111"]


# ---- builders: each returns (argv without --out, culprit substring); {out} is filled in later


def _pkl(tmp: Path, data, name: str = "data.pkl") -> Path:
    path = tmp / name
    path.write_bytes(pickle.dumps(data))
    return path


def _pkl_case(tmp: Path, edit) -> tuple[list[str], str]:
    data = mmsa_data()
    culprit = edit(data)
    return [*TRAIN, "--dataset", str(_pkl(tmp, data)), "--metric-set", "mosi"], culprit


def _dir(tmp: Path) -> Path:
    folder = tmp / "feats"
    make_folder(folder)
    return folder


def _dir_args(folder: Path) -> list[str]:
    return [*TRAIN, "--dataset", str(folder), "--metric-set", "mosi"]


def _rewrite_npz(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    arrays.update(changes)
    for key in [k for k, v in arrays.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)


def _rewrite_labels(folder: Path, edit) -> None:
    """``edit(rows)`` changes the parsed rows (header first) of label.csv in place."""
    with open(folder / "label.csv", newline="") as f:
        rows = list(csv.reader(f))
    edit(rows)
    with open(folder / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def pickle_truncated(tmp):
    blob = pickle.dumps(mmsa_data())
    (tmp / "cut.pkl").write_bytes(blob[: len(blob) // 3])
    return [*TRAIN, "--dataset", str(tmp / "cut.pkl")], "cut.pkl: not a readable pickle"


def pickle_garbage(tmp):
    (tmp / "junk.pkl").write_bytes(bytes(range(256)) * 4)
    return [*TRAIN, "--dataset", str(tmp / "junk.pkl")], "junk.pkl"


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_reduce_payload(tmp):
    data = mmsa_data()
    data["train"]["annotations"] = [_Payload(str(tmp / "PWNED"))]
    return [*TRAIN, "--dataset", str(_pkl(tmp, data, "evil.pkl"))], "evil.pkl: it references posix.system"


def pickle_not_a_dict(tmp):
    return [*TRAIN, "--dataset", str(_pkl(tmp, [1, 2, 3], "list.pkl"))], "list.pkl: expected a dict"


def pickle_missing_split(tmp):
    return _pkl_case(tmp, lambda d: d.pop("test") and "split 'test'")


def pickle_wrong_dims(tmp):
    def edit(d):
        d["valid"]["audio"] = d["valid"]["audio"][:, :, 0]
        return "split 'valid', key 'audio': expected shape (N, L, D), got shape (3, 10)"

    return _pkl_case(tmp, edit)


def pickle_width_differs_between_splits(tmp):
    def edit(d):
        d["test"]["vision"] = np.ones((4, 12, 7), np.float32)
        return "key 'vision': feature width 7, expected 4"

    return _pkl_case(tmp, edit)


def pickle_nan_features(tmp):
    def edit(d):
        d["train"]["vision"][2, 0, 1] = np.nan
        return "split 'train', key 'vision': NaN at row 2"

    return _pkl_case(tmp, edit)


def pickle_absurd_lengths(tmp):
    def edit(d):
        d["train"]["audio_lengths"] = np.array([10**12] * 6)
        return "key 'audio_lengths': length 1000000000000 at row 0 outside 1..10"

    return _pkl_case(tmp, edit)


def pickle_negative_lengths(tmp):
    def edit(d):
        d["test"]["audio_lengths"] = -np.ones(4, dtype=np.int64)
        return "key 'audio_lengths': length -1 at row 0"

    return _pkl_case(tmp, edit)


def pickle_labels_out_of_range(tmp):
    def edit(d):
        d["valid"]["regression_labels"][1] = 40.0
        return "split 'valid', key 'labels': label 40 at row 1 outside [-3, 3]"

    return _pkl_case(tmp, edit)


def pickle_lengths_not_numbers(tmp):
    def edit(d):
        d["train"]["vision_lengths"] = ["long"] * 6
        return "key 'vision_lengths': not numeric"

    return _pkl_case(tmp, edit)


def dir_inf_features(tmp):
    folder = _dir(tmp)
    with np.load(folder / "vision.npz") as z:
        x = z["features"].copy()
    x[:, 0, 0] = np.inf
    _rewrite_npz(folder / "vision.npz", features=x)
    return _dir_args(folder), "vision.npz: split 'train', key 'features': inf at row 0"


def dir_labels_out_of_range(tmp):
    folder = _dir(tmp)
    _rewrite_labels(folder, lambda rows: rows[1].__setitem__(3, "7.5"))
    return _dir_args(folder), "split 'train', key 'labels': label 7.5 at row 0"


def dir_label_not_a_number(tmp):
    folder = _dir(tmp)
    _rewrite_labels(folder, lambda rows: rows[4].__setitem__(3, "happy"))
    return _dir_args(folder), "label.csv: line 5: label 'happy' is not a number"


def dir_empty_split(tmp):
    folder = _dir(tmp)
    _rewrite_labels(folder, lambda rows: [row.__setitem__(5, "valid") for row in rows[1:] if row[5] == "test"])
    return _dir_args(folder), "label.csv: split 'test', key 'mode': no clips"


def dir_ids_disagree(tmp):
    folder = _dir(tmp)
    with np.load(folder / "audio_utterance.npz") as z:
        ids = np.array([f"other_{i}" for i in range(len(z["ids"]))])
    _rewrite_npz(folder / "audio_utterance.npz", ids=ids)
    return _dir_args(folder), "audio_utterance.npz: 12 clips of label.csv have no features"


def dir_duplicate_ids(tmp):
    folder = _dir(tmp)
    with np.load(folder / "text.npz") as z:
        ids = z["ids"].copy()
    ids[1] = ids[0]
    _rewrite_npz(folder / "text.npz", ids=ids)
    return _dir_args(folder), "text.npz: key 'ids': duplicate id"


def dir_wrong_dims(tmp):
    folder = _dir(tmp)
    (folder / "audio_utterance.npz").unlink()
    np.savez(folder / "audio_utterance.npz", ids=np.array(["a"]), audio=np.zeros((1, 2, 3, 4), np.float32))
    return _dir_args(folder), "audio_utterance.npz: key 'audio': expected shape (N, D), got shape (1, 2, 3, 4)"


def dir_zero_length_sequences(tmp):
    folder = _dir(tmp)
    with np.load(folder / "vision.npz") as z:
        lengths = z["lengths"].copy()
    lengths[:] = 0
    _rewrite_npz(folder / "vision.npz", lengths=lengths)
    return _dir_args(folder), "key 'vision_lengths': length 0 at row 0 outside 1..5"


def dir_empty_time_axis(tmp):
    folder = _dir(tmp)
    with np.load(folder / "vision.npz") as z:
        ids = z["ids"].copy()
    (folder / "vision.npz").unlink()
    save_modality(folder, "vision", ids, np.zeros((len(ids), 0, 4), np.float32))
    return _dir_args(folder), "vision"


def dir_all_padding_row(tmp):
    folder = tmp / "feats"
    ids = make_folder(folder)
    for name, key in (("audio_utterance.npz", "audio"), ("vision.npz", "features"), ("text.npz", "features")):
        with np.load(folder / name) as z:
            x, file_ids = z[key].copy(), z["ids"]
        x[list(file_ids).index(ids[3])] = 0
        _rewrite_npz(folder / name, **{key: x})
    return _dir_args(folder), f"row 3 (id {ids[3]!r}) is all padding in every modality"


def dir_absurd_lengths(tmp):
    folder = _dir(tmp)
    with np.load(folder / "text.npz") as z:
        lengths = z["lengths"].copy()
    lengths[5] = 2**62
    _rewrite_npz(folder / "text.npz", lengths=lengths)
    return _dir_args(folder), "key 'text_lengths': length 4611686018427387904"


def dir_float_lengths(tmp):
    folder = _dir(tmp)
    with np.load(folder / "text.npz") as z:
        lengths = z["lengths"].astype(np.float32)
    _rewrite_npz(folder / "text.npz", lengths=lengths)
    return _dir_args(folder), "text.npz: key 'lengths': expected integer"


def dir_corrupt_npz(tmp):
    folder = _dir(tmp)
    (folder / "vision.npz").write_bytes(b"PK\x03\x04" + bytes(200))
    return _dir_args(folder), "vision.npz: not a readable .npz"


def dir_truncated_npz(tmp):
    folder = _dir(tmp)
    blob = (folder / "text.npz").read_bytes()
    (folder / "text.npz").write_bytes(blob[: len(blob) // 2])
    return _dir_args(folder), "text.npz: not a readable .npz"


def dir_npz_with_pickled_objects(tmp):
    folder = _dir(tmp)
    with np.load(folder / "audio_utterance.npz") as z:
        ids = z["ids"].astype(object)
    _rewrite_npz(folder / "audio_utterance.npz", ids=ids)  # object arrays are stored pickled
    return _dir_args(folder), "audio_utterance.npz: not a readable .npz"


def dir_npz_not_numeric(tmp):
    folder = _dir(tmp)
    with np.load(folder / "audio_utterance.npz") as z:
        x = np.full(z["audio"].shape, "loud")
    _rewrite_npz(folder / "audio_utterance.npz", audio=x)
    return _dir_args(folder), "audio_utterance.npz: key 'audio': not numeric"


def dir_npz_missing_key(tmp):
    folder = _dir(tmp)
    _rewrite_npz(folder / "vision.npz", features=None)
    return _dir_args(folder), "vision.npz: key 'features': missing"


def dir_both_kinds_of_file(tmp):
    folder = _dir(tmp)
    save_modality(folder, "audio", ["a"], np.ones((1, 3, 7)))
    return _dir_args(folder), "both audio.npz and audio_utterance.npz"


def dir_no_label_csv(tmp):
    folder = _dir(tmp)
    (folder / "label.csv").unlink()
    return _dir_args(folder), "no label.csv"


def dir_label_csv_missing_column(tmp):
    folder = _dir(tmp)
    _rewrite_labels(folder, lambda rows: [row.pop() for row in rows])
    return _dir_args(folder), "label.csv: missing column 'mode'"


def dir_label_csv_bad_mode(tmp):
    folder = _dir(tmp)
    _rewrite_labels(folder, lambda rows: rows[1].__setitem__(5, "training"))
    return _dir_args(folder), "label.csv: line 2: mode 'training'"


def dir_label_csv_not_utf8(tmp):
    folder = _dir(tmp)
    (folder / "label.csv").write_bytes(b"video_id,clip_id,label,mode\n\xff\xfe,1,0.5,train\n")
    return _dir_args(folder), "label.csv: cannot read"


def dir_unreadable(tmp):
    folder = _dir(tmp)
    folder.chmod(0)
    if os.access(folder, os.R_OK):
        folder.chmod(0o755)
        pytest.skip("running as root: a chmod 000 directory stays readable")
    return _dir_args(folder), "permission denied"


def dir_unknown_modality(tmp):
    return [*_dir_args(_dir(tmp)), "--modalities", "text,smell"], "unknown modality 'smell'"


def missing_dataset(tmp):
    return [*TRAIN, "--dataset", str(tmp / "nowhere.pkl")], "nowhere.pkl"


def dataset_of_unknown_kind(tmp):
    (tmp / "data.csv").write_text("a,b\n")
    return [*TRAIN, "--dataset", str(tmp / "data.csv")], "data.csv"


def synthetic_unknown_key(tmp):
    return [*TRAIN, "--dataset", "synthetic:n_trian=5"], "n_trian"


def synthetic_empty_split(tmp):
    return [*TRAIN, "--dataset", "synthetic:n_train=64,n_valid=0,n_test=8"], "valid"


def unknown_model(tmp):
    return ["train", "--model", "gpt", "--dataset", TINY], "unknown model 'gpt'"


def unknown_config_key(tmp):
    return [*TRAIN, "--dataset", TINY, "--set", "model.widht=3"], "widht"


def wrong_type_in_set(tmp):
    return [*TRAIN, "--dataset", TINY, "--set", "train.lr=fast"], "lr"


def set_without_equals(tmp):
    return [*TRAIN, "--dataset", TINY, "--set", "lr"], "'lr'"


def bad_scheduler_value(tmp):
    return [*TRAIN, "--dataset", TINY, "--set", "train.scheduler=cosine"], "scheduler"


def config_not_a_mapping(tmp):
    (tmp / "list.yaml").write_text("- width\n- 8\n")
    return [*TRAIN, "--dataset", TINY, "--config", str(tmp / "list.yaml")], "list.yaml"


def config_bad_yaml(tmp):
    (tmp / "broken.yaml").write_text("model: {width: [8\n")
    return [*TRAIN, "--dataset", TINY, "--config", str(tmp / "broken.yaml")], "broken.yaml"


def config_unknown_key(tmp):
    (tmp / "typo.yaml").write_text("train:\n  epocs: 3\n")
    return [*TRAIN, "--dataset", TINY, "--config", str(tmp / "typo.yaml")], "epocs"


def config_missing_file(tmp):
    return [*TRAIN, "--dataset", TINY, "--config", str(tmp / "absent.yaml")], "absent.yaml"


def bad_seeds(tmp):
    return [*TRAIN, "--dataset", TINY, "--seeds", "1111,x"], "--seeds '1111,x'"


def empty_seeds(tmp):
    return [*TRAIN, "--dataset", TINY, "--seeds", ","], "--seeds"


def bad_epochs(tmp):
    return [*TRAIN, "--dataset", TINY, "--epochs", "0"], "--epochs 0"


def out_is_a_file(tmp):
    (tmp / "taken").write_text("not a folder")
    return [*TRAIN, "--dataset", TINY, "--out", str(tmp / "taken")], "taken"


def bad_shapes(tmp):
    return ["profile", "--model", "late_fusion", "--shapes", "audio=0x5"], "--shapes item 'audio=0x5'"


def bad_shapes_syntax(tmp):
    return ["profile", "--model", "late_fusion", "--shapes", "text:20x32"], "--shapes item 'text:20x32'"


# ---- checkpoints passed to evaluate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", "--model", "text_only", "--dataset", TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out / "seed_1111" / "model.safetensors"


def _evaluate(path: Path, dataset: str = TINY) -> list[str]:
    return ["evaluate", "--checkpoint", str(path), "--dataset", dataset]


def ckpt_other_feature_spec(tmp, ckpt):
    return _evaluate(ckpt, TINY + ",text_dim=16"), "trained on text features of dim 32, the data has 16"


def ckpt_other_generator_seed(tmp, ckpt):
    return _evaluate(ckpt, TINY + ",seed=3"), "feature spec seed=0"


def ckpt_other_model(tmp, ckpt):
    """The metadata names another model than the weights are for."""
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as f:
        info = json.loads(f.metadata()["msalign"])
    info.update(model="late_fusion", model_config={})
    save_file(load_file(str(ckpt)), str(tmp / "swapped.safetensors"), metadata={"msalign": json.dumps(info)})
    return _evaluate(tmp / "swapped.safetensors"), "swapped.safetensors: weights do not fit model late_fusion"


def ckpt_truncated(tmp, ckpt):
    blob = ckpt.read_bytes()
    (tmp / "cut.safetensors").write_bytes(blob[: len(blob) * 2 // 3])
    return _evaluate(tmp / "cut.safetensors"), "cut.safetensors"


def ckpt_header_only(tmp, ckpt):
    (tmp / "tiny.safetensors").write_bytes(ckpt.read_bytes()[:6])
    return _evaluate(tmp / "tiny.safetensors"), "tiny.safetensors: not a safetensors file"


def ckpt_foreign_safetensors(tmp, ckpt):
    import torch

    save_file({"w": torch.zeros(2)}, str(tmp / "foreign.safetensors"))
    return _evaluate(tmp / "foreign.safetensors"), "foreign.safetensors: no msalign metadata"


def ckpt_lightning_pickle(tmp, ckpt):
    """A torch pickle (e.g. Lightning's last.ckpt) is not accepted as a model checkpoint."""
    import torch

    torch.save({"state_dict": {}}, tmp / "last.ckpt")
    return _evaluate(tmp / "last.ckpt"), "last.ckpt: not a safetensors file"


def ckpt_corrupt_metadata(tmp, ckpt):
    save_file(load_file(str(ckpt)), str(tmp / "meta.safetensors"), metadata={"msalign": "{not json"})
    return _evaluate(tmp / "meta.safetensors"), "meta.safetensors: corrupt msalign metadata"


def ckpt_missing(tmp, ckpt):
    return _evaluate(tmp / "gone.safetensors"), "gone.safetensors: no such file"


CASES = [
    pickle_truncated,
    pickle_garbage,
    pickle_reduce_payload,
    pickle_not_a_dict,
    pickle_missing_split,
    pickle_wrong_dims,
    pickle_width_differs_between_splits,
    pickle_nan_features,
    pickle_absurd_lengths,
    pickle_negative_lengths,
    pickle_labels_out_of_range,
    pickle_lengths_not_numbers,
    dir_inf_features,
    dir_labels_out_of_range,
    dir_label_not_a_number,
    dir_empty_split,
    dir_ids_disagree,
    dir_duplicate_ids,
    dir_wrong_dims,
    dir_zero_length_sequences,
    dir_empty_time_axis,
    dir_all_padding_row,
    dir_absurd_lengths,
    dir_float_lengths,
    dir_corrupt_npz,
    dir_truncated_npz,
    dir_npz_with_pickled_objects,
    dir_npz_not_numeric,
    dir_npz_missing_key,
    dir_both_kinds_of_file,
    dir_no_label_csv,
    dir_label_csv_missing_column,
    dir_label_csv_bad_mode,
    dir_label_csv_not_utf8,
    dir_unreadable,
    dir_unknown_modality,
    missing_dataset,
    dataset_of_unknown_kind,
    synthetic_unknown_key,
    synthetic_empty_split,
    unknown_model,
    unknown_config_key,
    wrong_type_in_set,
    set_without_equals,
    bad_scheduler_value,
    config_not_a_mapping,
    config_bad_yaml,
    config_unknown_key,
    config_missing_file,
    bad_seeds,
    empty_seeds,
    bad_epochs,
    out_is_a_file,
    bad_shapes,
    bad_shapes_syntax,
]
CHECKPOINT_CASES = [
    ckpt_other_feature_spec,
    ckpt_other_generator_seed,
    ckpt_other_model,
    ckpt_truncated,
    ckpt_header_only,
    ckpt_foreign_safetensors,
    ckpt_lightning_pickle,
    ckpt_corrupt_metadata,
    ckpt_missing,
]


def _check(argv: list[str], culprit: str, out: Path, capsys) -> None:
    if argv[0] in ("train", "benchmark") and "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0, captured
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, lines
    assert lines[0].startswith("msalign: error: "), lines
    assert culprit in lines[0], lines
    if out.exists():
        left = [p.name for p in out.rglob("*") if p.name == "results.json" or ".tmp" in p.name or p.suffix == ".tmp"]
        assert not left, left


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__)
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written relative to the working directory either
    argv, culprit = case(tmp_path)
    _check(argv, culprit, tmp_path / "out", capsys)
    assert not (tmp_path / "PWNED").exists()  # the pickle payload never ran


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=lambda f: f.__name__)
def test_bad_checkpoint(case, checkpoint, tmp_path, capsys):
    argv, culprit = case(tmp_path, checkpoint)
    _check(argv, culprit, tmp_path / "out", capsys)
