"""Toy models of superposition: feature distributions, models, trainer, geometry."""
