"""Sparse feature circuits, by known answers: IG's left-Riemann sum, attribution patching exact for
a linear metric, node effects at a hook summing to the exact patching effect as steps grow, splicing
every SAE with its error leaving logits bit-identical, faithfulness 1 for the model and 0 for the
empty circuit, an edge equal to its finite difference; bad pairs are one line."""

import json

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.interp import circuits as sc
from superposition.sae import SAEConfig, make_sae

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post")


def test_integrated_gradients_of_a_square_is_the_left_riemann_sum():
    c, p = torch.tensor([1.0]), torch.tensor([3.0])
    g = sc.integrated_effect(lambda x: (x**2).sum(-1), c, p, 10)
    # Σ_k 2(1 + 2k/10)/10 = 2(1 + 0.9) = 3.8; times Δ = 2: 7.6 (the exact change is 8)
    assert float(g * (p - c)) == pytest.approx(7.6)
    assert float(sc.integrated_effect(lambda x: (x**2).sum(-1), c, p, 1) * (p - c)) == pytest.approx(4.0)


def test_attribution_patching_is_exact_for_a_linear_metric():
    w = torch.randn(5)
    c, p = torch.randn(5), torch.randn(5)
    for steps in (1, 7):
        g = sc.integrated_effect(lambda x: x @ w, c, p, steps)
        assert float((g * (p - c)).sum()) == pytest.approx(float(w @ p - w @ c), abs=1e-5)


@pytest.fixture(scope="module")
def engine(tiny_gpt2):
    model, hooked = tiny_gpt2
    saes = {}
    for i, h in enumerate(HOOKS):
        torch.manual_seed(i)
        saes[h] = make_sae(SAEConfig(architecture="standard", d_in=64, d_sae=96)).eval()
    g = torch.Generator().manual_seed(5)
    clean = torch.randint(1, 100, (6, 7), generator=g)
    patch = clean.clone()
    patch[:, 2] = torch.randint(1, 100, (6,), generator=g)
    pairs = sc.Pairs(clean, patch, torch.full((6,), 11), torch.full((6,), 42), [{}] * 6)
    return model, sc.Circuits(hooked, saes), pairs


def test_splicing_every_sae_with_its_error_leaves_logits_bit_identical(engine):
    model, eng, pairs = engine
    effects = {h: {"latents": torch.zeros(96), "error": 0.0} for h in HOOKS}
    means = eng.means(pairs)
    everything = eng.keep_top(effects, None, threshold=-1.0)
    with torch.no_grad():
        assert torch.equal(eng.ablated_logits(pairs.clean, everything, means), model(pairs.clean).logits)
        # and ablating does change them
        nothing = eng.keep_top(effects, 0)
        assert not torch.allclose(eng.ablated_logits(pairs.clean, nothing, means), model(pairs.clean).logits)


def test_faithfulness_is_one_for_the_model_and_zero_for_the_empty_circuit(engine):
    _, eng, pairs = engine
    got = eng.node_effects(pairs, steps=2, progress=False)
    means = eng.means(pairs)
    full = eng.metric_with(pairs, eng.keep_top(got["effects"], None, threshold=-1.0), means)
    empty = eng.metric_with(pairs, eng.keep_top(got["effects"], 0), means)
    assert full == pytest.approx(got["m_clean"], abs=1e-6) and full != empty
    # a circuit of every node is the model; its complement is the empty circuit
    keep = eng.keep_top(got["effects"], 10**6)
    assert (eng.metric_with(pairs, keep, means) - empty) / (full - empty) == pytest.approx(1.0)
    assert (eng.metric_with(pairs, eng.complement(keep), means) - empty) / (full - empty) == pytest.approx(
        0.0
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_node_effects_at_a_hook_sum_to_the_exact_patching_effect(engine, hook):
    _, eng, pairs = engine
    one = sc.Circuits(eng.hooked, {hook: eng.saes[hook]})
    got = one.node_effects(pairs, steps=64, progress=False)
    total = float(got["effects"][hook]["latents"].sum()) + got["effects"][hook]["error"]
    p = one.capture(pairs.patch)[hook]["x"]
    with torch.no_grad(), eng.hooked.hooks(one._set_write(hook, lambda _: p)):
        patched = float(sc.logit_diff(eng.hooked.logits(pairs.clean), pairs.clean_answer, pairs.patch_answer))
    exact = patched - got["m_clean"]
    assert abs(exact) > 1e-4  # the patch does something (this random model's logits are small)
    assert total == pytest.approx(exact, rel=0.02, abs=1e-6)


def test_an_edge_is_its_finite_difference(engine):
    _, eng, pairs = engine
    up, down = HOOKS[0], HOOKS[2]
    two = sc.Circuits(eng.hooked, {up: eng.saes[up], down: eng.saes[down]})
    c, p = two.capture(pairs.clean), two.capture(pairs.patch)
    da = p[up]["a"] - c[up]["a"]
    i = int(da.abs().sum((0, 1)).argmax())  # the upstream latent the patch moves most
    j = int(c[down]["a"].sum((0, 1)).argmax())
    keep = {up: (torch.arange(96) == i, False), down: (torch.arange(96) == j, False)}
    (edge,) = two.edges(pairs, keep)
    grads = two._metric_grads(pairs.clean, pairs.clean_answer, pairs.patch_answer)
    w = (grads[down] @ two.dec[down].T)[..., j]

    def F(eps):
        x = c[up]["x"] + eps * da[..., i : i + 1] * two.dec[up][i]
        seen = {}
        fns = {**two._set_write(up, lambda _: x), down: lambda y: seen.setdefault("r", y.float())}
        with torch.no_grad(), eng.hooked.hooks(fns):
            eng.hooked.logits(pairs.clean)
        return float((two._encode(down, seen["r"])[..., j] * w).sum().detach())

    eps = 1e-2
    fd = (F(eps) - F(-eps)) / (2 * eps) / pairs.clean.shape[0]
    assert edge["weight"] == pytest.approx(fd, rel=0.05, abs=1e-5)


def test_bad_pairs_are_one_line(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"clean": "a", "patch": "b", "clean_answer": " x"}) + "\n")
    with pytest.raises(SuperpositionError, match="line 1 lacks patch_answer"):
        sc.read_pairs(f)
    f.write_text("[1]\n")
    with pytest.raises(SuperpositionError, match="line 1 is not a JSON object"):
        sc.read_pairs(f)
    f.write_text("")
    with pytest.raises(SuperpositionError, match="holds no pairs"):
        sc.read_pairs(f)


def test_sva_pairs_differ_only_in_the_subjects_number(smol):
    from superposition.interp.sva import sva_pairs

    lm, _ = smol
    for template in ("simple", "pp", "rc"):
        pairs = sva_pairs(template, lm.tokenizer, 32)
        assert len(pairs) >= 8, template
        lengths = {len(lm.tokenizer(p[k]).input_ids) for p in pairs for k in ("clean", "patch")}
        assert len(lengths) == 1
        for p in pairs:
            c, q = p["clean"].split(), p["patch"].split()
            assert (
                q[1] == c[1] + "s"
                and c[2:] == q[2:]
                and (p["clean_answer"], p["patch_answer"]) == (" is", " are")
            )


def test_the_circuit_command(transcoder_run, tmp_path, capsys):
    from superposition.cli import main

    out = tmp_path / "c"
    assert main(["circuit", str(transcoder_run), "--dataset", "sva:pp", "--pairs", "4", "--ig-steps", "2",
                 "--nodes", "5", "--out", str(out)]) == 0  # fmt: skip
    s = json.loads((out / "summary.json").read_text())
    assert s["m_full"] == s["m_clean"] and s["hooks"] == ["blocks.0.mlp", "blocks.1.mlp"]
    assert s["curve"][0] == {"n_nodes": 0, "threshold": None, "faithfulness": 0.0, "completeness": 1.0}
    thresholds = [r["threshold"] for r in s["curve"][1:]]
    assert thresholds == sorted(thresholds, reverse=True)  # larger circuits: lower |effect| thresholds
    assert s["curve"][-1]["faithfulness"] == pytest.approx(1.0) and len(s["circuit"]["nodes"]) == 5
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"clean": "The cat", "patch": "The cats", "clean_answer": " is"}) + "\n")
    capsys.readouterr()
    code = main(["circuit", str(transcoder_run), "--dataset", str(bad), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "line 1 lacks patch_answer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
