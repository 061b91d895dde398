"""sparsify side of check_formats.py; runs in eai-sparsify's own environment (not a dependency).

    python formats_sparsify_worker.py write DIR   sparsify writes SAE folders into DIR/sparsify/, with
                                                  its own outputs on DIR/x.safetensors beside each
    python formats_sparsify_worker.py read DIR    sparsify loads every folder in DIR/ours_sparsify/ and
                                                  writes its outputs beside each

Outputs: z, the dense latents from sae.encode(x) (top_acts scattered to top_indices), and
x_hat = sae.decode(top_acts, top_indices) (+ x W_skipᵀ for a skip transcoder, as its forward adds).
Transcoders too (transcode=True, with and without skip_connection).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sparsify import SparseCoder, SparseCoderConfig

D, M, K = 16, 64, 4


def outputs(sae, x: torch.Tensor) -> dict:
    with torch.no_grad():
        enc = sae.encode(x)
        z = torch.zeros(x.shape[0], sae.num_latents).scatter(-1, enc.top_indices, enc.top_acts)
        x_hat = sae.decode(enc.top_acts, enc.top_indices)
        if sae.W_skip is not None:
            x_hat = x_hat + x.to(sae.dtype) @ sae.W_skip.mT
    return {"z": z.contiguous(), "x_hat": x_hat.contiguous()}


def write(root: Path) -> None:
    x = load_file(str(root / "x.safetensors"))["x"]
    cases = (
        ("topk", {"normalize_decoder": True}),
        ("topk_free_decoder", {"normalize_decoder": False}),
        ("transcoder", {"transcode": True}),
        ("skip_transcoder", {"transcode": True, "skip_connection": True}),
    )
    for n, (name, kw) in enumerate(cases):
        sae = SparseCoder(D, SparseCoderConfig(k=K, num_latents=M, **kw))
        g = torch.Generator().manual_seed(200 + n)
        with torch.no_grad():
            for pname, p in sae.named_parameters():
                p.copy_(
                    torch.randn(p.shape, generator=g) * (0.3 if "bias" in pname or pname == "b_dec" else 1.0)
                )
        sae.save_to_disk(root / "sparsify" / name)
        save_file(outputs(sae, x), str(root / "sparsify" / f"{name}.out.safetensors"))


def read(root: Path) -> None:
    x = load_file(str(root / "x.safetensors"))["x"]
    for folder in sorted(p for p in (root / "ours_sparsify").iterdir() if p.is_dir()):
        sae = SparseCoder.load_from_disk(folder)
        save_file(outputs(sae, x), str(root / "ours_sparsify" / f"{folder.name}.sparsify.safetensors"))
        print(folder.name, sae.num_latents)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](Path(sys.argv[2]))
