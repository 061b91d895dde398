"""superposition: toy models of superposition and sparse autoencoders, on a laptop.

    import superposition as sp
    sae = sp.load_sae("runs/l6")                   # or sp.load_sae(release, sae_id), any format
    model = sp.load_model("smollm2-135m-instruct")
    logits, cache = model.run_with_cache_with_saes("The cat sat", saes=[sae])

The names below come from superposition.api, imported on first use so that `import superposition`
stays light (models, data and training import without plotting or templates).
"""

import importlib

from superposition.errors import SuperpositionError

__version__ = "0.1.0"
_API = ("SAE", "HookedSAEModel", "Intervention", "evaluate_saes", "execute", "load_model", "load_run",
        "load_sae", "push_to_hub", "train_sae")  # fmt: skip
__all__ = ["SuperpositionError", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("superposition.api"), name)
    raise AttributeError(f"module 'superposition' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
