"""Independent random streams from one user seed."""

from __future__ import annotations

import zlib


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (data, initialisation, a training stream, ...).

    Streams seeded directly with the same number draw the same values: a synthetic dictionary and
    an SAE both seeded with 0 would start the SAE's decoder on the true features. Mixing the
    purpose in keeps every stream independent while runs stay reproducible from one seed.
    """
    return (seed * 0x9E3779B97F4A7C15 + zlib.crc32(purpose.encode())) % 2**63
