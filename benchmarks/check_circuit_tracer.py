"""Circuits computed the way circuit-tracer and dictionary_learning compute them, proven by their
own code (each in its own environment, benchmarks/peers.py; nothing here is a dependency):

1. Model folders: a tiny random Llama (tied embeddings, rope theta 1e5) written by
   `lm.model.write_model_folder`, and the cached SmolLM2 folder, loaded by transformers 4.57
   (circuit-tracer's pin) and by ours (5.x): the logits and the tokenizer's ids agree. A folder
   written by 5.x's own save_pretrained is shown beside them (what 4.57 made of it).
2. Per-layer transcoders (ReLU, random, one per layer of the tiny Llama): circuit-tracer 0.5.0's
   `attribute` (NNsight backend, CPU) and ours on the same prompt, with circuit-tracer's BOS rule on
   both sides: adjacency (nodes matched by key), activations, logits, replacement and
   completeness scores, pruned node and edge sets; the same with `--max-feature-nodes 50` (which
   latents get rows); and ours with BOS kept, to show what the rule changes.
3. A cross-layer transcoder (JumpReLU, random) saved by us in circuit-tracer's layout, read by its
   `load_clt`: the same comparison.
4. Crosscoders (with --dictlearn-src, a checkout of Minder et al.'s dictionary_learning fork, which
   is not on PyPI): ours written by `convert --to dictionary_learning`, read by its
   `from_pretrained`: activations and reconstructions of the same inputs, BatchTopK and L1.

A row passes at a relative difference ≤ 1e-4 (to the largest magnitude compared) and equal sets;
the script exits 1 on any failure.

    python benchmarks/check_circuit_tracer.py [--dictlearn-src DIR] [--skip folders,plt,clt,crosscoder]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import run_in  # noqa: E402
from superposition.interp import attribution as at  # noqa: E402
from superposition.interp.replacement import ReplacementModel  # noqa: E402
from superposition.lm.hooks import HookedModel  # noqa: E402
from superposition.lm.model import DEFAULT_MODEL, load_model, resolve, write_model_folder  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "circuit_tracer_worker.py")
ROWS: list[tuple] = []
PROMPT = "The capital of France is"


def row(part: str, case: str, diff: float, scale: float, same: bool | None, note: str = "") -> None:
    rel = diff / max(scale, 1e-12)
    ok = rel <= 1e-4 and same is not False
    ROWS.append((part, case, diff, rel, "-" if same is None else ("yes" if same else "NO"), note, ok))


# ---------------------------------------------------------------------- 1. model folders
def tiny_llama(folder: Path, tie: bool = True, portable: bool = True) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=100000.0, tie_word_embeddings=tie, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # an initialisation on the scale of a trained model's, so attention is not uniform
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.08)
    if portable:
        write_model_folder(model, tok, folder)
    else:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return folder


def folders(root: Path) -> None:
    ids = [1, 504, 3575, 282, 4649, 314, 253, 2]
    cases = {
        "tiny Llama, write_model_folder": tiny_llama(root / "tiny"),
        "SmolLM2-135M cache (write_model_folder)": Path(resolve(DEFAULT_MODEL)),
        "tiny Llama, 5.x save_pretrained": tiny_llama(root / "tiny-plain", portable=False),
    }
    for case, folder in cases.items():
        out = root / f"logits-{len(ROWS)}.safetensors"
        run_in("circuit-tracer", WORKER, "logits", str(folder), json.dumps(ids), str(out))
        theirs = load_file(str(out))["logits"]
        info = json.loads(out.with_suffix(".json").read_text())
        lm = load_model(str(folder))
        with torch.no_grad():
            ours = lm.model(torch.tensor([ids])).logits[0].float()
        from circuit_tracer_worker import SENTENCE

        same_tok = info["tokens"] == lm.tokenizer(SENTENCE).input_ids
        note = f"transformers {info['transformers']}, rope_theta {info['rope_theta']}"
        if "save_pretrained" in case:  # shown, not required: what the problem was
            d = float((ours - theirs).abs().max())
            if isinstance(info["tokens"], str):
                note += f"; its tokenizer: {info['tokens'][:70]}"
            ROWS.append(("folders", case, d, d / float(ours.abs().max()), "yes" if same_tok else "NO",
                         note + " (for contrast; not checked)", True))  # fmt: skip
            continue
        row("folders", case, float((ours - theirs).abs().max()), float(ours.abs().max()), same_tok, note)


# ---------------------------------------------------------------------- 2-3. attribution
def keys(features: torch.Tensor, logit_ids: torch.Tensor, n_layers: int, n_pos: int) -> list:
    out = [("f", *map(int, r)) for r in features.tolist()]
    out += [("e", L, p) for L in range(n_layers) for p in range(n_pos)]
    out += [("t", p) for p in range(n_pos)]
    out += [("l", int(t)) for t in logit_ids.tolist()]
    return out


def compare_graphs(part: str, case: str, ours: at.Graph, theirs: dict, scores: dict) -> None:
    n_layers, n_pos = ours.n_layers, ours.n_pos
    k_ours = keys(ours.features, ours.logit_ids, n_layers, n_pos)
    k_theirs = keys(theirs["features"], theirs["logit_ids"], n_layers, n_pos)
    same_nodes = set(k_ours) == set(k_theirs)
    row(part, f"{case}: node sets", 0.0, 1.0, same_nodes,
        f"{ours.n_features} latents of {ours.n_active} active, {len(ours.logit_ids)} logits")  # fmt: skip
    if not same_nodes:
        return
    where = {k: i for i, k in enumerate(k_ours)}
    perm = torch.tensor([where[k] for k in k_theirs])
    A_ours = ours.adjacency[perm][:, perm]
    A_theirs = theirs["adjacency"].float()
    row(part, f"{case}: adjacency", float((A_ours - A_theirs).abs().max()), float(A_theirs.abs().max()),
        None, f"largest edge {float(A_theirs.abs().max()):.3g}")  # fmt: skip
    acts = ours.activations[perm[: ours.n_features]]
    row(part, f"{case}: activations", float((acts - theirs["activations"]).abs().max()),
        float(theirs["activations"].abs().max()), None)  # fmt: skip
    rep, comp = at.scores(ours)
    d = max(abs(rep - scores["replacement_score"]), abs(comp - scores["completeness_score"]))
    row(part, f"{case}: scores", d, 1.0, None,
        f"replacement {rep:.5f} vs {scores['replacement_score']:.5f}, completeness {comp:.5f} vs "
        f"{scores['completeness_score']:.5f}")  # fmt: skip
    nodes, edges = at.prune(ours, 0.8, 0.98)
    nodes, edges = nodes[perm], edges[perm][:, perm]
    same_n = torch.equal(nodes, theirs["node_mask"].bool())
    same_e = torch.equal(edges, theirs["edge_mask"].bool())
    row(part, f"{case}: pruned graph", 0.0, 1.0, same_n and same_e,
        f"{int(nodes.sum())} nodes, {int(edges.sum())} edges vs {int(theirs['node_mask'].sum())}, "
        f"{int(theirs['edge_mask'].sum())}")  # fmt: skip


def their_graph(root: Path, kind: str, folder: Path, tcs: Path, ids: torch.Tensor, max_nodes: str = ""):
    out = root / f"{kind}-{max_nodes or 'all'}.safetensors"
    args = ["attribute", str(folder), kind, str(tcs), json.dumps(ids.tolist()), str(out)]
    run_in("circuit-tracer", WORKER, *args, *([max_nodes] if max_nodes else []))
    return load_file(str(out)), json.loads(out.with_suffix(".json").read_text())


def plt_check(root: Path) -> None:
    from superposition.sae import SAEConfig, make_sae

    folder = tiny_llama(root / "plt-model")
    lm = load_model(str(folder))
    hooked = HookedModel(lm.model)
    d, d_sae = 64, 48
    tc_dir = root / "plt"
    tc_dir.mkdir()
    saes = {}
    g = torch.Generator().manual_seed(1)
    for L in range(hooked.n_layers):
        t = {"W_enc": torch.randn(d, d_sae, generator=g) / d**0.5, "b_enc": torch.randn(d_sae, generator=g) * 0.3,
             "W_dec": torch.randn(d_sae, d, generator=g) * 0.03, "b_dec": torch.zeros(d)}  # fmt: skip
        sae = make_sae(SAEConfig(architecture="transcoder", sparsity="standard", d_in=d, d_sae=d_sae))
        sae.load_saved(t)
        saes[L] = sae.eval()
        save_file({"W_enc": t["W_enc"].T.contiguous(), "W_dec": t["W_dec"].contiguous(), "b_enc": t["b_enc"],
                   "b_dec": t["b_dec"]}, str(tc_dir / f"layer_{L}.safetensors"))  # fmt: skip
    rm = ReplacementModel(hooked, saes)
    ids = torch.tensor([lm.tokenizer.bos_token_id, *lm.tokenizer(PROMPT, add_special_tokens=False).input_ids])
    zero = at.zeroed_positions(ids, lm.tokenizer.bos_token_id, lm.names)
    theirs, scores = their_graph(root, "plt", folder, tc_dir, ids)
    ours = at.attribute(rm, ids, PROMPT, batch_size=64, progress=False, zero_positions=zero)
    compare_graphs("PLT", "BOS zeroed (both)", ours, theirs, scores)
    kept = at.attribute(rm, ids, PROMPT, batch_size=64, progress=False, zero_positions=0)
    rep_k, _ = at.scores(kept)
    ROWS.append(("PLT", "ours with BOS kept (for contrast)", float("nan"), float("nan"), "-",
                 f"{kept.n_features - ours.n_features} more latents; replacement {rep_k:.5f} vs "
                 f"{scores['replacement_score']:.5f}", True))  # fmt: skip
    theirs50, _ = their_graph(root, "plt", folder, tc_dir, ids, "50")
    ours50 = at.attribute(
        rm, ids, PROMPT, max_feature_nodes=50, batch_size=64, progress=False, zero_positions=zero
    )
    a = {tuple(r) for r in ours50.features.tolist()}
    b = {tuple(r) for r in theirs50["features"].tolist()}
    row("PLT", "max_feature_nodes 50: latents given rows", 0.0, 1.0, a == b, f"{len(a & b)} of 50 in common")


def clt_check(root: Path) -> None:
    from superposition.sae.clt import CrossLayerTranscoder

    folder = tiny_llama(root / "clt-model")
    lm = load_model(str(folder))
    hooked = HookedModel(lm.model)
    n, d, d_sae = hooked.n_layers, 64, 32
    g = torch.Generator().manual_seed(2)
    clt = CrossLayerTranscoder(n, d, d_sae, k=None)
    clt.threshold = torch.rand(n, d_sae, generator=g) * 0.3
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(n, d, d_sae, generator=g) / d**0.5 * 3)
        clt.b_enc.copy_(torch.randn(n, d_sae, generator=g) * 0.2)
        for i in range(n):
            clt.W_dec[i].copy_(torch.randn(d_sae, n - i, d, generator=g) * 0.02)
    clt.save(root / "clt", {"model_name": str(folder)})
    clt = CrossLayerTranscoder.load(root / "clt")
    rm = ReplacementModel(hooked, clt)
    ids = torch.tensor([lm.tokenizer.bos_token_id, *lm.tokenizer(PROMPT, add_special_tokens=False).input_ids])
    theirs, scores = their_graph(root, "clt", folder, root / "clt", ids)
    ours = at.attribute(rm, ids, PROMPT, batch_size=64, progress=False, zero_positions=1)
    compare_graphs("CLT", "JumpReLU CLT, BOS zeroed", ours, theirs, scores)

    # a JumpReLU CLT trained here (train-sae, clt_sparsity=jumprelu), read by load_clt
    from superposition.cli import main

    run = root / "clt-run"
    sets = [f"model_name={folder}", "architecture=clt", "hook_name=blocks.*.mlp", "clt_sparsity=jumprelu",
            "d_sae=32", "context_size=32", "batch_size_tokens=256", "training_tokens=25600",
            "n_batches_in_buffer=2", "model_batch_size=8", "eval_sequences=2", "tensorboard=false"]  # fmt: skip
    assert main(["train-sae", "--out", str(run), *[a for x in sets for a in ("--set", x)]]) == 0
    trained = CrossLayerTranscoder.load(run / "clt")
    theirs, scores = their_graph(root, "clt", folder, run / "clt", ids)
    ours = at.attribute(ReplacementModel(hooked, trained), ids, PROMPT, batch_size=64, progress=False)
    compare_graphs("CLT", "trained JumpReLU CLT (train-sae)", ours, theirs, scores)

    # circuit-tracer's own ReLU CLT (its to_safetensors), read by ours
    x = torch.randn(16, n, d, generator=g)
    save_file({"x": x}, str(root / "clt-x.safetensors"))
    run_in("circuit-tracer", WORKER, "relu_clt", str(root / "relu-clt"), str(root / "clt-x.safetensors"),
           str(root / "relu-z.safetensors"))  # fmt: skip
    z_theirs = load_file(str(root / "relu-z.safetensors"))["z"]
    relu = CrossLayerTranscoder.load(root / "relu-clt")
    with torch.no_grad():
        z_ours = relu.encode(x)
    row("CLT", "circuit-tracer's ReLU CLT read by ours", float((z_ours - z_theirs).abs().max()),
        float(z_theirs.abs().max()), torch.equal(z_ours != 0, z_theirs != 0),
        f"L0 {float((z_theirs != 0).float().sum(-1).mean()):.1f} per layer and token")  # fmt: skip


# ---------------------------------------------------------------------- 4. crosscoders
def crosscoder_check(root: Path, src: str) -> None:
    from superposition.cli import main
    from superposition.sae.crosscoder import Crosscoder

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, 16, generator=g)
    for sparsity in ("batchtopk", "l1"):
        cc = Crosscoder(2, 16, 64, sparsity, k=4, generator=g)
        with torch.no_grad():
            cc.b_enc.normal_(0, 0.2, generator=g)
            cc.b_dec.normal_(0, 0.3, generator=g)
            cc.W_dec.mul_(torch.rand(64, 2, 1, generator=g) * 3)  # decoder norms unlike each other
        if sparsity == "batchtopk":  # a threshold keeping about k latents per input
            ranked = cc.ranked(torch.relu(cc.pre_acts(x))).detach()
            cc.threshold.fill_(float(ranked.flatten().topk(4 * x.shape[0]).values[-1]))
        cc.eval().save(root / f"cc-{sparsity}")
        out = root / f"cc-{sparsity}-dl"
        assert (
            main(["convert", str(root / f"cc-{sparsity}"), "--to", "dictionary_learning", "--out", str(out)])
            == 0
        )
        save_file({"x": x}, str(root / "x.safetensors"))
        res = root / f"cc-{sparsity}.safetensors"
        run_in(
            "circuit-tracer",
            WORKER,
            "crosscoder",
            str(out / "ae.pt"),
            src,
            str(root / "x.safetensors"),
            str(res),
        )
        theirs = load_file(str(res))
        with torch.no_grad():
            z, x_hat = cc.encode(x), cc(x)
        same = torch.equal(z != 0, theirs["z"] != 0)
        note = f"L0 {float((z != 0).float().sum(-1).mean()):.2f} vs {float((theirs['z'] != 0).float().sum(-1).mean()):.2f}"
        row("crosscoder", f"{sparsity}: activations", float((z - theirs["z"]).abs().max()),
            float(theirs["z"].abs().max()), same, note)  # fmt: skip
        row("crosscoder", f"{sparsity}: reconstructions", float((x_hat - theirs["x_hat"]).abs().max()),
            float(theirs["x_hat"].abs().max()), None)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dictlearn-src", help="a checkout of science-of-finetuning/dictionary_learning")
    ap.add_argument("--skip", default="", help="comma-separated: folders, plt, clt, crosscoder")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "folders" not in skip:
            folders(root)
        if "plt" not in skip:
            plt_check(root)
        if "clt" not in skip:
            clt_check(root)
        if "crosscoder" not in skip:
            if args.dictlearn_src:
                crosscoder_check(root, args.dictlearn_src)
            else:
                print("crosscoder: skipped (give --dictlearn-src, a checkout of Minder et al.'s fork)")
    print(f"{'part':<11} {'case':<46} {'max |diff|':>11} {'relative':>10} {'same':>5}  note")
    for part, case, diff, rel, same, note, ok in ROWS:
        print(f"{part:<11} {case:<46} {diff:>11.3g} {rel:>10.3g} {same:>5}  {note}{'' if ok else '  FAIL'}")
    failed = [r for r in ROWS if not r[-1]]
    print(f"{len(ROWS) - len(failed)} of {len(ROWS)} rows pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
