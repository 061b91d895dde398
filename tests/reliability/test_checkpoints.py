"""Checkpoints never tear: a damaged newest checkpoint falls back to the one before it, and a
training killed with SIGKILL at random moments (many of them inside checkpoint writes) and
resumed each time ends with weights bit-identical to an uninterrupted run."""

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from superposition.errors import SuperpositionError
from superposition.sae import checkpoint
from tests import forked
from tests.reliability.kill import kill_after

WORKER = Path(__file__).with_name("drill_worker.py")


def _tensors(seed: int) -> dict:
    return {"w": torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))}


def test_newest_checkpoint_wins_and_only_two_are_kept(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, _tensors(step), {"note": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "step-000000002", "step-000000003"]
    tensors, meta = checkpoint.load(tmp_path)
    assert meta["step"] == 3 and torch.equal(tensors["w"], _tensors(3)["w"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta", "no_state"])
def test_a_damaged_newest_checkpoint_falls_back_with_a_notice(tmp_path, capsys, damage):
    checkpoint.save(tmp_path, 1, _tensors(1), {})
    checkpoint.save(tmp_path, 2, _tensors(2), {})
    state, meta = (
        tmp_path / "step-000000002" / checkpoint.STATE,
        tmp_path / "step-000000002" / checkpoint.META,
    )
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:40])
    elif damage == "flip":
        data = bytearray(state.read_bytes())
        data[-3] ^= 0xFF
        state.write_bytes(bytes(data))
    elif damage == "no_meta":
        meta.unlink()
    else:
        state.unlink()
    tensors, loaded = checkpoint.load(tmp_path)
    assert loaded["step"] == 1 and torch.equal(tensors["w"], _tensors(1)["w"])
    err = capsys.readouterr().err
    assert (
        "step-000000002 is damaged" in err and "resuming from step-000000001" in err and err.count("\n") == 1
    )


def test_a_kill_before_the_pointer_moves_resumes_from_the_complete_newest(tmp_path):
    checkpoint.save(tmp_path, 1, _tensors(1), {})
    checkpoint.save(tmp_path, 2, _tensors(2), {})
    (tmp_path / "LATEST").write_text("step-000000001")  # as if killed just before LATEST was replaced
    (tmp_path / ".partial-step-000000003-999").mkdir()  # and an abandoned partial write
    assert checkpoint.load(tmp_path)[1]["step"] == 1  # LATEST is honoured while its checkpoint is intact
    (tmp_path / "LATEST").unlink()  # killed before the first LATEST was ever written
    assert checkpoint.load(tmp_path)[1]["step"] == 2


def test_nothing_intact_is_a_one_line_error(tmp_path):
    checkpoint.save(tmp_path, 1, _tensors(1), {})
    (tmp_path / "step-000000001" / checkpoint.STATE).write_bytes(b"garbage")
    with pytest.raises(SuperpositionError, match="no intact checkpoint .* step-000000001 is damaged") as err:
        checkpoint.load(tmp_path)
    assert "\n" not in str(err.value)


def _drill(tmp_path: Path, kills_wanted: int, seed: int, steps: int = 40) -> tuple[int, int, int]:
    """Run the worker to completion, killing it with SIGKILL `kills_wanted` times at random
    moments; return (kills, kills after training had checkpointed, kills inside a checkpoint
    write: a partial directory left, or a complete one that LATEST does not point at yet)."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.safetensors"
    rng = random.Random(seed)
    kills = landed = mid_write = 0
    for _ in range(kills_wanted + 20):
        proc = forked.start_script(WORKER, [ckpt, out, steps], env={"SUPERPOSITION_TEST_PAUSE": "0.01"})
        if kills < kills_wanted:
            # wait for the first new checkpoint of this attempt, then a random time within training
            before = checkpoint.latest_step(ckpt)
            if kill_after(proc, lambda before=before: checkpoint.latest_step(ckpt) != before, 60, 0.8, rng):
                kills += 1
                landed += checkpoint.latest_step(ckpt) is not None
                names = sorted(p.name for p in ckpt.iterdir())
                newest = [n for n in names if n.startswith("step-")][-1]
                mid_write += (
                    any(n.startswith(".partial-") for n in names) or newest != (ckpt / "LATEST").read_text()
                )
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        return kills, landed, mid_write
    raise AssertionError("the drill did not finish")


def _reference(tmp_path: Path, steps: int = 40) -> dict:
    ref = tmp_path / "ref"
    done = forked.run_script(WORKER, [ref / "ckpt", ref / "out.safetensors", steps])
    assert done.returncode == 0, done.stderr[-2000:]
    return load_file(str(ref / "out.safetensors"))


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    want = _reference(tmp_path)
    kills, landed, _ = _drill(tmp_path / "drill", kills_wanted=4, seed=0)
    assert kills == 4 and landed == 4
    _assert_identical(load_file(str(tmp_path / "drill" / "out.safetensors")), want)


@pytest.mark.slow
def test_kill_9_drill_many_times(tmp_path):
    want = _reference(tmp_path, steps=400)
    kills, landed, mid_write = _drill(tmp_path / "drill", kills_wanted=25, seed=1, steps=400)
    assert kills == 25 and landed == 25 and mid_write >= 5  # about half land inside a write
    _assert_identical(load_file(str(tmp_path / "drill" / "out.safetensors")), want)
