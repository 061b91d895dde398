"""Named experiments, registered on import: `superposition list` shows them."""
# ruff: noqa: F401

# Importing a module registers its experiments.
from superposition.experiments import (
    absorption,
    adversarial,
    compare_geometries,
    compute_abs,
    correlated,
    double_descent,
    dynamics,
    geometry,
    importance,
    intro,
    neurons,
    nonuniform,
    phase_diagram,
    polytopes,
    sae_synthetic,
    sae_toy,
    splitting,
    transcoder_toy,
)
from superposition.experiments.base import REGISTRY, get_experiment, make_config, run_experiment

__all__ = ["REGISTRY", "get_experiment", "make_config", "run_experiment"]
