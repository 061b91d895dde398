"""Quick runs of every experiment and a tiny `train-sae`, reduced to their summary numbers, so a
refactoring can be checked to leave every output unchanged.

    python scripts/snapshot_runs.py snapshot DIR [--only intro,geometry]   # write DIR/<run>.json
    python scripts/snapshot_runs.py compare BEFORE AFTER [--tol 0]          # exit 1 on any difference

A snapshot keeps every number and string in each summary.json (nested keys joined with '/'),
except timings, which differ from run to run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

TINY_LM = [
    "hook_name=blocks.0.hook_resid_post",
    "context_size=32",
    "batch_size_tokens=128",
    "training_tokens=1280",
    "n_batches_in_buffer=3",
    "model_batch_size=8",
    "expansion_factor=2",
    "k=8",
    "eval_sequences=4",
    "lr_warm_up_steps=2",
    "log_every=1",
]
SKIP = ("elapsed_seconds", "train_seconds", "tokens_per_s")


def flatten(x, prefix: str = "") -> dict:
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k not in SKIP:
                out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    if isinstance(x, list):
        out = {}
        for i, v in enumerate(x):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: x}


def snapshot(out: Path, only: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(
        [sys.executable, "-m", "superposition.cli", "list"], capture_output=True, text=True, check=True
    )
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names + ["train-sae"]:
            if only and name not in only:
                continue
            run = Path(tmp) / name
            if name == "train-sae":
                cmd = [
                    "train-sae",
                    "--out",
                    str(run),
                    *[a for s in TINY_LM for a in ("--set", s)],
                    "--set",
                    "tensorboard=false",
                ]
            else:
                cmd = ["run", name, "--quick", "--out", str(run)]
            print(f"{name} ...", flush=True)
            subprocess.run([sys.executable, "-m", "superposition.cli", *cmd], check=True, capture_output=True)
            summary = json.loads((run / "summary.json").read_text())
            (out / f"{name}.json").write_text(json.dumps(flatten(summary), indent=0))


def compare(before: Path, after: Path, tol: float) -> int:
    bad = 0
    for file in sorted(before.glob("*.json")):
        other = after / file.name
        if not other.is_file():
            print(f"{file.stem}: missing in {after}")
            bad += 1
            continue
        a, b = json.loads(file.read_text()), json.loads(other.read_text())
        diffs, worst = [], 0.0
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                d = abs(x - y) if math.isfinite(x) and math.isfinite(y) else (0.0 if x == y else math.inf)
                worst = max(worst, d)
                if d > tol:
                    diffs.append(f"{key}: {x} -> {y}")
            elif x != y:
                diffs.append(f"{key}: {x!r} -> {y!r}")
        status = (
            "identical"
            if not diffs
            else f"{len(diffs)} of {len(a)} values differ (largest numeric difference {worst:.3g})"
        )
        print(f"{file.stem:<16} {len(a):>7} values: {status}")
        for line in diffs[:5]:
            print(f"    {line}")
        bad += bool(diffs)
    return 1 if bad else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    s.add_argument("--only", default=None, help="comma-separated run names")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--tol", type=float, default=0.0)
    args = p.parse_args()
    if args.cmd == "snapshot":
        snapshot(args.out, args.only.split(",") if args.only else None)
    else:
        raise SystemExit(compare(args.before, args.after, args.tol))


if __name__ == "__main__":
    main()
