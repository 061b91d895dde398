"""`superposition circuit RUN_DIR --dataset FILE.jsonl --out DIR`: a sparse feature circuit
(Marks et al. 2024; interp/circuits.py) over a run's SAEs or transcoders, with error nodes.

`--dataset` is a JSONL file of pairs {clean, patch, clean_answer, patch_answer} of one token length,
or a built-in subject–verb agreement template (interp/sva.py): sva:simple, sva:pp, sva:rc.

Writes summary.json (the metric on clean and patch prompts; m(M) and m(∅); the faithfulness and
completeness curves over circuit sizes; the circuit of `--nodes` nodes and its edges), effects.safetensors
(every node's effect, per hook), pairs.jsonl (the pairs used), a figure of the curves and report.html.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from superposition.atomic import atomic_write_bytes, write_jsonl
from superposition.commands.base import RunModelOptions, command, positional
from superposition.errors import SuperpositionError
from superposition.interp import circuits as sc
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import load_hook_saes

SIZES = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class CircuitOptions(RunModelOptions):
    """Options of `circuit`."""

    run: str = positional(
        "a train-sae run of SAEs at several hooks (e.g. hook_name=blocks.{3,7,11}.hook_resid_post) or of "
        "transcoders (blocks.*.mlp); each hook gets an error node",
        "RUN_DIR",
    )
    dataset: str = Field(
        description="JSONL pairs with clean, patch, clean_answer, patch_answer (one token length), or a "
        "built-in template: sva:simple, sva:pp, sva:rc"
    )
    pairs: int = Field(32, gt=0, le=100_000, description="use at most this many pairs")
    ig_steps: int = Field(
        10, gt=0, le=1000, description="integrated-gradients steps (1: attribution patching)"
    )
    nodes: int = Field(20, gt=0, description="size of the circuit reported with its edges")
    batch_size: int = Field(8, gt=0, description="pairs per forward pass")


def _records(opts: CircuitOptions, tokenizer) -> list[dict]:
    if opts.dataset.startswith("sva:"):
        from superposition.interp.sva import TEMPLATES, sva_pairs

        template = opts.dataset[4:]
        if template not in TEMPLATES:
            raise SuperpositionError(
                f"dataset {opts.dataset!r}: built-in templates are sva:{', sva:'.join(TEMPLATES)}"
            )
        records = sva_pairs(template, tokenizer, opts.pairs)
        if not records:
            raise SuperpositionError(f"dataset {opts.dataset}: no pair of this template fits the tokenizer")
        return records
    return sc.read_pairs(opts.dataset)[: opts.pairs]


def _num(v: float) -> str:
    """A number for the summary line; n/a where it is not one (a NaN is never printed as a result)."""
    return f"{v:.2f}" if v == v and abs(v) != float("inf") else "n/a"


def _figure(curve: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    n = [max(r["n_nodes"], 0.8) for r in curve]
    ax.plot(n, [r["faithfulness"] for r in curve], "o-", label="faithfulness of C")
    ax.plot(n, [r["completeness"] for r in curve], "s--", label="faithfulness of M \\ C (low: complete)")
    ax.axhline(1, color="gray", lw=0.5)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("nodes in the circuit (largest |effect| first)")
    ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
    ax.legend(fontsize=8)
    return fig


@command(
    "circuit",
    "a sparse feature circuit (Marks et al.) over a run's SAEs on contrastive pairs",
    CircuitOptions,
    kind="circuit",
)
def run(opts: CircuitOptions, out: Path) -> Result:
    cfg, lm, hooked, saes = load_hook_saes(opts.run, opts.model, opts.device, opts.dtype)
    pairs = sc.tokenize_pairs(lm.tokenizer, _records(opts, lm.tokenizer), cfg.prepend_bos, lm.n_ctx)
    engine = sc.Circuits(hooked, saes)
    got = engine.node_effects(pairs, opts.ig_steps, opts.batch_size)
    if not abs(got["m_clean"] - got["m_patch"]) > 1e-6:  # also NaN: nothing for a circuit to explain
        raise SuperpositionError(
            f"dataset {opts.dataset}: the metric is the same on the clean and the patch prompts "
            f"({got['m_clean']:.4g}); the model does not tell these pairs apart, so there is no circuit "
            "to find"
        )
    effects = got["effects"]
    means = engine.means(pairs, opts.batch_size)
    everything = engine.keep_top(effects, None, threshold=-1.0)
    nothing = engine.keep_top(effects, 0)
    m_full = engine.metric_with(pairs, everything, means, opts.batch_size)
    m_empty = engine.metric_with(pairs, nothing, means, opts.batch_size)
    span = m_full - m_empty
    total = sum(s["latents"].numel() + 1 for s in effects.values())
    # |effect| of every node, largest first: the node threshold each circuit size corresponds to
    ranked = torch.cat(
        [torch.cat([e["latents"].abs(), torch.tensor([abs(e["error"])])]) for e in effects.values()]
    )
    ranked = ranked.sort(descending=True).values
    curve = []
    for n in [s for s in SIZES if s < total] + [total]:
        keep = engine.keep_top(effects, n)
        m_c = engine.metric_with(pairs, keep, means, opts.batch_size)
        m_rest = engine.metric_with(pairs, engine.complement(keep), means, opts.batch_size)
        curve.append({"n_nodes": n, "threshold": float(ranked[n - 1]) if n else None,
                      "faithfulness": (m_c - m_empty) / span if span else float("nan"),
                      "completeness": (m_rest - m_empty) / span if span else float("nan")})  # fmt: skip
    keep = engine.keep_top(effects, opts.nodes)
    nodes = []
    for h in engine.hooks:
        mask, err = keep[h]
        nodes += [
            {"node": f"{h}/{i}", "effect": float(effects[h]["latents"][i])}
            for i in mask.nonzero().flatten().tolist()
        ]
        if err:
            nodes.append({"node": f"{h}/error", "effect": effects[h]["error"]})
    nodes.sort(key=lambda r: -abs(r["effect"]))
    edges = engine.edges(pairs, keep, opts.batch_size)
    at_size = next(r for r in curve if r["n_nodes"] >= min(opts.nodes, total))
    summary = {
        "model_name": lm.name,
        **lm.identity,
        "dataset": opts.dataset,
        "n_pairs": len(pairs.records),
        "hooks": engine.hooks,
        "ig_steps": opts.ig_steps,
        "m_clean": got["m_clean"],
        "m_patch": got["m_patch"],
        "m_full": m_full,
        "m_empty": m_empty,
        "curve": curve,
        "circuit": {
            "n_nodes": opts.nodes,
            "faithfulness": at_size["faithfulness"],
            "completeness": at_size["completeness"],
            "nodes": nodes,
            "edges": edges,
        },  # fmt: skip
    }
    from safetensors.torch import save

    tensors = {f"{h}/latents": effects[h]["latents"].contiguous() for h in engine.hooks}
    tensors.update({f"{h}/error": torch.tensor([effects[h]["error"]]) for h in engine.hooks})
    atomic_write_bytes(out / "effects.safetensors", save(tensors))
    write_jsonl(out / "pairs.jsonl", pairs.records)
    head = ", ".join(
        f"{r['n_nodes']}: {_num(r['faithfulness'])}" for r in curve if r["n_nodes"] in (5, 20, 100, total)
    )
    return Result(
        title=f"Sparse feature circuit on {lm.name}: {opts.dataset}",
        explanation=(
            "Node effects by integrated gradients from clean to patch; the circuit is the nodes with the "
            "largest "
            "|effect|; every other node mean-ablated. Faithfulness 1: the circuit alone does the task; "
            "completeness near 0: nothing outside it does."
        ),
        summary=summary,
        figures=[
            FigureSpec(
                "faithfulness", "Faithfulness and completeness against circuit size.", lambda: _figure(curve)
            )
        ],
        highlights={
            "m(M)": m_full,
            "m(∅)": m_empty,
            f"faithfulness at {opts.nodes} nodes": at_size["faithfulness"],
            f"completeness at {opts.nodes} nodes": at_size["completeness"],
        },  # fmt: skip
        message=(
            f"{len(pairs.records)} pairs, {len(engine.hooks)} hooks: m clean {got['m_clean']:.3f}, patch "
            f"{got['m_patch']:.3f}, m(M) {m_full:.3f}, m(∅) {m_empty:.3f}; faithfulness by nodes {head}"
            + ("" if span else "; m(M) = m(∅): faithfulness is undefined (n/a)")
        ),
    )
