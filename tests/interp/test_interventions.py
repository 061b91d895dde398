"""Interventions: with no edit both modes give the model's logits; with attention frozen and the
other latents held, an ablation moves every target by exactly minus its graph edge; steering adds
the decoder direction at the hook; the commands' bad input is one line."""

import pytest
import torch

from superposition.cli import main
from superposition.interp import interventions as iv
from superposition.interp.attribution import attribute
from superposition.interp.replacement import ReplacementModel
from superposition.lm.hooks import HookedModel
from tests.interp.test_attribution import _llama, _transcoder
from tests.reliability.test_hostile import _one_line_exit_2


@pytest.fixture(scope="module")
def setup():
    model = _llama()
    # outputs on the scale of this model's residual stream (std 0.02), as a trained transcoder's are:
    # the error term then does not cancel large numbers
    rm = ReplacementModel(
        HookedModel(model), {L: _transcoder(8, 24, L, bias=True, scale=0.01) for L in range(2)}
    )
    ids = torch.tensor([3, 17, 5, 9, 22, 1])
    return model, rm, ids, rm.trace(ids), attribute(rm, ids, batch_size=8, progress=False)


@pytest.mark.parametrize("frozen", [True, False])
def test_no_edit_gives_the_models_logits(setup, frozen):
    model, rm, ids, trace, _ = setup
    logits, _ = iv.intervened_logits(rm, trace, [], frozen=frozen)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids[None]).logits[0], rtol=0, atol=1e-5)


def test_graph_edges_predict_frozen_ablations(setup):
    _, rm, ids, trace, graph = setup
    sl = graph.slices()
    logits0, pre0 = iv.intervened_logits(rm, trace, [], frozen=True, recompute=False)
    checked = 0
    for s in range(0, graph.n_features, 5):
        L, p, f = graph.features[s].tolist()
        logits, pre = iv.intervened_logits(rm, trace, [iv.Edit(L, f, p)], frozen=True, recompute=False)
        d = logits[-1] - logits0[-1]
        for k, t in enumerate(graph.logit_ids.tolist()):
            want = -graph.adjacency[sl["logits"].start + k, s]
            assert float(d[t] - d.mean()) == pytest.approx(float(want), abs=2e-5)
        for j, (L2, p2, f2) in enumerate(graph.features.tolist()):
            if L2 > L:
                assert float(pre[L2][p2, f2] - pre0[L2][p2, f2]) == pytest.approx(
                    -float(graph.adjacency[j, s]), abs=2e-5
                )
        checked += 1
    assert checked >= 10


def test_unfrozen_ablation_differs_from_frozen_where_attention_moves(setup):
    _, rm, ids, trace, graph = setup
    L, p, f = graph.features[0].tolist()
    edits = [iv.Edit(L, f, None)]
    frozen, _ = iv.intervened_logits(rm, trace, edits, frozen=True)
    real, _ = iv.intervened_logits(rm, trace, edits, frozen=False)
    assert not torch.allclose(frozen, real) and iv.kl(trace.logits, real[-1]) >= 0


def test_with_bos_left_out_star_means_the_graphs_positions_and_bos_is_refused(setup):
    _, rm, _, trace, _ = setup
    from superposition.errors import SuperpositionError

    edits = iv.parse_nodes("1_5_*", rm, trace.n_pos, "ablate", 0, first=1)
    assert [e.pos for e in edits] == list(range(1, trace.n_pos))
    with pytest.raises(SuperpositionError, match="position 0 is BOS.*positions 1..5, or --keep-bos"):
        iv.parse_nodes("1_5_0", rm, trace.n_pos, "ablate", 0, first=1)
    with pytest.raises(SuperpositionError, match="named twice"):
        iv.parse_nodes("1_5_*,1_5_3", rm, trace.n_pos, "add", 1.0, first=1)
    with pytest.raises(SuperpositionError, match="named twice"):
        iv.parse_nodes("1_5_3,1_5_*", rm, trace.n_pos, "add", 1.0)
    # the expanded edits leave BOS as it was: the same logits as editing positions 1.. one by one
    star, _ = iv.intervened_logits(rm, trace, edits, frozen=False)
    each, _ = iv.intervened_logits(rm, trace, [iv.Edit(1, 5, p) for p in range(1, trace.n_pos)], frozen=False)
    every, _ = iv.intervened_logits(rm, trace, [iv.Edit(1, 5, None)], frozen=False)
    torch.testing.assert_close(star, each, rtol=0, atol=0)
    fired_at_bos = bool(trace.acts[1][0, 5] != 0)
    assert fired_at_bos == (not torch.equal(star, every))


def test_parse_nodes_reads_graph_ids_and_refuses_others(setup):
    _, rm, _, trace, _ = setup
    edits = iv.parse_nodes("0_3_2,1_5_*", rm, trace.n_pos, "clamp", 2.0)
    assert edits == [iv.Edit(0, 3, 2, "clamp", 2.0), iv.Edit(1, 5, None, "clamp", 2.0)]
    from superposition.errors import SuperpositionError

    for bad, needle in (
        ("2_1_0", "no transcoder at layer 2"),
        ("0_99_0", "latents 0..23"),
        ("0_1_9", "positions 0..5"),
        ("x", "node id"),
    ):
        with pytest.raises(SuperpositionError, match=needle):
            iv.parse_nodes(bad, rm, trace.n_pos, "ablate", 0)


def test_add_steering_adds_the_direction_at_the_hook():
    from superposition.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2)).eval()
    fns = iv.steer_hook(sae, "blocks.0.hook_resid_post", 3, 2.5, "add")
    x = torch.randn(1, 4, 8)
    torch.testing.assert_close(fns["blocks.0.hook_resid_post"](x), x + 2.5 * sae.saved_tensors(0)["W_dec"][3])
    clamp = iv.steer_hook(sae, "blocks.0.hook_resid_post", 3, 4.0, "clamp")["blocks.0.hook_resid_post"]
    # clamping swaps the latent's term of the reconstruction: x + (4 - z_3(x)) d_3
    z = sae.encode(x.reshape(-1, 8))[:, 3].reshape(1, 4, 1)
    want = x + (4.0 - z) * sae.saved_tensors(0)["W_dec"][3]
    torch.testing.assert_close(clamp(x), want)


def test_intervene_and_steer_commands(transcoder_run, tiny_run, capsys):
    assert main(["intervene", str(transcoder_run), "--prompt", "def f(x):", "--nodes", "0_1_*,1_2_*"]) == 0
    out = capsys.readouterr().out
    assert "frozen: KL" in out and "unfrozen: KL" in out
    assert (
        main(
            [
                "steer",
                str(tiny_run),
                "--prompt",
                "The",
                "--latent",
                "3",
                "--value",
                "50",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "as is:" in out and "latent 3 +50 x its direction:" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--nodes", "5_1_0"], "no transcoder at layer 5"),
        (["--nodes", "0_1_0", "--mode", "nuke"], "--mode"),
        (["--nodes", ""], "node id"),
    ],
)
def test_intervene_bad_input_is_one_line(transcoder_run, capsys, argv, needle):
    _one_line_exit_2(capsys, ["intervene", str(transcoder_run), "--prompt", "x", *argv], needle)


def test_steer_bad_latent_is_one_line(tiny_run, capsys):
    _one_line_exit_2(
        capsys, ["steer", str(tiny_run), "--prompt", "x", "--latent", "99999", "--value", "1"], "out of range"
    )


def test_clt_graph_edges_predict_frozen_ablations():
    """With a cross-layer transcoder: ablating a layer-0 latent removes what it writes to layers 0
    and 1, and (attention frozen, latents not recomputed) moves each later target by minus its edge."""
    from tests.interp.test_attribution import _clt

    model = _llama()
    rm = ReplacementModel(HookedModel(model), _clt())
    ids = torch.tensor([3, 17, 5, 9, 22, 1])
    trace = rm.trace(ids)
    graph = attribute(rm, ids, batch_size=8, progress=False, zero_positions=0)
    logits_none, _ = iv.intervened_logits(rm, trace, [], frozen=False)
    with torch.no_grad():
        torch.testing.assert_close(logits_none, model(ids[None]).logits[0], rtol=0, atol=1e-5)
    sl = graph.slices()
    logits0, pre0 = iv.intervened_logits(rm, trace, [], frozen=True, recompute=False)
    layer0 = [j for j, (L, _, _) in enumerate(graph.features.tolist()) if L == 0]
    for s in layer0[::4]:
        L, p, f = graph.features[s].tolist()
        logits, pre = iv.intervened_logits(rm, trace, [iv.Edit(L, f, p)], frozen=True, recompute=False)
        d = logits[-1] - logits0[-1]
        for k, t in enumerate(graph.logit_ids.tolist()):
            assert float(d[t] - d.mean()) == pytest.approx(
                -float(graph.adjacency[sl["logits"].start + k, s]), abs=2e-5
            )
        for j, (L2, p2, f2) in enumerate(graph.features.tolist()):
            if L2 > L:
                want = -float(graph.adjacency[j, s])
                assert float(pre[L2][p2, f2] - pre0[L2][p2, f2]) == pytest.approx(want, abs=2e-5)
    assert len(layer0) >= 4
