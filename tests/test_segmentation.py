"""Segmentation benchmark: metrics against hand-computed values, U-Net, data preparation,
training determinism and the `synthkit segbench` CLI end to end on tiny 16^3 cohorts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from synthkit.segmentation.bench import parse_train_specs, to_markdown
from synthkit.segmentation.data import load_segmentation_set, prepare_case, resolve_label
from synthkit.segmentation.metrics import confusion, segmentation_scores, summarize
from synthkit.segmentation.train import SegTrainConfig, predict, train_segmenter
from synthkit.segmentation.unet import UNet3D

LABELS = {"background": 0, "head": 1, "tumour": 2}


def write_tiny_cohort(root: Path, n: int, seed: int, size: int = 16, affine=None) -> Path:
    """nnU-Net raw layout: a bright ball (tumour, label 2) inside a head ellipsoid (label 1)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    aff = np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine
    g = np.indices((size,) * 3).astype(np.float32) - (size - 1) / 2
    head = (g**2 / np.array([0.42, 0.38, 0.4])[:, None, None, None] ** 2 / size**2).sum(0) < 1
    for i in range(n):
        c = rng.uniform(-size / 6, size / 6, 3)
        r = rng.uniform(size / 8, size / 5)
        tumour = ((g - c[:, None, None, None]) ** 2).sum(0) < r**2
        lab = np.where(tumour & head, 2, np.where(head, 1, 0)).astype(np.uint8)
        img = 100 * head + 150 * (lab == 2) + rng.normal(0, 10, lab.shape)
        nib.save(nib.Nifti1Image(img.astype(np.float32), aff), root / "imagesTr" / f"c{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), root / "labelsTr" / f"c{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": n, "file_ending": ".nii.gz"})
    )
    return root


# ------------------------------------------------------------------------------------ metrics


def test_metrics_match_hand_computed_counts():
    # 2x2x2 volume: reference has 3 voxels, prediction 4; overlap 2.
    ref = torch.zeros(2, 2, 2, dtype=torch.bool)
    pred = torch.zeros(2, 2, 2, dtype=torch.bool)
    ref.view(-1)[[0, 1, 2]] = True
    pred.view(-1)[[1, 2, 3, 4]] = True
    c = confusion(pred, ref)
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 2, 1, 3)
    s = segmentation_scores(pred, ref)
    assert s["dice"].item() == pytest.approx(4 / 7)  # 2*2 / (2*2 + 2 + 1)
    assert s["iou"].item() == pytest.approx(2 / 5)
    assert s["accuracy"].item() == pytest.approx(5 / 8)
    assert s["recall"].item() == pytest.approx(2 / 3)
    assert s["precision"].item() == pytest.approx(2 / 4)


def test_metrics_per_case_and_summary():
    ref = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    ref[:, :2] = True  # 32 voxels each
    pred = ref.clone()
    pred[1] = False
    pred[1, 0] = True  # case 1: 16 of 32 found, no false positives
    s = segmentation_scores(pred, ref)
    assert s["dice"].tolist() == pytest.approx([1.0, 2 * 16 / (2 * 16 + 16)])
    assert s["recall"].tolist() == pytest.approx([1.0, 0.5])
    assert s["precision"].tolist() == pytest.approx([1.0, 1.0])
    assert s["accuracy"].tolist() == pytest.approx([1.0, 48 / 64])
    summ = summarize(s)
    assert summ["recall"]["mean"] == pytest.approx(0.75)
    assert summ["recall"]["std"] == pytest.approx(0.25)  # population std of [1, 0.5]
    assert summ["recall"]["n"] == 2


def test_empty_case_convention():
    empty = torch.zeros(3, 2, 2, 2, dtype=torch.bool)
    pred = empty.clone()
    pred[1, 0, 0, 0] = True  # false positive on an empty reference
    ref = empty.clone()
    ref[2, 0, 0, 0] = True  # missed lesion, empty prediction
    pred_all = pred.clone()
    s = segmentation_scores(pred_all, ref)
    # case 0: both empty -> perfect; case 1: FP only -> 0; case 2: FN only -> 0 (precision 0/0 -> 0)
    for m in ("dice", "iou", "recall", "precision"):
        assert s[m].tolist() == [1.0, 0.0, 0.0], m
    assert s["accuracy"].tolist() == pytest.approx([1.0, 7 / 8, 7 / 8])
    assert all(torch.isfinite(v).all() for v in s.values())


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError):
        confusion(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 5))
    with pytest.raises(ValueError):
        confusion(torch.zeros(4), torch.zeros(4))


def test_metrics_are_symmetric_where_they_should_be():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 5, 5, 5, generator=g) > 0.5
    b = torch.rand(3, 5, 5, 5, generator=g) > 0.5
    ab, ba = segmentation_scores(a, b), segmentation_scores(b, a)
    for m in ("dice", "iou", "accuracy"):
        assert torch.allclose(ab[m], ba[m])
    assert torch.allclose(ab["recall"], ba["precision"])
    same = segmentation_scores(a, a)
    assert all(torch.all(v == 1) for v in same.values())


# ------------------------------------------------------------------------------------ network


def test_unet_shapes_padding_and_seeded_init():
    m1 = UNet3D(2, 1, base_channels=4, levels=3, generator=torch.Generator().manual_seed(3))
    m2 = UNet3D(2, 1, base_channels=4, levels=3, generator=torch.Generator().manual_seed(3))
    m3 = UNet3D(2, 1, base_channels=4, levels=3, generator=torch.Generator().manual_seed(4))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert not all(torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters()))
    m1.eval()
    assert m1(torch.randn(1, 2, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    assert m1(torch.randn(2, 2, 9, 13, 6)).shape == (2, 1, 9, 13, 6)  # padded inside, cropped back
    with pytest.raises(ValueError):
        m1(torch.randn(1, 3, 8, 8, 8))


def test_training_is_seeded_and_learns_a_trivial_task():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(6, 8, 8, 8, generator=g) > 0.6
    images = targets[:, None].float() * 2 - 1 + 0.1 * torch.randn(6, 1, 8, 8, 8, generator=g)
    cfg = SegTrainConfig(epochs=15, batch_size=2, lr=1e-2, base_channels=4, levels=2, seed=1)
    before = torch.random.get_rng_state()
    m1, h1 = train_segmenter(images, targets, cfg)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    m2, h2 = train_segmenter(images, targets, cfg)
    assert h1 == h2
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p1, p2)
    assert h1[-1] < h1[0] * 0.5
    pred = predict(m1, images, batch_size=4)
    assert pred.dtype == torch.bool and pred.shape == targets.shape
    assert segmentation_scores(pred, targets)["dice"].mean() > 0.9


# ------------------------------------------------------------------------------------ data


def test_resolve_label():
    assert resolve_label("tumour", LABELS) == (2,)
    assert resolve_label("Tumor", LABELS) == (2,)
    assert resolve_label("2", LABELS) == (2,)
    assert resolve_label("1,2", {}) == (1, 2)
    from synthkit.errors import UsageError

    with pytest.raises(UsageError, match="no label named 'lesion'"):
        resolve_label("lesion", LABELS)
    with pytest.raises(UsageError):
        resolve_label("0", LABELS)


def test_prepare_case_resamples_reorients_and_normalises():
    lab = np.zeros((1, 8, 8, 8), dtype=np.int16)
    lab[0, :4] = 2
    img = np.arange(8 * 8 * 8, dtype=np.float32).reshape(1, 8, 8, 8)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    x, y = prepare_case(img, aff, lab, aff, (4, 4, 4), (2,))
    assert x.shape == (1, 4, 4, 4) and y.shape == (4, 4, 4) and y.dtype == torch.bool
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.8 and x.max() > 0.8  # 2x2x2 averages
    assert y[:2].all() and not y[2:].any()
    # the same voxels stored with the first axis flipped (LAS) land on the same RAS grid
    flip = aff.copy()
    flip[0, 0], flip[0, 3] = -2.0, 14.0
    x2, y2 = prepare_case(img[:, ::-1].copy(), flip, lab[:, ::-1].copy(), flip, (4, 4, 4), (2,))
    assert torch.equal(y, y2)
    assert torch.allclose(x, x2, atol=1e-5)


def test_load_segmentation_set_reads_a_cohort(tmp_path):
    root = write_tiny_cohort(tmp_path / "c", n=3, seed=0)
    (root / "labelsTr" / "c001.nii.gz").write_bytes(b"not a nifti")
    s = load_segmentation_set(root, shape=(8, 8, 8), label="tumour")
    assert len(s) == 2 and len(s.skipped) == 1
    assert s.images.shape == (2, 1, 8, 8, 8) and s.targets.shape == (2, 8, 8, 8)
    assert s.targets.any()
    from synthkit.errors import SynthkitError

    with pytest.raises(SynthkitError):
        load_segmentation_set(root, shape=(8, 8, 8), strict=True)


def test_parse_train_specs_and_markdown():
    specs = parse_train_specs(["real=a/b", "x/syn", "x/syn", "mix=a/b, x/syn"])
    assert [s.name for s in specs] == ["real", "syn", "syn-2", "mix"]
    assert specs[0].paths == (Path("a/b"),)
    assert specs[3].paths == (Path("a/b"), Path("x/syn"))
    report = {"rows": [{"name": "real", "n_train": 3, "metrics": {
        m: {"mean": 0.5, "std": 0.25, "n": 2} for m in ("dice", "iou", "accuracy", "recall", "precision")}}]}
    md = to_markdown(report)
    assert "| real | 3 | 0.5000±0.2500 |" in md


# ------------------------------------------------------------------------------------ CLI


def test_segbench_cli_end_to_end(cli, tmp_path):
    train_dir = write_tiny_cohort(tmp_path / "train", n=4, seed=1)
    test_dir = write_tiny_cohort(tmp_path / "test", n=3, seed=2)
    out = tmp_path / "bench.json"
    args = [
        "segbench", "--train", f"real={train_dir}", "--train", str(train_dir),
        "--train", f"both={train_dir},{test_dir}", "--test", test_dir,
        "--epochs", "2", "--batch-size", "2", "--shape", "16", "16", "16", "--channels", "4",
        "--levels", "3", "--json", out, "--seed", "3", "--device", "cpu", "--label", "tumour",
    ]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["rows"]] == ["real", "train", "both"]
    assert report["test"]["n_cases"] == 3
    assert [r["n_train"] for r in report["rows"]] == [4, 4, 7]  # "both" pools two folders
    for row in report["rows"]:
        for m in ("dice", "iou", "accuracy", "recall", "precision"):
            st = row["metrics"][m]
            assert st["n"] == 3 and 0 <= st["mean"] <= 1 and math.isfinite(st["std"])
            assert len(row["per_case"][m]) == 3
    # same seed, same data -> identical rows
    assert report["rows"][0]["per_case"] == report["rows"][1]["per_case"]
    assert report["rows"][0]["loss_history"] == report["rows"][1]["loss_history"]
    assert "real" in result.output and "Dice" in result.output


def test_segbench_cli_errors_are_one_line(cli, tmp_path):
    test_dir = write_tiny_cohort(tmp_path / "test", n=1, seed=2)
    r = cli("segbench", "--train", tmp_path / "missing", "--test", test_dir, "--epochs", "1")
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    r = cli("segbench", "--train", test_dir, "--test", test_dir, "--label", "lesion", "--epochs", "1")
    assert r.exit_code == 2 and "no label named 'lesion'" in r.output
