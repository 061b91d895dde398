"""What every benchmark worker measures the same way, ours and each peer's (standard library
only, so any environment can import it)."""

import resource


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM): unlike ru_maxrss, it does not inherit the
    peak of the parent that started it."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
