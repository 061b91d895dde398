"""Cross-layer transcoders and crosscoders train through the one trainer: a run killed with SIGKILL
(inside checkpoint writes too) and resumed ends with the weights of an unbroken run, bit for bit, and
its log has each step once; a crosscoder on two processes trains the crosscoder of one. On tiny
random Llamas (tests/conftest.make_tiny_llama): these need the code paths, not a trained model."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from superposition.cli import main
from superposition.sae import checkpoint
from tests import forked
from tests.conftest import make_tiny_llama
from tests.reliability.kill import kill_after

BASE = ["context_size=32", "batch_size_tokens=64", "n_batches_in_buffer=2", "model_batch_size=8",
        "eval_sequences=2", "tensorboard=false", "checkpoint_every=1", "training_tokens=640", "log_every=1"]  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return make_tiny_llama(root / "a", seed=0), make_tiny_llama(root / "b", seed=1)


def _sets(kind: str, pair) -> list[str]:
    a, b = pair
    own = {
        "clt": ["architecture=clt", "hook_name=blocks.*.mlp", "d_sae=32", "k=4"],
        "crosscoder": [
            "architecture=crosscoder",
            f"model_name_b={b}",
            "hook_name=blocks.1.hook_resid_post",
            "d_sae=64",
            "k=4",
        ],  # fmt: skip
        "l1-crosscoder": [
            "architecture=crosscoder",
            "crosscoder_sparsity=l1",
            "hook_name=blocks.{0,1}.hook_resid_post",
            "d_sae=64",
        ],  # fmt: skip
    }[kind]
    return [f"model_name={a}", *BASE, *own]


def _argv(out, sets=(), *extra):
    """`superposition train-sae` of a run in `out` (the command line without `superposition`)."""
    return ["train-sae", "--out", str(out), *extra, *[a for s in sets for a in ("--set", s)]]


def _weights(out) -> dict:
    files = sorted((out / "clt").glob("*.safetensors")) or [out / "crosscoder" / "crosscoder.safetensors"]
    return {f"{p.name}:{k}": v for p in files for k, v in load_file(str(p)).items()}


@pytest.mark.parametrize("kind", ["clt", "crosscoder", "l1-crosscoder"])
def test_a_killed_run_resumes_to_the_weights_of_an_unbroken_one(kind, pair, tmp_path):
    sets = _sets(kind, pair)
    assert main(_argv(tmp_path / "ref", sets)) == 0
    want = _weights(tmp_path / "ref")
    out = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(12):
        fresh = not (out / "config.json").is_file()
        argv = _argv(out, sets) if fresh else _argv(out, (), "--resume")
        # a process of its own (SIGKILL kills it), forked without 7 s of imports
        proc = forked.start(argv, env={"SUPERPOSITION_TEST_PAUSE": "0.05"})
        if kills < 3:
            before = checkpoint.latest_step(out / "checkpoint")
            if kill_after(
                proc, lambda b=before: checkpoint.latest_step(out / "checkpoint") != b, 120, 0.3, rng
            ):
                kills += 1
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        break
    assert kills == 3
    got = _weights(out)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(10))  # the rows of steps that ran again after a kill are not repeated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_steps"] == 10


@pytest.mark.alone  # two training processes at once: make test runs it after the rest
def test_a_crosscoder_on_two_processes_trains_the_crosscoder_of_one(pair, tmp_path):
    """L1 sparsity: BatchTopK chooses over each rank's share of the batch (as BatchTopK SAEs do under
    torchrun, docs/language-models.md), so only a per-token sparsity can equal one process's steps."""
    sets = [*_sets("crosscoder", pair), "crosscoder_sparsity=l1"]
    assert main(_argv(tmp_path / "one", sets)) == 0
    done = forked.run(_argv(tmp_path / "two", sets, "--nproc", "2"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in one:  # sums over ranks add in another order: float tolerance, as for SAEs (test_distributed)
        diff = (one[key] - two[key]).abs()
        assert float(diff.max()) < 2e-3, key
        assert int((diff > 1e-5).sum()) <= max(3, diff.numel() // 10_000), key
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["processes"] == 2 and s["parallel"] == "data"
    assert (
        s["model_tokens_run"]
        == json.loads((tmp_path / "one" / "summary.json").read_text())["model_tokens_run"]
    )


def test_train_sae_from_python_returns_every_kind_of_run(pair, tmp_path):
    import superposition as sp
    from superposition.sae.clt import CrossLayerTranscoder
    from superposition.sae.crosscoder import Crosscoder

    keys = {
        s.split("=", 1)[0]: s.split("=", 1)[1] for s in BASE if not s.startswith(("checkpoint", "log_every"))
    }
    keys = {k: (v == "true" if v in ("true", "false") else int(v)) for k, v in keys.items()}
    a, b = pair
    clt = sp.train_sae(out=tmp_path / "clt", model_name=str(a), architecture="clt", hook_name="blocks.*.mlp",
                       d_sae=32, k=4, **keys)  # fmt: skip
    assert isinstance(clt.dictionary, CrossLayerTranscoder) and clt.dictionary.n_layers == 2
    assert clt.sae is None and clt.summary["architecture"] == "clt"
    cc = sp.train_sae(out=tmp_path / "cc", model_name=str(a), model_name_b=str(b), architecture="crosscoder",
                      hook_name="blocks.1.hook_resid_post", d_sae=64, k=4, **keys)  # fmt: skip
    assert isinstance(cc.dictionary, Crosscoder) and sorted(cc.saes) == ["model_a", "model_b"]
    multi = sp.train_sae(out=tmp_path / "m", model_name=str(a), hook_name="blocks.{0,1}.hook_resid_post", k=4,
                         **keys)  # fmt: skip
    assert sorted(multi.saes) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert multi.saes["blocks.1.hook_resid_post"].W_dec.shape == (512, 64)
    one = sp.train_sae(
        out=tmp_path / "one", model_name=str(a), hook_name="blocks.1.hook_resid_post", k=4, **keys
    )
    assert one.sae.W_enc.shape == (64, 512) and one.dictionary is None
