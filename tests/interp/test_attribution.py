"""Attribution graphs, by known answers: the frozen replacement model is the model on the prompt
and linear around it; each edge is the change a frozen intervention makes; incoming edges sum to
the target's value; influence, pruning and scores on hand-built graphs; a transcoder that is the
MLP leaves no error."""

import pytest
import torch

from superposition.interp.attribution import (
    Graph,
    attribute,
    bos_positions,
    influence,
    normalise,
    prune,
    pruned_adjacency,
    scores,
)
from superposition.interp.replacement import ReplacementModel
from superposition.lm.hooks import HookedModel
from superposition.sae import SAEConfig, make_sae


def _llama(d=8, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=30, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _transcoder(d, d_sae, seed, bias=False, skip=False, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    arch = "skip_transcoder" if skip else "transcoder"
    sae = make_sae(SAEConfig(architecture=arch, sparsity="standard", d_in=d, d_sae=d_sae))
    t = {
        "W_enc": torch.randn(d, d_sae, generator=g),
        "b_enc": torch.randn(d_sae, generator=g) * bias,
        "W_dec": torch.randn(d_sae, d, generator=g) * scale,
        "b_dec": torch.randn(d, generator=g) * bias * scale,
    }
    if skip:
        t["W_skip"] = torch.randn(d, d, generator=g) * 0.2
    sae.load_saved(t)
    return sae.eval()


@pytest.fixture(scope="module")
def small():
    """A random 2-layer d=8 Llama-style model with random transcoders, and one prompt's graph with
    every position's latents and errors kept (the exact linear algebra; the BOS rule is below)."""
    model = _llama()
    rm = ReplacementModel(HookedModel(model), {L: _transcoder(8, 24, L) for L in range(2)})
    ids = torch.tensor([3, 17, 5, 9, 22, 1])
    return model, rm, ids, attribute(rm, ids, batch_size=8, progress=False, zero_positions=0)


def _targets(rm, trace, graph, emb, writes):
    """Every target's value in the frozen model for (1, P, d) inputs: latent pre-activations, then
    demeaned logits, in the graph's row order."""
    ln2, final = rm.frozen_forward(trace, emb, writes)
    pre = [ln2[L][0, p] @ rm.weights[L]["W_enc"][:, f] for L, p, f in graph.features.tolist()]
    logits = rm.logits_of(final[0, -1])
    demeaned = logits[graph.logit_ids] - logits.mean()
    return torch.cat([torch.stack(pre), demeaned])


def _baseline(rm, ids, graph):
    """(trace, slices, the target rows (latents, logits), each layer's writes, the targets' values)."""
    trace = rm.trace(ids)
    sl = graph.slices()
    rows = torch.cat(
        [torch.arange(graph.n_features), torch.arange(sl["logits"].start, graph.adjacency.shape[0])]
    )
    writes = {L: rm.writes(trace, L)[None] for L in range(rm.n_layers)}
    with torch.no_grad():
        base = _targets(rm, trace, graph, trace.emb[None], writes)
    return trace, sl, rows, writes, base


def test_the_traced_and_frozen_models_compute_the_models_logits(small):
    model, rm, ids, _ = small
    trace = rm.trace(ids)
    with torch.no_grad():
        real = model(ids[None]).logits[0]
        writes = {L: rm.writes(trace, L)[None] for L in range(2)}
        _, final = rm.frozen_forward(trace, trace.emb[None], writes)
    torch.testing.assert_close(trace.logits, real[-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(rm.logits_of(final[0]), real, rtol=0, atol=1e-5)


def test_each_adjacency_column_is_the_change_a_frozen_intervention_makes(small):
    _, rm, ids, graph = small
    trace, sl, rows, base_writes, base = _baseline(rm, ids, graph)
    with torch.no_grad():
        checked = 0
        for col in list(range(0, graph.n_features, 7)) + list(range(sl["errors"].start, sl["tokens"].stop)):
            emb, writes = trace.emb[None].clone(), {L: w.clone() for L, w in base_writes.items()}
            if col < graph.n_features:  # the latent's activation doubled: its decoded vector added again
                L, p, f = graph.features[col].tolist()
                writes[L][0, p] += graph.activations[col] * rm.weights[L]["W_dec"][f]
            elif col < sl["tokens"].start:  # the error node doubled
                L, p = divmod(col - sl["errors"].start, graph.n_pos)
                writes[L][0, p] += trace.error(L)[p]
            else:  # the embedding doubled
                p = col - sl["tokens"].start
                emb[0, p] += trace.emb[p]
            change = _targets(rm, trace, graph, emb, writes) - base
            torch.testing.assert_close(change, graph.adjacency[rows, col], rtol=1e-4, atol=1e-5)
            checked += 1
    assert checked > 20


def test_the_frozen_model_has_no_second_derivative(small):
    """A missed freeze (a live pattern or norm) would bend the map from inputs to targets."""
    _, rm, ids, _ = small
    trace = rm.trace(ids)
    writes = {L: rm.writes(trace, L)[None] for L in range(2)}

    def target(emb):
        ln2, final = rm.frozen_forward(trace, emb, writes)
        return (ln2[1] ** 1).sum() + rm.logits_of(final[0, -1]).sum()

    v = torch.randn_like(trace.emb[None])
    _, hvp = torch.autograd.functional.hvp(target, trace.emb[None].clone(), v)
    assert hvp.abs().max() == 0


def _sums_to(row, value):
    """Σ row = value up to float32 rounding of the terms summed (edges cancel each other)."""
    assert abs(float(row.sum()) - float(value)) <= 1e-5 * float(row.abs().sum()) + 1e-6


def test_with_biases_zeroed_incoming_edges_sum_to_the_target(small):
    _, rm, ids, graph = small
    trace = rm.trace(ids)
    for j, (L, p, f) in enumerate(graph.features.tolist()):
        pre = trace.mlp_in[L][p] @ rm.weights[L]["W_enc"][:, f]
        _sums_to(graph.adjacency[j], pre)
    logits = graph.adjacency[graph.slices()["logits"]].sum(1)
    want = trace.logits[graph.logit_ids] - trace.logits.mean()
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)
    assert graph.logit_probs.sum() >= 0.95 or len(graph.logit_ids) == 10


def test_a_skip_transcoder_routes_its_skip_path_through_earlier_nodes():
    model = _llama()
    rm = ReplacementModel(HookedModel(model), {0: _transcoder(8, 24, 0, skip=True), 1: _transcoder(8, 24, 1)})
    ids = torch.tensor([3, 17, 5, 9])
    graph = attribute(rm, ids, batch_size=16, progress=False, zero_positions=0)
    trace = rm.trace(ids)
    for j, (L, p, f) in enumerate(graph.features.tolist()):
        pre = trace.mlp_in[L][p] @ rm.weights[L]["W_enc"][:, f]
        _sums_to(graph.adjacency[j], pre)


def test_max_feature_nodes_keeps_the_most_influential_latents(small):
    _, rm, ids, full = small
    part = attribute(rm, ids, batch_size=8, max_feature_nodes=20, progress=False, zero_positions=0)
    assert part.n_features == 20 and part.n_active == full.n_active
    inf = influence(normalise(full.adjacency), full.logit_weights())[: full.n_features]
    chosen = {tuple(r) for r in part.features.tolist()}
    top = {tuple(full.features[i].tolist()) for i in inf.argsort(descending=True)[:20].tolist()}
    # the ranking is computed from partial rows, so most (not all) of the exact top 20 are chosen
    assert len(chosen & top) >= 14
    # rows of the latents kept are the full graph's rows, restricted to the columns kept
    keep = [full.features.tolist().index(list(r)) for r in part.features.tolist()]
    sl_full, sl_part = full.slices(), part.slices()
    torch.testing.assert_close(
        part.adjacency[:20, sl_part["errors"]], full.adjacency[keep][:, sl_full["errors"]]
    )


# ---------------------------------------------------------------------- hand-built graphs
def _graph(A, probs, n_features, n_layers=1, n_pos=2):
    return Graph(
        prompt="",
        tokens=list(range(n_pos)),
        n_layers=n_layers,
        features=torch.zeros(n_features, 3, dtype=torch.long),
        activations=torch.ones(n_features),
        logit_ids=torch.arange(len(probs)),
        logit_probs=torch.tensor(probs),
        adjacency=torch.tensor(A, dtype=torch.float32),
        n_active=n_features,
    )


def _twelve():
    """Nodes f1..f6 (0-5), errors e1 e2 (6, 7), tokens t1 t2 (8, 9), logits l1 l2 (10, 11)."""
    A = torch.zeros(12, 12)
    A[10, 4], A[10, 5] = 3, 1  # l1 <- f5, f6
    A[11, 5], A[11, 6] = 2, -2  # l2 <- f6, e1
    A[4, 2], A[4, 8] = 1, 1  # f5 <- f3, t1
    A[5, 3] = -4  # f6 <- f4
    A[2, 8], A[2, 7] = 2, 2  # f3 <- t1, e2
    A[3, 9] = 1  # f4 <- t2
    return _graph(A.tolist(), [0.75, 0.25], 6)


def test_influence_on_a_hand_built_graph_is_the_hand_computed_value():
    g = _twelve()
    got = influence(normalise(g.adjacency), g.logit_weights())
    want = [0, 0, 0.28125, 0.3125, 0.5625, 0.3125, 0.125, 0.140625, 0.421875, 0.3125, 0, 0]
    torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=1e-7)
    replacement, completeness = scores(g)
    assert replacement == pytest.approx(0.734375)  # (t1 + t2) / (t1 + t2 + e1 + e2)
    assert completeness == pytest.approx(205 / 222)  # l2 and f3 take half their input from errors


def test_pruning_a_planted_circuit_keeps_exactly_it_and_scores_one():
    """token -> f1 -> f2 -> logit carries almost everything; three weak latents hang off it; the
    transcoders are exact (no error edges)."""
    n_f = 5  # f1, f2, and weak w1..w3
    A = torch.zeros(n_f + 2 + 2 + 1, n_f + 2 + 2 + 1)
    t1, t2, logit = n_f + 2, n_f + 3, n_f + 4
    A[0, t1] = 5.0  # f1 <- token
    A[1, 0] = 4.0  # f2 <- f1
    A[logit, 1] = 6.0  # logit <- f2
    for w in (2, 3, 4):
        A[w, t2] = 1.0
        A[logit, w] = 0.01
    g = _graph(A.tolist(), [1.0], n_f)
    nodes, edges = prune(g, 0.8, 0.98)
    kept = set(nodes.nonzero().flatten().tolist())
    assert kept - {t2} == {0, 1, t1, logit}  # embeddings are always kept
    assert set(map(tuple, edges.nonzero().tolist())) == {(0, t1), (1, 0), (logit, 1)}
    assert scores(g) == pytest.approx((1.0, 1.0))
    assert scores(g, pruned_adjacency(g, nodes, edges)) == pytest.approx((1.0, 1.0))


def test_a_transcoder_holding_a_relu_mlps_weights_leaves_no_error_influence():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=40, activation_function="relu")
    ).eval()
    tcs = {}
    for L in range(2):
        mlp = model.transformer.h[L].mlp
        sae = make_sae(SAEConfig(architecture="transcoder", sparsity="standard", d_in=16, d_sae=64))
        sae.load_saved(
            {
                "W_enc": mlp.c_fc.weight,
                "b_enc": mlp.c_fc.bias,
                "W_dec": mlp.c_proj.weight,
                "b_dec": mlp.c_proj.bias,
            }
        )
        tcs[L] = sae.eval()
    rm = ReplacementModel(HookedModel(model), tcs)
    graph = attribute(rm, torch.tensor([1, 7, 3, 30, 12]), batch_size=16, progress=False)
    trace = rm.trace(torch.tensor([1, 7, 3, 30, 12]))
    assert max(float(trace.error(L).abs().max()) for L in range(2)) < 1e-5
    sl = graph.slices()
    err = influence(normalise(graph.adjacency), graph.logit_weights())[sl["errors"]]
    tok = influence(normalise(graph.adjacency), graph.logit_weights())[sl["tokens"]]
    assert float(err.sum()) < 1e-4 * float(tok.sum())
    assert scores(graph)[0] == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------- the BOS rule
def test_bos_positions_follow_circuit_tracer():
    assert bos_positions("smollm2-135m") == 1
    assert bos_positions("google/gemma-2-2b") == 1
    assert bos_positions("google/gemma-3-1b-it") == 4
    assert bos_positions("/models/gemma-3-4b-it/") == 4
    assert bos_positions("gemma-3-4b-pt") == 1


def test_bos_rule_drops_position_zero_and_leaves_every_other_edge_as_it_was(small):
    """Zeroing BOS removes its latents and empties its error nodes; every other node's row (over
    the columns both graphs have) is the full graph's, and the scores are recomputed over it."""
    _, rm, ids, full = small
    g = attribute(rm, ids, batch_size=8, progress=False)  # the default: zero_positions=1
    assert g.zero_positions == 1 and full.zero_positions == 0
    assert (full.features[:, 1] == 0).sum() > 0 and (g.features[:, 1] == 0).sum() == 0
    kept = [j for j, r in enumerate(full.features.tolist()) if r[1] > 0]
    assert g.features.tolist() == [full.features[j].tolist() for j in kept]
    sf, sg = full.slices(), g.slices()
    cols_full = torch.cat([torch.tensor(kept), torch.arange(sf["errors"].start, sf["logits"].start)])
    cols_g = torch.arange(sg["logits"].start)
    rows_full = torch.cat([torch.tensor(kept), torch.arange(sf["logits"].start, full.adjacency.shape[0])])
    rows_g = torch.cat([torch.arange(g.n_features), torch.arange(sg["logits"].start, g.adjacency.shape[0])])
    want = full.adjacency[rows_full][:, cols_full].clone()
    # the BOS error columns (one per layer, position 0) are emptied
    P = g.n_pos
    bos_err = [g.n_features + L * P for L in range(g.n_layers)]
    assert float(full.adjacency[:, [sf["errors"].start + L * P for L in range(2)]].abs().sum()) > 0
    want[:, bos_err] = 0
    torch.testing.assert_close(g.adjacency[rows_g][:, cols_g], want, rtol=1e-5, atol=1e-6)


def test_with_bos_zeroed_incoming_edges_sum_to_the_target_without_the_bos_mlp_outputs(small):
    """The known answer of the rule: the graph accounts for each target's value in the frozen model
    whose MLPs write nothing at BOS (biases are zero here, so nothing else is left out)."""
    _, rm, ids, _ = small
    g = attribute(rm, ids, batch_size=8, progress=False)
    trace = rm.trace(ids)
    writes = {L: rm.writes(trace, L)[None].clone() for L in range(2)}
    for w in writes.values():
        w[0, 0] = 0
    with torch.no_grad():
        values = _targets(rm, trace, g, trace.emb[None], writes)
        full_values = _targets(
            rm, trace, g, trace.emb[None], {L: rm.writes(trace, L)[None] for L in range(2)}
        )
    sl = g.slices()
    rows = torch.cat([torch.arange(g.n_features), torch.arange(sl["logits"].start, g.adjacency.shape[0])])
    for r, v in zip(rows.tolist(), values, strict=True):
        _sums_to(g.adjacency[r], v)
    # and the BOS outputs mattered: without the rule the sums would be the full values
    assert float((values - full_values).abs().max()) > 1e-3


def test_zero_positions_must_leave_a_position():
    from superposition.errors import SuperpositionError

    rm = ReplacementModel(HookedModel(_llama()), {0: _transcoder(8, 24, 0)})
    with pytest.raises(SuperpositionError, match="zero_positions must be in 0..1"):
        attribute(rm, torch.tensor([3, 4]), zero_positions=2, progress=False)


# ---------------------------------------------------------------------- cross-layer transcoders
def _clt(d=8, layers=2, d_sae=12, seed=0):
    """A random ReLU CLT (JumpReLU at threshold 0): layer L's latents write to layers L.."""
    from superposition.sae.clt import CrossLayerTranscoder

    g = torch.Generator().manual_seed(seed)
    clt = CrossLayerTranscoder(layers, d, d_sae, k=None)
    clt.threshold = torch.zeros(layers, d_sae)
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(layers, d, d_sae, generator=g) * 3)
        for i in range(layers):
            clt.W_dec[i].copy_(torch.randn(d_sae, layers - i, d, generator=g) * 0.01)
    return clt.eval()


@pytest.fixture(scope="module")
def clt_graph():
    model = _llama()
    rm = ReplacementModel(HookedModel(model), _clt())
    ids = torch.tensor([3, 17, 5, 9, 22, 1])
    return rm, ids, attribute(rm, ids, batch_size=8, progress=False, zero_positions=0)


def test_a_clt_replaces_every_mlp_and_its_errors_make_the_model_exact(clt_graph):
    rm, ids, graph = clt_graph
    trace = rm.trace(ids)
    assert rm.layers == [0, 1] and rm.read_hook == "hook_resid_mid"
    # layer 1's reconstruction holds what layer 0's latents write there
    from_0 = trace.acts[0] @ rm.decoders[0][1]
    assert float(from_0.abs().max()) > 0
    torch.testing.assert_close(trace.recon[1], from_0 + trace.acts[1] @ rm.decoders[1][1])
    for L in range(2):
        torch.testing.assert_close(trace.recon[L] + trace.error(L), trace.mlp_out[L])
    assert graph.n_features == int(sum((trace.acts[L] > 0).sum() for L in range(2)))


def test_clt_columns_are_the_changes_frozen_interventions_make(clt_graph):
    """A layer-0 latent doubled adds its decoded vector to layers 0 and 1: its column of the graph
    is that change in every target, as for per-layer transcoders."""
    rm, ids, graph = clt_graph
    trace, sl, rows, base_writes, base = _baseline(rm, ids, graph)
    with torch.no_grad():
        layer0 = [j for j, (L, _, _) in enumerate(graph.features.tolist()) if L == 0]
        assert len(layer0) > 3
        for col in layer0[::3]:
            writes = {L: w.clone() for L, w in base_writes.items()}
            L, p, f = graph.features[col].tolist()
            for written, dec in rm.decoders[L].items():
                writes[written][0, p] += graph.activations[col] * dec[f]
            change = _targets(rm, trace, graph, trace.emb[None], writes) - base
            torch.testing.assert_close(change, graph.adjacency[rows, col], rtol=1e-4, atol=1e-5)


def test_clt_incoming_edges_sum_to_each_target(clt_graph):
    rm, ids, graph = clt_graph
    trace = rm.trace(ids)
    for j, (L, p, f) in enumerate(graph.features.tolist()):
        _sums_to(graph.adjacency[j], trace.reads[L][p] @ rm.weights[L]["W_enc"][:, f])
    want = trace.logits[graph.logit_ids] - trace.logits.mean()
    torch.testing.assert_close(graph.adjacency[graph.slices()["logits"]].sum(1), want, rtol=1e-4, atol=1e-5)
