"""The downstream segmentation benchmark (the paper's Table II protocol, at any scale).

For each training set (real cases, real + synthetic, synthetic only, classic augmentation, ...)
a fresh :class:`~synthkit.segmentation.unet.UNet3D` is trained with the same seed and
hyper-parameters (:mod:`synthkit.segmentation.train`), then evaluated on the same test cases;
each training set gives one row of per-case Dice / IoU / Accuracy / Recall / Precision,
summarised as mean ± std over the test cases (:mod:`synthkit.segmentation.metrics`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthkit.errors import UsageError
from synthkit.segmentation.data import SegmentationSet, load_segmentation_set
from synthkit.segmentation.metrics import METRICS, segmentation_scores, summarize
from synthkit.segmentation.train import SegTrainConfig, predict, train_segmenter

METRIC_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "accuracy": "Accuracy",
    "recall": "Recall",
    "precision": "Precision",
}


@dataclass(frozen=True)
class TrainSpec:
    """A training set: a display name and one or more folders (any layout ``discover_cohort``
    reads) whose cases are pooled, e.g. real cases + a synthetic dataset."""

    name: str
    paths: tuple[Path, ...]


def parse_train_specs(values: list[str]) -> list[TrainSpec]:
    """``["real=data/real", "data/aug", "mix=data/real,data/syn"]`` -> specs.

    ``NAME=PATH[,PATH...]`` pools the folders' cases in one training set; an unnamed spec is
    named after its (first) folder. Repeated names get ``-2``, ``-3``... suffixes.
    """
    specs: list[TrainSpec] = []
    seen: dict[str, int] = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name.strip():
            name, rest = "", v
        paths = tuple(Path(p.strip()) for p in rest.split(",") if p.strip())
        if not paths:
            raise UsageError(f"--train {v!r}: no folder given")
        name = name.strip() or paths[0].name or str(paths[0])
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        specs.append(TrainSpec(name=name, paths=paths))
    if not specs:
        raise UsageError("give at least one training set (--train DATASET)")
    return specs


def load_train_set(
    spec: TrainSpec, *, shape: tuple[int, int, int], label: str | int, strict: bool = False, progress=None
) -> SegmentationSet:
    """All cases of ``spec``'s folders as one :class:`SegmentationSet` (folders in order)."""
    parts = [
        load_segmentation_set(p, shape=shape, label=label, name=spec.name, strict=strict, progress=progress)
        for p in spec.paths
    ]
    chans = {int(s.images.shape[1]) for s in parts}
    if len(chans) != 1:
        raise UsageError(f"training set {spec.name!r}: folders have different channel counts {sorted(chans)}")
    if len(parts) == 1:
        return parts[0]
    return SegmentationSet(
        name=spec.name,
        images=torch.cat([s.images for s in parts]),
        targets=torch.cat([s.targets for s in parts]),
        channel_names=parts[0].channel_names,
        label_values=tuple(sorted({v for s in parts for v in s.label_values})),
        skipped=[m for s in parts for m in s.skipped],
    )


def evaluate_segmenter(
    model: torch.nn.Module, test: SegmentationSet, *, batch_size: int = 4, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Per-case scores of ``model`` on ``test``: ``{"dice": (N,), ...}``."""
    pred = predict(model, test.images, batch_size=batch_size, device=device)
    return segmentation_scores(pred, test.targets)


def run_segbench(
    train: list[TrainSpec],
    test: str | Path,
    *,
    cfg: SegTrainConfig | None = None,
    shape: tuple[int, int, int] = (32, 32, 32),
    label: str | int = "tumour",
    device: str | torch.device = "cpu",
    strict: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Train one U-Net per training set and score each on the test cohort.

    Returns a JSON-serialisable report: ``{"protocol": {...}, "test": {...}, "rows": [{"name",
    "n_train", "metrics": {"dice": {"mean", "std", "n"}, ...}, "per_case": {...}, ...}]}``.
    Per-case lists are in the test cohort's case order (no case identifiers are stored).
    """
    cfg = cfg or SegTrainConfig()
    test_path = Path(test)
    test_set = load_segmentation_set(
        test_path, shape=shape, label=label, name="test", strict=strict, progress=progress
    )
    sets = []
    for spec in train:
        s = load_train_set(spec, shape=shape, label=label, strict=strict, progress=progress)
        if s.images.shape[1] != test_set.images.shape[1]:
            raise UsageError(
                f"training set {spec.name!r} has {s.images.shape[1]} channel(s), the test cohort "
                f"{test_set.images.shape[1]}"
            )
        sets.append((spec, s))
    rows = []
    for spec, s in sets:
        t0 = time.perf_counter()
        model, history = train_segmenter(
            s.images, s.targets, cfg, device=device, progress=progress, description=f"train {spec.name}"
        )
        train_s = time.perf_counter() - t0
        per_case = evaluate_segmenter(model, test_set, batch_size=cfg.batch_size, device=device)
        rows.append(
            {
                "name": spec.name,
                "paths": [str(p) for p in spec.paths],
                "n_train": len(s),
                "skipped": len(s.skipped),
                "label_values": list(s.label_values),
                "final_loss": history[-1],
                "loss_history": history,
                "train_seconds": round(train_s, 3),
                "metrics": summarize(per_case),
                "per_case": {k: [float(x) for x in v] for k, v in per_case.items()},
            }
        )
        del model
    return {
        "protocol": {
            **dataclasses.asdict(cfg),
            "shape": list(shape),
            "label": str(label),
            "device": str(device),
            "loss": "binary cross-entropy on sigmoid(logit)",
            "optimizer": "Adam",
            "threshold": 0.5,
            "metrics": "per case over the whole volume at the benchmark grid; mean and population std over test cases",
        },
        "test": {
            "path": str(test_path),
            "n_cases": len(test_set),
            "skipped": len(test_set.skipped),
            "label_values": list(test_set.label_values),
            "empty_reference_cases": int((test_set.targets.flatten(1).sum(1) == 0).sum()),
        },
        "rows": rows,
    }


def to_markdown(report: dict[str, Any], digits: int = 4) -> str:
    """The report's rows as a Markdown table in the paper's format (``mean±std``)."""
    head = ["Training set", "N train"] + [METRIC_TITLES[m] for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in report["rows"]:
        cells = [row["name"], str(row["n_train"])]
        for m in METRICS:
            s = row["metrics"][m]
            cells.append(f"{s['mean']:.{digits}f}±{s['std']:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
