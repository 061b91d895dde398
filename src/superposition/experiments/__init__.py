"""Named experiments, registered on import: `superposition list` shows them."""

from superposition.experiments.base import REGISTRY, get_experiment, make_config, run_experiment

# Importing a module registers its experiments.
from superposition.experiments import (
    intro,
    importance,
    correlated,
    geometry,
    neurons,
    compute_abs,
    phase_diagram,
    dynamics,
    double_descent,
    sae_synthetic,
    sae_toy,
    absorption,
)  # noqa: E402,F401

__all__ = ["REGISTRY", "get_experiment", "make_config", "run_experiment"]
