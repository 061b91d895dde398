"""Interoperability proven by outputs: every format, both ways, against the libraries themselves.

1. SAELens 6.54.12 writes SAEs of every architecture it saves (and the cfg fields that change the
   forward pass: apply_b_dec_to_input, normalize_activations, rescale_acts_by_decoder_norm,
   hook_z, BatchTopK / Matryoshka training checkpoints); we load each and compare our encode and
   decode of the same inputs with SAELens's.
2. We write SAEs of every architecture; SAELens's `SAE.load_from_disk` loads each and its outputs
   are compared with ours.
3. sparsify 1.3.3, both ways (TopK SAEs; a decoder sparsify did not normalise; ours with an
   uncentred input, folded on writing; TopK transcoders and skip transcoders).
4. dictionary_learning 0.1.0 writes every dict_class (its own classes, in its own environment);
   we load each.
   Transcoders too (ReLU, JumpReLU and BatchTopK, with and without a skip W_skip), both ways.
5. Gemma Scope: params.npz written from its published specification, compared with the published
   forward pass (pre = x W_enc + b_enc; z = 1[pre > θ] ReLU(pre); x̂ = z W_dec + b_dec).

Each peer runs in its own environment (benchmarks/peers.py). A case passes when both z and x̂
agree to 1e-4 (relative to the outputs' scale) and the same latents are active.

    python benchmarks/check_formats.py [--skip saelens,sparsify,dictlearn]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import run_in  # noqa: E402
from superposition.sae import SAEConfig, make_sae  # noqa: E402
from superposition.sae.formats import save  # noqa: E402
from superposition.sae.io import load_sae  # noqa: E402

HERE = Path(__file__).resolve().parent
D, M, K = 16, 64, 4
ROWS: list[tuple] = []


def ours_outputs(sae, x: torch.Tensor) -> dict:
    with torch.no_grad():
        z = sae.encode(x.unsqueeze(1))
        return {"z": z[:, 0], "x_hat": sae.decode(z, x.unsqueeze(1))[:, 0]}


def compare(direction: str, library: str, case: str, ours: dict, theirs: dict) -> None:
    scale = 1.0 + max(float(theirs["z"].abs().max()), float(theirs["x_hat"].abs().max()))
    dz = float((ours["z"] - theirs["z"]).abs().max())
    dx = float((ours["x_hat"] - theirs["x_hat"]).abs().max())
    same = bool(torch.equal(ours["z"] != 0, theirs["z"] != 0))
    ok = dz <= 1e-4 * scale and dx <= 1e-4 * scale and same
    ROWS.append(
        (direction, library, case, dz, dx, same, float((theirs["z"] != 0).float().sum(-1).mean()), ok)
    )


def _random_sae(arch: str, seed: int, **kw) -> object:
    cfg = {"architecture": arch, "d_in": D, "d_sae": M, **kw}
    if arch in ("topk", "batchtopk", "matryoshka") or kw.get("sparsity") in (
        "topk",
        "batchtopk",
        "matryoshka",
    ):
        cfg["k"] = K
    sae = make_sae(SAEConfig.build(cfg), torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "log_threshold":
                p.copy_((torch.rand(p.shape, generator=g) * 0.6 + 0.1).log())
            else:
                p.add_(torch.randn(p.shape, generator=g) * (0.3 if name.startswith(("b_", "r_")) else 0.5))
        if hasattr(sae, "threshold") and not hasattr(sae, "log_threshold"):
            sae.threshold.fill_(0.35)
    return sae.eval()


OUR_CASES = {
    "standard": ("standard", {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_pre"}),
    "standard_tied": ("standard", {"tied": True}),
    "standard_weighted_l1": ("standard", {"weighted_l1": True}),
    "standard_no_b_dec_on_input": ("standard", {"apply_b_dec_to_input": False}),
    "standard_layer_norm": ("standard", {"input_normalization": "layer_norm"}),
    "standard_constant_norm_rescale": ("standard", {"input_normalization": "constant_norm_rescale"}),
    "standard_hook_z": ("standard", {"model_name": "gpt2", "hook_name": "blocks.1.attn.hook_z"}),
    "gated": ("gated", {}),
    "jumprelu": ("jumprelu", {}),
    "jumprelu_no_b_dec_on_input": ("jumprelu", {"apply_b_dec_to_input": False}),
    "topk": ("topk", {}),
    "batchtopk": ("batchtopk", {}),
    "matryoshka": ("matryoshka", {"prefixes": [16, 32, 64]}),
    # transcoders (d_in 16 -> d_out 12): SAELens's ReLU and JumpReLU ones, with and without a skip
    "transcoder_relu": ("transcoder", {"sparsity": "standard", "d_out": 12}),
    "skip_transcoder_relu": ("skip_transcoder", {"sparsity": "standard", "d_out": 12}),
    "transcoder_jumprelu": ("transcoder", {"sparsity": "jumprelu", "d_out": 12}),
    "skip_transcoder_jumprelu": ("skip_transcoder", {"sparsity": "jumprelu", "d_out": 12}),
    "transcoder_batchtopk": ("transcoder", {"sparsity": "batchtopk", "d_out": 12}),
}


def crosscoder_sources() -> dict:
    """Each source of a two-source crosscoder (L1 and BatchTopK) as the one-source SAE that
    `train-sae --set architecture=crosscoder` saves under saes/<source>/."""
    from superposition.sae.crosscoder import Crosscoder

    out = {}
    for n, (sparsity, extra) in enumerate((("l1", {}), ("batchtopk", {"k": K}))):
        cc = Crosscoder(2, D, M, sparsity, generator=torch.Generator().manual_seed(500 + n), **extra)
        g = torch.Generator().manual_seed(510 + n)
        with torch.no_grad():
            for p in cc.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
            cc.threshold.fill_(0.35)
        for s in range(2):
            out[f"crosscoder_{sparsity}_source_{s}"] = cc.source_as_sae(s)
    return out


def they_wrote(peer: str, library: str, root: Path, x: torch.Tensor) -> None:
    """The peer's worker writes SAEs (one folder each, with its own outputs on x); we read each
    and compare outputs."""
    run_in(peer, str(HERE / f"formats_{peer}_worker.py"), "write", str(root))
    for folder in sorted(p for p in (root / peer).iterdir() if p.is_dir()):
        theirs = load_file(str(root / peer / f"{folder.name}.out.safetensors"))
        compare(
            f"{library.split()[0]} wrote, we read",
            library,
            folder.name,
            ours_outputs(load_sae(folder), x),
            theirs,
        )


def we_wrote(peer: str, library: str, root: Path, x: torch.Tensor, saes: dict, to: str) -> None:
    """We write each SAE in the peer's layout (`to`) under root/ours_<peer>/; the peer's worker
    reads them and computes its outputs on x; we compare them with ours."""
    ours = {}
    for case, sae in saes.items():
        save(sae, root / f"ours_{peer}" / case, to=to)
        ours[case] = ours_outputs(sae, x)
    run_in(peer, str(HERE / f"formats_{peer}_worker.py"), "read", str(root))
    for case, out in ours.items():
        theirs = load_file(str(root / f"ours_{peer}" / f"{case}.{to}.safetensors"))
        compare(f"we wrote, {library.split()[0]} read", library, case, out, theirs)


def saelens(root: Path, x: torch.Tensor) -> None:
    they_wrote("saelens", "SAELens 6.54.12", root, x)
    saes = {case: _random_sae(arch, 400 + n, **kw) for n, (case, (arch, kw)) in enumerate(OUR_CASES.items())}
    saes.update(crosscoder_sources())
    we_wrote("saelens", "SAELens 6.54.12", root, x, saes, to="saelens")


def sparsify(root: Path, x: torch.Tensor) -> None:
    they_wrote("sparsify", "sparsify 1.3.3", root, x)
    cases = {"topk": ("topk", {}), "topk_no_b_dec_on_input": ("topk", {"apply_b_dec_to_input": False}),
             "transcoder": ("transcoder", {"sparsity": "topk"}),
             "skip_transcoder": ("skip_transcoder", {"sparsity": "topk"})}  # fmt: skip
    saes = {case: _random_sae(arch, 500 + n, **kw) for n, (case, (arch, kw)) in enumerate(cases.items())}
    we_wrote("sparsify", "sparsify 1.3.3", root, x, saes, to="sparsify")


def dictlearn(root: Path, x: torch.Tensor) -> None:
    they_wrote("dictlearn", "dictionary_learning 0.1.0", root, x)


def gemma_scope(root: Path, x: torch.Tensor) -> None:
    g = np.random.default_rng(7)
    p = {"W_enc": g.normal(size=(D, M)), "W_dec": g.normal(size=(M, D)), "b_enc": g.normal(size=M) * 0.3,
         "b_dec": g.normal(size=D) * 0.3, "threshold": g.uniform(0.1, 0.7, size=M)}  # fmt: skip
    p = {k: v.astype(np.float32) for k, v in p.items()}
    folder = root / "gemma-scope-2b-pt-res" / "layer_5" / "width_16k" / "average_l0_40"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **p)
    xs = x.numpy()
    pre = xs @ p["W_enc"] + p["b_enc"]
    acts = (pre > p["threshold"]) * np.maximum(pre, 0)
    theirs = {"z": torch.from_numpy(acts), "x_hat": torch.from_numpy(acts @ p["W_dec"] + p["b_dec"])}
    compare(
        "specification written, we read",
        "Gemma Scope",
        "params.npz",
        ours_outputs(load_sae(folder), x),
        theirs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--skip", default="", help="comma-separated peers to leave out: saelens, sparsify, dictlearn"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        x = torch.randn(256, D, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.2
        save_file({"x": x}, str(root / "x.safetensors"))
        for name, check in (
            ("saelens", saelens),
            ("sparsify", sparsify),
            ("dictlearn", dictlearn),
            ("gemma", gemma_scope),
        ):
            if name not in skip:
                check(root, x)
    print(
        f"{'direction':<36}{'library':<27}{'case':<32}{'max |Δz|':>10}{'max |Δx̂|':>10}{'support':>9}{'L0':>6}"
    )
    for direction, library, case, dz, dx, same, l0, ok in ROWS:
        print(f"{direction:<36}{library:<27}{case:<32}{dz:>10.2e}{dx:>10.2e}{'same' if same else 'DIFF':>9}{l0:>6.1f}"
              f"  {'ok' if ok else 'FAIL'}")  # fmt: skip
    failed = [r for r in ROWS if not r[-1]]
    print(f"{len(ROWS) - len(failed)} passed, {len(failed)} failed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
