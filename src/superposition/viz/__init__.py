"""Figures: plain tensors and arrays in, matplotlib or plotly figures out; saving is the caller's.

toy.py             toy-model geometry (directions, Gram matrices, dimensionality, dynamics)
phase_diagram.py   the phase of an extra feature over importance × sparsity
double_descent.py  losses and geometry against dataset size
sae.py             SAE density histograms, training curves, metrics, decoder directions

Importing these modules imports neither matplotlib nor plotly (half a second that every command
would pay, drawing or not): `on_use` gives the module on first use.
"""

import importlib


class on_use:  # noqa: N801 - stands in for a module name
    """A module imported when an attribute of it is first asked for."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)
