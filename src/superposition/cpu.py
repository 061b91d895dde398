"""Process-level settings that make CPU training faster. Applications opt in (the CLI and the
benchmarks do); importing the library changes nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager


def tune_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Keep large tensors' memory in the heap for reuse instead of returning it to the OS.

    glibc serves blocks above 128 KiB with fresh mmap pages, so every new activation-sized
    tensor page-faults on first touch; on a CPU that costs more than the arithmetic of an
    elementwise op (measured: a TopK SAE step on 2 cores goes from 49 to 36 ms). Raising the
    mmap and trim thresholds makes freed blocks reusable. Returns whether the settings applied
    (only on glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(
            libc.mallopt(m_trim_threshold, 2 * mmap_threshold)
        )
    except (OSError, AttributeError):
        return False


_BF16_CPU: bool | None = None


def fast_bf16_matmul(device) -> bool:
    """Whether bfloat16 matrix products are native (and so faster than float32) on `device`:
    CUDA, or a CPU with AVX512-BF16 or AMX (measured here: 1.3 against 2.9 ms for a
    1024×128 by 128×2048 product on 2 cores)."""
    global _BF16_CPU
    if str(device).startswith("cuda"):
        return True
    if str(device) != "cpu":
        return False
    if _BF16_CPU is None:
        try:
            flags = open("/proc/cpuinfo").read()
            _BF16_CPU = "avx512_bf16" in flags or "amx_bf16" in flags
        except OSError:
            _BF16_CPU = False
    return _BF16_CPU


_DEFAULT_THREADS: list[int] = []  # torch's thread count when the policy was first asked (one per core)


@contextmanager
def threads_for(entries: int, threshold: int = 1 << 17):
    """Run a block of small tensor work on one thread: below `threshold` elements per operation,
    handing work to a second thread costs more than it gains, and on a loaded machine the waiting
    makes it far worse (the `intro` experiment took 5 min with torch's 2 threads and 55 s with one,
    on 2 busy cores). `--threads N` (SUPERPOSITION_THREADS) overrides the choice. Every trainer and
    evaluator goes through this one policy."""
    import torch

    saved = torch.get_num_threads()
    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(saved)
    chosen = os.environ.get("SUPERPOSITION_THREADS")
    # large work gets every thread even inside a small block (a model's forward pass in an SAE step)
    want = int(chosen) if chosen else (1 if entries < threshold else _DEFAULT_THREADS[0])
    torch.set_num_threads(want)
    try:
        yield want
    finally:
        torch.set_num_threads(saved)


def large_work():
    """threads_for a block of large tensor work (a language model's forward passes): every thread."""
    return threads_for(1 << 62)
