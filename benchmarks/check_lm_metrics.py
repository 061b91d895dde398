"""Our language-model metrics against SAELens's own evaluation, on the same SAE and tokens.

SAELens 6.54.12 trains a TopK SAE on SmolLM2-135M at blocks.6.hook_resid_post (its
`model.layers.6`), in its own environment. Both libraries then evaluate that one SAE on the same
held-out sequences: SAELens with sae_lens.evals (what run_evals computes), we with
superposition.lm.evals.evaluate_sae after loading SAELens's folder. L0, MSE and explained
variance have the same definitions and must agree to 1%.

CE loss recovered and KL differ by definition, and the script shows that the definitions are the
whole difference by also computing ours under SAELens's conventions:
  - which positions are zero-ablated: SAELens replaces activations with the SAE's output at
    non-special tokens but zero-ablates every position, BOS included; we zero-ablate exactly the
    positions the SAE replaces, so that recovered = 0 means "no better than removing what the SAE
    reconstructs";
  - which predictions count: SAELens averages CE and KL over predictions made at non-special
    tokens; we average over every next-token prediction of the sequence.

    python benchmarks/check_lm_metrics.py [--tokens 100000] [--sequences 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import run_in  # noqa: E402

HERE = Path(__file__).resolve().parent
HOOK = "blocks.6.hook_resid_post"


@torch.no_grad()
def ours_in_saelens_conventions(hooked, tokenizer, sae, seqs: torch.Tensor) -> dict:
    from superposition.lm.data import special_mask
    from superposition.lm.evals import capture_into, splice_at
    from superposition.lm.hooks import sae_inputs

    ce = {"clean": [], "sae": [], "zero": []}
    kl_sae, kl_zero = [], []
    for ids in seqs.split(8):
        keep = ~special_mask(tokenizer, ids)
        seen: dict = {}
        clean = hooked.logits(ids, {HOOK: capture_into(seen, "act")})
        x = sae_inputs(seen["act"])[keep].float()
        x_hat = sae.decode(sae.encode(x.unsqueeze(1)), x.unsqueeze(1))[:, 0]
        with_sae = hooked.logits(ids, {HOOK: splice_at(keep, x_hat)})
        zero = hooked.logits(ids, {HOOK: lambda a: torch.zeros_like(a)})  # every position, as SAELens
        for name, logits in (("clean", clean), ("sae", with_sae), ("zero", zero)):
            loss = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")
            ce[name].append(loss[keep[:, :-1]])
        logp = F.log_softmax(clean.float(), -1)
        for store, logits in ((kl_sae, with_sae), (kl_zero, zero)):
            kl = (logp.exp() * (logp - F.log_softmax(logits.float(), -1))).sum(-1)
            store.append(kl[keep])
    m = {k: torch.cat(v).mean().item() for k, v in ce.items()}
    return {
        "ce_loss_without_sae": m["clean"], "ce_loss_with_sae": m["sae"], "ce_loss_with_ablation": m["zero"],
        "ce_loss_score": (m["zero"] - m["sae"]) / (m["zero"] - m["clean"]),
        "kl_div_with_sae": torch.cat(kl_sae).mean().item(), "kl_div_with_ablation": torch.cat(kl_zero).mean().item(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000, help="SAELens's training budget")
    parser.add_argument(
        "--sequences", type=int, default=32, help="held-out sequences to evaluate on (a multiple of 8)"
    )
    args = parser.parse_args()

    from superposition.lm.config import LMSAEConfig
    from superposition.lm.data import python_docs
    from superposition.lm.evals import evaluate_sae
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import DEFAULT_MODEL, load_model, resolve
    from superposition.lm.store import ActivationStore
    from superposition.sae.io import load_sae

    model_dir = resolve(DEFAULT_MODEL)
    lm = load_model(DEFAULT_MODEL)
    hooked = HookedModel(lm.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = tmp / "docs.jsonl"
        docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in python_docs()))
        seqs = ActivationStore.for_run(
            LMSAEConfig(hook_name=HOOK, dataset_path=str(docs)), lm, hooked, holdout=True
        ).first_sequences(args.sequences)
        save_file({"tokens": seqs.contiguous()}, str(tmp / "tokens.safetensors"))
        print(
            f"SAELens trains a TopK SAE (4608 latents, k=32) on {args.tokens:,} tokens of python-docs at {HOOK} ...",
            flush=True,
        )
        run_in(
            "saelens",
            str(HERE / "saelens_lm_worker.py"),
            str(model_dir),
            str(docs),
            str(tmp / "sae"),
            str(args.tokens),
        )
        theirs = json.loads(run_in("saelens", str(HERE / "saelens_metrics_worker.py"), str(model_dir), str(tmp / "sae"),
                                   str(tmp / "tokens.safetensors")).strip().splitlines()[-1])  # fmt: skip
        sae = load_sae(tmp / "sae")
    assert sae.cfg.hook_name == HOOK, sae.cfg.hook_name  # SAELens's model.layers.6, read as ours
    with torch.no_grad():
        ours = evaluate_sae(hooked, lm.tokenizer, sae, HOOK, seqs, batch_size=8)
        aligned = ours_in_saelens_conventions(hooked, lm.tokenizer, sae, seqs)
    rows = [  # (metric, SAELens, ours, ours under SAELens's conventions, same definition?)
        ("l0", theirs["l0"], ours["l0"], ours["l0"], True),
        ("mse", theirs["mse"], ours["mse"], ours["mse"], True),
        ("explained_variance", theirs["explained_variance"], ours["explained_variance"], ours["explained_variance"], True),
        ("ce_loss_without_sae", theirs["ce_loss_without_sae"], ours["ce_loss_clean"], aligned["ce_loss_without_sae"], False),
        ("ce_loss_with_sae", theirs["ce_loss_with_sae"], ours["ce_loss_with_sae"], aligned["ce_loss_with_sae"], False),
        ("ce_loss_with_ablation", theirs["ce_loss_with_ablation"], ours["ce_loss_zero_ablation"], aligned["ce_loss_with_ablation"], False),
        ("ce_loss_recovered", theirs["ce_loss_score"], ours["ce_loss_recovered"], aligned["ce_loss_score"], False),
        ("kl_div_with_sae", theirs["kl_div_with_sae"], ours["kl_div"], aligned["kl_div_with_sae"], False),
    ]  # fmt: skip
    print(
        f"{seqs.shape[0]} held-out sequences, {ours['eval_tokens']:,} non-special tokens; SAELens hook {theirs['hook_name']}"
    )
    print(
        f"{'metric':<24}{'SAELens':>11}{'ours':>11}{'rel.diff':>10}{'ours, SAELens conv.':>21}{'rel.diff':>10}"
    )
    failed = []
    for name, t, o, a, same in rows:
        rel, rel_a = abs(o - t) / max(abs(t), 1e-12), abs(a - t) / max(abs(t), 1e-12)
        if (same and rel > 0.01) or (not same and rel_a > 0.01):
            failed.append(name)
        note = "" if same else "  (definitions differ; see the docstring)"
        print(f"{name:<24}{t:>11.5g}{o:>11.5g}{rel:>9.2%}{a:>21.5g}{rel_a:>9.2%}{note}")
    print(
        "PASS: every metric agrees to 1% under the same definitions"
        if not failed
        else f"FAIL: {', '.join(failed)}"
    )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
