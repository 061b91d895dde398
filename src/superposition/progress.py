"""Progress bars that behave in a terminal, in Jupyter with ipywidgets, and in Jupyter without them.

`tqdm.auto` picks the notebook widget inside a Jupyter kernel; without ipywidgets it warns
("IProgress not found") and falls back to a bar that some front ends print line by line. Here the
widget is used only when ipywidgets is importable, and the plain text bar (which rewrites its line
with a carriage return, as Jupyter renders it) otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any

# transformers and huggingface_hub import tqdm.auto themselves; in a kernel without ipywidgets that
# warns once, about a widget this package does not use
warnings.filterwarnings("ignore", message="IProgress not found")


def _bar_class():
    try:
        from IPython import get_ipython

        in_kernel = type(get_ipython()).__name__ == "ZMQInteractiveShell"
    except ImportError:
        in_kernel = False
    if in_kernel:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as widget

            return widget
        except ImportError:
            pass
    from tqdm.std import tqdm as text

    return text


def tqdm(*args: Any, **kwargs: Any):
    """A tqdm bar of the kind that works where the code runs (same arguments as tqdm)."""
    return _bar_class()(*args, **kwargs)
