"""SAEBench's evaluations (lm/saebench.py, lm/probes.py, runs/saebench.py, eval-sae over many SAEs):
probes against hand-computed optima, absorption and sparse probing against planted answers, and the
command's table, cache and bad input on a tiny model."""

import csv
import json
import math

import pytest
import torch

import superposition as sp
from superposition.cli import main
from superposition.lm import saebench as sb
from superposition.lm.probes import f1, fit_logistic, roc_auc


# ------------------------------------------------------------------------------------------ probes
def test_logistic_regression_reaches_the_hand_computed_optimum():
    # x = −1 (class 0) and +1 (class 1), C = 1: by symmetry b = 0 and w solves w = 2σ(−w)
    p = fit_logistic(torch.tensor([[-1.0], [1.0]]), torch.tensor([0, 1]))
    lo, hi = 0.0, 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid < 2 / (1 + math.exp(mid)) else (lo, mid)
    assert abs(p.w.item() - lo) < 1e-6 and abs(p.b) < 1e-6


def test_logistic_regression_is_stationary_with_class_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(200, generator=g)) > 0.8  # unbalanced classes
    p = fit_logistic(x, y, c=0.3, balanced=True)
    s = y.double() * 2 - 1
    n, pos = len(y), y.sum().item()
    weight = torch.where(y, n / (2 * pos), n / (2 * (n - pos))).double()
    m = s * (x.double() @ p.w + p.b)
    coef = -0.3 * weight * s * torch.sigmoid(-m)  # d/dmargin of C·s_i·softplus(−m)
    assert (x.double().T @ coef + p.w).abs().max() < 1e-5  # ∂/∂w = 0
    assert abs(coef.sum().item()) < 1e-5  # ∂/∂b = 0 (the intercept is not penalised)


def test_f1_and_auc_on_hand_cases():
    y = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    pred = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    assert f1(pred, y) == pytest.approx(2 * 2 / (3 + 3))
    assert f1(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 0.0
    # positives 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered right
    assert roc_auc(torch.tensor([0.9, 0.4, 0.5, 0.1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)  # a tie counts half


# ------------------------------------------------------------------------------ planted absorption
def _planted_absorption(per_letter: int = 20, rate: float = 0.3, seed: int = 0):
    return sb.planted_absorption(per_letter, rate, seed)


def test_absorption_measures_the_planted_rate():
    sae, data, absorbed = _planted_absorption()
    torch.testing.assert_close(sae.decode(sae.encode(data.acts)), data.acts)  # the SAE is exact
    probes = sb.letter_probes(data)
    assert min(probes.f1) == 1.0
    r = sb.absorption(sae, data, probes, min_letters=26)
    assert r["absorption_meaningful"] and r["absorption_letters"] == 26
    assert r["first_letter_probe_f1"] == 1.0
    # the parent alone finds the words it was not absorbed on: F1 = 2 TP / (2 TP + FN), no false positive
    f1s = []
    for c in range(26):
        mine = data.test & (data.labels == c)
        tp, fn = (mine & ~absorbed).sum().item(), (mine & absorbed).sum().item()
        f1s.append(2 * tp / (2 * tp + fn))
    assert r["main_latents_f1"] == pytest.approx(sum(f1s) / 26)
    test = data.test
    for rec in r["letters"]:
        c = sb.LETTERS.index(rec["letter"])
        mine = test & (data.labels == c)
        planted = (absorbed & mine).sum().item() / mine.sum().item()
        assert rec["main_latents"] == [c]  # the parent is found by k-sparse probing
        assert rec["num_probe_true_positives"] == mine.sum().item()
        assert rec["mean_absorption_fraction"] == pytest.approx(planted)
        assert rec["full_absorption_rate"] == pytest.approx(planted)
    expected = sum(
        ((absorbed & test & (data.labels == c)).sum() / (test & (data.labels == c)).sum()).item()
        for c in range(26)
    )
    assert r["absorption_fraction"] == pytest.approx(expected / 26)


def test_an_sae_without_absorption_scores_zero():
    sae, data, _ = _planted_absorption(rate=0.0)
    r = sb.absorption(sae, data, sb.letter_probes(data), min_letters=26)
    assert r["absorption_fraction"] == 0.0 and r["full_absorption"] == 0.0


def test_absorption_fraction_follows_saebench_cases():
    cos = torch.tensor([0.9, 0.5, 0.05, 0.3])
    main = [0]
    # (x·p̂, latent projections z_j c_j) → expected fraction
    cases = [
        (1.0, [1.2, 0.5, 0.0, 0.0], 0.0),  # main carries all of it
        (1.0, [0.0, 0.6, 0.0, 0.0], 1.0),  # main silent, latent 1 carries 60%
        (1.0, [0.0, 0.3, 0.9, 0.0], 0.0),  # the big one is below the cosine threshold: 30% < 40%
        (1.0, [0.2, 0.5, 0.0, 0.2], 0.7 / 0.9),  # A = min(0.7, 0.8) = 0.7, M = 0.2
    ]
    for act, proj, want in cases:
        got = sb.absorption_fraction(torch.tensor([act]), torch.tensor([proj]), cos, main)
        assert got.item() == pytest.approx(want)


# ---------------------------------------------------------------------------- planted sparse probe
def _planted_task(classes: int, n_per: int = 40, seed: int = 0, d: int = 16, d_sae: int = 32):
    """Texts of `classes` classes, 4 tokens each; on a text of class c, latent c of a hand-built SAE
    fires (the token carries 3·e_c, the latent reads 2x_c − 3 and writes e_c: about 3·e_c back), the
    other latents see only noise below their thresholds."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per)
    owner = torch.arange(len(labels)).repeat_interleave(4)
    tokens = 0.3 * torch.randn(len(owner), d, generator=g)
    tokens[torch.arange(len(owner)), labels[owner]] += 3.0
    train = torch.rand(len(labels), generator=g) < 0.75
    task = sb.ProbingTask(
        "planted",
        [f"c{i}" for i in range(classes)],
        labels,
        train,
        tokens,
        owner,
        [str(i) for i in range(len(labels))],
    )
    sae = sp.SAE({"d_in": d, "d_sae": d_sae, "architecture": "standard"})
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([2 * torch.eye(d), torch.randn(d, d_sae - d, generator=g) * 0.1], 1))
        sae.b_enc.copy_(torch.cat([torch.full((d,), -3.0), torch.zeros(d_sae - d)]))
        sae.W_dec.copy_(torch.cat([torch.eye(d), torch.randn(d_sae - d, d, generator=g) * 0.1]))
        sae.b_dec.zero_()
    return sae, {"planted": task}


def test_sparse_probing_finds_a_planted_latent_at_k_1():
    sae, data = _planted_task(2)
    r = sb.sparse_probing(sae, data, sb.model_probing(data))
    assert r["sae_top_1_test_accuracy"] == 1.0 and r["sae_test_accuracy"] == 1.0


def test_sparse_probing_at_chance_when_no_latent_knows_the_label():
    sae, data = _planted_task(2)
    t = data["planted"]
    t.labels = t.labels[torch.randperm(len(t.labels), generator=torch.Generator().manual_seed(1))]
    r = sb.sparse_probing(sae, data, sb.model_probing(data))
    assert r["sae_top_1_test_accuracy"] < 0.75


def test_tpp_ablating_a_class_latent_hits_its_probe_only():
    sae, data = _planted_task(4, n_per=60)
    r = sb.tpp(sae, data, ns=(1,))
    assert r["tpp_1_intended"] > 0.3 and abs(r["tpp_1_unintended"]) < 0.05
    assert r["tpp_1"] == pytest.approx(r["tpp_1_intended"] - r["tpp_1_unintended"])


# ----------------------------------------------------------------------------------- offline data
def test_probing_tasks_are_built_offline_with_disjoint_splits():
    tasks = sb.probing_tasks(per_class=30, seed=3)
    assert set(tasks) == set(sb.TASKS) and len(tasks) >= 4
    for by_class in tasks.values():
        assert len(by_class) >= 2
        for texts in by_class.values():
            assert len(texts) == 30
            train = {d["id"] for d in texts if d["split"] == "train"}
            test = {d["id"] for d in texts if d["split"] == "test"}
            assert len(train) == 24 and len(test) == 6 and not train & test
    code = tasks["code_vs_prose"]["code"][0]["text"]
    assert "def " in code or "return" in code or "=" in code
    assert sb.probing_tasks(per_class=30, seed=3) == tasks  # the seed fixes the draw


def test_first_letter_prompts_read_the_word_token(tiny_llama):
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model

    lm = load_model(str(tiny_llama))
    words = sb.alpha_words(lm.tokenizer)
    assert len(words) > 1000 and all(w.strip().isalpha() for w in words[:200])
    data = sb.first_letter_data(
        HookedModel(lm.model), lm.tokenizer, "blocks.1.hook_resid_post", words=60, seed=0
    )
    assert len(data.words) >= 55 and data.acts.shape == (len(data.words), 64)
    assert data.train.sum() > 3 * data.test.sum()
    p = data.prompts[0]
    assert p.count("has the first letter:") == 11 and p.endswith(data.words[0] + " has the first letter:")
    assert [sb.LETTERS[i] for i in data.labels[:5]] == [w.strip()[0].lower() for w in data.words[:5]]


# ---------------------------------------------------------------------------------------- command
@pytest.fixture(scope="module")
def two_saes(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    sets = [f"model_name={tiny_llama}", "d_sae=128", "context_size=32", "batch_size_tokens=128",
            "training_tokens=1280", "n_batches_in_buffer=2", "model_batch_size=8", "eval_sequences=2",
            "tensorboard=false", "hook_name=blocks.1.hook_resid_post"]  # fmt: skip
    out = {}
    for name, arch in (("topk", "architecture=topk"), ("relu", "architecture=standard")):
        args = [*sets, arch, "k=8"] if name == "topk" else [*sets, arch]
        assert main(["train-sae", "--out", str(root / name), *[a for s in args for a in ("--set", s)]]) == 0
        out[name] = root / name
    return out


SMALL = [
    "--absorption-words",
    "60",
    "--probing-per-class",
    "10",
    "--probing-context",
    "16",
    "--sequences",
    "2",
]


def test_eval_sae_puts_saes_in_one_table_and_reuses_the_cache(two_saes, tmp_path, capsys):
    cache = tmp_path / "cache"
    out = tmp_path / "table"
    evals = "core,absorption,sparse_probing,tpp,scr"
    args = [
        "eval-sae",
        str(two_saes["topk"]),
        "--evals",
        evals,
        "--out",
        str(out),
        "--cache",
        str(cache),
        *SMALL,
    ]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())
    assert first["cache_hits"] == 0 and len(first["saes"]) == 1
    out2 = tmp_path / "table2"
    assert main([*args[:2], str(two_saes["relu"]), *args[2:5], str(out2), *args[6:]]) == 0
    s = json.loads((out2 / "summary.json").read_text())
    assert s["cache_hits"] == 5  # the first SAE's five evaluations, not computed again
    rows = list(csv.DictReader(open(out2 / "results.csv")))
    assert [r["name"] for r in rows] == ["topk", "relu"] and [r["architecture"] for r in rows] == [
        "topk",
        "standard",
    ]
    for r in rows:
        for key in (
            "l0",
            "ce_loss_recovered",
            "cossim",
            "absorption_fraction",
            "sae_top_1_test_accuracy",
            "tpp_20",
        ):
            assert r[key] != "", key
    assert float(rows[0]["l0"]) == pytest.approx(8, abs=1e-4)
    assert rows[0]["l0"] == str(first["saes"][0]["l0"]) or float(rows[0]["l0"]) == pytest.approx(
        first["saes"][0]["l0"]
    )
    # the same held-out tokens for both SAEs: the clean loss is one number
    assert rows[0]["ce_loss_clean"] == rows[1]["ce_loss_clean"]
    details = json.loads((out2 / "saes" / "relu.json").read_text())
    assert len(details["absorption"]["letters"]) > 5 and set(details["sparse_probing"]["tasks"]) == set(
        sb.TASKS
    )
    assert (
        set(details["tpp"]["tasks"]) == {"stdlib_package", "docstring_kind"}
        and len(details["density"]) == 128
    )
    data = json.loads((out2 / "data.json").read_text())
    rec = next(iter(data.values()))
    split = rec["record:probing:blocks.1.hook_resid_post"]["code_vs_prose"]["code"]
    assert len(split["train"]) == 8 and len(split["test"]) == 2
    for fig in ("l0_vs_ce_loss_recovered.png", "bars_absorption_fraction.png", "density.png", "report.html"):
        assert (out2 / fig).is_file(), fig
    # from a notebook: the same table, every number from the cache
    small = {"absorption_words": 60, "probing_per_class": 10, "probing_context": 16, "sequences": 2}
    r = sp.evaluate_saes(
        [two_saes["topk"], two_saes["relu"]], tmp_path / "py", evals=evals, cache=str(cache), **small
    )
    assert r.summary["cache_hits"] == 10 and r.summary["saes"] == s["saes"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--evals", "core,probing"], "--evals: probing"),
        (["--absorption-words", "5"], "--absorption-words"),
        ([], "--out: required"),
        (["--cache", "A_FILE"], "is not a folder; give a folder, or none"),
    ],
)
def test_eval_sae_table_bad_input_is_one_line(two_saes, tmp_path, capsys, extra, needle):
    out = [] if needle == "--out: required" else ["--out", str(tmp_path / "o")]
    evals = [] if "--evals" in extra else ["--evals", "core"]
    (tmp_path / "a-file").write_text("x")
    extra = [str(tmp_path / "a-file") if a == "A_FILE" else a for a in extra]
    assert main(["eval-sae", str(two_saes["topk"]), *evals, *extra, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_scr_removing_the_spurious_latents_restores_the_biased_probe():
    """Latent 0 of the hand-built SAE fires on asyncio texts, latent 1 on code, latent 2 on docstrings
    (each token carries 3·e of its features, plus noise). The probe trained on asyncio code against email
    docstrings judges the package by the source half the time: on balanced package data it is right
    where the two agree only. Ablating the two source latents leaves it the package alone."""
    g = torch.Generator().manual_seed(0)
    n_per, d = 60, 16
    labels = torch.arange(4).repeat_interleave(n_per)
    classes = list(sb.SCR_CELLS)  # asyncio_code, asyncio_docstring, email_code, email_docstring
    package = torch.tensor([classes[c].startswith("asyncio") for c in labels.tolist()])
    code = torch.tensor([classes[c].endswith("_code") for c in labels.tolist()])
    owner = torch.arange(len(labels)).repeat_interleave(4)
    tokens = 0.3 * torch.randn(len(owner), d, generator=g)
    tokens[:, 0] += 3.0 * package[owner]
    tokens[:, 1] += 3.0 * code[owner]
    tokens[:, 2] += 3.0 * ~code[owner]
    train = torch.rand(len(labels), generator=g) < 0.75
    task = sb.ProbingTask("scr", classes, labels, train, tokens, owner, [str(i) for i in range(len(labels))])
    sae, _ = _planted_task(2)
    r = sb.scr(sae, task, ns=(2,))
    assert 0.35 < r["scr_biased_accuracy_package"] < 0.7 and r["scr_biased_accuracy_source"] > 0.95
    assert r["scr_2"] == r["scr_dir1_2"] > 0.9  # the package is what it leans on less: remove the source
    assert r["scr_dir2_2"] == 0.0  # nothing to gain on the source (the oracle's gap is under 0.001)


def test_a_multi_hook_run_counts_one_sae_per_hook_and_a_transcoder_says_why_it_is_skipped(
    tiny_llama, tmp_path
):
    sets = [f"model_name={tiny_llama}", "d_sae=64", "k=4", "context_size=32", "batch_size_tokens=128",
            "training_tokens=640", "n_batches_in_buffer=2", "model_batch_size=8", "eval_sequences=2",
            "tensorboard=false"]  # fmt: skip
    runs = {
        "multi": ["hook_name=blocks.{0,1}.hook_resid_post"],
        "tc": ["hook_name=blocks.0.mlp", "architecture=transcoder"],
    }
    for name, own in runs.items():
        args = [a for s in [*sets, *own] for a in ("--set", s)]
        assert main(["train-sae", "--out", str(tmp_path / name), *args]) == 0
    out = tmp_path / "t"
    saes = [str(tmp_path / "multi"), str(tmp_path / "tc")]
    argv = ["eval-sae", *saes, "--evals", "core,sparse_probing", "--out", str(out), "--cache", "none", *SMALL]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["name"] for r in rows] == [
        "multi/blocks.0.hook_resid_post",
        "multi/blocks.1.hook_resid_post",
        "tc",
    ]
    assert [r["hook_name"] for r in rows] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.0.mlp",
    ]
    assert rows[0]["sae_top_1_test_accuracy"] and rows[1]["sae_top_1_test_accuracy"]
    assert rows[2]["ce_loss_recovered"] and not rows[2].get("sae_top_1_test_accuracy")  # core only
    tc = json.loads((out / "saes" / "tc.json").read_text())
    assert "reconstructs its input" in tc["sparse_probing_skipped"]
    # the clean loss is the model's, on the same held-out tokens for all three
    assert len({r["ce_loss_clean"] for r in rows}) == 1


def test_autointerp_scores_a_seeded_sample_of_live_latents(two_saes, tiny_llama, tmp_path):
    out = tmp_path / "ai"
    explainer = ["--explainer-model", str(tiny_llama), "--autointerp-latents", "3"]
    argv = ["eval-sae", str(two_saes["topk"]), "--evals", "autointerp", *explainer, "--cache", "none",
            "--sequences", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    row = next(csv.DictReader(open(out / "results.csv")))
    assert (
        row["autointerp_latents"] == "3" and row["l0"]
    )  # core ran first: its densities give the live latents
    ai = json.loads((out / "autointerp" / "topk" / "summary.json").read_text())
    density = json.loads((out / "saes" / "topk.json").read_text())["density"]
    rows = [
        json.loads(line)
        for line in (out / "autointerp" / "topk" / "explanations.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 3 and all(density[r["latent"]] > 0 for r in rows)
    assert float(row["autointerp_detection"]) == pytest.approx(
        ai["scores"]["detection.balanced_accuracy"]["mean"]
    )


def test_saes_at_one_hook_evaluated_together_equal_each_alone(tiny_llama):
    """evaluate_named shares the clean and the zero-ablated pass among SAEs at one hook: every number
    equals the SAE's own evaluation."""
    from superposition.lm.evals import evaluate_named, evaluate_sae
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model

    lm = load_model(str(tiny_llama))
    hooked = HookedModel(lm.model)
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 1000, (4, 16), generator=g)
    saes = [sp.SAE({"d_in": 64, "d_sae": 96, "architecture": a, **kw}).batched for a, kw in
            (("topk", {"k": 6}), ("standard", {}))]  # fmt: skip
    hook = "blocks.1.hook_resid_post"
    together = evaluate_named(
        hooked, lm.tokenizer, [("a", hook, saes[0]), ("b", hook, saes[1])], seqs, batch_size=2
    )
    for name, sae in zip("ab", saes):
        alone = evaluate_sae(hooked, lm.tokenizer, sae, hook, seqs, batch_size=2)
        for key, value in alone.items():
            assert together[name][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_pareto_front_keeps_the_points_nothing_beats():
    from superposition.viz.saebench import pareto_front

    pts = [(10, 0.9), (20, 0.95), (15, 0.85), (30, 0.94), (5, 0.5), (20, 0.7)]
    assert pareto_front(pts) == [(5, 0.5), (10, 0.9), (20, 0.95)]
    assert pareto_front(pts, higher_is_better=False) == [(5, 0.5)]
