"""Local against end-to-end SAEs on SmolLM2 (Braun et al. 2024's comparison), same L0 and budget.

Workload: SmolLM2-135M-Instruct at blocks.6.hook_resid_post, the python-docs corpus, context 128,
1024 tokens per step, TopK SAEs with 4608 latents and k = 32 (so L0 is matched exactly), Adam at
lr 3e-3 with 4 warm-up steps, the same token budget and seed for each. `local` minimises the
activation's MSE; `e2e` the KL of the next-token distribution with the SAE spliced in (β = 1);
`e2e_ds` (with --ds) adds the MSE at blocks.9 and blocks.12 hook_resid_post. All are evaluated by
the same code on the same held-out sequences.

The paper's finding, to check on this budget: at matched L0, e2e reaches lower CE loss (higher CE
loss recovered, lower KL) with worse activation reconstruction (lower explained variance).

    python benchmarks/bench_e2e.py [--tokens 32768] [--ds]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HOOK = "blocks.6.hook_resid_post"
COMMON = [
    f"hook_name={HOOK}", "context_size=128", "batch_size_tokens=1024", "expansion_factor=8", "k=32",
    "lr=3e-3", "lr_warm_up_steps=4", "eval_sequences=32", "tensorboard=false", "log_every=4",
]  # fmt: skip
VARIANTS = {
    "local": [],
    "e2e": ["loss=e2e"],
    "e2e_ds": ["loss=e2e_ds", "downstream_hooks=[blocks.9.hook_resid_post,blocks.12.hook_resid_post]"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32768, help="training tokens per SAE")
    parser.add_argument("--ds", action="store_true", help="also train the e2e+downstream variant")
    args = parser.parse_args()
    from superposition.lm.config import make_lm_config
    from superposition.runs.train import train_lm_sae

    names = ["local", "e2e"] + (["e2e_ds"] if args.ds else [])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg = make_lm_config(None, [*COMMON, f"training_tokens={args.tokens}", *VARIANTS[name]])
            t0 = time.time()
            out = train_lm_sae(cfg, Path(tmp) / name)
            s = json.loads((out / "summary.json").read_text())
            s["wall_s"] = time.time() - t0
            rows[name] = s
    keys = ["ce_loss_recovered", "ce_loss_with_sae", "kl_div", "explained_variance", "l0", "frac_dead"]
    print(f"\n{args.tokens} training tokens per SAE, {HOOK}, TopK k = 32, 4608 latents")
    print(f"{'':<8}" + "".join(f"{k:>20}" for k in [*keys, "train tokens/s"]))
    for name, s in rows.items():
        rate = s["training_tokens"] / s["train_seconds"]
        print(f"{name:<8}" + "".join(f"{s[k]:>20.4f}" for k in keys) + f"{rate:>20,.0f}")
    local, e2e = rows["local"], rows["e2e"]
    better_ce = e2e["ce_loss_with_sae"] < local["ce_loss_with_sae"]
    worse_ev = e2e["explained_variance"] < local["explained_variance"]
    print(
        f"\ne2e against local at the same L0: CE loss {e2e['ce_loss_with_sae']:.3f} vs "
        f"{local['ce_loss_with_sae']:.3f} ({'lower' if better_ce else 'NOT lower'}), explained variance "
        f"{e2e['explained_variance']:.3f} vs {local['explained_variance']:.3f} "
        f"({'worse, as the paper finds' if worse_ev else 'not worse'})"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
