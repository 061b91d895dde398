"""SAELens side of check_formats.py; runs in SAELens's own environment (not a dependency).

    python formats_saelens_worker.py write DIR   SAELens writes one SAE folder per case into DIR/saelens/
                                                 and its own outputs on DIR/x.safetensors beside each
    python formats_saelens_worker.py read DIR    SAELens loads every folder in DIR/ours_saelens/ and writes its
                                                 outputs beside each (DIR/ours_saelens/<case>.saelens.safetensors)

Outputs are z = sae.encode(x) and x_hat = sae.decode(z), SAELens's inference API.
"""

import sys
from pathlib import Path

import torch
from sae_lens import SAE
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from sae_lens.saes.transcoder import (
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)
from safetensors.torch import load_file, save_file

D, M, K, HEADS = 16, 64, 4, 2


def randomise(sae, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.6 + 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.startswith("b_") else 1.0))


def outputs(sae, x: torch.Tensor) -> dict:
    """z and the output; a skip transcoder's output is its forward (decode has no skip path)."""
    with torch.no_grad():
        z = sae.encode(x)
        out = sae(x) if hasattr(sae, "W_skip") else sae.decode(z)
        return {"z": z.contiguous(), "x_hat": out.contiguous()}


def write(root: Path) -> None:
    x = load_file(str(root / "x.safetensors"))["x"]
    hook = SAEMetadata(model_name="gpt2", hook_name="blocks.3.hook_resid_pre")
    cases = {
        "standard": StandardSAE(StandardSAEConfig(d_in=D, d_sae=M, metadata=hook)),
        "standard_no_b_dec_on_input": StandardSAE(
            StandardSAEConfig(d_in=D, d_sae=M, apply_b_dec_to_input=False)
        ),
        "standard_layer_norm": StandardSAE(
            StandardSAEConfig(d_in=D, d_sae=M, normalize_activations="layer_norm")
        ),
        "standard_constant_norm_rescale": StandardSAE(
            StandardSAEConfig(d_in=D, d_sae=M, normalize_activations="constant_norm_rescale")
        ),
        "gated": GatedSAE(GatedSAEConfig(d_in=D, d_sae=M)),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=M)),
        "jumprelu_no_b_dec_on_input": JumpReLUSAE(
            JumpReLUSAEConfig(d_in=D, d_sae=M, apply_b_dec_to_input=False)
        ),
        "topk": TopKSAE(TopKSAEConfig(d_in=D, d_sae=M, k=K)),
        "topk_rescaled_by_decoder_norm": TopKSAE(
            TopKSAEConfig(d_in=D, d_sae=M, k=K, rescale_acts_by_decoder_norm=True)
        ),
        "hook_z": StandardSAE(
            StandardSAEConfig(
                d_in=D,
                d_sae=M,
                reshape_activations="hook_z",
                metadata=SAEMetadata(model_name="gpt2", hook_name="blocks.1.attn.hook_z"),
            )
        ),  # fmt: skip
        "transcoder": Transcoder(TranscoderConfig(d_in=D, d_sae=M, d_out=12, apply_b_dec_to_input=False)),
        "skip_transcoder": SkipTranscoder(
            SkipTranscoderConfig(d_in=D, d_sae=M, d_out=12, apply_b_dec_to_input=False)
        ),
        "jumprelu_transcoder": JumpReLUTranscoder(
            JumpReLUTranscoderConfig(d_in=D, d_sae=M, d_out=12, apply_b_dec_to_input=False)
        ),
        "jumprelu_skip_transcoder": JumpReLUSkipTranscoder(
            JumpReLUSkipTranscoderConfig(d_in=D, d_sae=M, d_out=12, apply_b_dec_to_input=False)
        ),
    }
    for n, (name, sae) in enumerate(cases.items()):
        randomise(sae, n)
        sae.save_model(root / "saelens" / name)
        xin = x.reshape(x.shape[0], HEADS, D // HEADS) if name == "hook_z" else x
        out = outputs(sae, xin)
        if name == "hook_z":
            out = {k: v.reshape(x.shape[0], -1).contiguous() for k, v in out.items()}
        save_file(out, str(root / "saelens" / f"{name}.out.safetensors"))
    # training checkpoints: SAELens computes them as it saves them for inference (JumpReLU SAEs)
    training = {
        "batchtopk_training": BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D, d_sae=M, k=K)),
        "matryoshka_training": MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(d_in=D, d_sae=M, k=K, matryoshka_widths=[16, 32, 64])
        ),
    }
    for n, (name, sae) in enumerate(training.items()):
        randomise(sae, 100 + n)
        sae.topk_threshold = torch.tensor(0.35, dtype=torch.double)
        sae.save_model(root / "saelens" / name)
        sae.save_inference_model(root / "saelens_inference" / name)
        inference = SAE.load_from_disk(root / "saelens_inference" / name)
        save_file(outputs(inference, x), str(root / "saelens" / f"{name}.out.safetensors"))


def read(root: Path) -> None:
    x = load_file(str(root / "x.safetensors"))["x"]
    for folder in sorted(p for p in (root / "ours_saelens").iterdir() if p.is_dir()):
        sae = SAE.load_from_disk(folder)
        z_shaped = sae.cfg.reshape_activations == "hook_z"
        xin = x.reshape(x.shape[0], HEADS, D // HEADS) if z_shaped else x
        out = outputs(sae, xin)
        if z_shaped:
            out = {k: v.reshape(x.shape[0], -1).contiguous() for k, v in out.items()}
        save_file(out, str(root / "ours_saelens" / f"{folder.name}.saelens.safetensors"))
        print(folder.name, type(sae).__name__)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](Path(sys.argv[2]))
