"""The kill -9 drills' shared move: wait for a moment worth interrupting, then SIGKILL at a random
time after it."""

import random
import signal
import subprocess
import time
from collections.abc import Callable


def kill_after(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, jitter: float, rng: random.Random
) -> bool:
    """Wait (at most `timeout` s) until `ready()` or the process ends, sleep a uniform random time
    in [0, jitter), then SIGKILL the process if it still runs. Returns whether it was killed."""
    started = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - started < timeout:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, jitter))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True
