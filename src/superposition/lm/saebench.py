"""SAEBench's evaluations of an SAE on a language model, offline (Karvonen et al. 2025): first-letter
absorption (Chanin et al. 2024), sparse probing (Gurnee et al. 2023; Kantamneni et al. 2025) and
targeted probe perturbation (TPP). Each is defined as SAEBench's code computes it; where this module
differs (data, sizes, solver) its docstring says so and docs/evaluation.md lists it.

Model activations depend on the model and hook, not on the SAE: `first_letter_data` and
`probing_data` are computed once per (model, hook) and every SAE is evaluated on the same ones.
SAEs enter as anything with `encode` over (n, d_in) and `W_dec` (d_sae, d_in): superposition.SAE.

First-letter absorption
    Prompts are built from the tokenizer's own vocabulary (tokens that are letters only, with or
    without a leading space): ten in-context examples "<word> has the first letter: <L>" on lines of
    their own, then "<word> has the first letter:"; the activation is read at the word's token. A
    logistic-regression probe per letter (class-balanced, L2, C = 1) is trained on 80% of the words
    and scored on the rest (`probe_f1` per letter). On the SAE's latents of the training words, an
    L1-penalised probe ranks latents per letter; for k = 1 … `max_k`, a probe on the top k latents
    is fitted and its test F1 read; the letter's *main latents* are the top k for the last k whose F1
    rose by more than `f1_jump` over the best before (SAEBench's feature-split rule). Then, for each
    test word of the letter that the probe gets right (probe score > 0), with p̂ the unit probe
    direction, c_j = cos(p̂, W_dec[j]), and latent j's probe projection z_j·c_j:
      absorption fraction: 0 if the main latents' projection is at least the activation's (x·p̂) or
        the top ≤3 other latents with c_j ≥ 0.1 and positive projection carry less than 40% of x·p̂;
        1 if the main latents' projection is ≤ 0; else A / (A + M) with M the main latents'
        projection and A = min(those others' projection, x·p̂ − M).
      full absorption: no main latent fires, the latent with the largest projection has c ≥ 0.025,
        x·p̂ > 0, and that latent carries at least 40% of x·p̂.
    Per letter, both are summed and divided by the number of probe true positives; the SAE's scores
    are means over the letters whose probe F1 exceeds `min_probe_f1` (0.6). With fewer than
    `min_letters` such letters, `meaningful` is False: the model does not represent first letters at
    this hook well enough for the score to mean absorption.

Sparse probing
    Tasks built from `python-docs` text that every Python installation carries (lm/data.py): see
    TASKS. Each text is cut to `context` tokens; its activation is the mean over its non-special
    tokens (the SAE's latents too: encode each token, then mean). For each class, one-vs-rest with
    as many negatives as positives drawn evenly from the other classes (SAEBench's
    `prepare_probe_data`), a logistic-regression probe (L2, C = 1) on: all model dimensions
    (`llm_test_accuracy`), all SAE latents (`sae_test_accuracy`), and the k latents (model
    dimensions) with the largest |mean difference| between the classes on the training set
    (`sae_top_k_test_accuracy`, `llm_top_k_test_accuracy`). Accuracies are means over the classes of
    a task, then over the tasks.

TPP
    On the multi-class tasks: for class i, latent j's effect is max(0, mean z̄_j over class i −
    mean z̄_j over its negatives) · (W_dec[j]·w_i), with w_i the model-activation probe of class i;
    ablating class i's top-N latents (subtracting their decoded contribution from every token, the
    SAE's error kept) should lower probe i's test accuracy and leave the other classes' probes
    alone. tpp_N = mean over i of [drop of probe i − mean over j ≠ i of the drop of probe j].

SCR (spurious correlation removal)
    Two binary attributes of the same texts: the package (asyncio or email) and the source (a
    function's code or a docstring). A probe trained where they are perfectly correlated (asyncio code
    against email docstrings) learns both. For one attribute, the N latents with the largest
    |mean z̄ difference| · |W_dec[j]·w| (w the probe of that attribute on balanced data) are ablated, and
    the biased probe is scored on balanced test data labelled by the other attribute:
    scr = (ablated − biased) / (oracle − biased), with `oracle` the other attribute's own probe (0 when
    oracle − biased < 0.001). Both directions are computed; `scr_N` is the one removing the attribute
    the biased probe leans on more (the direction whose biased accuracy is lower), as SAEBench reports.
"""

from __future__ import annotations

import ast
import functools
import math
import random
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from superposition.lm.data import special_mask
from superposition.lm.hooks import HookedModel, sae_inputs
from superposition.lm.probes import accuracy, f1, fit_logistic, l1_probe_weights
from superposition.progress import tqdm

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE = "{word} has the first letter:"
K_VALUES = (1, 2, 5, 10, 20, 50)
TPP_N = (2, 5, 10, 20, 50)


# ------------------------------------------------------------------------------------------ encode
@torch.no_grad()
def encode(sae, x: Tensor, batch: int = 4096) -> Tensor:
    """SAE latents (n, d_sae) of activations x (n, d_in), in batches, float32 on the CPU."""
    dev = sae.W_dec.device
    return torch.cat([sae.encode(c.to(dev, sae.W_dec.dtype)).float().cpu() for c in x.split(batch)])


# ------------------------------------------------------------------------------- first-letter data
def alpha_words(tokenizer) -> list[str]:
    """Every vocabulary token that decodes to letters only (a leading space allowed), as decoded."""
    out = set()
    for token in tokenizer.get_vocab():
        word = tokenizer.convert_tokens_to_string([token])
        core = word[1:] if word.startswith(" ") else word
        if core and core.isascii() and core.isalpha():
            out.add(word)
    return sorted(out)


@dataclass
class FirstLetterData:
    """Words with their first letter (0-25), prompt and activation at the word's token, split 80/20."""

    words: list[str]
    labels: Tensor  # (n,) long
    acts: Tensor  # (n, d_in) float32
    train: Tensor  # (n,) bool
    prompts: list[str] = field(repr=False)

    @property
    def test(self) -> Tensor:
        return ~self.train


def _prompt(word: str, examples: list[str]) -> tuple[str, str]:
    """(prompt, the prompt up to and including the word)."""
    lines = [TEMPLATE.format(word=e) + " " + e.strip()[0].upper() for e in examples]
    head = "\n" + "\n".join(lines) + "\n" + word
    return head + TEMPLATE[len("{word}") :], head


@torch.no_grad()
def first_letter_data(
    hooked: HookedModel,
    tokenizer,
    hook: str,
    words: int = 2000,
    icl: int = 10,
    seed: int = 42,
    batch: int = 32,
    device: str = "cpu",
) -> FirstLetterData:
    """Prompts for `words` words drawn (seeded) from the vocabulary's alphabetic tokens, and the
    activation at `hook` on each word's token. In-context examples come from the word's own split."""
    rng = random.Random(seed)
    vocab = alpha_words(tokenizer)
    chosen = rng.sample(vocab, min(words, len(vocab)))
    cut = int(len(chosen) * 0.8)
    splits = [chosen[:cut], chosen[cut:]]
    items = []  # (word, prompt, position of the word's token, is_train)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for is_train, pool in zip((True, False), splits):
        for word in pool:
            examples = rng.sample([w for w in pool if w != word], icl)
            prompt, head = _prompt(word, examples)
            ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
            head_ids = bos + tokenizer(head, add_special_tokens=False)["input_ids"]
            if ids[: len(head_ids)] != head_ids:  # the word's token merged with what follows: no position
                continue
            items.append((word, prompt, ids, len(head_ids) - 1, is_train))
    acts = []
    for start in tqdm(range(0, len(items), batch), desc="first-letter prompts", unit="batch"):
        chunk = items[start : start + batch]
        a, _, _ = _run_padded(hooked, tokenizer, hook, [it[2] for it in chunk], device)
        acts.append(a[torch.arange(len(chunk)), torch.tensor([it[3] for it in chunk])])
    return FirstLetterData(
        words=[it[0] for it in items],
        labels=torch.tensor([LETTERS.index(it[0].strip()[0].lower()) for it in items]),
        acts=torch.cat(acts),
        train=torch.tensor([it[4] for it in items]),
        prompts=[it[1] for it in items],
    )


def _run_padded(
    hooked: HookedModel, tokenizer, hook: str, seqs: list[list[int]], device: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Token id lists through the model to `hook`, right-padded into one batch (the model is causal, so
    padding after a token never changes it): (activations (b, L, d) float32 on the CPU, the ids, a
    mask of the real positions)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), max(map(len, seqs))), pad, dtype=torch.long)
    real = torch.zeros(ids.shape, dtype=torch.bool)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq)
        real[r, : len(seq)] = True
    acts = sae_inputs(hooked.run_with_cache(ids.to(device), [hook])[hook]).float().cpu()
    return acts, ids, real


@dataclass
class LetterProbes:
    """The per-letter logistic-regression probes on model activations, with their test F1."""

    w: Tensor  # (26, d_in) float64
    b: Tensor  # (26,)
    f1: list[float]

    def score(self, x: Tensor) -> Tensor:
        return x.double() @ self.w.T + self.b


def letter_probes(data: FirstLetterData) -> LetterProbes:
    xs, ys = data.acts[data.train], data.labels[data.train]
    xt, yt = data.acts[data.test], data.labels[data.test]
    ws, bs, f1s = [], [], []
    for c in range(len(LETTERS)):
        if (ys == c).sum() == 0:
            ws.append(torch.zeros(xs.shape[1], dtype=torch.float64))
            bs.append(-1.0)
            f1s.append(0.0)
            continue
        p = fit_logistic(xs, ys == c, balanced=True)
        ws.append(p.w)
        bs.append(p.b)
        f1s.append(f1(p.predict(xt), yt == c))
    return LetterProbes(torch.stack(ws), torch.tensor(bs, dtype=torch.float64), f1s)


def absorption_fraction(
    act_proj: Tensor,
    latent_proj: Tensor,
    cos: Tensor,
    main: list[int],
    cos_threshold: float = 0.1,
    share: float = 0.4,
    max_absorbers: int = 3,
) -> Tensor:
    """SAEBench's absorption fraction for each of n prompts: act_proj (n,) = x·p̂, latent_proj (n, F)
    = z_j·c_j, cos (F,) = c_j, `main` the letter's main latents."""
    main_proj = latent_proj[:, main].sum(-1) if main else torch.zeros_like(act_proj)
    others = torch.ones(latent_proj.shape[1], dtype=torch.bool)
    others[main] = False
    others &= cos >= cos_threshold
    cand = torch.where(others & (latent_proj > 0), latent_proj, torch.zeros_like(latent_proj))
    k = min(max_absorbers, cand.shape[1])
    top = cand.topk(k, dim=-1).values.sum(-1)
    out = torch.zeros_like(act_proj)
    rest = ~((main_proj >= act_proj) | (top / act_proj < share))
    out[rest & (main_proj <= 0)] = 1.0
    mid = rest & (main_proj > 0)
    a = torch.minimum(top, act_proj - main_proj)
    out[mid] = (a / (a + main_proj))[mid].clamp(0, 1)
    return out


def full_absorption(
    act_proj: Tensor,
    z: Tensor,
    latent_proj: Tensor,
    cos: Tensor,
    main: list[int],
    cos_threshold: float = 0.025,
    share: float = 0.4,
    eps: float = 1e-8,
) -> Tensor:
    """SAEBench's full-absorption test for each of n prompts (bool, (n,))."""
    quiet = (z[:, main] < eps).all(-1) if main else torch.ones(len(z), dtype=torch.bool)
    top = latent_proj.argmax(-1)
    top_proj = latent_proj.gather(1, top[:, None])[:, 0]
    return quiet & (cos[top] >= cos_threshold) & (act_proj >= 0) & (top_proj / act_proj >= share)


def main_latents(
    z_train: Tensor,
    y_train: Tensor,
    z_test: Tensor,
    y_test: Tensor,
    letter: int,
    ranking: Tensor,
    max_k: int = 10,
    f1_jump: float = 0.03,
) -> tuple[list[int], list[float]]:
    """The letter's main latents by SAEBench's feature-split rule, and the k-sparse probes' test F1
    for k = 1 … max_k (latents ranked by `ranking`, the L1 probe's weights for the letter)."""
    best, chosen, f1s = -100.0, [], []
    split_done = False
    for k in range(1, max_k + 1):
        feats = ranking.topk(k).indices
        p = fit_logistic(z_train[:, feats], y_train == letter, balanced=True, max_iter=500)
        score = f1(p.predict(z_test[:, feats]), y_test == letter)
        f1s.append(score)
        if not split_done and score > best + f1_jump:
            best, chosen = score, feats.tolist()
        else:
            split_done = True
    return chosen, f1s


def absorption(
    sae,
    data: FirstLetterData,
    probes: LetterProbes,
    max_k: int = 10,
    f1_jump: float = 0.03,
    min_probe_f1: float = 0.6,
    min_letters: int = 20,
) -> dict:
    """The SAE's first-letter absorption: the summary numbers and one record per letter."""
    z = encode(sae, data.acts)
    train, test = data.train, data.test
    ranking = l1_probe_weights(z[train], data.labels[train], len(LETTERS))
    w_dec = sae.W_dec.detach().float().cpu()
    letters = []
    for c, letter in enumerate(LETTERS):
        if (data.labels[train] == c).sum() == 0 or (data.labels[test] == c).sum() == 0:
            continue
        main, f1s = main_latents(
            z[train], data.labels[train], z[test], data.labels[test], c, ranking[c], max_k, f1_jump
        )
        direction = probes.w[c].float() / probes.w[c].float().norm().clamp(min=1e-12)
        cos = torch.nn.functional.cosine_similarity(direction[None], w_dec, dim=-1)
        xt = data.acts[test]
        tp = (data.labels[test] == c) & (probes.score(xt)[:, c] > 0)
        n_tp = int(tp.sum())
        rec = {
            "letter": letter,
            "probe_f1": probes.f1[c],
            "num_probe_true_positives": n_tp,
            "main_latents": main,
            "num_split_features": len(main),
            "k_sparse_f1": f1s,
            "main_latents_f1": f1s[len(main) - 1] if main else 0.0,
        }
        if n_tp:
            act_proj = xt[tp] @ direction
            zt = z[test][tp]
            latent_proj = zt * cos
            frac = absorption_fraction(act_proj, latent_proj, cos, main)
            full = full_absorption(act_proj, zt, latent_proj, cos, main)
            rec["mean_absorption_fraction"] = frac.sum().item() / n_tp
            rec["full_absorption_rate"] = full.float().sum().item() / n_tp
            rec["num_full_absorption"] = int(full.sum())
            words = [
                w for w, t in zip((w for w, te in zip(data.words, test.tolist()) if te), tp.tolist()) if t
            ]
            rec["absorbed_words"] = {w: round(f, 4) for w, f in zip(words, frac.tolist()) if f > 0}
        letters.append(rec)
    used = [r for r in letters if r["probe_f1"] > min_probe_f1 and "mean_absorption_fraction" in r]
    mean = (lambda k: sum(r[k] for r in used) / len(used)) if used else (lambda k: float("nan"))
    return {
        "absorption_fraction": mean("mean_absorption_fraction"),
        "full_absorption": mean("full_absorption_rate"),
        "num_split_features": mean("num_split_features"),
        "absorption_letters": len(used),
        "first_letter_probe_f1": sum(probes.f1) / len(probes.f1),
        # how well the main latents themselves tell the letter (their k-sparse probe's test F1): near 0,
        # the SAE has no first-letter latents to absorb, and an absorption of 0 means nothing
        "main_latents_f1": mean("main_latents_f1"),
        "absorption_meaningful": len(used) >= min_letters,
        "letters": letters,
    }


def planted_absorption(per_letter: int = 20, rate: float = 0.3, seed: int = 0):
    """A known answer for absorption: (sae, data, absorbed). Words t of letter c have x = e_c + e_t
    (orthonormal). A hand-built ReLU SAE has a parent latent per letter (encoder e_c − Σ_{absorbed t}
    e_t, decoder e_c) and a latent per token (encoder e_t); for an absorbed token (a seeded `rate` of
    each letter's) its decoder is e_c + e_t (the parent's direction absorbed), else e_t. The SAE
    reconstructs every x exactly, and on absorbed words the parent is silent: each letter's absorption
    is the share of its test words that were absorbed."""
    from superposition.sae.single import SAE

    rng = random.Random(seed)
    n_tok = 26 * per_letter
    d = 26 + n_tok
    labels = torch.arange(26).repeat_interleave(per_letter)
    absorbed = torch.zeros(n_tok, dtype=torch.bool)
    for c in range(26):
        absorbed[rng.sample(range(c * per_letter, (c + 1) * per_letter), int(rate * per_letter))] = True
    eye = torch.eye(d)
    acts = eye[labels] + eye[26 + torch.arange(n_tok)]
    w_enc, w_dec = torch.zeros(d, d), torch.zeros(d, d)
    for c in range(26):
        w_enc[:, c] = eye[c] - eye[26 + torch.nonzero(absorbed & (labels == c))[:, 0]].sum(0)
        w_dec[c] = eye[c]
    for t in range(n_tok):
        w_enc[:, 26 + t] = eye[26 + t]
        w_dec[26 + t] = eye[26 + t] + (eye[labels[t]] if absorbed[t] else 0)
    sae = SAE({"d_in": d, "d_sae": d, "architecture": "standard"})
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    train = torch.tensor([rng.random() < 0.8 for _ in range(n_tok)])
    words = [f" {chr(97 + c)}w{t}" for t, c in enumerate(labels.tolist())]
    return sae, FirstLetterData(words=words, labels=labels, acts=acts, train=train, prompts=words), absorbed


# ------------------------------------------------------------------------------ sparse-probing data
def _stdlib_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "turtledemo",
    }
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(p in skip for p in rel.parts):
            continue
        out.append((str(rel), path))
    return out


@functools.lru_cache(maxsize=1)
def _docs() -> list[dict]:
    """Every docstring of at least 100 characters and every function's code without its docstring
    (at least 100 characters), from the standard library's sources (read with ast, nothing imported)."""
    items = []
    for rel, path in _stdlib_files():
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        package = rel.split("/")[0].removesuffix(".py")
        for node in ast.walk(tree):  # the module first
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            kind = {ast.Module: "module", ast.ClassDef: "class"}.get(type(node), "function")
            name = f"{rel}:{getattr(node, 'name', '')}:{getattr(node, 'lineno', 0)}"
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 100:
                items.append(
                    {"id": name, "kind": kind, "package": package, "source": "docstring", "text": doc}
                )
            if kind == "function":
                body = node.body[1:] if doc else node.body
                if body:
                    lines = text.splitlines()[body[0].lineno - 1 : node.end_lineno]
                    code = "\n".join(lines)
                    if len(code) >= 100:
                        items.append(
                            {"id": name, "kind": kind, "package": package, "source": "code", "text": code}
                        )
    return items


def _reference() -> list[dict]:
    """The language reference's topics (pydoc_data), cut into paragraphs of at least 200 characters."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for n, para in enumerate(topics[key].split("\n\n")):
            if len(para.strip()) >= 200:
                out.append({"id": f"topics:{key}:{n}", "text": para.strip()})
    return out


PACKAGES = ("asyncio", "email", "logging", "importlib", "xml")
SCR_CELLS = ("asyncio_code", "asyncio_docstring", "email_code", "email_docstring")
TASKS = {
    "code_vs_prose": "a standard-library function's code (docstring removed) or a docstring",
    "stdlib_package": "which package a docstring is from: " + ", ".join(PACKAGES),
    "docstring_kind": "whether a docstring documents a module, a class or a function",
    "reference_vs_library": "a paragraph of the language reference (pydoc topics) or a library docstring",
}


def probing_tasks(per_class: int = 150, seed: int = 42) -> dict[str, dict[str, list[dict]]]:
    """{task: {class: texts}}: up to `per_class` texts per class, drawn with a seed; each text is
    {"id", "text", "split"}: 80% train, 20% test within each class."""
    docs = [dict(d) for d in _docs()]
    rng = random.Random(seed)
    strings = [d for d in docs if d["source"] == "docstring"]
    classes = {
        "code_vs_prose": {"code": [d for d in docs if d["source"] == "code"], "prose": strings},
        "stdlib_package": {p: [d for d in strings if d["package"] == p] for p in PACKAGES},
        "docstring_kind": {
            k: [d for d in strings if d["kind"] == k] for k in ("module", "class", "function")
        },
        "reference_vs_library": {"reference": _reference(), "library": strings},
    }
    tasks = {}
    for task, by_class in classes.items():
        tasks[task] = {}
        for name, pool in by_class.items():
            tasks[task][name] = _draw(rng, pool, per_class)
    return tasks


def _draw(rng: random.Random, pool: list[dict], per_class: int) -> list[dict]:
    """Up to `per_class` texts of `pool` drawn with `rng`, the first 80% for training, the rest for test."""
    picked = rng.sample(pool, min(per_class, len(pool)))
    cut = int(len(picked) * 0.8)
    return [
        {"id": d["id"], "text": d["text"], "split": "train" if i < cut else "test"}
        for i, d in enumerate(picked)
    ]


def scr_texts(per_class: int = 150, seed: int = 42) -> dict[str, dict[str, list[dict]]]:
    """{"scr": {cell: texts}} for SCR: the code and the docstrings of asyncio and of email, split as
    `probing_tasks` splits."""
    rng = random.Random(seed + 7)
    docs = _docs()
    out = {}
    for cell in SCR_CELLS:
        package, source = cell.split("_")
        out[cell] = _draw(
            rng, [d for d in docs if d["package"] == package and d["source"] == source], per_class
        )
    return {"scr": out}


@dataclass
class ProbingTask:
    """One task's texts as per-token model activations (flat, with the text each token belongs to)."""

    name: str
    classes: list[str]
    labels: Tensor  # (n,) class index
    train: Tensor  # (n,) bool
    tokens: Tensor  # (T, d_in): the non-special tokens of every text, in order
    owner: Tensor  # (T,) the text each token belongs to
    ids: list[str]

    def mean(self, per_token: Tensor) -> Tensor:
        """(n, width): the mean over each text's tokens of per_token (T, width)."""
        n = len(self.labels)
        out = torch.zeros(n, per_token.shape[1], dtype=torch.float32).index_add_(
            0, self.owner, per_token.float()
        )
        return out / torch.bincount(self.owner, minlength=n).clamp(min=1)[:, None]


@torch.no_grad()
def probing_data(
    hooked: HookedModel,
    tokenizer,
    hook: str,
    tasks: dict,
    context: int = 128,
    batch: int = 16,
    device: str = "cpu",
) -> dict[str, ProbingTask]:
    """Every task's texts through the model to `hook`: each text cut to `context` tokens (a BOS first
    when the tokenizer has one), special tokens left out of the mean."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = {}
    for task, by_class in tasks.items():
        rows = [(c, d) for c, (_, texts) in enumerate(by_class.items()) for d in texts]
        toks, owner = [], []
        for start in tqdm(range(0, len(rows), batch), desc=f"probing texts: {task}", unit="batch"):
            chunk = rows[start : start + batch]
            seqs = [
                (bos + tokenizer(d["text"], add_special_tokens=False)["input_ids"])[:context]
                for _, d in chunk
            ]
            a, ids, real = _run_padded(hooked, tokenizer, hook, seqs, device)
            keep = real & ~special_mask(tokenizer, ids)
            toks.append(a[keep])
            owner.append((torch.arange(len(chunk))[:, None].expand_as(keep) + start)[keep])
        out[task] = ProbingTask(
            name=task,
            classes=list(by_class),
            labels=torch.tensor([c for c, _ in rows]),
            train=torch.tensor([d["split"] == "train" for _, d in rows]),
            tokens=torch.cat(toks),
            owner=torch.cat(owner),
            ids=[d["id"] for _, d in rows],
        )
    return out


def one_vs_rest(labels: Tensor, rows: Tensor, c: int, seed: int) -> tuple[Tensor, Tensor]:
    """SAEBench's prepare_probe_data on the rows `rows` (indices): every row of class c, and as many
    negatives drawn evenly from the other classes; (row indices, is-positive)."""
    g = torch.Generator().manual_seed(seed)
    pos = rows[labels[rows] == c]
    others = [k for k in labels.unique().tolist() if k != c]
    per = math.ceil(len(pos) / len(others))
    neg = torch.cat(
        [
            rows[labels[rows] == k][torch.randperm(int((labels[rows] == k).sum()), generator=g)[:per]]
            for k in others
        ]
    )
    neg = neg[torch.randperm(len(neg), generator=g)[: len(pos)]]
    idx = torch.cat([pos, neg])
    return idx, torch.cat([torch.ones(len(pos), dtype=torch.bool), torch.zeros(len(neg), dtype=torch.bool)])


def top_k_mean_diff(x: Tensor, y: Tensor, k: int) -> Tensor:
    """The k dimensions with the largest |mean over positives − mean over negatives|."""
    return (x[y].mean(0) - x[~y].mean(0)).abs().argsort(descending=True)[:k]


@dataclass
class ClassSplit:
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def class_splits(task: ProbingTask, seed: int = 42) -> dict[int, ClassSplit]:
    rows = torch.arange(len(task.labels))
    return {
        c: ClassSplit(
            one_vs_rest(task.labels, rows[task.train], c, seed + c),
            one_vs_rest(task.labels, rows[~task.train], c, seed + 1000 + c),
        )
        for c in range(len(task.classes))
    }


def probe_accuracies(feats: Tensor, splits: dict[int, ClassSplit], ks=K_VALUES, full: bool = True) -> dict:
    """Mean over classes of the test accuracy of a probe on all of `feats` (n, width) and on its
    top-k dimensions by mean difference, for each k below the width."""
    acc: dict[str, list[float]] = {}
    for s in splits.values():
        (tr, ytr), (te, yte) = s.train, s.test
        xtr, xte = feats[tr], feats[te]
        if full:
            acc.setdefault("all", []).append(accuracy(fit_logistic(xtr, ytr).predict(xte), yte))
        for k in ks:
            if k < feats.shape[1]:
                dims = top_k_mean_diff(xtr, ytr, k)
                p = fit_logistic(xtr[:, dims], ytr)
                acc.setdefault(k, []).append(accuracy(p.predict(xte[:, dims]), yte))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def model_probing(data: dict[str, ProbingTask], ks=K_VALUES, seed: int = 42) -> dict:
    """The model-activation probes of every task (the same for every SAE at this hook)."""
    out = {}
    for name, task in data.items():
        out[name] = probe_accuracies(task.mean(task.tokens), class_splits(task, seed), ks)
    return out


def sparse_probing(sae, data: dict[str, ProbingTask], llm: dict, ks=K_VALUES, seed: int = 42) -> dict:
    """The SAE's sparse-probing accuracies: means over tasks, and per task beside the model's."""
    per_task = {}
    for name, task in data.items():
        z = task.mean(encode(sae, task.tokens))
        sae_acc = probe_accuracies(z, class_splits(task, seed), ks)
        per_task[name] = {
            "llm_test_accuracy": llm[name]["all"],
            "sae_test_accuracy": sae_acc["all"],
            **{f"llm_top_{k}_test_accuracy": llm[name][k] for k in ks if k in llm[name]},
            **{f"sae_top_{k}_test_accuracy": sae_acc[k] for k in ks if k in sae_acc},
        }
    keys = list(dict.fromkeys(k for t in per_task.values() for k in t))
    mean = {
        k: sum(t[k] for t in per_task.values() if k in t) / sum(k in t for t in per_task.values())
        for k in keys
    }
    return {**mean, "tasks": per_task}


def tpp(sae, data: dict[str, ProbingTask], ns=TPP_N, seed: int = 42) -> dict:
    """Targeted probe perturbation on the tasks with three classes or more: tpp_N, and the intended
    and unintended accuracy drops it is made of, per task and averaged."""
    per_task = {}
    w_dec = sae.W_dec.detach().float().cpu()
    for name, task in data.items():
        if len(task.classes) < 3:
            continue
        x = task.mean(task.tokens)
        z = task.mean(encode(sae, task.tokens))
        splits = class_splits(task, seed)
        probes = {c: fit_logistic(x[s.train[0]], s.train[1]) for c, s in splits.items()}

        def acc(c: int, xs: Tensor, splits=splits, probes=probes) -> float:
            te, yte = splits[c].test
            return accuracy(probes[c].predict(xs[te]), yte)

        clean = {c: acc(c, x) for c in splits}
        rec = {}
        for n in ns:
            intended, unintended = [], []
            for i, s in splits.items():
                tr, ytr = s.train
                diff = (z[tr][ytr].mean(0) - z[tr][~ytr].mean(0)).clamp(min=0)
                effect = diff * (w_dec @ probes[i].w.float())
                top = effect.topk(min(n, len(effect))).indices
                ablated = x - z[:, top] @ w_dec[top]
                intended.append(clean[i] - acc(i, ablated))
                unintended.append(
                    sum(clean[j] - acc(j, ablated) for j in splits if j != i) / (len(splits) - 1)
                )
            mi, mu = sum(intended) / len(intended), sum(unintended) / len(unintended)
            rec[f"tpp_{n}"] = mi - mu
            rec[f"tpp_{n}_intended"] = mi
            rec[f"tpp_{n}_unintended"] = mu
        per_task[name] = rec
    if not per_task:
        return {"tasks": {}}
    keys = list(next(iter(per_task.values())))
    return {**{k: sum(t[k] for t in per_task.values()) / len(per_task) for k in keys}, "tasks": per_task}


def scr(sae, task: ProbingTask, ns=TPP_N) -> dict:
    """Spurious correlation removal on the four cells of `scr_texts` (module docstring)."""
    x = task.mean(task.tokens)
    z = task.mean(encode(sae, task.tokens))
    w_dec = sae.W_dec.detach().float().cpu()
    cell = [task.classes[c] for c in task.labels.tolist()]
    package = torch.tensor([c.startswith("asyncio") for c in cell])
    code = torch.tensor([c.endswith("_code") for c in cell])
    tr, te = task.train, ~task.train
    biased_rows = tr & (package == code)  # asyncio code (positive) and email docstrings
    biased = fit_logistic(x[biased_rows], package[biased_rows])
    attrs = {"package": package, "source": code}
    probes = {a: fit_logistic(x[tr], y[tr]) for a, y in attrs.items()}
    oracle = {a: accuracy(probes[a].predict(x[te]), y[te]) for a, y in attrs.items()}
    before = {a: accuracy(biased.predict(x[te]), y[te]) for a, y in attrs.items()}
    # direction 1 removes the source (evaluated on the package); direction 2 the package
    dirs = {1: ("source", "package"), 2: ("package", "source")}
    out: dict = {
        "scr_biased_accuracy_package": before["package"],
        "scr_biased_accuracy_source": before["source"],
    }
    for n in ns:
        for d, (ablate, judge) in dirs.items():
            y = attrs[ablate][tr]
            diff = z[tr][y].mean(0) - z[tr][~y].mean(0)
            effect = (diff * (w_dec @ probes[ablate].w.float())).abs()
            top = effect.topk(min(n, len(effect))).indices
            ablated = x - z[:, top] @ w_dec[top]
            after = accuracy(biased.predict(ablated[te]), attrs[judge][te])
            gap = oracle[judge] - before[judge]
            out[f"scr_dir{d}_{n}"] = 0.0 if gap < 0.001 else (after - before[judge]) / gap
        chosen = 1 if before["package"] < before["source"] else 2
        out[f"scr_{n}"] = out[f"scr_dir{chosen}_{n}"]
    return out
