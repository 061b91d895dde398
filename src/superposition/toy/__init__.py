"""Toy models of superposition: feature distributions, models, trainer, geometry."""

from superposition.toy import geometry
from superposition.toy.data import FeatureDistribution, Group
from superposition.toy.model import ComputationModel, ToyModel
from superposition.toy.train import train_toy_model

__all__ = ["ComputationModel", "FeatureDistribution", "Group", "ToyModel", "geometry", "train_toy_model"]
