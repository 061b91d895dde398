"""Runs in the sae-bench environment (benchmarks/peers.py): SAEBench 0.6.0's own metric code fed the
activations, probes and splits that check_saebench.py wrote, offline.

    python saebench_worker.py DIR     (DIR/inputs.safetensors, DIR/inputs.json, DIR/sae: SAELens folder)

Prints one JSON object:
- absorption: per word, SAEBench's `FeatureAbsorptionCalculator.calculate_absorption` (its
  absorption fraction and full-absorption test), given our activation at the word's token (its model
  is replaced by one that hands those activations back: the calculator's prompts are its own, the
  activations ours), our probe direction and our main latents; and per letter its
  `_aggregate_results_df` (absorption/main.py).
- tpp: SAEBench's `get_effects_per_class_precomputed_acts` (TPP's latent effects for a class, with
  our probe), its top latents, `ablated_precomputed_activations` (their ablation, mean-pooled) and
  `get_sae_meaned_activations`, on two classes' per-token activations (zero-padded, as it expects).
- probing: per (task, class, k), SAEBench's `get_top_k_mean_diff_mask` + `train_sklearn_probe`
  (scikit-learn's LogisticRegression) on our mean-pooled SAE latents and our one-vs-rest split.
"""

import json
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

warnings.filterwarnings("ignore")


class _Replay:
    """Stands in for the HookedTransformer: hands back the given activations, batch by batch, in order."""

    def __init__(self, acts: torch.Tensor, hook: str) -> None:
        self.acts, self.hook, self.at = acts, hook, 0
        self.tokenizer = None

    def to_tokens(self, text):
        return torch.zeros(1, 8, dtype=torch.long)  # every prompt "the same length" (its check)

    def run_with_cache(self, prompts, names_filter=None):
        a = self.acts[self.at : self.at + len(prompts)]
        self.at += len(prompts)
        return None, {self.hook: a[:, None, :]}


def _absorption(sae, name: str, letters: dict, t: dict, meta: dict) -> dict:
    from sae_bench.evals.absorption.feature_absorption_calculator import FeatureAbsorptionCalculator
    from sae_bench.evals.absorption.main import _aggregate_results_df

    out = {"words": {}, "letters": {}}
    rows = []
    for letter, rec in letters.items():
        acts = t[f"{name}_acts_{letter}"]
        model = _Replay(acts, f"blocks.{meta['layer']}.hook_resid_post")
        calc = FeatureAbsorptionCalculator(model=model, icl_word_list=meta["icl_words"], max_icl_examples=10,
                                           base_template="{word} has the first letter:", word_token_pos=0,
                                           batch_size=10)  # fmt: skip
        res = calc.calculate_absorption(sae, rec["words"], probe_direction=t[f"{name}_probe_{letter}"],
                                        main_feature_ids=rec["main"], layer=meta["layer"], show_progress=False)  # fmt: skip
        out["words"][letter] = {
            "fraction": [float(w.absorption_fraction) for w in res.word_results],
            "full": [bool(w.is_full_absorption) for w in res.word_results],
        }
        for w in res.word_results:
            rows.append({"letter": letter, "absorption_fraction": float(w.absorption_fraction),
                         "is_full_absorption": bool(w.is_full_absorption),
                         "num_probe_true_positives": len(rec["words"]), "split_feats": rec["main"]})  # fmt: skip
    if rows:
        for _, r in _aggregate_results_df(pd.DataFrame(rows)).iterrows():
            out["letters"][r["letter"]] = {"mean_absorption_fraction": float(r["mean_absorption_fraction"]),
                                           "full_absorption_rate": float(r["full_absorption_rate"])}  # fmt: skip
    return out


def main() -> None:
    from sae_bench.evals.sparse_probing import probe_training as pt
    from sae_lens import SAE

    folder = Path(sys.argv[1])
    t = load_file(str(folder / "inputs.safetensors"))
    meta = json.loads((folder / "inputs.json").read_text())
    sae = SAE.load_from_disk(str(folder / "sae"), device="cpu")
    out = {"absorption": {}, "probing": {}}
    for name, spec in meta["absorption"].items():
        out["absorption"][name] = _absorption(SAE.load_from_disk(str(folder / spec["sae"]), device="cpu"), name,
                                              spec["letters"], t, meta)  # fmt: skip
    for key, ks in meta["probing"].items():
        xtr, ytr = t[f"{key}_xtr"], t[f"{key}_ytr"].int()
        xte, yte = t[f"{key}_xte"], t[f"{key}_yte"].int()
        for k in ks:
            if k == "all":
                a, b = xtr, xte
            else:
                mask = pt.get_top_k_mean_diff_mask(xtr, ytr, int(k))
                a, b = pt.apply_topk_mask_reduce_dim(xtr, mask), pt.apply_topk_mask_reduce_dim(xte, mask)
            _, acc = pt.train_sklearn_probe(a, ytr, b, yte)
            out["probing"][f"{key}/{k}"] = float(acc)
    from sae_bench.evals.scr_and_tpp import main as tpp
    from sae_bench.sae_bench_utils import activation_collection as ac

    acts = {"a": t["tpp_a"], "b": t["tpp_b"]}
    probe = pt.Probe(t["tpp_w"].shape[0], torch.float32)
    with torch.no_grad():
        probe.net.weight.copy_(t["tpp_w"][None])
        probe.net.bias.copy_(t["tpp_bias"])
    effects = tpp.get_effects_per_class_precomputed_acts(
        sae, probe, "a", acts, perform_scr=False, sae_batch_size=64
    )
    top = effects.topk(meta["tpp_top"]).indices
    ablated = tpp.ablated_precomputed_activations(t["tpp_a_cut"], sae, top, 64)
    ablated_padded = tpp.ablated_precomputed_activations(t["tpp_a"], sae, top, 64)
    means = ac.get_sae_meaned_activations({"a": t["tpp_a"]}, sae, 64)["a"]
    out["tpp"] = {"effects": effects.tolist(), "top": sorted(top.tolist()), "ablated": ablated.tolist(), "ablated_padded": ablated_padded.tolist(),
                  "sae_means": means.tolist()}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
