"""SAE training speed, memory and quality over a grid of shapes: this project against SAELens
6.54.12 and EleutherAI sparsify 1.3.3, on the same activations for the same number of samples.

Grid: d_in ∈ {128, 576}; d_sae ∈ {1, 4, 16, 32} × d_in; k ∈ {8, 32, 128} for TopK and BatchTopK
(sparsify: TopK only); the L1 (standard) and JumpReLU trainers at each width. d_in = 128 is a
synthetic dictionary with known features (2048 features, 16 active on average, Zipf-like firing):
quality is MCC of the decoder against them, and FVU. d_in = 576 is SmolLM2-135M's residual stream
at blocks.6 on python-docs (made once, cached in .bench-cache/): quality is FVU on held-out rows.

Every trainer runs in its own process (peak RSS is its own, the largest over its runs), Adam at lr
5e-4, batch 1024, AuxK 1/32 on latents dead for 20 steps, `--repeats` runs (seeds 0, 1, ...; the
trainers' order rotating from cell to cell): the fastest run gives samples/s, quality is the mean. The steps per cell follow from a FLOP budget for
the encoder product (`--budget`, within `--min-steps`..`--max-steps`), so large cells run fewer
steps; all trainers of a cell see the same samples. Then end to end, as a user runs it (start-up
and data generation included): `superposition run sae-synthetic` (TopK, d_sae 1024, k 16, 1024
true features in 128 dimensions) against SAELens's own synthetic-data trainer.

    python benchmarks/bench_sae_grid.py [--quick] [--archs topk,batchtopk,standard,jumprelu]
        [--d-in 128,576] [--repeats 3] [--budget 1e11] [--peers saelens,sparsify]
        [--e2e-samples 500000] [--json out.json]

Prints a row per cell (samples/s of each trainer, our speed-up, peak RSS, quality), the worst and
best speed-up over the grid against each peer, and the end-to-end comparison. A peer environment
that cannot be made, or a trainer that fails, stops the run with exit 1 and one line naming the
peer and the cell: no cell is ever left out silently.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_common import BATCH, held_out_fvu_l0, our_train_config, report_run  # noqa: E402
from peers import ROOT, python_of  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".bench-cache"
DATA_STEPS = 200  # batches of cached activations; longer runs cycle through them
TRAINERS = ["superposition", "SAELens", "sparsify"]
COEFFICIENTS = {"standard": 3.0, "jumprelu": 0.02}  # L1 and L0 weights that land L0 near 32 on these data


def ours_worker(
    data: str, out: str, arch: str, d_sae: int, k: int, steps: int, seeds: str, coefficient: float
) -> None:
    """One run per seed (comma-separated) in this process: a JSON line each, the decoder of seed s
    written to OUT.s."""
    from superposition.cpu import tune_allocator
    from superposition.sae import SAEConfig, make_sae
    from superposition.sae.sources import TensorSource
    from superposition.sae.train import SAETrainer

    tune_allocator()
    tensors = load_file(data)
    x, held_out = tensors["train"], tensors["eval"]
    cfg = {"architecture": arch, "d_in": x.shape[1], "d_sae": d_sae}
    if arch in ("topk", "batchtopk"):
        cfg["k"] = k
    elif arch == "standard":
        cfg["l1_coefficient"] = coefficient
    else:
        cfg["l0_coefficient"] = coefficient
    for seed in map(int, seeds.split(",")):
        sae = make_sae(SAEConfig(**cfg), torch.Generator().manual_seed(seed))
        trainer = SAETrainer(sae, TensorSource(x), our_train_config(steps, seed))
        start = time.perf_counter()
        trainer.train(progress=False)
        seconds = time.perf_counter() - start
        sae.eval()

        def reconstruct(rows, sae=sae):
            z = sae.encode(rows.unsqueeze(1))
            return sae.decode(z, rows.unsqueeze(1))[:, 0], (z != 0).sum()

        fvu, l0 = held_out_fvu_l0(reconstruct, held_out)
        report_run(f"{out}.{seed}", sae.W_dec[0], seconds, steps * BATCH, fvu, l0)


def _run(cmd: list[str], who: str, cell: str) -> list[dict]:
    """A worker's runs (its JSON lines), or exit 1 with one line naming the trainer and the cell."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"benchmark: {who} failed on {cell}: {last}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def make_data(d_in: int, rows: int) -> tuple[Path, torch.Tensor | None]:
    """The cached activations for a d_in, and the true features where they are known."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"grid_{d_in}_{rows}.safetensors"
    features = None
    if d_in == 128:
        from superposition.sae.sources import SyntheticDictionary

        source = SyntheticDictionary(2048, 128, mean_l0=16, zipf_exponent=0.8, seed=0)
        features = source.features
        if not path.exists():
            x = torch.cat(
                [source.sample(8192, torch.Generator().manual_seed(i)) for i in range(-(-rows // 8192) + 1)]
            )
            save_file({"train": x[:rows].contiguous(), "eval": x[rows : rows + 8192].contiguous()}, str(path))
        return path, features
    if not path.exists():
        from superposition.lm.config import LMSAEConfig
        from superposition.lm.hooks import HookedModel
        from superposition.lm.model import load_model
        from superposition.lm.store import ActivationStore

        print(f"making {rows:,} activations of SmolLM2 blocks.6.hook_resid_post (once) ...", flush=True)
        lm = load_model()
        hooked = HookedModel(lm.model)
        store = ActivationStore.for_run(
            LMSAEConfig(hook_name="blocks.6.hook_resid_post", n_batches_in_buffer=32), lm, hooked
        )
        x = store.sample(rows + 8192)
        save_file({"train": x[:rows].contiguous(), "eval": x[rows:].contiguous()}, str(path))
    return path, features


def cells(archs: list[str], d_ins: list[int]) -> list[tuple[str, int, int, int]]:
    out = []
    for arch in archs:
        for d_in in d_ins:
            for mult in (1, 4, 16, 32):
                for k in (8, 32, 128) if arch in ("topk", "batchtopk") else (0,):
                    if k <= d_in * mult:
                        out.append((arch, d_in, d_in * mult, k))
    return out


def cell_name(arch: str, d_in: int, d_sae: int, k: int) -> str:
    return f"{arch} d_in={d_in} d_sae={d_sae}" + (f" k={k}" if k else "")


def steps_for(d_in: int, d_sae: int, budget: float, min_steps: int, max_steps: int) -> int:
    """Steps such that the encoder product costs about `budget` FLOPs, within [min, max]."""
    return int(max(min_steps, min(max_steps, round(budget / (2 * BATCH * d_in * d_sae)))))


class Peers:
    """Each peer's interpreter, its environment made on first use; a failure names the peer and the
    cell that needed it."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.pythons = names, {}

    def python(self, name: str, cell: str) -> str:
        if name not in self.pythons:
            try:
                self.pythons[name] = str(python_of(name))
            except SystemExit as err:
                raise SystemExit(f"{err} (needed for {cell})") from None
        return self.pythons[name]


def trainers_for(arch: str, peers: Peers, cell: str) -> dict[str, list[str]]:
    out = {"superposition": [sys.executable, __file__, "--worker", "ours"]}
    if "saelens" in peers.names:
        out["SAELens"] = [peers.python("saelens", cell), str(HERE / "grid_saelens_worker.py")]
    if "sparsify" in peers.names and arch == "topk":
        out["sparsify"] = [peers.python("sparsify", cell), str(HERE / "grid_sparsify_worker.py")]
    return out


def run_cell(cell: tuple, data: dict, peers: Peers, repeats: int, steps: int, tmp: str, turn: int) -> dict:
    """Every trainer on one cell, `repeats` runs each (seeds 0, 1, ...) in one process per
    trainer; the trainers' order rotates from cell to cell so that none always runs first."""
    from superposition.sae import ground_truth as gt

    arch, d_in, d_sae, k = cell
    name = cell_name(*cell)
    path, features = data[d_in]
    coef = COEFFICIENTS.get(arch, 0.0)
    trainers = trainers_for(arch, peers, name)
    order = list(trainers)
    seeds = ",".join(map(str, range(repeats)))
    row = {"arch": arch, "d_in": d_in, "d_sae": d_sae, "k": k, "steps": steps}
    for who in order[turn % len(order) :] + order[: turn % len(order)]:
        out = str(Path(tmp) / f"{who}.safetensors")
        args = [str(path), out] + ([] if who == "sparsify" else [arch])
        args += [str(d_sae), str(k), str(steps), seeds] + ([] if who == "sparsify" else [str(coef)])
        runs = _run(trainers[who] + args, who, name)
        if len(runs) != repeats:
            raise SystemExit(f"benchmark: {who} reported {len(runs)} of {repeats} runs on {name}")
        for seed, r in enumerate(runs):
            if features is not None:
                r["mcc"] = gt.mcc(load_file(f"{out}.{seed}")["W_dec"], features)
        row[who] = runs
    return summarise(row)


def end_to_end(repeats: int, samples: int, peers: Peers, tmp: str) -> dict:
    """As a user runs it, data generation and start-up included: `superposition run sae-synthetic`
    (1024 true features in 128 dimensions, TopK d_sae 1024, k 16) against SAELens's own synthetic
    toolkit on the same kind of data; wall-clock samples/s (best of `repeats`) and MCC (mean)."""
    from superposition.sae import ground_truth as gt

    cell = f"end to end (sae-synthetic topk d_sae=1024 k=16, {samples:,} samples)"
    n, d, d_sae, k, lr = 1024, 128, 1024, 16, 5e-3
    cmds = {
        "superposition": lambda rep, out: [
            sys.executable, "-m", "superposition", "run", "sae-synthetic",
            "--set", "architecture=topk", "--set", f"d_sae={d_sae}", "--set", f"k={k}",
            "--set", f"samples={samples}", "--set", f"seed={rep}", "--out", out,
        ],
    }  # fmt: skip
    if "saelens" in peers.names:
        py = peers.python("saelens", cell)
        worker = str(HERE / "e2e_saelens_synthetic_worker.py")
        cmds["SAELens"] = lambda rep, out: [py, worker, out, *map(str, (n, d, d_sae, k, samples, rep, lr))]
    runs: dict[str, list[dict]] = {}
    for rep in range(repeats):
        order = list(cmds)
        for who in order[rep % len(order) :] + order[: rep % len(order)]:
            out = str(Path(tmp) / f"e2e-{who}-{rep}")
            start = time.perf_counter()
            done = subprocess.run(cmds[who](rep, out), capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"benchmark: {who} failed on {cell}: {last}")
            if who == "superposition":
                mcc = json.loads((Path(out) / "summary.json").read_text())["results"]["topk"]["mcc"]
            else:
                saved = load_file(out)
                mcc = gt.mcc(saved["W_dec"], saved["features"])
            runs.setdefault(who, []).append({"seconds": seconds, "mcc": mcc})
    result = {"cell": cell, "samples": samples}
    for who, rs in runs.items():
        result[who] = {
            "samples_per_s": samples / min(r["seconds"] for r in rs),
            "mcc": sum(r["mcc"] for r in rs) / len(rs),
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="topk,batchtopk,standard,jumprelu")
    p.add_argument("--d-in", default="128,576")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--budget", type=float, default=1e11, help="FLOPs of the encoder product per run (sets the steps)"
    )
    p.add_argument("--min-steps", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--peers", default="saelens,sparsify")
    p.add_argument("--e2e-samples", type=int, default=500_000, help="0 skips the end-to-end comparison")
    p.add_argument("--quick", action="store_true", help="one repeat, a tenth of the budget, 100k samples e2e")
    p.add_argument("--json", default=None, help="also write every measurement here (after every cell)")
    p.add_argument(
        "--cells",
        default=None,
        help="only these cells, e.g. topk:576:576:8,standard:128:512:0 (to re-measure some of a saved run)",
    )
    p.add_argument(
        "--merge", metavar="JSON", help="start from a saved run (--json) and replace the cells measured"
    )
    p.add_argument("--table", metavar="JSON", help="print a saved run (--json) as a markdown table and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    if args.worker == "ours":
        data, out, arch, d_sae, k, steps, seeds, coef = rest
        ours_worker(data, out, arch, int(d_sae), int(k), int(steps), seeds, float(coef))
        return
    if rest:
        p.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.quick:
        args.repeats, args.budget, args.e2e_samples = 1, args.budget / 10, min(args.e2e_samples, 100_000)
    peers = Peers([q for q in args.peers.split(",") if q])
    if unknown := [q for q in peers.names if q not in ("saelens", "sparsify")]:
        p.error(f"--peers: {', '.join(unknown)} unknown; allowed: saelens, sparsify")
    grid = cells(args.archs.split(","), [int(d) for d in args.d_in.split(",")])
    if args.cells:
        wanted = [
            tuple(int(v) if i else v for i, v in enumerate(c.split(":"))) for c in args.cells.split(",")
        ]
        if unknown := [c for c in wanted if c not in grid]:
            p.error(f"--cells: {unknown[0]} is not a cell of the grid (arch:d_in:d_sae:k)")
        grid = wanted
    results: dict = {"grid": [], "end_to_end": None}
    if args.merge:
        results = json.loads(Path(args.merge).read_text())

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        rows = BATCH * DATA_STEPS
        data = {d: make_data(d, rows) for d in sorted({c[1] for c in grid})}
        print(
            f"{len(grid)} cells, {args.repeats} repeat(s), batch {BATCH}; columns: arch d_in d_sae k steps | "
            "trainer: samples/s (our speed-up) peak RSS, quality",
            flush=True,
        )
        for turn, cell in enumerate(grid):
            steps = steps_for(cell[1], cell[2], args.budget, args.min_steps, args.max_steps)
            row = run_cell(cell, data, peers, args.repeats, steps, tmp, turn)
            key = ("arch", "d_in", "d_sae", "k")
            same = [i for i, r in enumerate(results["grid"]) if all(r[x] == row[x] for x in key)]
            if same:  # a re-measurement replaces the trainers it ran, keeps the others
                results["grid"][same[0]].update(row)
            else:
                results["grid"].append(row)
            print_row(row)
            save()
        if args.e2e_samples:
            results["end_to_end"] = end_to_end(args.repeats, args.e2e_samples, peers, tmp)
            save()
    report(results)


def summarise(row: dict) -> dict:
    out = {k: v for k, v in row.items() if not isinstance(v, list)}
    for name, runs in row.items():
        if isinstance(runs, list):
            best = min(runs, key=lambda r: r["seconds"])
            out[name] = {
                "samples_per_s": best["samples"] / best["seconds"],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "fvu": sum(r["fvu"] for r in runs) / len(runs),
                "l0": sum(r["l0"] for r in runs) / len(runs),
                **({"mcc": sum(r["mcc"] for r in runs) / len(runs)} if "mcc" in runs[0] else {}),
            }
    return out


def print_row(r: dict) -> None:
    ours = r["superposition"]
    parts = [f"{r['arch']:<9} {r['d_in']:>4} {r['d_sae']:>6} {r['k'] or '-':>4} {r['steps']:>4}"]
    for name in TRAINERS:
        if name not in r:
            continue
        m = r[name]
        q = f"mcc {m['mcc']:.3f} " if "mcc" in m else ""
        ratio = "" if name == "superposition" else f" ({ours['samples_per_s'] / m['samples_per_s']:.2f}x)"
        parts.append(
            f"{name}: {m['samples_per_s']:>8,.0f}/s{ratio} {m['peak_rss_mib']:>5,.0f} MiB {q}fvu {m['fvu']:.3f} L0 {m['l0']:.1f}"
        )
    print(" | ".join(parts), flush=True)


def markdown(results: dict) -> str:
    """Every cell as a markdown row: samples/s, speed-ups, peak RSS and quality of each trainer."""
    head = ["arch", "d_in", "d_sae", "k", "steps"]
    for name in TRAINERS:
        head += [f"{name} samples/s", f"{name} MiB", f"{name} quality"]
        if name != "superposition":
            head.insert(len(head) - 2, "speed-up")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["grid"]:
        ours = r["superposition"]["samples_per_s"]
        cells = [r["arch"], str(r["d_in"]), str(r["d_sae"]), str(r["k"] or "-"), str(r["steps"])]
        for name in TRAINERS:
            m = r.get(name)
            if m is None:
                cells += ["", "", ""] + ([""] if name != "superposition" else [])
                continue
            q = (f"MCC {m['mcc']:.3f}, " if "mcc" in m else "") + f"FVU {m['fvu']:.3f}, L0 {m['l0']:.0f}"
            cells.append(f"{m['samples_per_s']:,.0f}")
            if name != "superposition":
                cells.append(f"{ours / m['samples_per_s']:.2f}x")
            cells += [f"{m['peak_rss_mib']:,.0f}", q]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: dict) -> None:
    grid = results["grid"]
    for peer in TRAINERS[1:]:
        ratios = [
            (r["superposition"]["samples_per_s"] / r[peer]["samples_per_s"], r) for r in grid if peer in r
        ]
        if not ratios:
            continue
        worst, best = min(ratios, key=lambda t: t[0]), max(ratios, key=lambda t: t[0])
        mem = [r["superposition"]["peak_rss_mib"] / r[peer]["peak_rss_mib"] for _, r in ratios]
        key = ("arch", "d_in", "d_sae", "k")
        print(f"against {peer}: worst {worst[0]:.2f}x ({cell_name(*(worst[1][x] for x in key))}), "
              f"best {best[0]:.2f}x ({cell_name(*(best[1][x] for x in key))}); peak RSS at most {peer}'s in "
              f"{sum(m <= 1 for m in mem)} of {len(mem)} cells (largest ratio {max(mem):.2f})")  # fmt: skip
    e2e = results.get("end_to_end")
    if e2e:
        ours = e2e["superposition"]
        line = f"{e2e['cell']}: superposition {ours['samples_per_s']:,.0f}/s mcc {ours['mcc']:.3f}"
        if "SAELens" in e2e:
            theirs = e2e["SAELens"]
            line += (f"; SAELens {theirs['samples_per_s']:,.0f}/s mcc {theirs['mcc']:.3f}; "
                     f"{ours['samples_per_s'] / theirs['samples_per_s']:.2f}x")  # fmt: skip
        print(line)


if __name__ == "__main__":
    main()
