"""Save/load (our layout and SAELens's), and the trainer's machinery."""

import json

import pytest
import torch
from safetensors.torch import save_file

from superposition.errors import SuperpositionError
from superposition.sae import ARCHITECTURES, SAEConfig, checkpoint, make_sae
from superposition.sae.io import load_sae, save_instances, save_sae
from superposition.sae.sources import SyntheticDictionary
from superposition.sae.train import SAETrainConfig, SAETrainer, TrainingDiverged, geometric_median, lr_at

ARCHS = {
    name: ({cls.l0_key: 3} if cls.l0_key else {}) for name, cls in ARCHITECTURES.items() if not cls.transcodes
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_round_trip_every_architecture(tmp_path, arch):
    sae = make_sae(
        SAEConfig(architecture=arch, d_in=6, d_sae=16, n_instances=2, **ARCHS[arch]),
        torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    if hasattr(sae, "threshold") and not hasattr(sae, "log_threshold"):
        sae.threshold.fill_(0.2)
    sae.eval()
    folders = save_instances(sae, tmp_path, ["a", "b"])
    x = torch.randn(32, 2, 6)
    for i, folder in enumerate(folders):
        cfg = json.loads((folder / "cfg.json").read_text())
        # SAELens's cfg.json: BatchTopK and Matryoshka are JumpReLU SAEs to SAELens (its inference form)
        assert cfg["superposition_architecture"] == arch and cfg["d_in"] == 6 and cfg["d_sae"] == 16
        assert cfg["architecture"] == {"batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(arch, arch)
        loaded = load_sae(folder)
        xi = x[:, i : i + 1]
        with torch.no_grad():
            want = sae(x)[:, i : i + 1]
            assert torch.allclose(loaded(xi), want, atol=1e-5)


def test_loads_a_saelens_jumprelu_folder(tmp_path):
    d_in, d_sae = 4, 6
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_enc": torch.zeros(d_sae),
        "b_dec": torch.zeros(d_in),
        "threshold": torch.full((d_sae,), 0.5),
    }
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "jumprelu",
                "d_in": d_in,
                "d_sae": d_sae,
                "dtype": "float32",
                "device": "cpu",
                "model_name": "gpt2",
                "hook_name": "blocks.8.hook_resid_pre",
                "apply_b_dec_to_input": True,
            }
        )
    )
    sae = load_sae(tmp_path)
    assert sae.cfg.hook_name == "blocks.8.hook_resid_pre"
    x = torch.randn(10, 1, d_in, generator=g)
    pre = x[:, 0] @ t["W_enc"]
    want = pre * (pre > 0.5)
    assert torch.allclose(sae.encode(x)[:, 0], want, atol=1e-5)
    assert torch.allclose(sae.decode(sae.encode(x))[:, 0], want @ t["W_dec"], atol=1e-5)


def test_loads_saelens_topk_with_k_in_activation_kwargs(tmp_path):
    t = {
        "W_enc": torch.randn(4, 8),
        "W_dec": torch.randn(8, 4),
        "b_enc": torch.zeros(8),
        "b_dec": torch.zeros(4),
    }
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(
        json.dumps({"architecture": "topk", "d_in": 4, "d_sae": 8, "activation_fn_kwargs": {"k": 2}})
    )
    sae = load_sae(tmp_path)
    assert sae.cfg.k == 2 and int((sae.encode(torch.randn(5, 1, 4)) != 0).sum(-1).max()) <= 2


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_cfg", "cfg.json: missing"),
        ("no_weights", "sae_weights.safetensors: missing"),
        ("corrupt", "not a readable safetensors file"),
        ("bad_json", "not valid JSON"),
        ("unknown_arch", "unknown architecture 'transcoder-x'"),
        ("missing_tensor", "missing tensor"),
        ("bad_k", "k: must be at most d_sae"),
    ],
)
def test_bad_files(tmp_path, case, match):
    sae = make_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2))
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    if case == "no_cfg":
        (tmp_path / "cfg.json").unlink()
    elif case == "no_weights":
        (tmp_path / "sae_weights.safetensors").unlink()
    elif case == "corrupt":
        (tmp_path / "sae_weights.safetensors").write_bytes(b"\x00garbage" * 10)
    elif case == "bad_json":
        (tmp_path / "cfg.json").write_text("{not json")
    elif case == "unknown_arch":
        (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "transcoder-x"}))
    elif case == "missing_tensor":
        save_file({"W_enc": torch.zeros(4, 8)}, str(tmp_path / "sae_weights.safetensors"))
    elif case == "bad_k":
        (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "k": 99}))
    with pytest.raises(SuperpositionError, match=match) as err:
        load_sae(tmp_path)
    assert "\n" not in str(err.value)


def test_geometric_median_and_lr_schedule():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0]).view(5, 1, 1)
    assert geometric_median(x).item() == pytest.approx(2.0, abs=1e-3)  # the mean would be 21.2
    cfg = SAETrainConfig(steps=100, lr=1.0, lr_warm_up_steps=10, lr_decay_steps=20)
    assert [lr_at(s, cfg) for s in (0, 9, 50, 80, 90, 99)] == pytest.approx([0.1, 1.0, 1.0, 1.0, 0.5, 0.05])


def _trainer(tmp_path=None, steps=40, arch="topk", **kw):
    src = SyntheticDictionary(n_features=64, d=16, mean_l0=3, seed=0)
    sae = make_sae(
        SAEConfig(architecture=arch, d_in=16, d_sae=64, k=3, n_instances=2), torch.Generator().manual_seed(0)
    )
    cfg = SAETrainConfig(steps=steps, batch_size=64, lr=1e-2, seed=3, **kw)
    return SAETrainer(sae, src, cfg, checkpoint_dir=tmp_path)


def test_interrupted_run_resumes_exactly(tmp_path):
    settings = dict(
        steps=40, dead_feature_window=8, resample="anthropic", feature_sampling_window=15, lr_decay_steps=10
    )
    full = _trainer(**settings)
    full.train(progress=False)

    first = _trainer(tmp_path, **settings)
    real = first.source.sample

    def interrupt_at_23(n, gen=None, out=None):
        if first.step == 23:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return real(n, gen)

    first.source.sample = interrupt_at_23
    with pytest.raises(KeyboardInterrupt):
        first.train(progress=False)
    assert checkpoint.latest_step(tmp_path) == 23

    resumed = _trainer(tmp_path, **settings)
    resumed.load_checkpoint()
    resumed.train(progress=False)
    for (name, a), b in zip(full.sae.state_dict().items(), resumed.sae.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history.terms["mse"] == full.history.terms["mse"]


def test_nan_stops_with_step_and_term(tmp_path):
    tr = _trainer(tmp_path, steps=30, checkpoint_every=5)
    real = tr.source.sample

    def poisoned(n, gen=None, out=None):
        x = real(n, gen)
        if tr.step == 12:
            x[0, 0] = float("nan")
        return x

    tr.source.sample = poisoned
    with pytest.raises(TrainingDiverged, match=r"diverged at step 12: loss term 'mse' is not finite") as err:
        tr.train(progress=False)
    assert "last good checkpoint" in str(err.value)
    assert checkpoint.latest_step(tmp_path) == 10


def test_normalisation_is_folded_back():
    tr = _trainer(steps=30, normalize_activations=True)
    tr.source.features *= 7.0  # activations far from unit scale
    tr.train(progress=False)
    s = tr.scale.clone()
    x = tr.source.sample(64, torch.Generator().manual_seed(9)).unsqueeze(1).expand(-1, 2, -1)
    sae = tr.sae
    sae.eval()
    with torch.no_grad():
        z_norm, xh_norm = sae.encode(x * s), sae(x * s)
        tr.fold_normalization()
        assert torch.allclose(sae.encode(x), z_norm, atol=1e-4)
        assert torch.allclose(sae(x), xh_norm / s, atol=1e-4)


def test_resampling_resets_dead_latents():
    tr = _trainer(steps=5, resample="simple", dead_feature_window=10**9 // 64)  # 10**9 examples
    tr.train(progress=False)
    tr.since_fired[0, :5] = 10**9  # pretend five latents of instance 0 are dead
    before = tr.sae.W_dec.detach().clone()
    tr.resample()
    W = tr.sae.W_dec.detach()
    assert not torch.allclose(W[0, :5], before[0, :5]) and torch.allclose(W[0, 5:], before[0, 5:])
    assert torch.allclose(W[0, :5].norm(dim=-1), torch.ones(5))
    assert (tr.sae.b_enc[0, :5] == 0).all() and (tr.since_fired[0, :5] == 0).all()
    state = tr.opt.state[tr.sae.W_dec]
    assert (state["exp_avg"][0, :5] == 0).all() and (state["exp_avg_sq"][0, :5] == 0).all()
    assert tr.history.resampled[-1] == 5


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_encoder_scale_fit_minimises_the_first_reconstruction_error(arch):
    # Unit-norm decoder rows with W_enc = W_decᵀ: k = 32 of 512 latents add up to several times ‖x‖.
    # After the fit, ‖t − c·r‖² is stationary in c at c = 1 (⟨t − r, r⟩ = 0), and the error is
    # below both the unscaled one and the error of predicting nothing.
    src = SyntheticDictionary(n_features=256, d=32, mean_l0=4, seed=0)
    cfg = SAEConfig(architecture=arch, d_in=32, d_sae=512, k=32, n_instances=2)

    def first_error(fit: bool):
        sae = make_sae(cfg, torch.Generator().manual_seed(0))
        train = SAETrainConfig(steps=1, batch_size=256, b_dec_init="mean", fit_encoder_scale=fit)
        trainer = SAETrainer(sae, src, train)
        trainer.initialise()
        x = src.sample(4096, torch.Generator().manual_seed(1)).unsqueeze(1).expand(-1, 2, -1)
        with torch.no_grad():
            r = torch.bmm(sae.initial_latents(x).transpose(0, 1), sae.W_dec).transpose(0, 1)
            t = x - sae.b_dec
        return (t - r).square().sum((0, 2)), ((t - r) * r).sum((0, 2)) / r.square().sum((0, 2)), t

    fitted, stationarity, t = first_error(True)
    unscaled, _, _ = first_error(False)
    assert stationarity.abs().max() < 0.05  # fitted on other rows of the same distribution
    assert (fitted < 0.5 * unscaled).all()
    assert (fitted < t.square().sum((0, 2))).all()


def test_encoder_scale_fit_leaves_other_architectures_alone():
    src = SyntheticDictionary(n_features=64, d=16, mean_l0=3, seed=0)
    for arch, extra in [
        ("standard", {"l1_coefficient": 1.0}),
        ("standard", {"l1_coefficient": 1.0, "tied": True}),
    ]:
        sae = make_sae(
            SAEConfig(architecture=arch, d_in=16, d_sae=64, **extra), torch.Generator().manual_seed(0)
        )
        before = sae.encoder_weight().detach().clone()
        SAETrainer(sae, src, SAETrainConfig(steps=1, batch_size=64)).initialise()
        assert torch.equal(sae.encoder_weight().detach(), before)


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_history_records_l0_and_dead_share_and_keeps_them_across_resume(tmp_path, arch):
    settings = dict(steps=30, dead_feature_window=4, checkpoint_every=10, log_every=5, arch=arch)
    tr = _trainer(tmp_path, **settings)
    real = tr.sae.loss
    seen = {}

    def spy(x, state):
        with torch.no_grad():  # the latents this step trains on, counted independently of the loss
            seen[tr.step] = (tr.sae.encode(x) != 0).sum(-1).float().mean(0).tolist()
        return real(x, state)

    tr.sae.loss = spy
    tr.train(progress=False)
    assert tr.history.steps == [0, 5, 10, 15, 20, 25, 29]
    for i, step in enumerate(tr.history.steps):
        assert tr.history.l0[i] == pytest.approx(seen[step], abs=1e-5)
    if arch == "topk":
        assert tr.history.l0[-1] == pytest.approx([3.0, 3.0])  # exactly k per example
    # read after the step's update: nothing can be dead before 4 steps' worth of examples
    assert tr.history.frac_dead[0] == [0.0, 0.0]
    final_dead = (tr.since_fired >= tr.dead_examples).float().mean(-1).tolist()
    assert tr.history.frac_dead[-1] == pytest.approx(final_dead)
    resumed = _trainer(tmp_path, **settings)
    resumed.load_checkpoint()
    assert resumed.history.l0 == tr.history.l0 and resumed.history.frac_dead == tr.history.frac_dead
