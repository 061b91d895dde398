"""The headline numbers on one device, for gpu_check.sh: a TopK SAE's training throughput (ours, and
SAELens's where sae_lens is importable in this Python), a language-model SAE run's tokens per second
(model forward passes, buffer and SAE steps together), and the seconds one attribution graph takes.

The language model is SmolLM2-135M's shape (30 layers, width 576, 9 heads) with random weights and a
small byte-level tokenizer built here, so nothing is downloaded: the device machine reaches no network.
Prints one JSON object per measurement.

    python benchmarks/gpu_bench.py --device cuda [--small]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def topk_sae(device: str, small: bool) -> dict:
    from superposition.sae import SAE, SAEConfig
    from superposition.sae.train import SAETrainConfig, SAETrainer

    d, m, k, batch, steps = (64, 512, 8, 512, 20) if small else (576, 4608, 32, 4096, 200)
    x = torch.randn(batch * 8, d, device=device)

    class Rows:
        def sample(self, n, generator=None):
            return x[torch.randint(0, x.shape[0], (n,), device=device)]

    sae = SAE(SAEConfig(architecture="topk", d_in=d, d_sae=m, k=k), torch.Generator().manual_seed(0)).to(
        device
    )
    tr = SAETrainer(sae, Rows(), SAETrainConfig(steps=steps, batch_size=batch, b_dec_init="zeros"))
    tr.initialise()
    _sync(device)
    t = time.perf_counter()
    tr.train(progress=False)
    _sync(device)
    ours = steps * batch / (time.perf_counter() - t)
    out = {"what": f"TopK SAE {d}->{m}, k={k}, batch {batch}", "ours_samples_per_s": round(ours)}
    try:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: F401

        out["saelens_samples_per_s"] = _saelens_topk(device, d, m, k, batch, steps, x)
    except ImportError:
        out["saelens_samples_per_s"] = None  # sae_lens is not installed in this Python
    return out


def _saelens_topk(device, d, m, k, batch, steps, x) -> float:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=m, k=k, device=device))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    _sync(device)
    t = time.perf_counter()
    for step in range(steps):
        rows = x[torch.randint(0, x.shape[0], (batch,), device=device)]
        out = sae.training_forward_pass(TrainStepInput(rows, {}, None, step, False))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    _sync(device)
    return round(steps * batch / (time.perf_counter() - t))


def _model_folder(root: Path, small: bool) -> Path:
    """A Llama of SmolLM2-135M's shape (or a tiny one) with random weights and a byte-level
    tokenizer, saved as a model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(32, 127)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    layers, width, heads = (2, 64, 4) if small else (30, 576, 9)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=width, intermediate_size=1536 if not small else 128,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=3 if not small else 4,
                      max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)  # fmt: skip
    folder = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    (root / "docs.txt").write_text(("The quick brown fox jumps over the lazy dog. " * 40 + "\n") * 400)
    return folder


def lm_sae(device: str, small: bool, root: Path) -> dict:
    from superposition.lm.config import make_lm_config
    from superposition.runs.train import train_lm_sae

    folder = _model_folder(root, small)
    tokens = 8192 if small else 1_048_576
    sets = [f"model_name={folder}", f"dataset_path={root / 'docs.txt'}", f"device={device}",
            f"training_tokens={tokens}", "eval_sequences=8", "hook_name=blocks.1.hook_resid_post",
            "context_size=128", "batch_size_tokens=4096" if not small else "batch_size_tokens=512",
            "model_batch_size=32", "tensorboard=false"]  # fmt: skip
    out = root / "run"
    t = time.perf_counter()
    train_lm_sae(make_lm_config(None, sets), out)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "what": f"train-sae on a {'tiny' if small else 'SmolLM2-135M-shaped'} Llama, {tokens:,} tokens",
        "train_tokens_per_s": round(tokens / summary["train_seconds"]),
        "wall_seconds": round(time.perf_counter() - t, 1),
    }


def attribution(device: str, small: bool, root: Path) -> dict:
    from superposition.interp.attribution import attribute
    from superposition.interp.replacement import ReplacementModel
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model
    from superposition.sae import SAE, SAEConfig

    lm = load_model(str(root / "model"), device)
    hooked = HookedModel(lm.model)
    width, d_sae = hooked.d_model, (128 if small else 4608)
    g = torch.Generator().manual_seed(0)
    tcs = {}
    for L in range(hooked.n_layers):
        sae = SAE(SAEConfig(architecture="transcoder", sparsity="topk", d_in=width, d_sae=d_sae, k=16))
        with torch.no_grad():
            for p in sae.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / width**0.5)
        tcs[L] = sae.batched.to(device).eval()
    rm = ReplacementModel(hooked, tcs)
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids[0].to(device)
    _sync(device)
    t = time.perf_counter()
    graph = attribute(rm, ids, batch_size=64, progress=False)
    _sync(device)
    return {
        "what": f"attribution graph, {hooked.n_layers} transcoders of {d_sae}, {ids.numel()} tokens",
        "seconds": round(time.perf_counter() - t, 2),
        "nodes": int(graph.adjacency.shape[0]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="the smallest settings (a dry run on the CPU)")
    args = p.parse_args()
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for bench in (topk_sae, lm_sae, attribution):
            kw = {} if bench is topk_sae else {"root": root}
            print(json.dumps({"bench": bench.__name__, **bench(args.device, args.small, **kw)}), flush=True)


if __name__ == "__main__":
    main()
