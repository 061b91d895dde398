"""Progress that is seen wherever the code runs: a bar in a terminal, a widget (or a text bar) in
Jupyter, and off a terminal (a pipe, a log file, CI) a plain line at most every 30 seconds.

`tqdm.auto` picks the notebook widget inside a Jupyter kernel; without ipywidgets it warns
("IProgress not found") and falls back to a bar that some front ends print line by line. Here the
widget is used only when ipywidgets is importable, and the plain text bar (which rewrites its line
with a carriage return, as Jupyter renders it) otherwise.

Off a terminal tqdm would either stay silent (disable=None) or write carriage returns into a log;
`tqdm(...)` here instead prints whole lines ("train-sae: 120/244 [01:30<01:33, 1.33it/s, L0=32]"),
the first after 30 s (so quick work prints nothing) and one at the end of work that printed any.
`phase(text)` says what a long step without a bar is doing (loading a model, filling a buffer).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from typing import Any

# transformers and huggingface_hub import tqdm.auto themselves; in a kernel without ipywidgets that
# warns once, about a widget this package does not use
warnings.filterwarnings("ignore", message="IProgress not found")

PLAIN_EVERY = float(os.environ.get("SUPERPOSITION_PROGRESS_EVERY", "30"))  # seconds between plain lines


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        return type(get_ipython()).__name__ == "ZMQInteractiveShell"
    except ImportError:
        return False


def _bar_class():
    if _in_kernel():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as widget

            return widget
        except ImportError:
            pass
    from tqdm.std import tqdm as text

    return text


def _plain_class():
    from tqdm.std import tqdm as text

    class Plain(text):
        """A tqdm bar that prints a whole line every PLAIN_EVERY seconds instead of redrawing."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._printed_at: float | None = None
            self._quiet_since = time.monotonic()
            super().__init__(*args, **kwargs)

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if time.monotonic() - self._quiet_since >= PLAIN_EVERY:
                self._line()
            return True

        def _line(self) -> None:
            self._printed_at = self._quiet_since = time.monotonic()
            self._printed_n = self.n
            text_ = self.__str__().replace("\r", "").strip()
            if text_:
                print(text_, file=self.fp, flush=True)

        def close(self) -> None:
            if self.disable:
                return
            if self._printed_at is not None and self.n != self._printed_n:
                self._line()  # the end of work that was reported on
            self.sp = None  # tqdm writes nothing more on close without its line printer
            super().close()

    return Plain


def _terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def tqdm(*args: Any, **kwargs: Any):
    """A tqdm bar of the kind that works where the code runs (same arguments as tqdm).
    disable=None (tqdm's "only on a terminal") also reports off a terminal, in plain lines."""
    if kwargs.get("disable") is None and not _in_kernel() and not _terminal(kwargs.get("file") or sys.stderr):
        kwargs["disable"] = False
        kwargs.setdefault("mininterval", 1.0)
        kwargs.pop("delay", None)
        return _plain_class()(*args, **kwargs)
    return _bar_class()(*args, **kwargs)


@contextlib.contextmanager
def phase(text: str, after: float | None = None):
    """Say on stderr what a step without a bar is doing ("loading smollm2-135m-instruct ...") once it
    has taken `after` seconds (default: 3 in a terminal, and off one, as the plain progress lines, 30),
    and how long it took when it ends; a quick step (or one that fails quickly, whose error is then
    the only line) prints nothing."""
    if after is None:
        after = 3.0 if _terminal(sys.stderr) or _in_kernel() else PLAIN_EVERY
    started = time.monotonic()
    said = threading.Event()

    def say() -> None:
        said.set()
        print(f"{text} ...", file=sys.stderr, flush=True)

    timer = threading.Timer(after, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if said.is_set():
            print(f"{text}: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
