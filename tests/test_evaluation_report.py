"""msalign report on a train, a benchmark and a sweep directory; predictions.npz; DecAlign.representations."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from msalign import metrics
from msalign.cli import main
from msalign.data import load_dataset
from msalign.evaluation.report import (
    FIGURE_SIZES,
    build_report,
    confusion_counts,
    modality_gap,
    pca_2d,
    typical_rows,
)

TINY = "synthetic:n_train=160,n_valid=48,n_test=48"
SMALL = ["--epochs", "2", "--set", "width=16", "heads=2", "layers=1", "train.threads=1"]


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(TINY)


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory) -> Path:
    """late_fusion and decalign; benchmark_dir / "decalign" doubles as a plain train run."""
    out = tmp_path_factory.mktemp("bench") / "run"
    assert (
        main(
            [
                "benchmark",
                "--models",
                "late_fusion,decalign",
                "--dataset",
                TINY,
                "--seeds",
                "1111",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert (
        main(
            [
                "sweep",
                "--model",
                "decalign",
                "--dataset",
                TINY,
                "--grid",
                "alpha=0.01,0.1",
                "beta=0.05",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


KIND_BY_PREFIX = {
    "confusion_": "confusion",
    "curves_": "curves",
    "gap_": "gap",
    "per_class_": "per_class",
    "sweep_": "sweep",
}


def check_figures(target: Path) -> dict[str, int]:
    """Every PNG the report links exists, has its kind's pixel size and is not blank; returns counts per kind."""
    from matplotlib.image import imread

    text = target.read_text()
    linked = (
        re.findall(r'src="([^"]+\.png)"', text) if target.suffix == ".html" else re.findall(r"\]\(([^)]+\.png)\)", text)
    )
    assert linked, f"{target} links no figure"
    kinds: dict[str, int] = {}
    for name in linked:
        path = target.parent / name
        kind = next(k for prefix, k in KIND_BY_PREFIX.items() if name.startswith(prefix))
        assert path.is_file() and path.stat().st_size > 10_000, path
        width, height = FIGURE_SIZES[kind]
        assert png_size(path) == (round(width * 100), round(height * 100))
        assert imread(path).std() > 0.05, f"{path} looks blank"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert sorted(p.name for p in target.parent.glob("*.png")) == sorted(linked)  # no stray figures
    return kinds


def test_predictions_npz_matches_the_run(benchmark_dir, dataset):
    seed_dir = benchmark_dir / "decalign" / "seed_1111"
    per_seed = json.loads((benchmark_dir / "decalign" / "results.json").read_text())["per_seed"][0]
    with np.load(seed_dir / "predictions.npz", allow_pickle=False) as data:
        assert sorted(data.files) == [
            "test_ids",
            "test_labels",
            "test_predictions",
            "valid_ids",
            "valid_labels",
            "valid_predictions",
        ]
        for split in ("valid", "test"):
            n = len(dataset.split(split))
            assert data[f"{split}_predictions"].shape == (n,) and data[f"{split}_labels"].shape == (n,)
            assert list(data[f"{split}_ids"]) == dataset.split(split).ids
            np.testing.assert_array_equal(data[f"{split}_labels"], dataset.split(split).labels)
            # the saved predictions are the ones the run was scored with
            assert metrics.compute(data[f"{split}_predictions"], data[f"{split}_labels"], "mosi") == per_seed[split]


def test_confusion_diagonal_is_acc7(benchmark_dir):
    per_seed = json.loads((benchmark_dir / "late_fusion" / "results.json").read_text())["per_seed"][0]
    with np.load(benchmark_dir / "late_fusion" / "seed_1111" / "predictions.npz") as data:
        counts, names = confusion_counts(data["test_predictions"], data["test_labels"], "mosi")
    assert names == ["-3", "-2", "-1", "0", "+1", "+2", "+3"] and counts.sum() == 48
    assert round(np.trace(counts) / counts.sum(), 4) == per_seed["test"]["Mult_acc_7"]


def test_report_of_a_train_run_renders_every_figure(benchmark_dir, capsys):
    assert main(["report", str(benchmark_dir / "decalign"), "--dataset", TINY]) == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out and "note:" not in captured.err
    target = benchmark_dir / "decalign" / "report" / "report.md"
    # three modality pairs on the synthetic data
    assert check_figures(target) == {"confusion": 1, "curves": 1, "gap": 3, "per_class": 1}
    text = target.read_text()
    assert "| 1111 |" in text and "before alignment" in text and "after alignment" in text


def test_report_of_a_benchmark_renders_every_figure(benchmark_dir, dataset):
    target, report = build_report(benchmark_dir, dataset)
    assert check_figures(target) == {"per_class": 1, "confusion": 2, "curves": 3, "gap": 3}
    assert {f.file for f in report.figures} == {p.name for p in target.parent.glob("*.png")}
    assert all(
        f.size_px == (round(FIGURE_SIZES[f.kind][0] * 100), round(FIGURE_SIZES[f.kind][1] * 100))
        for f in report.figures
    )
    text = target.read_text()
    assert "| late_fusion |" in text and "| decalign |" in text


def test_report_of_a_sweep_renders_the_sensitivity_plot(sweep_dir, dataset):
    target, _ = build_report(sweep_dir, dataset, fmt="html")
    assert target.name == "report.html"
    html = target.read_text()
    # the heatmap, then the chosen point's figures
    assert check_figures(target) == {"sweep": 1, "confusion": 1, "curves": 1, "gap": 3, "per_class": 1}
    best = json.loads((sweep_dir / "sweep.json").read_text())["best"]["label"]
    assert f"The chosen point: {best}" in html and "← best on valid" in html


def test_without_dataset_the_gap_is_skipped_with_a_note(benchmark_dir, tmp_path):
    target, report = build_report(benchmark_dir / "decalign", out=tmp_path / "r.md")
    assert target == tmp_path / "r.md"
    assert all(f.kind != "gap" for f in report.figures)
    assert any("pass --dataset" in note for note in report.notes)
    assert "Note: modality gap: skipped" in target.read_text()


def test_missing_predictions_are_recomputed_from_the_checkpoint(benchmark_dir, dataset, tmp_path):
    run = tmp_path / "old_run"
    shutil.copytree(benchmark_dir / "late_fusion", run, ignore=shutil.ignore_patterns("report", "lightning"))
    saved = np.load(run / "seed_1111" / "predictions.npz")["test_predictions"]
    (run / "seed_1111" / "predictions.npz").unlink()
    _, report = build_report(run)
    assert not any(f.kind == "confusion" for f in report.figures)
    assert any("no predictions.npz" in note for note in report.notes)
    _, report = build_report(run, dataset)
    assert any(f.kind == "confusion" for f in report.figures)
    from msalign.evaluation.report import predict_checkpoint

    np.testing.assert_allclose(
        predict_checkpoint(run / "seed_1111" / "model.safetensors", dataset)["test"][0], saved, rtol=1e-5, atol=1e-6
    )


def test_format_and_out_suffix_must_agree(benchmark_dir, tmp_path, capsys):
    assert (
        main(["report", str(benchmark_dir / "late_fusion"), "--format", "html", "--out", str(tmp_path / "r.md")]) == 2
    )
    assert capsys.readouterr().err.strip().endswith("a .md file, but --format is html")
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nope", "no such directory"),
        (lambda tmp: tmp, "not a train, benchmark or sweep directory"),
    ],
)
def test_bad_run_dir_is_one_line_error(tmp_path, capsys, make, message):
    assert main(["report", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("msalign: error: RUN_DIR ") and message in err and len(err.strip().splitlines()) == 1


def test_representations_before_and_after_alignment(dataset):
    from msalign.models import create_model
    from msalign.training.data import collate_rows

    torch.manual_seed(0)
    model = create_model("decalign", dims=dataset.dims, output_dim=1, width=16, heads=2, layers=1).eval()
    batch = collate_rows(dataset.split("test"), model.modalities, np.arange(12))
    with torch.no_grad():
        out = model.representations(batch)
        forward = model(batch["features"], batch["masks"]).representations
    assert set(out) == {"before", "after"}
    for m in model.modalities:
        assert out["before"][m].shape == out["after"][m].shape == (12, 16)
        torch.testing.assert_close(out["after"][m], forward[f"common_{m}"])  # the common encoder's pooled output
        assert not torch.allclose(out["before"][m], out["after"][m])
    plain = create_model(
        "decalign", dims=dataset.dims, output_dim=1, width=16, heads=2, layers=1, decoupling=False
    ).eval()
    with torch.no_grad():
        same = plain.representations(batch)
    assert all(torch.equal(same["before"][m], same["after"][m]) for m in plain.modalities)


def test_gap_and_pca_numbers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    b = a + np.array([3.0, 4.0, 0, 0, 0])
    gap = modality_gap(a, b)
    assert gap["centroid_distance"] == pytest.approx(5.0)
    assert gap["ratio"] == pytest.approx(5.0 / gap["spread"])
    points, shares = pca_2d(np.concatenate([a, b]))
    assert points.shape == (400, 2) and shares[0] > shares[1] > 0 and shares.sum() <= 1
    # one extreme clip claims the first component unless it is left out of the fit
    x = rng.normal(size=(300, 4)) * np.array([3.0, 1.0, 0.5, 0.5])
    x[0] = [0.0, 0.0, 0.0, 500.0]
    keep = typical_rows(x, [slice(0, 300)])
    assert not keep[0] and keep.sum() == 297
    assert abs(pca_2d(x)[0][0, 0]) > 400  # the outlier's own axis
    points, shares = pca_2d(x, fit=keep)
    assert points.shape == (300, 2) and shares[0] > 0.6  # the wide first feature again
    assert abs(np.corrcoef(points[keep, 0], x[keep, 0])[0, 1]) > 0.99


def test_report_takes_the_dataset_from_the_run_and_refuses_another(benchmark_dir, tmp_path, capsys):
    """issue 19 item 10: no --dataset -> results.json's; a different --dataset -> one line, exit 2."""
    out = tmp_path / "auto.md"
    assert main(["report", str(benchmark_dir / "decalign"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "dataset (from the run):" in captured.err and "note: modality gap" not in captured.err
    assert check_figures(out)["gap"] == 3
    assert main(["report", str(benchmark_dir / "decalign"), "--dataset", TINY + ",seed=3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run was trained on synthetic:" in err[0] and "omit --dataset" in err[0]


def test_figures_are_titled_by_model_not_folder(benchmark_dir, tmp_path):
    run = tmp_path / "my-folder-name"
    shutil.copytree(benchmark_dir / "late_fusion", run)
    _, report = build_report(run, out=tmp_path / "r.md")
    captions = " ".join(f.caption for f in report.figures)
    # SMALL's --set width=16 heads=2 is the variant (layers=1 is the default); never the folder name
    assert "late_fusion[width=16,heads=2]" in captions and "my-folder-name" not in captions
