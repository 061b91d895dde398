"""SAELens-style code runs unchanged on our SAE object and gives SAELens's numbers.

benchmarks/saelens_snippets.py holds code written as SAELens's tutorials and ARENA's SAE exercises
write it (encode on [batch, seq, d], top latents per token, W_dec[i], decoder norms, cosine
similarities, the logit lens W_dec @ W_U, decode, forward). This script saves an SAE of each
architecture in SAELens's layout, runs that same code with `superposition.SAE` here and with
`sae_lens.SAE` in SAELens 6.54.12's own environment (benchmarks/peers.py), and compares every
number: a case passes when each differs by at most 1e-5 relative to its scale.

    python benchmarks/check_saelens_snippets.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import superposition as sp  # noqa: E402
from check_formats import _random_sae  # noqa: E402
from peers import run_in  # noqa: E402
from saelens_snippets import run  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = {
    "standard": ("standard", {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_pre"}),
    "standard_no_b_dec_on_input": ("standard", {"apply_b_dec_to_input": False}),
    "gated": ("gated", {}),
    "jumprelu": ("jumprelu", {}),
    "topk": ("topk", {}),
    "batchtopk": ("batchtopk", {}),
    "matryoshka": ("matryoshka", {"prefixes": [16, 32, 64]}),
}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 10, 16, generator=g) * 1.5 + 0.2  # [batch, seq, d_in], as a hook gives them
        W_U = torch.randn(16, 50, generator=g)
        save_file({"x": x, "W_U": W_U}, str(root / "inputs.safetensors"))
        ours = {}
        for n, (case, (arch, kw)) in enumerate(CASES.items()):
            sae = _random_sae(arch, 700 + n, **kw)
            sp.SAE.wrap(sae).save_model(root / "saes" / case)
            ours[case] = run(sp.SAE, str(root / "saes" / case), x, W_U)
        run_in("saelens", str(HERE / "snippets_saelens_worker.py"), str(root))
        for case, mine in ours.items():
            theirs = load_file(str(root / f"{case}.saelens.safetensors"))
            worst, where = 0.0, ""
            for key, a in mine.items():
                b = theirs[key]
                if a.shape != b.shape:
                    worst, where = float("inf"), f"{key} shape {tuple(a.shape)} vs {tuple(b.shape)}"
                    break
                scale = 1.0 + float(b.float().abs().max()) if b.numel() else 1.0
                d = float((a.float() - b.float()).abs().max()) / scale if a.numel() else 0.0
                if d > worst:
                    worst, where = d, key
            rows.append((case, len(mine), worst, where, worst <= 1e-5))
    print(f"{'case':<30}{'numbers':>8}{'max rel diff':>14}  {'where':<16}")
    for case, n, worst, where, ok in rows:
        print(f"{case:<30}{n:>8}{worst:>14.2e}  {where:<16}{'ok' if ok else 'FAIL'}")
    failed = [r for r in rows if not r[-1]]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
