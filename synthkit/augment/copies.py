"""The copies of ``synthkit augment`` that need no generative model, and the dataset's label table.

* :func:`classic_copies`: copy ``i`` is :func:`synthkit.augment.classic.augment_case` of real case
  ``i mod M`` (``aug_{i:05d}``; the paper's "Augmented images" rows);
* :func:`real_copies`: the real cases as they are (``real_{j:04d}``), with a model in its label values;
* :func:`dataset_labels`: the label table the dataset is written with.

The synthetic copies are the ``augment`` configuration of the synthesis engine:
:func:`synthkit.jobs.augment.augment_cohort`, which calls these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from synthkit.augment.classic import ClassicAugmentConfig
from synthkit.errors import SynthkitError, UsageError
from synthkit.io.volume import grid_mismatch
from synthkit.pipeline.seeds import copy_seed


def dataset_labels(coh: Any, cases: list[Any], gen: Any) -> dict[str, int]:
    """The dataset's label table before renumbering: the model's labels (with a model), else the
    cohort's declared names, else ``label_{v}`` for every value found in the source masks."""
    if gen is not None:
        return gen.network_labels()
    declared = dict(coh.labels)
    if declared.get("background") == 0 and len(set(declared.values())) == len(declared):
        return declared
    from synthkit.io import read_mask

    seen: set[int] = {0}
    for case in cases:
        try:
            seen.update(int(v) for v in np.unique(read_mask(case).data))
        except (SynthkitError, ValueError):
            continue  # reported when the case is used
    return {"background": 0, **{f"label_{v}": v for v in sorted(seen - {0})}}


def classic_copies(coh: Any, cases: list[Any], writer: Any, fail: Callable[[str], None], *, n: int, seed: int,
                   classic: ClassicAugmentConfig, report: Callable[[float, int], None]) -> list[dict[str, Any]]:
    """Copies ``aug_00000`` ...: :func:`synthkit.augment.classic.augment_case` of source
    ``i mod M``, moving on to the next source when one cannot be read."""
    from synthkit.augment.classic import augment_case
    from synthkit.io import read_image, read_mask

    records: list[dict[str, Any]] = []
    bad: set[int] = set()
    for i in range(n):
        for attempt in range(len(cases)):
            j = (i + attempt) % len(cases)
            if j in bad:
                continue
            try:
                s = copy_seed(seed, i, 1)
                img, lab, applied = augment_case(read_image(cases[j]), read_mask(cases[j]), s, classic)
                problem = writer.label_problem(lab)
                if problem:
                    raise ValueError(problem)
            except (SynthkitError, ValueError) as e:
                fail(f"copy {i} from source case #{j}: {e}")
                bad.add(j)
                continue
            writer.write_case(f"aug_{i:05d}", img, lab)  # outside the try: a write error is never blamed on the case
            records.append({"case": f"aug_{i:05d}", "source": j, "seed": s, "transforms": applied})
            break
        else:
            raise UsageError(f"no source case could produce copy {i}; see the errors above", coh.root)
        report(i + 1, n)
    return records


def real_copies(cases: list[Any], writer: Any, fail: Callable[[str], None],
                report: Callable[[float, int], None], gen: Any = None,
                labels: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The real cases as ``real_0000`` ... (images and masks onto a clean header; with a model
    ``gen``, masks in its label values, as the synthetic copies')."""
    from synthkit.io import read_image, read_mask

    records: list[dict[str, Any]] = []
    for j, case in enumerate(cases):
        try:
            image, mask = read_image(case), read_mask(case)
            why = grid_mismatch(image.spatial_shape, image.affine, mask.spatial_shape, mask.affine)
            if why:
                raise ValueError(f"image and mask grids differ ({why})")
            if gen is not None:
                mask = gen.to_network_mask(mask, image=image, labels=labels)
            problem = writer.label_problem(mask)
            if problem:
                raise ValueError(problem)
        except (SynthkitError, ValueError) as e:
            fail(f"real case #{j}: {e}")
        else:
            writer.write_case(f"real_{j:04d}", image, mask)
            records.append({"case": f"real_{j:04d}", "source": j, "real": True})
        report(j + 1, len(cases))
    return records

