#!/usr/bin/env bash
# The GPU check, in at most 8 minutes on one CUDA device: the tests marked `gpu` (every
# architecture's training step, the activation store, bfloat16 evaluation against float32,
# attribution, each against the CPU) and the headline benchmarks (a TopK SAE's throughput, ours and
# SAELens's where sae_lens is installed; a language-model SAE run's tokens per second; one
# attribution graph's seconds), then one table. Record its figures in docs/benchmarks.md with the
# card's name.
#
#   benchmarks/gpu_check.sh            on a CUDA machine
#   benchmarks/gpu_check.sh --dry-run  the same steps on the CPU at the smallest settings (CI runs it)
#
# PYTHON picks the interpreter (default: .venv/bin/python if there is one, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
DEVICE=cuda; SMALL=""; TESTS=(tests/test_gpu.py)
if [ "${1:-}" = "--dry-run" ]; then
    DEVICE=cpu; SMALL=--small
    export SUPERPOSITION_GPU_TEST_DEVICE=cpu
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here; run it with --dry-run for the CPU rehearsal" >&2
    exit 2
fi
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
START=$SECONDS
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m gpu "${TESTS[@]}" > "$LOG/tests.txt" 2>&1
TESTS_RC=$?
timeout 420 "$PY" benchmarks/gpu_bench.py --device "$DEVICE" $SMALL > "$LOG/bench.jsonl" 2> "$LOG/bench.err"
BENCH_RC=$?
"$PY" - "$LOG" "$TESTS_RC" "$BENCH_RC" "$((SECONDS - START))" <<'PYEOF'
import json, re, sys
from pathlib import Path
log, tests_rc, bench_rc, secs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tail = (log / "tests.txt").read_text().strip().splitlines()
summary = next((l for l in reversed(tail) if re.search(r"\d+ (passed|failed|skipped|error)", l)), "no result")
rows = [json.loads(l) for l in (log / "bench.jsonl").read_text().splitlines() if l.startswith("{")]
head = rows[0] if rows and "device" in rows[0] else {"device": "?", "torch": "?"}
print(f"GPU check on {head['device']} (torch {head['torch']}), {secs} s")
print(f"{'check':<26}{'result':<60}")
print(f"{'tests marked gpu':<26}{summary}")
for r in rows[1:]:
    rest = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("bench", "what"))
    print(f"{r['bench']:<26}{r['what']}: {rest}")
if bench_rc != 0:
    err = (log / "bench.err").read_text().strip().splitlines()
    print(f"{'benchmarks':<26}failed (exit {bench_rc}): {err[-1] if err else 'no output'}")
if tests_rc != 0:
    print("\n".join(tail[-15:]))
sys.exit(1 if tests_rc or bench_rc else 0)
PYEOF
