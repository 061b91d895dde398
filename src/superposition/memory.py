"""Refusing work that cannot fit, before allocating it.

`require_memory(need, what)` compares an estimate with the memory this process can have (the
kernel's MemAvailable, or the cgroup limit when that is tighter) and raises a one-line error
naming both. Estimates are deliberately rough (a factor of a few): they exist to turn "ran for two
minutes, then a MemoryError traceback" into an immediate one-line refusal, not to plan memory.
"""

from __future__ import annotations

from pathlib import Path

from superposition.errors import SuperpositionError

FLOAT = 4  # bytes in a float32


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None where the platform does not say."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def require_memory(need: float, what: str, hint: str = "choose smaller sizes") -> None:
    """Raise a one-line error if `need` bytes cannot fit in memory."""
    avail = available_memory()
    if avail is not None and need > avail:
        raise SuperpositionError(
            f"{what}: needs about {human(need)} of memory, {human(avail)} available; {hint}"
        )
