"""Tiny phantom cohorts for the training / sampling tests (no tests in this module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_phantom_cohort(root: Path, n: int = 3, size: int = 16, channels: int = 1, brats: bool = False) -> Path:
    """An nnU-Net raw cohort of ``n`` phantom heads (labels 0 background, 1 head, 2 tumour).

    ``brats=True``: BraTS-like labels instead (0, 1 necrosis, 2 oedema, 4 enhancing; no head
    label), for the ``label_map {"4": 3}`` + ``brain_label 4`` configuration.
    """
    from phantoms import phantom

    from synthkit.io import write_nifti, write_nnunet_dataset_json

    root = Path(root)
    for i in range(n):
        img, msk = phantom(size=size, seed=i, channels=channels)
        labels = msk.data.copy()
        if brats:
            tum = labels == 2
            labels[labels == 1] = 0
            ii = np.argwhere(tum[0])
            labels[tum] = 2  # oedema
            if len(ii):
                c = ii.mean(0).round().astype(int)
                labels[0, c[0], c[1], c[2]] = 4  # enhancing
                if c[0] + 1 < size:
                    labels[0, c[0] + 1, c[1], c[2]] = 1  # necrosis
        for c in range(channels):
            write_nifti(root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz", img.data[c], img.affine)
        write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", labels, msk.affine, is_label=True)
    names = ("T1",) if channels == 1 else tuple(["T1", "T1CE", "T2", "FLAIR"][:channels])
    labels_json = ({"background": 0, "NCR": 1, "ED": 2, "ET": 4} if brats
                   else {"background": 0, "head": 1, "tumour": 2})
    write_nnunet_dataset_json(root, names, labels_json, n)
    return root
