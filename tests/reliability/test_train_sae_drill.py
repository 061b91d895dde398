"""`train-sae` killed with SIGKILL at random moments (inside checkpoint and activation-cache
writes too) and resumed each time ends with the SAE of an uninterrupted run, bit for bit; a
damaged cache shard is rebuilt, never read."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from superposition.sae import checkpoint
from tests.conftest import TINY
from tests.reliability.kill import kill_after


def _args(out, cache):
    sets = [*TINY, "checkpoint_every=1", f"activation_cache={cache}", "tensorboard=false"]
    return [
        sys.executable,
        "-m",
        "superposition",
        "train-sae",
        "--out",
        str(out),
        *[a for s in sets for a in ("--set", s)],
    ]


@pytest.mark.slow
def test_train_sae_killed_at_random_moments_resumes_to_the_same_sae(tmp_path, tiny_run):
    out, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "SUPERPOSITION_TEST_PAUSE": "0.05"}
    rng = random.Random(0)
    kills = 0
    for _ in range(30):
        fresh = not (out / "config.json").is_file()
        cmd = (
            _args(out, cache)
            if fresh
            else [sys.executable, "-m", "superposition", "train-sae", "--out", str(out), "--resume"]
        )
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 6:
            before = checkpoint.latest_step(out / "checkpoint")

            def ready(before=before, early=kills < 2):
                shards = cache.is_dir() and any(cache.glob("data-*.arrow"))
                return checkpoint.latest_step(out / "checkpoint") != before or (early and shards)

            if kill_after(proc, ready, 120, 0.6, rng):
                kills += 1
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        break
    assert kills == 6
    want = load_file(str(tiny_run / "sae" / "sae_weights.safetensors"))
    got = load_file(str(out / "sae" / "sae_weights.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(10))  # rows of steps that ran again after a kill are not repeated
    record = json.loads((cache / "superposition_cache.json").read_text())
    assert record["files"] and not list(cache.glob(".tmp-*"))


def test_a_damaged_cache_shard_is_rebuilt_not_read(smol, tmp_path, capsys):
    from tests.lm.test_store_evals import _store

    first = _store(smol, cache=tmp_path / "cache")
    x = first.sample(400)
    first.close()
    shard = sorted((tmp_path / "cache").glob("data-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x00" * 8  # the tail of the last activation: still a valid file, wrong numbers
    shard.write_bytes(bytes(data))
    again = _store(smol, cache=tmp_path / "cache")
    assert torch.equal(again.sample(400), x)  # the same activations, recomputed
    again.close()
    assert (
        "is damaged (it does not match its checksum); computing its activations again"
        in capsys.readouterr().err
    )
    again = _store(smol, cache=tmp_path / "cache")  # and it was written again: read, not recomputed
    assert torch.equal(again.sample(400), x) and again.model_tokens == 0
    again.close()


@pytest.mark.parametrize("damage", ["torn", "missing"])
def test_a_torn_or_missing_cache_shard_is_rebuilt_not_refused(smol, tmp_path, capsys, damage):
    from tests.lm.test_store_evals import _store

    first = _store(smol, cache=tmp_path / "cache")
    x = first.sample(400)
    first.close()
    shard = sorted((tmp_path / "cache").glob("data-*.arrow"))[0]
    if damage == "torn":  # what a full disk or a copy cut short leaves: not an Arrow file any more
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        shard.unlink()
    again = _store(smol, cache=tmp_path / "cache")
    assert torch.equal(again.sample(400), x)  # the same activations, recomputed
    again.close()
    assert "is damaged (unreadable); computing its activations again" in capsys.readouterr().err
    again = _store(smol, cache=tmp_path / "cache")  # written again: read, not recomputed
    assert torch.equal(again.sample(400), x) and again.model_tokens == 0
    again.close()
