"""train-sae on several processes (torchrun's launcher, gloo on CPU) against one process, on a tiny
random Llama of 3 layers (the code paths, not a trained model's knowledge, are what is tested):
data-parallel and hook-parallel runs end with the same SAEs, shares of uneven size do not deadlock,
a failing rank stops every rank with a one-line error, a killed run resumes (with the same or
another number of ranks) to the same SAE, and two torchrun "nodes" on localhost work."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from superposition.cli import main
from superposition.sae import checkpoint
from tests import forked
from tests.conftest import make_tiny_llama

pytestmark = pytest.mark.alone  # several processes at once: make test runs these after the rest

# 3 sequences per buffer (ranks get 2 and 1) and 96-token batches (48 rows each): uneven shares
UNEVEN = [
    "hook_name=blocks.0.hook_resid_post", "context_size=32", "batch_size_tokens=96", "training_tokens=960",
    "n_batches_in_buffer=1", "model_batch_size=8", "expansion_factor=2", "k=8", "eval_sequences=4",
    "lr_warm_up_steps=2", "log_every=1", "tensorboard=false",
]  # fmt: skip
HOOKS = ["hook_name=blocks.{0,1,2}.hook_resid_post", *UNEVEN[1:]]


@pytest.fixture(scope="module", autouse=True)
def _tiny_model(tmp_path_factory):
    """Every run of this module reads a 3-layer random Llama of width 64 (UNEVEN and HOOKS name it)."""
    folder = make_tiny_llama(tmp_path_factory.mktemp("dist-model") / "llama3", layers=3)
    for values in (UNEVEN, HOOKS):
        values.append(f"model_name={folder}")
    yield
    for values in (UNEVEN, HOOKS):
        values.pop()


def _sets(values):
    return [a for s in values for a in ("--set", s)]


def _cmd(out, values, *extra):
    return [sys.executable, "-m", "superposition", "train-sae", "--out", str(out), *extra, *_sets(values)]


def _run(cmd, env=None, timeout=300):
    """`superposition train-sae ...` (cmd as _cmd makes it) in a process of its own, forked without
    3 s of imports (tests/forked.py); --nproc's ranks are fresh interpreters all the same."""
    done = forked.run(cmd[3:], env=env, timeout=timeout)
    return done.returncode, done.stderr


def _weights(folder):
    return load_file(str(folder / "sae_weights.safetensors"))


def _assert_same(a, b):
    """Equal to float tolerance: sums over ranks add in another order, so gradients differ in the
    last bits. Adam turns an entry whose gradient is itself at that level into a step of about
    ±lr either way, so a handful of entries (here 2-3 of 663,552) may differ by up to 2·lr per step;
    every other entry agrees within 1e-5."""
    for key in a:
        diff = (a[key] - b[key]).abs()
        assert float(diff.max()) < 2e-3, key
        assert int((diff > 1e-5).sum()) <= max(3, diff.numel() // 10_000), key


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "single"
    assert main(["train-sae", "--out", str(out), *_sets(UNEVEN)]) == 0
    return out


def test_two_processes_train_the_sae_of_one_process_with_uneven_shares(tmp_path, single):
    code, err = _run(_cmd(tmp_path / "dp", UNEVEN, "--nproc", "2"))
    assert code == 0, err[-2000:]
    _assert_same(_weights(single / "sae"), _weights(tmp_path / "dp" / "sae"))
    s = json.loads((tmp_path / "dp" / "summary.json").read_text())
    assert s["processes"] == 2 and s["parallel"] == "data" and s["train_steps"] == 10
    # both ranks ran the model, each on its share: together the tokens of one process
    assert s["model_tokens_run"] == json.loads((single / "summary.json").read_text())["model_tokens_run"]
    rows = [json.loads(x) for x in (tmp_path / "dp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10))


def test_hook_parallel_ranks_train_the_sae_of_one_process(tmp_path):
    assert main(["train-sae", "--out", str(tmp_path / "one"), *_sets(HOOKS)]) == 0
    code, err = _run(_cmd(tmp_path / "hp", [*HOOKS, "parallel=hooks"], "--nproc", "2"))
    assert code == 0, err[-2000:]
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(3)]
    for hook in hooks:
        _assert_same(_weights(tmp_path / "one" / "saes" / hook), _weights(tmp_path / "hp" / "saes" / hook))
        cfg = json.loads((tmp_path / "hp" / "saes" / hook / "cfg.json").read_text())
        assert cfg["hook_name"] == hook and cfg["metadata"]["hook_name"] == hook
    s = json.loads((tmp_path / "hp" / "summary.json").read_text())
    assert list(s["hooks"]) == hooks and all(0 < s["hooks"][h]["token_likeness"] <= 1 for h in hooks)
    # rank 0 trained hooks 0 and 2, rank 1 hook 1: each logged its own
    assert {
        json.loads(x)["hook_name"] for x in (tmp_path / "hp" / "log.rank1.jsonl").read_text().splitlines()
    } == {hooks[1]}


def test_a_failing_rank_stops_every_rank_with_one_line(tmp_path):
    # on SmolLM2: with the tiny model rank 0 can finish its part before the agent stops it, and then
    # it has no collective to fail in and says nothing (about one run in three)
    smol = [v for v in UNEVEN if not v.startswith("model_name=")]
    started = time.monotonic()
    code, err = _run(_cmd(tmp_path / "f", smol, "--nproc", "2"), env={"SUPERPOSITION_TEST_FAIL_RANK": "1"})
    assert code == 2 and time.monotonic() - started < 120
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("superposition: error:")]
    assert any("rank 1: failing on purpose" in e for e in errors), err[-2000:]
    assert any(
        e.startswith("superposition: error: rank 0:") and "another rank stopped" in e for e in errors
    ), err
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())  # nothing half-written


def test_bad_distributed_input_is_one_line(tmp_path, capsys):
    # torchrun's variables without torchrun
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run(
        _cmd(tmp_path / "v", UNEVEN), capture_output=True, text=True, env={**env, "RANK": "0"}
    )
    assert done.returncode == 2 and "torchrun: RANK set but not WORLD_SIZE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # more ranks than the sequences of a buffer
    code, err = _run(
        _cmd(tmp_path / "r", [*UNEVEN, "batch_size_tokens=32", "training_tokens=320"], "--nproc", "2")
    )
    assert code == 2 and "nproc: 2 ranks but a buffer holds 1 sequences" in err and "Traceback" not in err
    # a glob that matches no hook point
    assert (
        main(
            ["train-sae", "--out", str(tmp_path / "g"), *_sets([*UNEVEN, "hook_name=blocks.*.hook_nothing"])]
        )
        == 2
    )
    assert "hook_name 'blocks.*.hook_nothing': matches no hook point" in capsys.readouterr().err
    # hook-parallel needs several hooks
    code, err = _run(_cmd(tmp_path / "h", [*UNEVEN, "parallel=hooks"], "--nproc", "2"))
    assert code == 2 and "parallel: hooks shares the hooks of a run over the ranks" in err
    assert not any(p.exists() for p in (tmp_path / "r", tmp_path / "g", tmp_path / "h"))


def test_hooks_of_different_widths_are_refused(tmp_path, capsys, monkeypatch):
    from superposition.lm.hooks import HookedModel

    real = HookedModel.d_in
    monkeypatch.setattr(HookedModel, "d_in", lambda self, n: 7 if "hook_z" in n else real(self, n))
    values = [*UNEVEN, "hook_name=[blocks.0.hook_resid_post, blocks.0.attn.hook_z]"]
    assert main(["train-sae", "--out", str(tmp_path / "w"), *_sets(values)]) == 2
    err = capsys.readouterr().err
    assert "must share a width (blocks.0.attn.hook_z 7, blocks.0.hook_resid_post 64)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "w").exists()


def _kill_when(proc, out, ready, timeout=240):
    """SIGKILL the launcher and every worker (torchrun's workers run in their own sessions)."""
    started = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - started < timeout:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", f"train-sae --out {out}"])
    proc.wait()
    while subprocess.run(["pgrep", "-f", f"train-sae --out {out}"], capture_output=True).returncode == 0:
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_distributed_run_resumes_to_the_same_sae(tmp_path, single):
    out = tmp_path / "k"
    env = {**os.environ, "SUPERPOSITION_TEST_PAUSE": "0.2"}
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc = subprocess.Popen(_cmd(out, [*UNEVEN, "checkpoint_every=1"], "--nproc", "2"), **quiet)
    _kill_when(proc, out, lambda: (checkpoint.latest_step(out / "checkpoint") or 0) >= 3)
    assert not (out / "sae").exists()
    # resumed on 2 ranks, killed again, finished on 1: the same SAE as the uninterrupted run
    proc = subprocess.Popen(_cmd(out, [], "--resume", "--nproc", "2"), **quiet)
    _kill_when(proc, out, lambda: (checkpoint.latest_step(out / "checkpoint") or 0) >= 6)
    code, err = _run(_cmd(out, [], "--resume"))
    assert code == 0, err[-2000:]
    _assert_same(_weights(single / "sae"), _weights(out / "sae"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_on_localhost(tmp_path, single):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node_rank",
                str(node),
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--rdzv_id",
                "two-nodes",
                "-m",
                "superposition",
                "train-sae",
                "--out",
                str(tmp_path / "n"),
                *_sets(UNEVEN),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    _assert_same(_weights(single / "sae"), _weights(tmp_path / "n" / "sae"))
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["processes"] == 2
