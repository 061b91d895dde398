"""The peer libraries the benchmarks compare against, each in its own virtual environment under
.bench-envs/ (made on first use, never a dependency of this package):

    saelens     sae-lens 6.54.12
    sparsify    eai-sparsify 1.3.3 (EleutherAI; runs on CPU with its eager path)
    dictlearn   dictionary-learning 0.1.0 (its model classes; installed without nnsight)
    circuit-tracer  circuit-tracer 0.5.0 with nnsight 0.6.3 (0.8 breaks its import) and
                transformers 4.57 (its pin), whose NNsight backend runs offline on a local folder;
                also where dictionary_learning's crosscoder classes are run from a checkout
    sae-bench   sae-bench 0.6.0 (SAEBench's evaluation code, fed our activations offline)

`python_of(name)` returns the environment's interpreter, making it if needed; when it cannot be
made, the benchmark stops with a non-zero exit and one line naming the peer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / ".bench-envs"
TORCH = "torch==2.13.0"  # the CPU build, as this project's (a peer must not pull the CUDA one)
PEERS = {
    "saelens": [[TORCH, "sae-lens==6.54.12"]],
    "sparsify": [[TORCH, "eai-sparsify==1.3.3"]],
    "dictlearn": [[TORCH, "einops", "numpy", "safetensors"], ["--no-deps", "dictionary-learning==0.1.0"]],
    # with what dictionary_learning's fork imports (its classes are read from a checkout: not on PyPI)
    "circuit-tracer": [[TORCH, "circuit-tracer==0.5.0", "nnsight==0.6.3", "datasets", "zstandard"]],
    # SAEBench's metric code (its functions fed offline: activations and probes, no dataset downloads)
    # (torchvision, which one of its dependencies pulls in, is built for another torch: removed)
    "sae-bench": [[TORCH, "sae-bench==0.6.0"], ["uninstall", "-y", "torchvision"]],
}


def python_of(name: str) -> Path:
    env = ENVS / name
    python = env / "bin" / "python"
    if python.exists() and (env / ".complete").exists():
        return python
    print(f"making the {name} environment in {env} (first run only) ...", flush=True)
    steps = [[sys.executable, "-m", "venv", str(env)]]
    steps += [
        [str(python), "-m", "pip", "uninstall", "-q", *pkgs[1:]]
        if pkgs[0] == "uninstall"
        else [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pkgs]
        for pkgs in PEERS[name]
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (
                [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line] or ["?"]
            )[-1]
            raise SystemExit(f"benchmark: cannot make the {name} environment ({' '.join(cmd[-2:])}: {last})")
    (env / ".complete").touch()
    return python


def run_in(name: str, *args: str) -> str:
    """Run a worker script in the peer's environment; its stdout, or one line and exit 1."""
    done = subprocess.run([str(python_of(name)), *args], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(
            f"benchmark: the {name} worker {Path(args[0]).name} {' '.join(args[1:2])} failed: {last}"
        )
    return done.stdout
