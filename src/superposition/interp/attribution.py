"""Attribution graphs over transcoders (Ameisen et al. 2025, "Circuit Tracing"; the definitions of
decoderesearch/circuit-tracer, so graphs and scores mean what they mean there).

Nodes, in adjacency order: the active latents (layer, position, latent), one error node per
(layer, position), one embedding node per position, and the salient logits (the fewest top tokens
whose probabilities reach 0.95, at most 10). A[target, source] is the source's direct effect on the
target through the frozen replacement model (replacement.py): for a latent target its
pre-activation, for a logit target its demeaned logit (the unembedding row minus the mean row).
Sources contribute activation · (gradient · decoder row), error · gradient and embedding · gradient.
With every bias zero, a target's incoming edges sum to its value exactly (the frozen model is
linear and homogeneous).

Influence: Â = |A| with rows normalised to sum 1; influence = wᵀ(Â + Â² + ...) with w the logit
probabilities on the logit nodes. Pruning keeps the nodes carrying `node_threshold` of the total
influence (embeddings and logits always), then the edges carrying `edge_threshold` of the edge
influence, then drops latents and errors left without outgoing edges (and latents without incoming
ones). Replacement score: the share of the embeddings' and errors' influence that is the
embeddings'; completeness score: the influence-weighted share of each node's normalised input that
does not come from error nodes.

BOS: as circuit-tracer does, the latents' activations and the error vectors of the first position
(the first four for Gemma-3 instruction-tuned models, whose prompts open with
`<bos><start_of_turn>user\n`) are zeroed before attribution, so that position holds only its
embedding node. The BOS token's residual stream is huge and the same on every prompt; its latents
and errors carry a large share of the influence (on SmolLM2, 480 of 2,880 active latents and a
fifth of the error influence) while saying nothing about the prompt. `zero_positions=0` keeps them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.interp.replacement import ReplacementModel, Trace
from superposition.memory import require_memory
from superposition.progress import tqdm


@dataclass
class Graph:
    """An attribution graph; rows of `adjacency` are targets, columns sources."""

    prompt: str
    tokens: list[int]
    n_layers: int
    features: Tensor  # (n_features, 3): layer, position, latent
    activations: Tensor  # (n_features,)
    logit_ids: Tensor  # (n_logits,)
    logit_probs: Tensor  # (n_logits,)
    adjacency: Tensor  # (N, N)
    n_active: int  # active latents on the prompt, before `max_feature_nodes`
    zero_positions: int = 0  # leading positions whose latents and errors were zeroed (BOS)
    cost: dict = field(default_factory=dict)  # seconds, backward passes, batch size

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    def slices(self) -> dict[str, slice]:
        f, e = self.n_features, self.n_features + self.n_layers * self.n_pos
        t = e + self.n_pos
        return {
            "features": slice(0, f),
            "errors": slice(f, e),
            "tokens": slice(e, t),
            "logits": slice(t, None),
        }

    def logit_weights(self) -> Tensor:
        w = torch.zeros(self.adjacency.shape[0], dtype=self.adjacency.dtype)
        w[self.slices()["logits"]] = self.logit_probs.to(w.dtype)
        return w


# ---------------------------------------------------------------------- influence and pruning
def normalise(A: Tensor) -> Tensor:
    """|A| with each row summing to 1 (rows of zeros stay zero)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A: Tensor, weights: Tensor, max_iter: int = 1000) -> Tensor:
    """wᵀ(A + A² + ...): A is a DAG's matrix, so the series ends."""
    step = weights @ A
    total = step.clone()
    for _ in range(max_iter):
        if not step.any():
            return total
        step = step @ A
        total += step
    raise SuperpositionError("attribute: influence did not converge (the graph has a cycle)")


def _cut(scores: Tensor, threshold: float) -> Tensor:
    """The score at which the highest scores first reach `threshold` of the total."""
    s = scores.flatten().sort(descending=True).values
    total = s.sum()
    if total <= 0:
        return s[0]
    cum = s.cumsum(0) / total
    return s[min(int(torch.searchsorted(cum, torch.tensor(threshold, dtype=cum.dtype))), len(s) - 1)]


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> tuple[Tensor, Tensor]:
    """(node mask, edge mask) of the pruned graph."""
    A, w, sl = graph.adjacency, graph.logit_weights(), graph.slices()
    keep_always = sl["tokens"].start
    node_inf = influence(normalise(A), w)
    nodes = node_inf >= _cut(node_inf, node_threshold)
    nodes[keep_always:] = True
    pruned = A.clone()
    pruned[~nodes] = 0
    pruned[:, ~nodes] = 0
    norm = normalise(pruned)
    edge_scores = norm * (influence(norm, w) + w)[:, None]
    edges = edge_scores >= _cut(edge_scores, edge_threshold)
    edges &= edge_scores > 0
    while True:
        before = nodes.clone()
        edges[~nodes] = False
        edges[:, ~nodes] = False
        nodes[:keep_always] &= edges[:, :keep_always].any(0)  # latents and errors: an outgoing edge
        nodes[sl["features"]] &= edges[sl["features"]].any(1)  # latents: an incoming edge
        if torch.equal(nodes, before):
            return nodes, edges


def scores(graph: Graph, adjacency: Tensor | None = None) -> tuple[float, float]:
    """(replacement score, completeness score) of the graph, or of `adjacency` in its node order
    (a pruned copy)."""
    A = graph.adjacency if adjacency is None else adjacency
    w, sl = graph.logit_weights(), graph.slices()
    norm = normalise(A)
    inf = influence(norm, w)
    tok, err = inf[sl["tokens"]].sum(), inf[sl["errors"]].sum()
    replacement = tok / (tok + err) if tok + err > 0 else torch.tensor(0.0)
    out = inf + w
    non_error = 1 - norm[:, sl["errors"]].sum(1)
    completeness = (non_error * out).sum() / out.sum()
    return float(replacement), float(completeness)


def pruned_adjacency(graph: Graph, nodes: Tensor, edges: Tensor) -> Tensor:
    A = graph.adjacency * edges
    A[~nodes] = 0
    A[:, ~nodes] = 0
    return A


# ---------------------------------------------------------------------- building a graph
def salient_logits(logits: Tensor, unembed: Tensor, max_n: int = 10, p: float = 0.95):
    """(ids, probabilities, demeaned unembedding rows) of the fewest top tokens reaching `p`."""
    probs = logits.float().softmax(-1)
    top_p, top_i = probs.topk(min(max_n, probs.numel()))
    n = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(p))) + 1
    top_p, top_i = top_p[:n], top_i[:n]
    vecs = unembed[top_i].float() - unembed.float().mean(0, keepdim=True)
    return top_i, top_p, vecs


class _Rows:
    """Rows of the full adjacency (against every active latent, error and embedding), computed a
    batch of targets at a time with backward passes through one frozen forward pass."""

    def __init__(self, rm: ReplacementModel, trace: Trace, batch_size: int, zero_positions: int = 0) -> None:
        self.rm, self.trace, self.B = rm, trace, batch_size
        P = trace.n_pos
        self.active = []  # per transcoder layer: (positions, latents, activations)
        for L in rm.layers:
            acts = trace.acts[L]
            pos, lat = acts.nonzero(as_tuple=True)
            keep = pos >= zero_positions
            pos, lat = pos[keep], lat[keep]
            self.active.append((L, pos, lat, acts[pos, lat].float()))
        self.feature_index = torch.cat(
            [torch.stack([torch.full_like(p, L), p, f], 1) for L, p, f, _ in self.active]
        ) if self.active else torch.zeros(0, 3, dtype=torch.long)  # fmt: skip
        self.n_active = int(self.feature_index.shape[0])
        self.n_cols = self.n_active + rm.n_layers * P + P
        # per (reading layer, written layer), the decoder rows of the active latents scaled by their
        # activations, in blocks by position (nonzero() lists them position by position): a source's
        # edge is Σ over the layers it writes to of g[written][p] · (a d). A per-layer transcoder
        # writes to its own layer only; a CLT's layer-L latents to every layer from L on.
        self.blocks = []
        start = 0
        for L, pos, f, act in self.active:
            counts = torch.bincount(pos, minlength=P).tolist()
            for written, dec in rm.decoders[L].items():
                scaled = dec[f].float() * act[:, None]
                parts, at_ = [], 0
                for p_, n in enumerate(counts):
                    if n:
                        parts.append((p_, start + at_, start + at_ + n, scaled[at_ : at_ + n].T.contiguous()))
                    at_ += n
                self.blocks.append((written, parts))
            start += len(f)
        self.errors = [trace.error(L).float() for L in range(rm.n_layers)]
        for e in self.errors:
            e[:zero_positions] = 0
        emb = trace.emb.float().unsqueeze(0).expand(batch_size, -1, -1).clone().requires_grad_(True)
        writes = {
            L: rm.writes(trace, L)
            .float()
            .unsqueeze(0)
            .expand(batch_size, -1, -1)
            .clone()
            .requires_grad_(True)
            for L in range(rm.n_layers)
        }
        with torch.enable_grad():
            self.reads, final = rm.frozen_forward(trace, emb, writes)
            self.final = final[:, -1]
        self.emb, self.writes = emb, writes
        self.passes = 0

    def compute(self, seeds: dict[int, Tensor], final_seed: Tensor | None) -> Tensor:
        """Rows (B, n_cols) for targets given as gradients at what the latents read ({L: (B, P, d_in)})
        and at the last position's final-norm output ((B, d))."""
        outputs, grads = [], []
        for L, s in seeds.items():
            outputs.append(self.reads[L])
            grads.append(s)
        if final_seed is not None:
            outputs.append(self.final)
            grads.append(final_seed)
        inputs = [self.emb, *self.writes.values()]
        with torch.enable_grad():
            got = torch.autograd.grad(outputs, inputs, grads, retain_graph=True, allow_unused=True)
        self.passes += 1
        B, t = self.B, self.trace
        rows = torch.zeros(B, self.n_cols)
        g = dict(zip(self.writes, got[1:], strict=True))
        for written, parts in self.blocks:
            if g[written] is None:  # no target of this batch reads layer `written`'s output
                continue
            for p_, a, b, dec in parts:
                rows[:, a:b] += g[written][:, p_] @ dec
        P, base = t.n_pos, self.n_active
        for L in range(self.rm.n_layers):
            if g[L] is not None:
                rows[:, base + L * P : base + (L + 1) * P] = (g[L] * self.errors[L]).sum(-1)
        if got[0] is not None:
            rows[:, base + self.rm.n_layers * P :] = (got[0] * t.emb.float()).sum(-1)
        return rows

    def feature_rows(self, idx: Tensor) -> Tensor:
        """Rows of the active latents `idx` (at most B): targets are their pre-activations."""
        seeds: dict[int, Tensor] = {}
        for b, j in enumerate(idx.tolist()):
            L, p, f = self.feature_index[j].tolist()
            if L not in seeds:
                seeds[L] = torch.zeros_like(self.reads[L])
            seeds[L][b, p] = self.rm.weights[L]["W_enc"][:, f].float()
        return self.compute(seeds, None)[: len(idx)]

    def logit_rows(self, vecs: Tensor) -> Tensor:
        seed = torch.zeros_like(self.final)
        seed[: len(vecs)] = vecs
        return self.compute({}, seed)[: len(vecs)]


class _Ranking:
    """Influence on the logits from the rows computed so far, to choose which latents get rows
    next (when `max_feature_nodes` is below the active count). Rows are kept normalised as they
    come; nodes are columns [active latents, errors, embeddings, logits]."""

    def __init__(self, n_rows: int, n_cols: int, logit_probs: Tensor) -> None:
        self.n_logits = len(logit_probs)
        self.norm = torch.zeros(n_rows, n_cols + self.n_logits)
        self.nodes = torch.zeros(n_rows, dtype=torch.long)
        self.n = 0
        self.start = torch.zeros(n_cols + self.n_logits)
        self.start[n_cols:] = logit_probs

    def add(self, rows: Tensor, nodes: Tensor) -> None:
        k = len(rows)
        self.norm[self.n : self.n + k, : rows.shape[1]] = normalise(rows)
        self.nodes[self.n : self.n + k] = nodes
        self.n += k

    def influence(self, max_iter: int = 1000) -> Tensor:
        M, nodes = self.norm[: self.n], self.nodes[: self.n]
        prod, total = self.start, torch.zeros_like(self.start)
        for _ in range(max_iter):
            prod = prod[nodes] @ M
            if not prod.any():
                break
            total += prod
        return total


@torch.no_grad()
def attribute(
    rm: ReplacementModel,
    ids: Tensor,
    prompt: str = "",
    max_feature_nodes: int | None = None,
    batch_size: int = 32,
    max_logits: int = 10,
    logit_p: float = 0.95,
    progress: bool = True,
    zero_positions: int = 1,
) -> Graph:
    """The attribution graph of a prompt (token ids (P,)) through `rm`, with the latents and errors
    of the first `zero_positions` positions zeroed (circuit-tracer's BOS rule; see
    `bos_positions`; 0 keeps them)."""
    start = time.perf_counter()
    if not 0 <= zero_positions < len(ids):
        raise SuperpositionError(
            f"attribute: zero_positions must be in 0..{len(ids) - 1} for a {len(ids)}-token prompt, "
            f"got {zero_positions}"
        )
    trace = rm.trace(ids)
    logit_ids, logit_probs, vecs = salient_logits(trace.logits, rm.unembed, max_logits, logit_p)
    frozen_params = [p for p in rm.model.parameters() if p.requires_grad]
    for p in frozen_params:
        p.requires_grad_(False)
    try:
        rows = _Rows(rm, trace, batch_size, zero_positions)
        n_logits, n_active = len(logit_ids), rows.n_active
        keep = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
        n_graph = keep + rows.n_cols - n_active + n_logits
        # rows (and their normalised copy), then the graph and pruning's copies of it
        require_memory(
            4.0 * (2 * (keep + n_logits) * rows.n_cols + 6 * n_graph**2),
            f"attribute ({n_active} active latents, {keep} given rows, {trace.n_pos} tokens)",
            "lower max_feature_nodes or use a shorter prompt",
        )
        logit_rows = torch.cat(
            [rows.logit_rows(vecs[i : i + batch_size]) for i in range(0, n_logits, batch_size)]
        )
        feat_rows = torch.zeros(keep, rows.n_cols)
        order = torch.zeros(keep, dtype=torch.long)
        visited = torch.zeros(n_active, dtype=torch.bool)
        ranking = None
        if keep < n_active:
            ranking = _Ranking(keep + n_logits, rows.n_cols, logit_probs)
            ranking.add(logit_rows, torch.arange(rows.n_cols, rows.n_cols + n_logits))
        done = 0
        bar = tqdm(total=keep, desc="attribution", unit="latent", disable=not progress, leave=False)
        while done < keep:
            if ranking is None:
                pending = torch.arange(n_active)
            else:  # the latents most influential on the logits by the rows so far
                rank = ranking.influence()[:n_active].argsort(descending=True)
                pending = rank[~visited[rank]][: min(4 * batch_size, keep - done)]
            for i in range(0, len(pending), batch_size):
                chunk = pending[i : i + batch_size]
                got = rows.feature_rows(chunk)
                feat_rows[done : done + len(chunk)] = got
                order[done : done + len(chunk)] = chunk
                if ranking is not None:
                    ranking.add(got, chunk)
                visited[chunk] = True
                done += len(chunk)
                bar.update(len(chunk))
        bar.close()
        passes = rows.passes
    finally:
        for p in frozen_params:
            p.requires_grad_(True)
    # the graph: the chosen latents in (layer, position, latent) order, then errors, embeddings, logits
    chosen = order.sort().values
    where = torch.full((n_active,), -1, dtype=torch.long)
    where[order] = torch.arange(keep)
    n_other = rows.n_cols - n_active
    N = keep + n_other + n_logits
    cols = torch.cat([chosen, torch.arange(n_active, rows.n_cols)])
    A = torch.zeros(N, N)
    A[:keep, : keep + n_other] = feat_rows[where[chosen]][:, cols]
    A[keep + n_other :, : keep + n_other] = logit_rows[:, cols]
    feats = rows.feature_index[chosen]
    acts = torch.stack([trace.acts[int(L)][int(p), int(f)] for L, p, f in feats]) if keep else torch.zeros(0)
    graph = Graph(
        prompt=prompt,
        tokens=[int(t) for t in trace.ids],
        n_layers=rm.n_layers,
        features=feats,
        activations=acts.float(),
        logit_ids=logit_ids,
        logit_probs=logit_probs,
        adjacency=A,
        n_active=n_active,
        zero_positions=zero_positions,
    )
    graph.cost = {"seconds": time.perf_counter() - start, "backward_passes": passes, "batch_size": batch_size}
    return graph


def bos_positions(model_name: str) -> int:
    """How many leading positions circuit-tracer zeroes for a model: 4 for a Gemma-3
    instruction-tuned model (`<bos><start_of_turn>user\\n`), 1 (the BOS) otherwise."""
    name = model_name.lower().rstrip("/").rsplit("/", 1)[-1]
    return 4 if "gemma-3" in name and name.endswith("-it") else 1


def zeroed_positions(ids: Tensor, bos_token_id: int | None, model_names, keep_bos: bool = False) -> int:
    """Leading positions whose latents and errors attribution zeroes for a prompt: circuit-tracer's
    rule (`bos_positions` of any of the model's names) when the prompt opens with BOS; none when it
    does not, or with `keep_bos`. A prompt with nothing after them is a one-line error."""
    if keep_bos or bos_token_id is None or int(ids[0]) != bos_token_id:
        return 0
    n = max(bos_positions(str(name)) for name in model_names if name)
    if n >= len(ids):
        raise SuperpositionError(
            f"prompt: {len(ids)} tokens, and the first {n} (BOS) are left out of attribution as "
            "circuit-tracer leaves them; give a longer prompt or --keep-bos"
        )
    return n


# ---------------------------------------------------------------------- files
def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def frontend_json(
    graph: Graph,
    nodes: Tensor,
    edges: Tensor,
    token_text: list[str],
    logit_text: list[str],
    labels: dict[tuple[int, int], str] | None = None,
    slug: str = "graph",
    scan: str = "",
    transcoders: list[str] | None = None,
    node_threshold: float = 0.8,
    node_influence: Tensor | None = None,
) -> dict:
    """The pruned graph in the JSON circuit-tracer's frontend and Neuronpedia read: `metadata`,
    `qParams`, `nodes` (node ids as circuit-tracer defines them: `{layer}_{latent}_{pos}` for a
    latent, `0_{layer}_{pos}` for an error, `E_{token}_{pos}` for an embedding,
    `{n_layers + 1}_{token}_{pos}` for a logit) and `links` (source, target, weight). Fields are
    filled as circuit-tracer fills them: cumulative influence on latents, errors and embeddings
    (none on logits), `clerp` on latents (`labels`) and logits, empty on errors and embeddings (the
    frontend names them from the node id and the prompt's tokens)."""
    labels = labels or {}
    sl = graph.slices()
    A, P = graph.adjacency, graph.n_pos
    inf = influence(normalise(A), graph.logit_weights()) if node_influence is None else node_influence
    order = inf.argsort(descending=True)
    cum = torch.zeros_like(inf)
    cum[order] = inf[order].cumsum(0) / inf.sum().clamp(min=1e-30)
    out_nodes: dict[int, dict] = {}
    for i in nodes.nonzero().flatten().tolist():
        base = {"influence": float(cum[i]), "run_idx": 0, "reverse_ctx_idx": 0, "token_prob": 0.0,
                "is_target_logit": False, "clerp": "", "activation": None}  # fmt: skip
        if i < sl["errors"].start:
            L, p, f = graph.features[i].tolist()
            node = {"node_id": f"{L}_{f}_{p}", "feature": _cantor(L, f), "layer": str(L), "ctx_idx": p,
                    "feature_type": "cross layer transcoder", "jsNodeId": f"{L}_{f}-0",
                    "activation": float(graph.activations[i]), "clerp": labels.get((L, f), "")}  # fmt: skip
        elif i < sl["tokens"].start:
            L, p = divmod(i - sl["errors"].start, P)
            node = {"node_id": f"0_{L}_{p}", "feature": -1, "layer": str(L), "ctx_idx": p,
                    "feature_type": "mlp reconstruction error", "jsNodeId": f"{L}_{p}-0"}  # fmt: skip
        elif i < sl["logits"].start:
            p = i - sl["tokens"].start
            t = graph.tokens[p]
            node = {"node_id": f"E_{t}_{p}", "feature": p, "layer": "E", "ctx_idx": p,
                    "feature_type": "embedding", "jsNodeId": f"E_{t}-{p}"}  # fmt: skip
        else:
            k = i - sl["logits"].start
            t, prob = int(graph.logit_ids[k]), float(graph.logit_probs[k])
            layer = str(graph.n_layers + 1)
            node = {"node_id": f"{layer}_{t}_{P - 1}", "feature": t, "layer": layer, "ctx_idx": P - 1,
                    "feature_type": "logit", "jsNodeId": f"L_{t}-{P - 1}", "token_prob": prob,
                    "influence": None,
                    "is_target_logit": k == 0,
                    "clerp": f'Output "{logit_text[k]}" (p={prob:.3f})'}  # fmt: skip
        out_nodes[i] = {**base, **node}
    dst, src = edges.nonzero(as_tuple=True)
    links = [
        {"source": out_nodes[s]["node_id"], "target": out_nodes[d]["node_id"], "weight": float(A[d, s])}
        for d, s in zip(dst.tolist(), src.tolist(), strict=True)
        if s in out_nodes and d in out_nodes
    ]
    used = {x for link in links for x in (link["source"], link["target"])}
    kept = [
        n for n in out_nodes.values() if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")
    ]
    metadata = {
        "slug": slug,
        "scan": scan,
        "transcoder_list": transcoders or [],
        "prompt_tokens": token_text,
        "prompt": graph.prompt,
        "node_threshold": node_threshold,
        "schema_version": 1,
    }
    q = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q, "nodes": kept, "links": links}


GRAPH_TENSORS = ("adjacency", "features", "activations", "logit_ids", "logit_probs", "tokens")


def save_graph(graph: Graph, path, extra: dict | None = None) -> None:
    """The graph as safetensors (its tensors) with its prompt and sizes in the header's metadata."""
    import json

    from safetensors.torch import save

    from superposition.atomic import atomic_write_bytes

    tensors = {
        "adjacency": graph.adjacency.float().contiguous(),
        "features": graph.features.long().contiguous(),
        "activations": graph.activations.float().contiguous(),
        "logit_ids": graph.logit_ids.long().contiguous(),
        "logit_probs": graph.logit_probs.float().contiguous(),
        "tokens": torch.tensor(graph.tokens, dtype=torch.long),
    }
    meta = {"format": "superposition attribution graph 1", "prompt": graph.prompt,
            "n_layers": str(graph.n_layers), "n_active": str(graph.n_active),
            "zero_positions": str(graph.zero_positions), "extra": json.dumps(extra or {})}  # fmt: skip
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_graph(path) -> Graph:
    """A graph written by `save_graph` (safetensors: no pickle)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:  # a torn or foreign file
        raise SuperpositionError(f"{path}: not a readable graph ({type(err).__name__})") from None
    missing = [k for k in GRAPH_TENSORS if k not in t]
    if missing or meta.get("format") != "superposition attribution graph 1":
        raise SuperpositionError(f"{path}: not an attribution graph written by `attribute`")
    return Graph(
        prompt=meta.get("prompt", ""),
        tokens=t["tokens"].tolist(),
        n_layers=int(meta["n_layers"]),
        features=t["features"],
        activations=t["activations"],
        logit_ids=t["logit_ids"],
        logit_probs=t["logit_probs"],
        adjacency=t["adjacency"],
        n_active=int(meta.get("n_active", t["features"].shape[0])),
        zero_positions=int(meta.get("zero_positions", 0)),
    )
