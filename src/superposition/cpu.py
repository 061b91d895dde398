"""Process-level settings that make CPU training faster. Applications opt in (the CLI and the
benchmarks do); importing the library changes nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
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


class LoadWatch:
    """How many cores other processes leave free, from /proc/stat (Linux): the CPU time every
    process used since the last look, less this process's own, over the wall time between. Where
    /proc/stat cannot be read it reports every core free."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # less idle and iowait
        t = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system

    def free_cores(self) -> float:
        """Cores not used by other processes since the last call (or since this watch began)."""
        now = self._sample()
        before, self.last = self.last, now
        if now is None or before is None or now[0] - before[0] < 0.02:
            return float(self.cores)
        others = max(0.0, (now[1] - before[1]) - (now[2] - before[2])) / (now[0] - before[0])
        return max(0.0, self.cores - others)


def threads_to_use(free: float, default: int) -> int:
    """Threads for large work: torch's default, less the cores other processes keep busy (with two
    threads on two cores and one core busy elsewhere, each step waits for the descheduled thread:
    a TopK SAE step at d_sae 2048 took 72 ms with two threads and 34 ms with one)."""
    return max(1, min(default, int(free + 0.5)))


@contextmanager
def threads_for(entries: int, threshold: int = 1 << 17, watch: LoadWatch | None = None):
    """Run a block of tensor work on the threads that pay: below `threshold` elements per
    operation one thread (handing work to a second costs more than it gains, and on a loaded
    machine the waiting makes it far worse: the `intro` experiment took 5 min with torch's 2
    threads and 55 s with one, on 2 busy cores); above it, one per core that other processes leave
    free (measured over 50 ms here, or by `watch` since its last look). `--threads N`
    (SUPERPOSITION_THREADS) overrides the choice. Every trainer and evaluator goes through this
    one policy; a long loop may call `retune` as it goes."""
    import torch

    saved = torch.get_num_threads()
    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(saved)
    chosen = os.environ.get("SUPERPOSITION_THREADS")
    if chosen:
        want = int(chosen)
    elif entries < threshold:
        want = 1
    else:  # large work gets the free cores even inside a small block (a model's forward pass in an SAE step)
        if watch is None:
            watch = LoadWatch()
            time.sleep(0.05)
        want = threads_to_use(watch.free_cores(), _DEFAULT_THREADS[0])
    torch.set_num_threads(want)
    try:
        yield want
    finally:
        torch.set_num_threads(saved)


def retune(entries: int, threshold: int, watch: LoadWatch) -> int:
    """Inside threads_for: choose again from the load `watch` saw since its last look."""
    import torch

    if os.environ.get("SUPERPOSITION_THREADS") or entries < threshold or not _DEFAULT_THREADS:
        return torch.get_num_threads()
    want = threads_to_use(watch.free_cores(), _DEFAULT_THREADS[0])
    if want != torch.get_num_threads():
        torch.set_num_threads(want)
    return want


def large_work():
    """threads_for a block of large tensor work (a language model's forward passes)."""
    return threads_for(1 << 62)
