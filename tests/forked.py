"""`python -m superposition ARGS` in its own process, started in milliseconds instead of seconds.

A fresh interpreter spends 3 s importing torch and the CLI, and 4 s more importing transformers when
the command opens a model: most of a kill -9 drill's time went there. Here each command runs in a
process forked from a server that imported those once (multiprocessing's forkserver, one per test
process, started on first use). The child is a real process all the same: its own pid, environment,
working directory, standard streams and exit status; SIGKILL kills it and SIGTERM reaches the CLI's
handler. What it does not redo is what its imports read from the environment when they ran
(HF_HOME, HF_HUB_OFFLINE, OMP_NUM_THREADS): a test that changes those starts a real interpreter
with `subprocess` instead.

    proc = start(["train-sae", "--out", str(out)], env={"SUPERPOSITION_TEST_PAUSE": "0.05"})
    out, err = proc.communicate(timeout=300)  # like subprocess.Popen's: bytes
    done = run(["eval-sae", str(out)], cwd=tmp_path)  # like subprocess.run(capture_output=True, text=True)
    done = run_python("import superposition as sp; ...", cwd=tmp_path)  # like python -c
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

# what the server imports before it forks: the CLI and what opening a Llama or GPT-2 model imports
PRELOAD = ["tests.forked_imports"]

_context = None


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(what: str, payload, env: dict[str, str], cwd: str, out_path: str, err_path: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    # an exception is printed and exits 1, as in a fresh interpreter
    if what == "code":  # python -c CODE
        sys.argv = ["-c"]
        exec(compile(payload, "<string>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    if what == "script":  # python SCRIPT ARGS
        sys.argv = list(payload)
        runpy.run_path(payload[0], run_name="__main__")
        sys.exit(0)
    sys.argv = [sys.executable, "-m", "superposition", *payload]
    from superposition.cli import main

    status = main(payload)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status)


class Forked:
    """The part of subprocess.Popen's interface the tests use: pid, poll, wait, send_signal, kill,
    communicate, returncode."""

    def __init__(self, what: str, payload, env: dict[str, str] | None, cwd: str | Path | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="forked-")
        self._out = Path(self._dir.name) / "stdout"
        self._err = Path(self._dir.name) / "stderr"
        full_env = {**os.environ, **(env or {})}
        args = (what, payload, full_env, str(cwd or os.getcwd()), str(self._out), str(self._err))
        self._proc = _ctx().Process(target=_child, args=args)
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(["superposition"], timeout)
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self._proc.kill()

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        self.wait(timeout)
        return self._out.read_bytes(), self._err.read_bytes()


def start(argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Forked:
    """Start `superposition ARGV` (env: variables added to this process's environment)."""
    return Forked("cli", list(argv), env, cwd)


def start_script(script: str | Path, args: list, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> Forked:  # fmt: skip
    """Start `python SCRIPT ARGS`."""
    return Forked("script", [str(script), *map(str, args)], env, cwd)


def _finish(proc: Forked, timeout: float | None, args) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def run(argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Run `superposition ARGV` to the end; stdout and stderr as text."""
    return _finish(start(argv, env, cwd), timeout, argv)


def run_python(code: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -c CODE` to the end; stdout and stderr as text."""
    return _finish(Forked("code", code, env, cwd), timeout, ["python", "-c", code])


def run_script(script: str | Path, args: list, env: dict[str, str] | None = None,
               cwd: str | Path | None = None, timeout: float | None = None):  # fmt: skip
    """`python SCRIPT ARGS` to the end; stdout and stderr as text."""
    return _finish(start_script(script, args, env, cwd), timeout, ["python", str(script), *map(str, args)])
