"""benchmarks/gpu_check.sh rehearses on the CPU (--dry-run): every step it takes on a CUDA machine
runs, and it prints its one table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_and_prints_its_table():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        capture_output=True, text=True, timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("GPU check on cpu")
    tests = next(line for line in lines if line.startswith("tests marked gpu"))
    assert "passed" in tests and "failed" not in tests and "skipped" not in tests
    for bench in ("topk_sae", "lm_sae", "attribution"):
        row = next(line for line in lines if line.startswith(bench))
        assert "failed" not in row
    assert "train_tokens_per_s" in done.stdout and "seconds" in done.stdout
