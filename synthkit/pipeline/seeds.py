"""The seed rules: every synthetic volume's seed is a pure function of the run seed and of
what the volume is (a case id and a number), never of its position in a batch or a rank.
"""

from __future__ import annotations

import hashlib

import numpy as np


def seed_for(seed: int, case_id: str, k: int) -> int:
    """The seed of volume ``k`` generated for mask ``case_id`` under run seed ``seed``.

    Derived from the case id (not its position), so a mask sampled alone gets the same seed as
    within any set of masks: the first 8 bytes of ``sha256("synthkit:{seed}:{case_id}:{k}")``,
    little-endian, as a 63-bit integer.
    """
    h = hashlib.sha256(f"synthkit:{int(seed)}:{case_id}:{int(k)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def copy_seed(seed: int, i: int, stream: int) -> int:
    """A 63-bit seed for copy ``i`` of a numbered set (``synthkit augment``): ``stream`` 0 for
    the mask perturbation, 1 for the image. From ``numpy.random.SeedSequence([seed, i, stream])``."""
    return int(np.random.SeedSequence([int(seed), int(i), int(stream)]).generate_state(1, np.uint64)[0] >> 1)
