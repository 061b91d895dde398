"""The architecture registry: importing a module registers its `@architecture` classes, in the
order below (the order of tables, figures and `superposition list`).

Adding an architecture is one new module under sae/ and one line here; SAEConfig's keys, the
`architecture` choices, saving and loading, the experiments' lists and the tests that iterate over
every architecture all follow from `ARCHITECTURES`.
"""
# ruff: noqa: F401, I001

import superposition.sae.standard
import superposition.sae.gated
import superposition.sae.jumprelu
import superposition.sae.topk
import superposition.sae.batchtopk
import superposition.sae.matryoshka
import superposition.sae.transcoder
from superposition.sae.base import ARCHITECTURES

__all__ = ["ARCHITECTURES"]
