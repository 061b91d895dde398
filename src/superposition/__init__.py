"""superposition: toy models of superposition and sparse autoencoders, on a laptop."""

from superposition.errors import SuperpositionError

__all__ = ["SuperpositionError"]
__version__ = "0.1.0"
