"""SAE code as SAELens's tutorials and ARENA's SAE exercises write it, run unchanged against any `SAE`
class with SAELens's interface: SAELens's own (`from sae_lens import SAE`) or ours (`from
superposition import SAE`). `run(SAE, folder, x, W_U)` returns every number it computes, so the two
can be compared (benchmarks/check_saelens_snippets.py) and ours checked in the suite
(tests/sae/test_single.py). Nothing here imports either library.

    x    activations as a hook gives them, [batch, seq, d_in]
    W_U  an unembedding [d_in, vocab]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def run(SAE, folder: str, x: torch.Tensor, W_U: torch.Tensor, latent: int = 7) -> dict[str, torch.Tensor]:
    sae = SAE.load_from_disk(folder, device="cpu")
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        # the tensors, by their SAELens names and shapes
        out["W_enc"], out["W_dec"], out["b_dec"] = sae.W_enc, sae.W_dec, sae.b_dec
        out["shape"] = torch.tensor([sae.cfg.d_in, sae.cfg.d_sae, *sae.W_enc.shape, *sae.W_dec.shape])
        # latents of every token of a batch of sequences, as encode(cache[hook]) gives them
        feature_acts = sae.encode(x)  # [batch, seq, d_sae]
        out["feature_acts"] = feature_acts
        top = feature_acts.topk(5, dim=-1)  # the top latents of each token
        out["top_values"], out["top_indices"] = top.values, top.indices
        out["l0"] = (feature_acts > 0).float().sum(-1)  # active latents per token
        recons = sae.decode(feature_acts)
        out["recons"] = recons
        out["forward"] = sae(x)
        out["mse"] = (recons - x).pow(2).sum(-1)
        out["ev"] = 1 - (x - recons).pow(2).sum() / (x - x.mean((0, 1))).pow(2).sum()
        # one latent: its decoder direction and its encoder column
        out["direction"] = sae.W_dec[latent]
        out["encoder_column"] = sae.W_enc[:, latent]
        # decoder norms, and cosine similarities between latents
        out["decoder_norms"] = sae.W_dec.norm(dim=-1)
        W = F.normalize(sae.W_dec, dim=-1)
        out["cosine_sims"] = W @ W.T
        # the logit lens of every latent and a latent's top tokens
        logit_lens = sae.W_dec @ W_U  # [d_sae, vocab]
        out["logit_lens"] = logit_lens
        out["top_tokens"] = logit_lens[latent].topk(10).indices
        # the activation of one latent over positions, and where it fires most
        acts = feature_acts[..., latent]
        out["latent_acts"] = acts
        out["argmax_position"] = acts.flatten().argmax().unsqueeze(0)
        # the error term a spliced SAE adds
        out["error"] = x - recons
    return out
