"""SAEConfig: everything that defines an SAE, saved as its cfg.json.

It is composed from a core (the architecture, the sizes, where the activations come from) and the
`Options` each registered architecture declares in its own module, so a key lives beside the code
that reads it. Keys an architecture does not use are ignored by it; the ones it needs are checked
by its `check_config`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import AfterValidator, Field, model_validator
from torch import Tensor

from superposition.config import Config, compose
from superposition.sae.registry import ARCHITECTURES


def known_architecture(name: str, extra: tuple[str, ...] = ()) -> str:
    """`name` if it is registered (or one of `extra`), else the error pydantic gives for a choice."""
    if name not in ARCHITECTURES and name not in extra:
        names = [repr(a) for a in (*extra, *ARCHITECTURES)]
        raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")
    return name


Architecture = Annotated[str, AfterValidator(known_architecture)]


class SAECore(Config):
    architecture: Architecture = Field("topk", description=f"one of {', '.join(ARCHITECTURES)}")
    d_in: int = Field(gt=0, description="width of the activations")
    d_sae: int = Field(gt=0, description="number of latents")
    n_instances: int = Field(
        1, gt=0, description="SAEs trained side by side (seeds, sparsity coefficients, ...)"
    )
    apply_b_dec_to_input: bool = Field(
        True, description="encode (x − b_dec) rather than x (false for Gemma Scope and many JumpReLU SAEs)"
    )
    input_normalization: Literal["none", "constant_norm_rescale", "layer_norm"] = Field(
        "none",
        description="per-example normalisation of the input, undone on the output (SAELens's "
        "constant_norm_rescale: x·√d_in/‖x‖; layer_norm: (x − mean)/std); for SAEs trained that way",
    )
    model_name: str | None = Field(
        None, description="language-model SAEs: the model the activations come from"
    )
    hook_name: str | None = Field(None, description="language-model SAEs: the hook point they are read at")

    @model_validator(mode="after")
    def _check(self):
        for name, info in type(self).model_fields.items():
            if (info.json_schema_extra or {}).get("per_instance"):
                v = getattr(self, name)
                if isinstance(v, list) and len(v) != self.n_instances:
                    raise ValueError(
                        f"{name}: a list needs one value per instance (n_instances={self.n_instances}), "
                        f"got {len(v)}"
                    )
                if (min(v) if isinstance(v, list) else v) < 0:
                    raise ValueError(f"{name}: must be ≥ 0")
        ARCHITECTURES[self.architecture].check_config(self)
        return self

    def per_instance(self, name: str) -> Tensor:
        """A key that takes one value or one per instance, as Float[Tensor, "inst"]."""
        v = getattr(self, name)
        return torch.tensor(v if isinstance(v, list) else [v] * self.n_instances, dtype=torch.float32)


SAEConfig = compose(
    "SAEConfig",
    SAECore,
    *(arch.Options for arch in ARCHITECTURES.values()),
    doc="Everything that defines an SAE (saved as cfg.json): the core keys and every architecture's options.",
)
