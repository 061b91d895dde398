"""`superposition attribute RUN_DIR --prompt "..." --out DIR`: the attribution graph of a prompt
through a run's transcoders (interp/attribution.py: nodes, edges, influence, pruning and scores as
circuit-tracer defines them).

Writes, besides the usual config.json, summary.json and report.html:

    graph.safetensors     the whole graph: adjacency (rows targets, columns sources), the latents
                          (layer, position, latent), activations, logit ids and probabilities,
                          prompt tokens; prompt and sizes in the header (`interp.attribution.load_graph`)
    graph.json            the pruned graph in the JSON circuit-tracer's frontend and Neuronpedia read
    graph-metadata.json   the index circuit-tracer's local server reads ({"graphs": [metadata]})
    graph.html            an offline viewer: nodes by layer and position, click one for its edges
"""

from __future__ import annotations

import json
from pathlib import Path

from markupsafe import Markup
from pydantic import Field

from superposition.atomic import atomic_write_text, write_json
from superposition.commands.base import TranscoderOptions, command
from superposition.errors import SuperpositionError
from superposition.interp import attribution as at
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import TranscoderRun


class AttributeOptions(TranscoderOptions):
    """Options of `attribute`."""

    prompt: str = Field(description="the text whose next token is attributed (BOS is added as in training)")
    max_feature_nodes: int = Field(
        4096, gt=0, description="latents given rows, the most influential on the logits first"
    )
    batch_size: int = Field(32, gt=0, description="targets per backward pass")
    node_threshold: float = Field(
        0.8, gt=0, le=1, description="pruning: nodes kept for this share of influence"
    )
    edge_threshold: float = Field(
        0.98, gt=0, le=1, description="pruning: edges kept for this share of influence"
    )
    max_logits: int = Field(10, gt=0, le=100, description="at most this many logit nodes")
    logit_p: float = Field(
        0.95, gt=0, le=1, description="logit nodes: the fewest top tokens with this probability"
    )
    explanations: str | None = Field(
        None,
        description="autointerp output to label latents with: a folder with one autointerp output per "
        "hook (blocks.L.mlp/explanations.jsonl), or for one transcoder its output folder; by default "
        "RUN/autointerp when it exists (logit-lens tokens label the rest)",
    )
    keep_bos: bool = Field(
        False,
        description="keep the BOS position's latents and errors (by default they are zeroed, as "
        "circuit-tracer does: the first position, the first four for Gemma-3 IT)",
    )


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, L in enumerate(layers):
        if start is None:
            start = L
        if i + 1 == len(layers) or layers[i + 1] != L + 1:
            out.append(f"{start}" if start == L else f"{start}-{L}")
            start = None
    return ", ".join(out)


def read_layer_explanations(tr: TranscoderRun, source: str | None) -> dict[int, dict[int, dict]]:
    """Autointerp rows per transcoder layer: from `source` (a folder of per-hook outputs, or one
    output when the run has one transcoder), else RUN/autointerp when it exists, else none."""
    from superposition.interp.explain import read_explanations

    folder = Path(source).expanduser() if source else tr.path / "autointerp"
    if source is None and not folder.is_dir():
        return {}
    if not folder.exists():
        raise SuperpositionError(f"--explanations {source}: no such folder or file")
    out = {}
    for L in tr.layers:
        per_hook = folder / f"blocks.{L}.mlp"
        if per_hook.is_dir():
            out[L] = read_explanations(per_hook)
    if not out and len(tr.layers) == 1 and (folder.is_file() or (folder / "explanations.jsonl").is_file()):
        out[tr.layers[0]] = read_explanations(folder)
    if not out and source is not None:
        raise SuperpositionError(
            f"--explanations {source}: holds no autointerp output for these transcoders (expected "
            "blocks.L.mlp/explanations.jsonl per layer, or explanations.jsonl for a one-transcoder run)"
        )
    return out


def latent_labels(
    tr: TranscoderRun,
    rm,
    graph: at.Graph,
    explanations: dict[int, dict[int, dict]] | None = None,
    top: int = 3,
) -> dict[tuple[int, int], str]:
    """A label per latent in the graph: its autointerp explanation when there is one (as Neuronpedia
    shows), else the tokens its decoder row promotes most through the unembedding (what it writes,
    logit-lens style)."""
    tok = tr.lm.tokenizer
    unembed = tr.lm.model.get_output_embeddings().weight.detach().float()
    explanations = explanations or {}
    out = {}
    for L, f in {(int(L), int(f)) for L, _, f in graph.features.tolist()}:
        text = explanations.get(L, {}).get(f, {}).get("explanation")
        if isinstance(text, str) and text.strip():
            out[(L, f)] = " ".join(text.split())[:120]
            continue
        d = rm.latent_output(L, f).float()
        ids = (unembed @ d).topk(top).indices.tolist()
        out[(L, f)] = "→ " + " ".join(json.dumps(tok.decode([i])) for i in ids)
    return out


def _figure(graph: at.Graph, nodes, edges):
    """The pruned graph as a picture: nodes at (position, layer), edges coloured by sign."""
    import matplotlib.pyplot as plt

    sl = graph.slices()
    P, n_rows = graph.n_pos, graph.n_layers + 2
    coords = {}
    for i in nodes.nonzero().flatten().tolist():
        if i < sl["errors"].start:
            L, p, _ = graph.features[i].tolist()
            row = L + 1
        elif i < sl["tokens"].start:
            L, p = divmod(i - sl["errors"].start, P)
            row = L + 1
        elif i < sl["logits"].start:
            p, row = i - sl["tokens"].start, 0
        else:
            p, row = P - 1 + 0.3 * (i - sl["logits"].start), n_rows - 1
        coords[i] = (p, row)
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.7 * P), 1 + 0.25 * n_rows))
    A = graph.adjacency
    wmax = float(A[edges].abs().max()) if edges.any() else 1.0
    for d, s in edges.nonzero().tolist():
        if s in coords and d in coords:
            w = float(A[d, s])
            ax.plot(*zip(coords[s], coords[d], strict=True), color="#1f5fbf" if w > 0 else "#c0392b",
                    lw=0.3 + 2 * abs(w) / wmax, alpha=0.4)  # fmt: skip
    kinds = [
        ("features", "o", "#f5b041"),
        ("errors", "s", "#aaaaaa"),
        ("tokens", "^", "#58d68d"),
        ("logits", "D", "#af7ac5"),
    ]
    for name, marker, colour in kinds:
        pts = [coords[i] for i in coords if sl[name].start <= i < (sl[name].stop or A.shape[0])]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, color=colour, s=18, zorder=3, label=name)
    ax.set_xlabel("position")
    ax.set_ylabel("layer (0: embeddings, top: logits)")
    ax.legend(loc="upper left", fontsize=7, ncols=4)
    return fig


@command(
    "attribute",
    "the attribution graph of a prompt through a run's transcoders (circuit-tracer's format)",
    AttributeOptions,
    kind="attribute",
)
def run(opts: AttributeOptions, out: Path) -> Result:
    tr = opts.load()
    ids = tr.encode(opts.prompt)[0]
    explanations = read_layer_explanations(tr, opts.explanations)
    from superposition.interp.replacement import ReplacementModel

    rm = ReplacementModel(tr.hooked, tr.replaces)
    zero = at.zeroed_positions(ids, tr.lm.tokenizer.bos_token_id, tr.lm.names, opts.keep_bos)
    graph = at.attribute(
        rm, ids, opts.prompt, opts.max_feature_nodes, opts.batch_size, opts.max_logits, opts.logit_p,
        zero_positions=zero,
    )  # fmt: skip
    nodes, edges = at.prune(graph, opts.node_threshold, opts.edge_threshold)
    pruned = at.pruned_adjacency(graph, nodes, edges)
    replacement, completeness = at.scores(graph)
    p_replacement, p_completeness = at.scores(graph, pruned)
    tok = tr.lm.tokenizer
    token_text = [tok.decode([t]) for t in graph.tokens]
    logit_text = [tok.decode([int(t)]) for t in graph.logit_ids]
    hooks = [f"blocks.{L}.mlp" for L in tr.layers] if tr.clt is None else [f"clt:{tr.path.name}"]
    sl = graph.slices()
    inf = at.influence(at.normalise(graph.adjacency), graph.logit_weights())  # once: the JSON's and the share
    data = at.frontend_json(
        graph, nodes, edges, token_text, logit_text, latent_labels(tr, rm, graph, explanations), "graph",
        f"superposition:{tr.path.name}", hooks, opts.node_threshold, node_influence=inf,
    )  # fmt: skip
    error_share = float(inf[sl["errors"]].sum() / inf[: sl["logits"].start].sum().clamp(min=1e-30))
    n_pruned_features = int(nodes[sl["features"]].sum())
    missing = [L for L in range(rm.n_layers) if L not in tr.layers]
    no_latent = ""
    if n_pruned_features == 0:
        no_latent = (
            f"the pruned graph holds no latent: every node is an error, embedding or logit node; error nodes "
            f"carry {error_share:.0%} of the influence"
            + (
                f", and {len(missing)} of {rm.n_layers} MLPs have no transcoder (their whole output is an "
                f"error node: layers {_ranges(missing)})"
                if missing
                else ""
            )
        )
    summary = {
        "model_name": tr.lm.name,
        **tr.lm.identity,
        "prompt": opts.prompt,
        "n_tokens": graph.n_pos,
        "zeroed_positions": zero,
        "transcoder_layers": tr.layers,
        "cross_layer_transcoder": tr.clt is not None,
        "layers_without_transcoder": missing,
        "n_active_features": graph.n_active,
        "n_features": graph.n_features,
        "logits": [
            {"token": t, "probability": float(p)} for t, p in zip(logit_text, graph.logit_probs, strict=True)
        ],
        "replacement_score": replacement,
        "completeness_score": completeness,
        "error_influence_share": error_share,
        "n_nodes": int(graph.adjacency.shape[0]),
        "n_edges": int((graph.adjacency != 0).sum()),
        "pruned": {
            "replacement_score": p_replacement,
            "completeness_score": p_completeness,
            "n_nodes": int(nodes.sum()),
            "n_edges": int(edges.sum()),
            "n_features": n_pruned_features,
            "node_threshold": opts.node_threshold,
            "edge_threshold": opts.edge_threshold,
        },
        **{f"cost_{k}": v for k, v in graph.cost.items()},
    }
    at.save_graph(graph, out / "graph.safetensors", {"model_name": tr.lm.name, "transcoders": hooks})
    write_json(out / "graph.json", data)
    write_json(out / "graph-metadata.json", {"graphs": [data["metadata"]]})
    from superposition.report import TEMPLATES
    from superposition.report.dashboard import json_for_script

    view = {
        **data,
        "layers_without_transcoder": missing,
        "scores": {
            "replacement_score": round(p_replacement, 4),
            "completeness_score": round(p_completeness, 4),
        },
    }
    page = TEMPLATES.get_template("graph.html").render(data=Markup(json_for_script(view)))
    atomic_write_text(out / "graph.html", page)
    cost = graph.cost
    return Result(
        title=f"Attribution graph on {tr.lm.name}",
        explanation=(
            "Nodes: active transcoder latents, per-layer error nodes, token embeddings and the salient "
            "logits; "
            "edges: direct effects through the model with attention patterns and norms frozen. Pruned to the "
            f"nodes carrying {opts.node_threshold:.0%} of the influence on the logits and the edges carrying "
            f"{opts.edge_threshold:.0%}. Open graph.html to explore it."
            + (f" Note: {no_latent}." if no_latent else "")
        ),
        summary=summary,
        figures=[
            FigureSpec(
                "graph",
                "The pruned graph: position against layer; blue excites, red inhibits.",
                _figure(graph, nodes, edges),
            )
        ],
        highlights={
            "replacement score (pruned)": p_replacement,
            "completeness score (pruned)": p_completeness,
            "nodes (pruned)": int(nodes.sum()),
            "edges (pruned)": int(edges.sum()),
        },
        message=(
            f"{graph.n_pos} tokens, {graph.n_active} active latents ({graph.n_features} given rows), "
            f"{cost['backward_passes']} backward passes in {cost['seconds']:.1f} s; replacement score "
            f"{replacement:.3f} ({p_replacement:.3f} pruned), completeness {completeness:.3f} "
            f"({p_completeness:.3f} "
            f"pruned); pruned graph {int(nodes.sum())} nodes, {int(edges.sum())} edges"
            + (f"; {no_latent}" if no_latent else "")
        ),
    )
