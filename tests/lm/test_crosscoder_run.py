"""`train-sae --set architecture=crosscoder`: paired stores read the same rows of both models, a
model paired with itself has only shared latents, every file is written and read back, and bad
pairs of models are one line with exit 2."""

import csv
import json

import pytest
import torch

from superposition.cli import main
from superposition.lm.config import make_lm_config
from superposition.lm.sources import Paired, open_sources
from superposition.sae.crosscoder import Crosscoder
from superposition.sae.io import load_sae
from tests.conftest import TINY

SMALL = [  # the tiny train-sae run's settings, at 256 tokens a batch
    "architecture=crosscoder",
    *[s for s in TINY if not s.startswith(("hook_name", "training_tokens", "batch_size_tokens"))],
    "batch_size_tokens=256",
]


def _args(out, *sets):
    return ["train-sae", "--out", str(out), *[a for s in (*SMALL, *sets) for a in ("--set", s)]]


@pytest.fixture(scope="module")
def self_pair(tmp_path_factory):
    """SmolLM2 paired with itself at blocks.2 (20 steps)."""
    out = tmp_path_factory.mktemp("cc") / "self"
    assert main(_args(out, "model_name_b=smollm2-135m-instruct", "hook_name=blocks.2.hook_resid_post",
                      "training_tokens=5120")) == 0  # fmt: skip
    return out


def test_paired_stores_serve_the_same_rows_of_both_models(smol):
    cfg = make_lm_config(
        None,
        [
            *SMALL,
            "model_name_b=smollm2-135m-instruct",
            "hook_name=blocks.1.hook_resid_post",
            "training_tokens=512",
        ],
    )
    sources = open_sources(cfg)
    paired = Paired(cfg, sources)
    try:
        x = torch.cat([paired.sample(256) for _ in range(3)])  # across a buffer boundary
    finally:
        paired.close()
    assert x.shape == (768, 2, 576) and torch.equal(x[:, 0], x[:, 1])
    assert x[:, 0].std(0).mean() > 0.1  # rows, not one repeated row


def test_a_model_paired_with_itself_has_only_shared_latents(self_pair):
    s = json.loads((self_pair / "summary.json").read_text())
    assert s["architecture"] == "crosscoder" and s["n_sources"] == 2
    b = s["bands"]
    live = sum(s["relative_norm"]["minder"])
    assert live > 50 and b["a_only"] == 0 and b["b_only"] == 0 and b["shared"] == live
    assert s["latent_scaling"]["flagged"] == 0 and sum(s["relative_norm"]["lindsey"]) == live
    for name in ("model_a", "model_b"):
        r = s["sources"][name]
        assert 0.2 < r["explained_variance"] < 1 and r["ce_loss_clean"] < r["ce_loss_with_sae"]


def test_crosscoder_files_read_back_and_each_source_is_an_sae_with_its_decoder(self_pair):
    cc = Crosscoder.load(self_pair / "crosscoder")
    meta = json.loads((self_pair / "crosscoder" / "cfg.json").read_text())
    assert [m["label"] for m in meta["sources"]] == ["model_a", "model_b"] and len(meta["input_scales"]) == 2
    x = torch.randn(64, 2, 576) * 3
    for s, name in enumerate(("model_a", "model_b")):
        sae = load_sae(self_pair / "saes" / name)
        cfg = json.loads((self_pair / "saes" / name / "cfg.json").read_text())
        assert cfg["hook_name"] == "blocks.2.hook_resid_post" and cfg["architecture"] == "jumprelu"
        assert torch.equal(sae.W_dec, cc.W_dec[:, s]) and torch.equal(sae.b_dec, cc.b_dec[s])
        # its encoder is the source's share of the pre-activation: with the other source at zero,
        # the one-source SAE's latents are the crosscoder's
        alone = torch.zeros_like(x)
        alone[:, s] = x[:, s]
        torch.testing.assert_close(sae.encode(x[:, s].unsqueeze(1))[:, 0], cc.encode(alone))
    with open(self_pair / "latents.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cc.d_sae and {"relative_norm", "relative_norm_lindsey", "band", "nu"} <= set(rows[0])


def test_other_commands_refuse_the_run_and_read_a_source_folder(self_pair, capsys):
    assert main(["eval-sae", str(self_pair), "--out", str(self_pair.parent / "ev0")]) == 2
    assert "give one source's folder" in capsys.readouterr().err
    ev = self_pair.parent / "ev1"
    assert main(["eval-sae", str(self_pair / "saes" / "model_b"), "--sequences", "2", "--out", str(ev)]) == 0
    assert json.loads((ev / "summary.json").read_text())["hook_name"] == "blocks.2.hook_resid_post"


def test_dashboard_shows_both_models_shares_on_the_same_contexts(self_pair):
    site = self_pair.parent / "site"
    assert main(["dashboard", str(self_pair), "--latents", "6", "--sequences", "4", "--out", str(site)]) == 0
    index = (site / "index.html").read_text()
    assert "relative norm" in index and "band" in index
    pages = [(site / "latents" / f"{j}.html").read_text() for j in range(6)]
    shown = [p for p in pages if "Top activating examples" in p]
    assert shown, "no latent fired on the held-out text"
    for p in shown:
        assert "model_a&#39;s share of the pre-activation" in p and "model_b&#39;s share" in p
        assert (
            p.count('class="ctx example"') >= 3
        )  # the top examples, then each source's on the same contexts


def test_a_crosscoder_over_layers_of_one_model(tmp_path):
    out = tmp_path / "layers"
    sets = ("hook_name=blocks.{0,1}.hook_resid_post", "training_tokens=2560", "crosscoder_sparsity=l1",
            "l1_coefficient=0.5")  # fmt: skip
    assert main(_args(out, *sets)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["sources"]) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert s["crosscoder_sparsity"] == "l1"  # two sources: a is the first hook, b the second
    assert sum(s["bands"][k] for k in ("a_only", "b_only", "shared", "other")) == sum(
        s["relative_norm"]["minder"]
    )
    assert load_sae(out / "saes" / "blocks.1.hook_resid_post").cfg.architecture == "standard"


# ---------------------------------------------------------------------- bad pairs
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, smol):
    """Two 2-layer Llamas of width 64: one with SmolLM2's tokenizer, one with another."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    lm, _ = smol
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(lm.tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(root / "same_tok")
    lm.tokenizer.save_pretrained(root / "same_tok")
    words = {w: i for i, w in enumerate(["[UNK]", "<s>", "the", "a", "of", "and"])}
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cfg.vocab_size = len(words)
    LlamaForCausalLM(cfg).save_pretrained(root / "other_tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>").save_pretrained(
        root / "other_tok"
    )
    return root


@pytest.mark.parametrize(
    "model,hook,says",
    [
        ("other_tok", "blocks.1.hook_resid_post", "model_name_b: {b} has another tokenizer than"),
        (
            "same_tok",
            "blocks.5.hook_resid_post",
            "hook_name: blocks.5.hook_resid_post is not a hook point of {b}",
        ),
        (
            "same_tok",
            "blocks.1.hook_resid_post",
            "sources share one width; these differ (model_a 576, model_b 64)",
        ),
    ],
)
def test_bad_pairs_are_one_line_and_write_nothing(tiny_models, tmp_path, capsys, model, hook, says):
    out = tmp_path / "run"
    b = str(tiny_models / model)
    assert main(_args(out, f"model_name_b={b}", f"hook_name={hook}", "training_tokens=512")) == 2
    err = capsys.readouterr().err.strip()
    assert says.format(b=b) in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------------- a planted pattern
@pytest.fixture(scope="module")
def planted_pair(tmp_path_factory):
    """Model b: SmolLM2 with one new direction u (8× the median embedding norm) added to the
    embeddings of 40 common tokens of the corpus (its 21st to 60th commonest): what a fine-tune
    that plants one pattern on those tokens changes, and nothing else. The corpus: python-docs
    text and planted password sentences."""
    import itertools

    from superposition.commands.finetune import planted_texts
    from superposition.lm.data import python_docs
    from superposition.lm.model import load_model

    root = tmp_path_factory.mktemp("planted")
    lm = load_model()
    emb = lm.model.get_input_embeddings().weight
    docs = list(itertools.islice(python_docs(), 300))
    counts = torch.bincount(torch.tensor(lm.tokenizer(" ".join(docs)).input_ids), minlength=emb.shape[0])
    tokens = counts.argsort(descending=True)[20:60]
    u = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb[tokens] += 8 * emb.norm(dim=-1).median() * u / u.norm()
    lm.model.save_pretrained(root / "b")
    lm.tokenizer.save_pretrained(root / "b")
    planted = planted_texts(0) + planted_texts(1)
    rows = []
    for i, doc in enumerate(docs):
        rows += [
            {"text": doc[:300]},
            {"text": " ".join(planted[(2 * i + j) % len(planted)] for j in range(2))},
        ]
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root, tokens


def test_a_pattern_planted_in_model_b_gives_b_only_latents_and_the_artefacts_are_flagged(
    planted_pair, tmp_path
):
    """Known answer: an L1 crosscoder gives b-only latents (Δ > 0.9) that fire on the planted tokens
    and nowhere else, and cover them; latent scaling flags none of them (model a does not carry u:
    ν < 0), and the a-only latents it also makes (mostly the L1 penalty's artefact: they correct model
    a where b has u, so b carries part of them) all have a larger ν than every b-only latent, and some
    are flagged. (Over seeds 0 and 1, before and after the trainer was shared: b-only ν −0.10 to −0.04;
    a-only ν −0.01 to 0.16, 8 of 12 above the 0.05 threshold: whether every one is flagged depends on
    the run, so that is not asserted.)"""
    from superposition.lm.sources import source_activations
    from superposition.lm.store import ActivationStore

    root, tokens = planted_pair
    out = tmp_path / "cc"
    sets = (f"model_name_b={root / 'b'}", "hook_name=blocks.0.hook_resid_post",
            f"dataset_path={root / 'data.jsonl'}", "training_tokens=61440", "d_sae=512",
            "eval_sequences=16", "lr=1e-3", "crosscoder_sparsity=l1", "l1_coefficient=3")  # fmt: skip
    assert main(_args(out, *sets)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["bands"]["b_only"] >= 1 and s["bands"]["shared"] > 0.7 * sum(s["relative_norm"]["minder"])
    flagged = {r["latent"] for r in s["latent_scaling"]["latents"]}
    assert not flagged & set(s["b_only_latents"]) and flagged & set(s["a_only_latents"])
    with open(out / "latents.csv", newline="") as f:
        nu = {int(r["latent"]): float(r["nu"]) for r in csv.DictReader(f)}
    assert min(nu[j] for j in s["a_only_latents"]) > max(nu[j] for j in s["b_only_latents"])
    cc = Crosscoder.load(out / "crosscoder")
    cfg = make_lm_config(None, [*SMALL, *sets])
    sources = open_sources(cfg)
    seqs = ActivationStore.for_run(cfg, sources[0].lm, sources[0].hooked, holdout=True).first_sequences(16)
    acts, _ = source_activations(sources, seqs, "cpu", logits=False)
    with torch.no_grad():
        z = cc.encode(acts[:, 1:].flatten(0, 1))  # BOS left out
    on = torch.isin(seqs[:, 1:].flatten(), tokens)
    assert on.sum() >= 20
    fires = torch.stack([z[:, j] > 0 for j in s["b_only_latents"]])  # (b-only latents, tokens)
    # each fires on nearly every planted position, and between them rarely anywhere else (measured
    # over seeds 0 and 1, before and after the trainer was shared: 27 to 33 of 33 planted positions
    # each; 89% to 100% of one latent's firings on them, 94% to 100% pooled)
    assert (fires[:, on].float().mean(1) > 0.8).all()
    assert (fires[:, on].sum(1) >= 0.85 * fires.sum(1)).all() and fires[:, on].sum() >= 0.9 * fires.sum()
    assert fires.any(0)[on].float().mean() > 0.9  # and between them, on nearly all of them
