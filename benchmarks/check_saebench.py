"""SAEBench's evaluations as SAEBench computes them, proven by its own code: sae-bench 0.6.0 (its own
environment, benchmarks/peers.py) fed the same activations, probes and splits offline.

1. First-letter absorption, for the SAE and for lm/saebench.planted_absorption's hand-built SAE
   (where a known share of each letter's words is absorbed; saved by us, loaded by SAELens): for
   every letter, the test words our probe gets right, with our
   activation at the word's token, our probe direction and our main latents, through SAEBench's
   `FeatureAbsorptionCalculator.calculate_absorption` (the SAE loaded by SAELens from its folder)
   and `_aggregate_results_df`: per word, the absorption fraction and the full-absorption flag;
   per letter, the mean fraction and the full-absorption rate.
2. Sparse probing: for each task and class, our mean-pooled SAE latents on our one-vs-rest split
   through SAEBench's `get_top_k_mean_diff_mask` and `train_sklearn_probe` (scikit-learn), against
   our top-k selection and our logistic regression: test accuracy for all latents and k = 1, 5, 20.
3. TPP: on two classes of `stdlib_package` with as many texts each (so that SAEBench's random
   negatives are the whole other class), its `get_effects_per_class_precomputed_acts` with our probe
   (the latent effects), their top 20, `ablated_precomputed_activations` (the mean-pooled activations
   with those latents ablated) and `get_sae_meaned_activations`, on zero-padded per-token activations.

What is not fed: SAEBench's model passes (its HookedTransformer needs hub weights), the probes'
training (the first-letter probe and the k-sparse L1 probe are its own torch loops with random
starts; ours are described in docs/evaluation.md), its datasets (downloads), and TPP/SCR on three
classes or more (its negatives are then a random draw). A row passes at a
difference ≤ 1e-5 for absorption and ≤ 0.01 accuracy for probing (two solvers of the same convex
problem can put a point on either side of the boundary); the script exits 1 on any failure.

    python benchmarks/check_saebench.py [--sae RUN] [--words 1000] [--per-class 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import run_in  # noqa: E402
from superposition.cli import main as cli  # noqa: E402
from superposition.lm import saebench as sb  # noqa: E402
from superposition.lm.hooks import HookedModel  # noqa: E402
from superposition.lm.probes import accuracy, fit_logistic  # noqa: E402
from superposition.runs.targets import load_run  # noqa: E402

HERE = Path(__file__).resolve().parent


def _feed_absorption(sae, fl, name: str, t: dict, meta: dict):
    """Our absorption of `sae` on the first-letter data `fl`, and per letter what SAEBench's
    calculator is fed: the probe's true positives' activations, its unit direction, our main latents."""
    probes = sb.letter_probes(fl)
    ours = sb.absorption(sae, fl, probes, min_letters=1)
    z = sb.encode(sae, fl.acts)
    test = fl.test
    words_out, letters = {}, {}
    for rec in ours["letters"]:
        c = sb.LETTERS.index(rec["letter"])
        tp = (fl.labels[test] == c) & (probes.score(fl.acts[test])[:, c] > 0)
        if not tp.any():
            continue
        direction = probes.w[c].float() / probes.w[c].float().norm()
        xt, zt = fl.acts[test][tp], z[test][tp]
        cos = torch.nn.functional.cosine_similarity(direction[None], sae.W_dec.detach().float(), dim=-1)
        act_proj = xt @ direction
        frac = sb.absorption_fraction(act_proj, zt * cos, cos, rec["main_latents"])
        full = sb.full_absorption(act_proj, zt, zt * cos, cos, rec["main_latents"])
        words = [w for w, te in zip(fl.words, test.tolist()) if te]
        words = [w for w, keep in zip(words, tp.tolist()) if keep]
        t[f"{name}_acts_{rec['letter']}"] = xt.contiguous()
        t[f"{name}_probe_{rec['letter']}"] = direction.contiguous()
        letters[rec["letter"]] = {"words": words, "main": rec["main_latents"]}
        words_out[rec["letter"]] = (frac, full, rec)
    meta.setdefault("absorption", {})[name] = {
        "sae": "sae" if name == "real" else f"sae_{name}",
        "letters": letters,
    }
    return ours, words_out


def _compare_absorption(name: str, mine: dict, theirs: dict) -> int:
    worst_frac, worst_letter, flags_differ, n_words, nonzero = 0.0, 0.0, 0, 0, 0
    for letter, (frac, full, rec) in mine.items():
        th = theirs["words"][letter]
        worst_frac = max(worst_frac, (frac - torch.tensor(th["fraction"])).abs().max().item())
        flags_differ += int((full != torch.tensor(th["full"])).sum())
        n_words += len(frac)
        nonzero += int((frac > 0).sum())
        agg = theirs["letters"][letter]
        worst_letter = max(worst_letter, abs(agg["mean_absorption_fraction"] - rec["mean_absorption_fraction"]),
                           abs(agg["full_absorption_rate"] - rec["full_absorption_rate"]))  # fmt: skip
    failures = 0
    for part, what, diff, ok in (
        ("absorption fraction", f"{n_words} words ({nonzero} absorbed), {len(mine)} letters", f"{worst_frac:.2e}",
         worst_frac <= 1e-5),
        ("full absorption", f"{n_words} words", f"{flags_differ} flags differ", flags_differ == 0),
        ("per-letter aggregates", f"{len(mine)} letters", f"{worst_letter:.2e}", worst_letter <= 1e-5),
    ):  # fmt: skip
        failures += not ok
        print(f"| {part} ({name} SAE) | {what} | {diff} | {'pass' if ok else 'FAIL'} |")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sae", help="a train-sae run (default: a TopK SAE trained here on SmolLM2, layer 6)")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="check-saebench-"))
    sae_path = args.sae
    if sae_path is None:
        sae_path = str(tmp / "run")
        sets = ["training_tokens=40960", "eval_sequences=4", "tensorboard=false", "architecture=topk", "k=32"]
        assert cli(["train-sae", "--out", sae_path, *[a for s in sets for a in ("--set", s)]]) == 0
    run = load_run(sae_path)
    lm, model = run.load_model()
    hooked = model if isinstance(model, HookedModel) else HookedModel(lm.model)
    hook = run.cfg.hook_name
    sae = run.sae
    t: dict[str, torch.Tensor] = {}
    meta: dict = {"layer": int(hook.split(".")[1]), "letters": {}, "probing": {}}

    # 1. absorption
    fl = sb.first_letter_data(hooked, lm.tokenizer, hook, words=args.words)
    ours, ours_words = _feed_absorption(sae, fl, "real", t, meta)
    # and the planted case, where absorption is not 0: a hand-built SAE saved in SAELens's layout
    planted_sae, planted_fl, _ = sb.planted_absorption()
    planted, planted_words = _feed_absorption(planted_sae, planted_fl, "planted", t, meta)
    planted_sae.save_model(tmp / "sae_planted")
    meta["icl_words"] = fl.words[:50]

    # 2. sparse probing
    tasks = sb.probing_tasks(args.per_class)
    data = sb.probing_data(hooked, lm.tokenizer, hook, tasks, context=128)
    ours_acc = {}
    for name, task in data.items():
        zm = task.mean(sb.encode(sae, task.tokens))
        for c, split in sb.class_splits(task).items():
            (tr, ytr), (te, yte) = split.train, split.test
            key = f"{name}.{task.classes[c]}"
            t[f"{key}_xtr"], t[f"{key}_ytr"] = zm[tr].contiguous(), ytr.long()
            t[f"{key}_xte"], t[f"{key}_yte"] = zm[te].contiguous(), yte.long()
            meta["probing"][key] = ["all", 1, 5, 20]
            for k in meta["probing"][key]:
                dims = torch.arange(zm.shape[1]) if k == "all" else sb.top_k_mean_diff(zm[tr], ytr, k)
                p = fit_logistic(zm[tr][:, dims], ytr)
                ours_acc[f"{key}/{k}"] = accuracy(p.predict(zm[te][:, dims]), yte)

    # 3. TPP's latent effects and ablation, on two classes of one task with as many texts each (then
    # SAEBench's negatives are all of the other class, and its random draw only reorders them)
    task = data["stdlib_package"]
    rows = [torch.nonzero(task.train & (task.labels == c))[:, 0] for c in (0, 1)]
    n = min(len(r) for r in rows)
    blds, means, zs = [], [], []
    longest = max(int((task.owner == i).sum()) for r in rows for i in r[:n].tolist())
    for r in rows:
        r = r[:n]
        per = [task.tokens[task.owner == i] for i in r.tolist()]
        bld = torch.zeros(n, longest, task.tokens.shape[1])  # one length for both: SAEBench stacks them
        for i, p in enumerate(per):
            bld[i, : len(p)] = p
        blds.append(bld)
        means.append(torch.stack([p.mean(0) for p in per]))
        zs.append(torch.stack([sb.encode(sae, p).mean(0) for p in per]))
    probe = fit_logistic(torch.cat(means), torch.cat([torch.ones(n), torch.zeros(n)]).bool())
    w_dec = sae.W_dec.detach().float()
    effect = (zs[0].mean(0) - zs[1].mean(0)).clamp(min=0) * (w_dec @ probe.w.float())
    top = effect.topk(20).indices
    # SAEBench's ablation also writes at padded positions (−decode of the ablated latents of a zero
    # vector, which a TopK SAE does encode) and sums them into the mean: compared exactly on class a's
    # texts cut to the shortest one's length (no padding), and shown with padding beside it
    per_a = [task.tokens[task.owner == i] for i in rows[0][:n].tolist()]
    shortest = min(len(p) for p in per_a)
    cut = torch.stack([p[:shortest] for p in per_a])
    z_cut = torch.stack([sb.encode(sae, p).mean(0) for p in cut])
    ablated = cut.mean(1) - z_cut[:, top] @ w_dec[top]
    ablated_padded = means[0] - zs[0][:, top] @ w_dec[top]
    t["tpp_a_cut"] = cut.contiguous()
    t["tpp_a"], t["tpp_b"] = blds[0].contiguous(), blds[1].contiguous()
    t["tpp_w"], t["tpp_bias"] = probe.w.float().contiguous(), torch.tensor([probe.b], dtype=torch.float32)
    meta["tpp_top"] = 20

    save_file(t, str(tmp / "inputs.safetensors"))
    (tmp / "inputs.json").write_text(json.dumps(meta))
    (tmp / "sae").symlink_to(Path(run.path) / "sae" if (Path(run.path) / "sae").is_dir() else Path(run.path))
    theirs = json.loads(run_in("sae-bench", str(HERE / "saebench_worker.py"), str(tmp)))

    failures = 0
    print(f"SAE {sae_path} ({sae.cfg.architecture}, {sae.cfg.d_sae} latents) at {hook}\n")
    print("| part | compared | max difference | result |\n|---|---|---:|---|")
    for name, mine in (("real", ours_words), ("planted", planted_words)):
        failures += _compare_absorption(name, mine, theirs["absorption"][name])
    for k in ("all", 1, 5, 20):
        keys = [key for key in ours_acc if key.endswith(f"/{k}")]
        diffs = [abs(ours_acc[key] - theirs["probing"][key]) for key in keys]
        worst = max(diffs)
        ok = worst <= 0.01
        failures += not ok
        mean_ours = sum(ours_acc[key] for key in keys) / len(keys)
        mean_theirs = sum(theirs["probing"][key] for key in keys) / len(keys)
        print(f"| sparse probing, {'all latents' if k == 'all' else f'top {k}'} | {len(keys)} probes "
              f"(mean accuracy {mean_ours:.4f} ours, {mean_theirs:.4f} SAEBench) | {worst:.4f} | "
              f"{'pass' if ok else 'FAIL'} |")  # fmt: skip
    tp = theirs["tpp"]
    for name, mine, th in (
        ("TPP: mean-pooled SAE latents", zs[0], torch.tensor(tp["sae_means"])),
        ("TPP: latent effects", effect, torch.tensor(tp["effects"])),
        ("TPP: ablated mean activations (no padding)", ablated, torch.tensor(tp["ablated"])),
    ):
        rel = ((mine - th).abs().max() / th.abs().max().clamp(min=1e-12)).item()
        ok = rel <= 1e-4
        failures += not ok
        print(f"| {name} | {tuple(mine.shape)} | {rel:.2e} (relative) | {'pass' if ok else 'FAIL'} |")
    th = torch.tensor(tp["ablated_padded"])
    rel = ((ablated_padded - th).abs().max() / th.abs().max()).item()
    print(f"| TPP: ablated means with padding (not a failure: SAEBench counts its padded positions) | "
          f"{tuple(th.shape)} | {rel:.2e} (relative) | shown |")  # fmt: skip
    same = sorted(top.tolist()) == sorted(tp["top"])
    failures += not same
    print(
        f"| TPP: the top 20 latents | 20 | {'same set' if same else 'different sets'} | {'pass' if same else 'FAIL'} |"
    )
    for name, r in (("real", ours), ("planted", planted)):
        print(f"absorption of the {name} SAE (ours): fraction {r['absorption_fraction']:.4f}, full "
              f"{r['full_absorption']:.4f}, main-latent F1 {r['main_latents_f1']:.3f}, over {r['absorption_letters']} "
              "letters with probe F1 > 0.6")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
