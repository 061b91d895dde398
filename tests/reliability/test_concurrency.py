"""One writer per target: a second run on the same --out (or the same activation cache) fails at
once with one line naming the first's process; a lock dies with its holder, even by kill -9."""

import json
import os
import signal
import time

import pytest

from superposition.cli import main
from superposition.errors import SuperpositionError
from tests import forked
from tests.conftest import TINY


def _start(*argv):
    return forked.start(list(argv))  # a process of its own, without 3-7 s of imports


def _wait_for_lock(out, proc, timeout=60.0) -> int:
    lock = out.parent / f".{out.name}.lock"
    started = time.monotonic()
    while time.monotonic() - started < timeout and proc.poll() is None:
        if lock.is_file() and lock.read_text().strip():
            return int(lock.read_text())
        time.sleep(0.01)
    raise AssertionError(f"the first process never took the lock ({proc.poll()})")


@pytest.mark.parametrize("command", ["run", "train-sae"])
def test_a_second_writer_of_the_same_out_fails_naming_the_first(tmp_path, capsys, command):
    out = tmp_path / "run"
    if command == "run":
        argv = ["run", "intro", "--quick", "--out", str(out), "--set", "steps=1500"]
    else:
        argv = [
            "train-sae",
            "--out",
            str(out),
            *[a for s in TINY for a in ("--set", s)],
            "--set",
            "tensorboard=false",
        ]
    first = _start(*argv)
    pid = _wait_for_lock(out, first)
    assert pid == first.pid
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"another superposition process (pid {first.pid}) is writing it" in err
    assert err.count("\n") == 1
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err.decode()[-2000:]
    assert json.loads((out / "summary.json").read_text())  # the first run is whole, untouched by the second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial directory, no lock left


def test_a_lock_dies_with_its_holder(tmp_path, capsys):
    out = tmp_path / "run"
    first = _start("run", "intro", "--quick", "--out", str(out), "--set", "steps=3000")
    _wait_for_lock(out, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".run.lock").exists() and not out.exists()  # kill -9: no clean-up ran, nothing written
    assert main(["run", "intro", "--quick", "--out", str(out), "--set", "steps=200"]) == 0
    assert (out / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the killed run's staging dir is gone too


def test_one_run_uses_an_activation_cache_at_a_time(smol, tmp_path):
    from tests.lm.test_store_evals import _store

    first = _store(smol, cache=tmp_path / "cache")
    with pytest.raises(
        SuperpositionError,
        match=rf"activation_cache .*cache: another superposition process \(pid {os.getpid()}\)",
    ):
        _store(smol, cache=tmp_path / "cache")
    first.close()
    _store(smol, cache=tmp_path / "cache").close()  # free again once the first is done
