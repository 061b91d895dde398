"""The SAE a researcher holds has SAELens's tensor interface: shapes without an instance axis, encode
over any leading dimensions, SAELens's names for every tensor, loaded in eval mode without
gradients, and the code SAELens users write (benchmarks/saelens_snippets.py) runs unchanged on it.
(SAELens itself computes the same numbers from the same files: benchmarks/check_saelens_snippets.py.)"""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import superposition as sp
from superposition.errors import SuperpositionError
from superposition.sae import ARCHITECTURES, SAE, SAEConfig, make_sae
from superposition.sae.io import load_sae, save_sae
from superposition.sae.sources import SyntheticDictionary
from superposition.sae.train import SAETrainConfig, SAETrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from saelens_snippets import run as snippets  # noqa: E402

D, M = 12, 48


def _cfg(arch: str, **kw) -> SAEConfig:
    base = {"architecture": arch, "d_in": D, "d_sae": M}
    if arch in ("topk", "batchtopk", "matryoshka") or kw.get("sparsity") in ("topk", "batchtopk"):
        base["k"] = 4
    if arch == "matryoshka":
        base["prefixes"] = [12, 24, 48]
    return SAEConfig.build({**base, **kw})


def _perturbed(cfg: SAEConfig, seed: int = 0) -> SAE:
    """An SAE of cfg with random weights (and thresholds that let some latents through)."""
    sae = SAE(cfg, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sae.batched.named_parameters():
            if name == "log_threshold":
                p.copy_((torch.rand(p.shape, generator=g) * 0.5 + 0.1).log())
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        if hasattr(sae.batched, "threshold") and not hasattr(sae.batched, "log_threshold"):
            sae.batched.threshold.fill_(0.3)
    return sae.eval()


SAE_ARCHS = [a for a, c in ARCHITECTURES.items() if not c.transcodes]


@pytest.mark.parametrize("arch", SAE_ARCHS)
def test_tensors_have_saelens_names_and_shapes(arch, tmp_path):
    sae = _perturbed(_cfg(arch))
    assert sae.W_enc.shape == (D, M) and sae.W_dec.shape == (M, D)
    assert sae.b_dec.shape == (D,) and sae.b_enc.shape == (M,)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.architecture) == (D, M, arch)
    saved = sae.tensors()
    for name, t in saved.items():  # every saved tensor (threshold, b_gate, r_mag, ...) by its name
        assert torch.equal(getattr(sae, name), t)
    # they are views of the parameters: what a user edits is what the SAE computes with
    with torch.no_grad():
        sae.W_dec[3] = 0.0
    assert float(sae.batched.W_dec[0, 3].detach().abs().sum()) == 0.0
    loaded = load_sae(save_sae(sae, tmp_path / arch))
    for name, t in saved.items():
        assert torch.equal(getattr(loaded, name), t)


@pytest.mark.parametrize("arch", SAE_ARCHS)
def test_encode_takes_any_leading_dimensions(arch):
    sae = _perturbed(_cfg(arch), seed=3)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(1))
    rows = sae.batched.encode(x.reshape(-1, 1, D))[:, 0]  # the batched form, one token at a time
    z = sae.encode(x)
    assert z.shape == (2, 5, M)
    torch.testing.assert_close(z.reshape(-1, M), rows)
    assert sae.encode(x[0, 0]).shape == (M,)  # one token
    assert sae.encode(x.reshape(1, 2, 5, D)).shape == (1, 2, 5, M)
    assert sae.decode(z).shape == (2, 5, D) and sae(x).shape == (2, 5, D)


def test_a_sequence_as_long_as_the_batch_is_not_read_as_instances():
    """The old trap: (batch, seq, d) with seq == n_instances was read as (batch, inst, d)."""
    sae = _perturbed(_cfg("topk"), seed=4)
    x = torch.randn(3, 1, D, generator=torch.Generator().manual_seed(2)).expand(3, 4, D).clone()
    x[:, 1:] *= torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1)
    z = sae.encode(x)
    for b in range(3):
        for p in range(4):
            torch.testing.assert_close(z[b, p], sae.encode(x[b, p]))


def test_loaded_saes_are_in_eval_mode_without_gradients(tmp_path):
    sae = _perturbed(_cfg("jumprelu"))
    loaded = load_sae(save_sae(sae, tmp_path / "j"))
    assert not loaded.training and not loaded.W_dec.requires_grad
    assert not any(p.requires_grad for p in loaded.parameters())
    z = loaded.encode(torch.randn(4, D))
    assert not z.requires_grad and z.grad_fn is None  # no graph is built for a loaded SAE


def test_to_changes_dtype_and_the_config_says_so(tmp_path):
    sae = load_sae(save_sae(_perturbed(_cfg("topk")), tmp_path / "t"))
    x = torch.randn(3, D)
    ref = sae(x)
    sae.to(torch.float64)
    assert sae.dtype == torch.float64 and sae.cfg.dtype == "float64" and sae.W_enc.dtype == torch.float64
    out = sae(x)  # the input is cast to the SAE's dtype, as SAELens does
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-5, rtol=1e-5)


def test_hook_points_and_the_error_term():
    sae = _perturbed(_cfg("topk"), seed=5)
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(3))
    out, cache = sae.run_with_cache(x)
    assert set(cache) == {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
                          "hook_sae_output"}  # fmt: skip
    torch.testing.assert_close(cache["hook_sae_acts_post"], sae.encode(x))
    torch.testing.assert_close(out, sae.decode(sae.encode(x)))
    sae.use_error_term = True
    out, cache = sae.run_with_cache(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)  # recons + (x − recons): the input itself
    torch.testing.assert_close(cache["hook_sae_error"], x - cache["hook_sae_recons"], atol=1e-6, rtol=1e-6)

    # a hook on the latents edits the output by exactly that latent's decoder direction
    def double_3(z, hook):
        assert hook.name == "hook_sae_acts_post"
        z = z.clone()
        z[..., 3] = z[..., 3] + 1.5
        return z

    edited = sae.run_with_hooks(x, [("hook_sae_acts_post", double_3)])
    torch.testing.assert_close(edited - x, 1.5 * sae.W_dec[3].expand_as(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(SuperpositionError, match="not an SAE hook point"):
        sae.run_with_hooks(x, [("hook_sae_acts", double_3)])


def test_hook_z_input_is_flattened_as_saelens_does():
    sae = _perturbed(_cfg("standard", hook_name="blocks.1.attn.hook_z"))
    z4 = torch.randn(2, 3, 4, 3)  # (batch, pos, heads, d_head): 4 · 3 = d_in
    torch.testing.assert_close(sae.encode(z4), sae.encode(z4.flatten(-2)))
    assert sae.cfg.reshape_activations == "hook_z"


def test_config_reads_as_saelens_5_and_6(tmp_path):
    cfg = _cfg("topk", hook_name="blocks.6.hook_resid_post", model_name="smollm2-135m-instruct")
    sae = load_sae(save_sae(_perturbed(cfg), tmp_path / "s", extra_cfg={"context_size": 128}))
    assert sae.cfg.hook_name == sae.cfg.metadata.hook_name == "blocks.6.hook_resid_post"
    assert sae.cfg.metadata.model_name == "smollm2-135m-instruct" and sae.cfg.metadata.context_size == 128
    assert sae.cfg.metadata.hook_head_index is None and sae.cfg.metadata.not_a_key is None
    assert sae.cfg.architecture() == "topk" and sae.cfg.k == 4
    assert sae.cfg.to_dict()["d_sae"] == M
    assert repr(sae) == "SAE(topk, d_in=12, d_sae=48, k=4, hook_name='blocks.6.hook_resid_post')"


@pytest.mark.parametrize("arch", SAE_ARCHS)
def test_saelens_style_code_runs_unchanged_and_computes_what_the_weights_say(arch, tmp_path):
    sae = _perturbed(_cfg(arch), seed=7)
    folder = save_sae(sae, tmp_path / arch)
    g = torch.Generator().manual_seed(9)
    x, W_U = torch.randn(2, 6, D, generator=g), torch.randn(D, 20, generator=g)
    out = snippets(SAE, str(folder), x, W_U)
    W_dec, W_enc = sae.W_dec.detach(), sae.W_enc.detach()
    z = sae.batched.encode(x.reshape(-1, 1, D))[:, 0].reshape(2, 6, M)  # the batched form, by hand
    torch.testing.assert_close(out["feature_acts"], z)
    torch.testing.assert_close(out["recons"], z @ W_dec + sae.b_dec, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["direction"], W_dec[7])
    torch.testing.assert_close(out["encoder_column"], W_enc[:, 7])
    torch.testing.assert_close(out["decoder_norms"], W_dec.norm(dim=-1))
    torch.testing.assert_close(out["logit_lens"], W_dec @ W_U)
    cos = F.cosine_similarity(W_dec.unsqueeze(1), W_dec.unsqueeze(0), dim=-1)
    torch.testing.assert_close(out["cosine_sims"], cos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["l0"], (z > 0).float().sum(-1))
    assert out["shape"].tolist() == [D, M, D, M, M, D]


def test_a_new_sae_trains_through_the_one_trainer():
    source = SyntheticDictionary(n_features=32, d=D, mean_l0=2, seed=0)
    sae = SAE(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=2), torch.Generator().manual_seed(0))
    before = sae.W_dec.detach().clone()
    SAETrainer(sae, source, SAETrainConfig(steps=30, batch_size=256, lr=5e-3)).train(progress=False)
    assert sae.W_dec.shape == (M, D) and not torch.equal(sae.W_dec.detach(), before)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(M), atol=1e-4)


def test_batched_saes_are_refused_and_the_batched_form_stays_available():
    batched = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=2, n_instances=3))
    with pytest.raises(SuperpositionError, match="holds one SAE; this has 3 instances"):
        SAE.wrap(batched)
    one = SAE(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=2))
    assert one.batched.W_dec.shape == (1, M, D)


def test_the_package_exports_the_notebook_names(tmp_path):
    folder = save_sae(_perturbed(_cfg("topk")), tmp_path / "t")
    sae = sp.load_sae(folder)
    assert isinstance(sae, sp.SAE) and sae.W_dec.shape == (M, D)
    with pytest.raises(SuperpositionError, match="not in the release table"):
        sp.load_sae("no-such-release", "layer_1")
