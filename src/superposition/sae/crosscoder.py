"""Crosscoders (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model
Diffing"): one dictionary over several activation sources at once (two models at one hook, or
several layers of one model). Latents read every source; each source has its own decoder:

    z = σ(Σ_s x_s W_enc[s] + b_enc),      x̂_s = z W_dec[:, s] + b_dec[s]

Sparsity, `sparsity`:
    l1          σ = ReLU, loss Σ_s ‖x_s − x̂_s‖² + λ Σ_j z_j Σ_s ‖W_dec[j, s]‖ (the L1 penalty weighted by
                the sum of the decoder norms, as the paper's; decoders left free)
    batchtopk   as dictionary_learning's BatchTopKCrossCoder (Minder et al.): each latent's ReLU
                activation is ranked by its value times the sum of its decoder norms over sources,
                ReLU(pre_j)·Σ_s ‖W_dec[j, s]‖; the k·batch largest of the batch are kept (k per
                token on average) with their unscaled activations, loss Σ_s ‖x_s − x̂_s‖². At
                inference a threshold on that scaled value (the running mean of the smallest value
                kept) replaces the batch choice: z_j = ReLU(pre_j) · [ReLU(pre_j)·n_j > threshold].
                Training runs every product after the encoder's on the active pairs
                (sae/sparse.py), and with `dead_tokens` adds AuxK on the latents that fired on none
                of the last `dead_tokens` tokens, as the TopK SAEs do (ranking the dead latents'
                pre-activations). Files written before this rule (cfg.json without `batchtopk_rank`)
                ranked raw activations and load as they were trained (`rank == "activation"`)

Shapes: x (batch, n_sources, d); z (batch, d_sae); W_enc (n_sources, d, d_sae); W_dec (d_sae,
n_sources, d). `source_sae(s)` gives source s's decoder as a one-source SAE's tensors (W_enc here
is the crosscoder's encoder block for that source), so tools that read one SAE can read each.

Files (`save` / `load`): a folder with cfg.json and crosscoder.safetensors holding exactly the
tensors above under those names and shapes, plus `threshold` (a scalar) for batchtopk.
dictionary_learning stores the encoder as `encoder.weight` (n_sources, d, d_sae), the same as our
W_enc, but the decoder as `decoder.weight` (n_sources, d_sae, d), W_dec with its first two axes
swapped; `to_dictionary_learning` writes its state dict (`convert --to dictionary_learning`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from superposition.atomic import atomic_write_bytes, atomic_write_text
from superposition.errors import SuperpositionError
from superposition.sae.base import LossOut, StepState
from superposition.sae.dictionary import SourceDictionary

WEIGHTS = "crosscoder.safetensors"

SPARSITIES = ("l1", "batchtopk")
RANKS = ("decoder_norms", "activation")  # how batchtopk ranks: dictionary_learning's rule, or the old one


class Crosscoder(SourceDictionary):
    label = "crosscoder"

    def __init__(
        self,
        n_sources: int,
        d: int,
        d_sae: int,
        sparsity: str = "batchtopk",  # as train-sae's crosscoder_sparsity
        l1_coefficient: float = 1.0,
        k: int | None = 32,
        generator: torch.Generator | None = None,
        dead_tokens: int = 0,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        rank: str = "decoder_norms",
    ) -> None:
        super().__init__()
        if rank not in RANKS:
            raise SuperpositionError(f"batchtopk_rank: one of {', '.join(RANKS)}, got {rank!r}")
        self.rank = rank
        if sparsity not in SPARSITIES:
            raise SuperpositionError(f"sparsity: one of {', '.join(SPARSITIES)}, got {sparsity!r}")
        if sparsity == "batchtopk" and not (k and 0 < k <= d_sae):
            raise SuperpositionError(f"k: batchtopk needs k between 1 and d_sae ({d_sae})")
        self.n_sources, self.d, self.d_sae = n_sources, d, d_sae
        self.sparsity, self.l1_coefficient = sparsity, l1_coefficient
        self.k = k if sparsity == "batchtopk" else None
        W = torch.randn(d_sae, n_sources, d, generator=generator)
        W = W / W.norm(dim=-1, keepdim=True) * 0.1  # small decoder rows, as the paper initialises
        self.W_dec = nn.Parameter(W)
        self.W_enc = nn.Parameter(W.permute(1, 2, 0).clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n_sources, d))
        self.register_buffer("threshold", torch.tensor(0.0))
        # AuxK (batchtopk training): latents that fired on none of the last `dead_tokens` tokens
        self.dead_tokens, self.aux_coefficient = dead_tokens, aux_coefficient
        self.aux_k = min(aux_k or max(1, n_sources * d // 2), d_sae)
        self.register_buffer("since_fired", torch.zeros(d_sae), persistent=False)
        # each source's scale while training (sae/dictionary.py): checkpointed, folded in by `finish`
        self.register_buffer("input_scale", torch.ones(n_sources))

    def extra_repr(self) -> str:
        extra = f"k={self.k}" if self.sparsity == "batchtopk" else f"l1_coefficient={self.l1_coefficient}"
        sizes = f"n_sources={self.n_sources}, d={self.d}, d_sae={self.d_sae}"
        return f"crosscoder, {sizes}, {self.sparsity}, {extra}"

    def pre_acts(self, x: Tensor) -> Tensor:
        return torch.einsum("bsd,sdf->bf", x, self.W_enc) + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        if self.sparsity == "l1":
            return torch.relu(pre)
        if self.training:
            return self._batch_topk(pre)
        act = torch.relu(pre)
        return act * (self.ranked(act) > self.threshold)

    def rank_scale(self) -> Tensor:
        """What each latent's activation is multiplied by before batchtopk ranks it (d_sae,): the
        sum of its decoder norms over sources (dictionary_learning's rule), or 1. While training on
        scaled sources the norms are those the saved (raw-unit) decoder will have, ‖W_dec[j, s]‖ /
        scale_s, so that the ranking and the threshold learned are the file's."""
        if self.rank == "activation":
            return torch.ones(self.d_sae, device=self.W_dec.device, dtype=self.W_dec.dtype)
        return (self.decoder_norms().detach() / self.input_scale.view(1, -1)).sum(-1)

    def ranked(self, act: Tensor) -> Tensor:
        """The values batchtopk ranks and thresholds: ReLU activations times `rank_scale`."""
        return act * self.rank_scale()

    def _batch_topk(self, pre: Tensor) -> Tensor:
        act = torch.relu(pre)
        scaled = self.ranked(act)
        n = min(self.k * pre.shape[0], pre.numel())
        vals, idx = scaled.flatten().topk(n, sorted=False)
        z = torch.zeros_like(act).flatten().scatter_(0, idx, act.flatten()[idx]).view_as(act)
        with torch.no_grad():
            self._update_threshold(vals[vals > 0])
        return z

    def _update_threshold(self, kept: Tensor) -> None:
        """The inference threshold: a running mean of the smallest value the batch kept."""
        if kept.numel() and self.threshold > 0:
            self.threshold.mul_(0.99).add_(0.01 * kept.min())
        elif kept.numel():  # the first batch sets it: a mean from 0 would be biased low for ~100 steps
            self.threshold.copy_(kept.min())

    def decode(self, z: Tensor) -> Tensor:
        return torch.einsum("bf,fsd->bsd", z, self.W_dec) + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def decoder_norms(self) -> Tensor:
        """‖W_dec[j, s]‖: (d_sae, n_sources)."""
        return self.W_dec.norm(dim=-1)

    def loss(self, x: Tensor, dead: Tensor | None = None) -> tuple[Tensor, dict]:
        """(loss, terms) on x (batch, n_sources, d). `dead` (d_sae,) bool: the latents AuxK revives
        (the trainer's dead-latent mask); without it, those that fired on none of the last
        `dead_tokens` tokens this crosscoder counted itself."""
        loss, terms = self._loss(x, dead)
        return loss, _public(terms)

    def _loss(self, x: Tensor, dead: Tensor | None = None) -> tuple[Tensor, dict]:
        """(loss, terms) with the latents that fired and x̂ among the terms, for the trainer."""
        if self.sparsity == "batchtopk" and self.training:
            return self._loss_active(x, dead)
        return self._loss_dense(x)

    # ------------------------------------------------------------------ the trainer's protocol
    @property
    def n_latents(self) -> int:
        return self.d_sae

    @torch.no_grad()
    def prepare(self, batch: Tensor) -> None:
        """Each source scaled so that its median token norm is √d: a median, so that a pattern on a
        few tokens (what a fine-tune plants) does not rescale every other latent's decoder row; b_dec
        the first batch's scaled mean."""
        self.input_scale.copy_(self.d**0.5 / batch.norm(dim=-1).median(0).values.clamp(min=1e-12))
        self.b_dec.copy_(self.scaled(batch).mean(0))

    def scaled(self, batch: Tensor) -> Tensor:
        return batch * self.input_scale.view(1, -1, 1)

    def target_scale(self) -> Tensor:
        return self.input_scale

    def train_loss(self, batch: Tensor, state: StepState) -> LossOut:
        dead = state.dead[0] if state.dead is not None and self.dead_tokens else None  # AuxK asked for
        loss, terms = self._loss(batch, dead)
        fired = terms.pop("fired")
        x_hat = terms.pop("x_hat", None)
        out = {k: v.detach().reshape(1).float() for k, v in terms.items()}
        return LossOut(loss, out, x_hat=x_hat, fired=fired.reshape(1, -1), l0=out["l0"])

    @torch.no_grad()
    def finish(self) -> None:
        self.fold_scales(self.input_scale.clone())
        self.input_scale.fill_(1.0)

    def record(self) -> dict:
        return {"architecture": "crosscoder", "n_sources": self.n_sources, "d": self.d, "d_sae": self.d_sae,
                "sparsity": self.sparsity, "k": self.k, "l1_coefficient": self.l1_coefficient,
                "batchtopk_rank": self.rank}  # fmt: skip

    def _loss_active(self, x: Tensor, dead_mask: Tensor | None = None) -> tuple[Tensor, dict]:
        """The batchtopk loss with every product after the encoder's on the active pairs only
        (sae/sparse.py): the crosscoder is an SAE on the sources side by side, (batch, 1, S·d).
        Equal to `loss_dense` (tests/sae/test_crosscoder.py)."""
        from superposition.sae.batchtopk import largest
        from superposition.sae.sparse import Active, Encoded, decode_active, encode_active

        B, S, d = x.shape
        D = self.d_sae
        W_encT = self.W_enc.permute(2, 0, 1).reshape(1, D, S * d)
        enc = Encoded(x.reshape(B, 1, S * d), None, W_encT, self.b_enc.view(1, D))
        with torch.no_grad():
            flat = self.ranked(torch.relu(enc.pre.reshape(B, D))).reshape(1, -1)
            vals, idx = largest(flat, min(self.k * B, flat.numel()))  # as flat.topk, faster
            vals, idx, flat = vals[0], idx[0], flat[0]
            idx = idx[vals > 0].sort().values
            self._update_threshold(flat[idx])
        active = Active.from_dense_index(idx, (B, 1, D))
        z = encode_active(enc, active)
        W_dec = self.W_dec.view(1, D, S * d)
        x_hat = decode_active(z, W_dec, active).view(B, S, d) + self.b_dec
        mse = (x_hat - x).square().sum(-1).sum(-1).mean()
        fired = torch.zeros(D, dtype=torch.bool, device=x.device)
        fired[idx % D] = True
        terms = {
            "mse": mse.detach(),
            "l0": torch.tensor(idx.numel() / B),
            "fired": fired,
            "x_hat": x_hat.detach(),
        }
        loss = mse
        if dead_mask is None and self.dead_tokens:
            with torch.no_grad():
                self.since_fired += B
                self.since_fired[idx % D] = 0
            dead_mask = self.since_fired >= self.dead_tokens
        if dead_mask is not None:
            dead = dead_mask.nonzero().squeeze(1)
            terms["dead"] = torch.tensor(float(dead.numel()))
            if dead.numel():
                aux = self._auxk(enc, (x - x_hat).detach().reshape(B, 1, S * d), W_dec, dead)
                terms["auxk"] = aux.detach()
                loss = mse + self.aux_coefficient * aux
        return loss, terms

    def _auxk(self, enc, e: Tensor, W_dec: Tensor, dead: Tensor) -> Tensor:
        """AuxK (as the TopK SAEs', sae/topk.py): the residual e reconstructed from each token's
        `aux_k` largest positive pre-activations among the dead latents, so that they get gradient;
        min(1, n_dead / aux_k) · ‖e − ê‖² per token (the reconstruction loss's units)."""
        from superposition.sae.sparse import Active, decode_active, encode_active

        B, D = e.shape[0], self.d_sae
        sub = enc.pre[:, 0, dead].clamp(min=0)
        k_aux = min(self.aux_k, dead.numel())
        vals, idx = sub.topk(k_aux, dim=-1, sorted=False)
        aux = Active.from_topk(dead[idx].unsqueeze(1), D).where(vals.reshape(-1) > 0)
        if aux.nnz == 0:
            return e.new_zeros(())
        e_hat = decode_active(torch.relu(encode_active(enc, aux)), W_dec, aux)
        return min(1.0, dead.numel() / self.aux_k) * (e_hat - e).square().sum() / B

    def loss_dense(self, x: Tensor) -> tuple[Tensor, dict]:
        """The loss with dense products (the reference the active-pair path is tested against)."""
        loss, terms = self._loss_dense(x)
        return loss, _public(terms)

    def _loss_dense(self, x: Tensor) -> tuple[Tensor, dict]:
        z = self.encode(x)
        x_hat = self.decode(z)
        mse = (x_hat - x).square().sum(-1).sum(-1).mean()
        terms = {"mse": mse.detach(), "l0": (z > 0).float().sum(-1).mean().detach(), "fired": (z > 0).any(0),
                 "x_hat": x_hat.detach()}  # fmt: skip
        if self.sparsity == "l1":
            penalty = (z * self.decoder_norms().sum(-1)).sum(-1).mean()
            terms["l1"] = penalty.detach()
            return mse + self.l1_coefficient * penalty, terms
        return mse, terms

    @torch.no_grad()
    def fold_scales(self, scales: Tensor) -> None:
        """Rewrite weights trained on activations x_s·scales[s] to read and write raw x_s."""
        self.W_enc.mul_(scales.view(-1, 1, 1))
        self.W_dec.div_(scales.view(1, -1, 1))
        self.b_dec.div_(scales.view(-1, 1))

    def save(self, folder: Path, cfg: dict | None = None) -> None:
        from safetensors.torch import save

        folder.mkdir(parents=True, exist_ok=True)
        names = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
        tensors = {n: getattr(self, n).detach().contiguous().cpu() for n in names}
        atomic_write_bytes(folder / WEIGHTS, save(tensors))
        meta = {"architecture": "crosscoder", "n_sources": self.n_sources, "d_in": self.d,
                "d_sae": self.d_sae, "sparsity": self.sparsity, "k": self.k,
                "l1_coefficient": self.l1_coefficient, "batchtopk_rank": self.rank,
                **(cfg or {})}  # fmt: skip
        atomic_write_text(folder / "cfg.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> Crosscoder:
        """A folder `save` wrote (cfg.json, crosscoder.safetensors); shapes checked against cfg.json."""
        from superposition.sae.formats.common import check_weights, read_json_object, read_safetensors

        folder = Path(folder)
        cfg = read_json_object(folder / "cfg.json")
        try:
            n, d, d_sae = int(cfg["n_sources"]), int(cfg["d_in"]), int(cfg["d_sae"])
            sparsity, k, l1 = cfg["sparsity"], cfg.get("k"), float(cfg.get("l1_coefficient") or 0.0)
            rank = str(cfg.get("batchtopk_rank", "activation"))  # written before the rule: raw activations
        except (KeyError, TypeError, ValueError) as err:
            raise SuperpositionError(f"{folder / 'cfg.json'}: not a crosscoder's config ({err})") from None
        t = read_safetensors(folder / WEIGHTS)
        want = {
            "W_enc": (n, d, d_sae),
            "W_dec": (d_sae, n, d),
            "b_enc": (d_sae,),
            "b_dec": (n, d),
            "threshold": (),
        }
        for name, shape in want.items():
            if name not in t or tuple(t[name].shape) != shape:
                got = list(t[name].shape) if name in t else "missing"
                raise SuperpositionError(f"{folder / WEIGHTS}: {name} is {got}, expected {list(shape)}")
        check_weights(t, folder / WEIGHTS)
        cc = cls(n, d, d_sae, sparsity, l1, k, rank=rank)
        with torch.no_grad():
            for name in want:
                getattr(cc, name).copy_(t[name].float())
        cc.metadata = cfg
        return cc.eval()

    def to_dictionary_learning(self) -> tuple[dict[str, Tensor], dict]:
        """(state dict, config) of dictionary_learning's CrossCoder (l1) or BatchTopKCrossCoder
        (batchtopk, ranked by decoder norms) holding these weights: what its `from_pretrained`
        reads from an `ae.pt`, with no activation normaliser (our weights read raw activations) and
        the CROSSCODER code normalisation (the sum of decoder norms). A crosscoder that ranks raw
        activations has no equivalent there and is refused."""
        if self.sparsity == "batchtopk" and self.rank != "decoder_norms":
            raise SuperpositionError(
                "this batchtopk crosscoder ranks raw activations (written before dictionary_learning's rule "
                "was followed); dictionary_learning has no such crosscoder"
            )
        S, d = self.n_sources, self.d
        sd = {
            "target_rms": torch.tensor(1.0),
            "activation_mean": torch.full((S, d), float("nan")),  # NaN: no normaliser, as theirs marks it
            "activation_std": torch.full((S, d), float("nan")),
            "activation_global_scale": torch.ones(S),
            "encoder.weight": self.W_enc.detach().float().contiguous(),
            "encoder.bias": self.b_enc.detach().float().contiguous(),
            "decoder.weight": self.W_dec.detach().float().transpose(0, 1).contiguous(),
            "decoder.bias": self.b_dec.detach().float().contiguous(),
            "code_normalization_id": torch.tensor(1),  # CodeNormalization.CROSSCODER
        }
        cls = "CrossCoder"
        if self.sparsity == "batchtopk":
            cls = "BatchTopKCrossCoder"
            sd["k"] = torch.tensor(int(self.k), dtype=torch.int)
            sd["threshold"] = self.threshold.detach().float().reshape(())
        cfg = {"trainer": {"dict_class": cls, "activation_dim": d, "dict_size": self.d_sae, "num_layers": S,
                           "k": self.k, "code_normalization": "CROSSCODER",
                           "written_by": "superposition convert --to dictionary_learning"}}  # fmt: skip
        return sd, cfg

    def source_as_sae(self, s: int):
        """Source s as a one-source SAE (BatchedSAE: standard for l1, jumprelu with the inference
        threshold for batchtopk) that any SAE tool reads: its decoder is source s's, its encoder
        the source's block of the shared encoder, so alone it sees only that source's share of
        each latent's pre-activation (with the other sources at zero its latents are the
        crosscoder's)."""
        from superposition.sae.formats.common import build_sae

        t = self.source_sae(s)
        values = {"d_in": self.d, "d_sae": self.d_sae, "apply_b_dec_to_input": False}
        if self.sparsity == "l1":
            values["architecture"] = "standard"
        else:  # ReLU(pre_j)·n_j > θ is pre_j > θ / n_j: a JumpReLU threshold per latent
            values["architecture"] = "jumprelu"
            t["threshold"] = (
                (float(self.threshold) / self.rank_scale().clamp(min=1e-12)).detach().contiguous()
            )
        return build_sae(values, t, Path(f"crosscoder source {s}"))

    def source_sae(self, s: int) -> dict[str, Tensor]:
        """Source s's view under the SAELens names: W_enc [d, d_sae] (this source's encoder block),
        W_dec [d_sae, d], b_enc, b_dec [d]."""
        return {
            "W_enc": self.W_enc[s].detach().contiguous(),
            "W_dec": self.W_dec[:, s].detach().contiguous(),
            "b_enc": self.b_enc.detach().contiguous(),
            "b_dec": self.b_dec[s].detach().contiguous(),
        }


def _public(terms: dict) -> dict:
    """The loss terms without what only the trainer reads (the latents that fired, x̂)."""
    return {k: v for k, v in terms.items() if k not in ("fired", "x_hat")}


def train_crosscoder(cc: Crosscoder, sample, steps: int, lr: float = 1e-3, batch: int = 1024) -> list[dict]:
    """Adam on batches `sample(batch)` -> (batch, n_sources, d); returns a log every 10% of steps."""
    opt = torch.optim.Adam(cc.parameters(), lr=lr)
    cc.train()
    log = []
    for step in range(steps):
        loss, terms = cc.loss(sample(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log.append(
                {"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in terms.items()}}
            )
    cc.eval()
    return log
