"""Cross-layer transcoders (Ameisen et al. 2025; Lindsey et al. 2024): one dictionary across the
layers of a model. Layer i's latents read its residual stream between attention and MLP
(`blocks.i.hook_resid_mid`) and write to the MLP outputs of layer i and of every later layer:

    z_i = σ(x_i W_enc_i + b_enc_i),      ŷ_L = Σ_{i ≤ L} z_i W_dec_i[:, L − i] + b_dec_L

with σ the top k per layer and token (TopK), or a JumpReLU with a threshold per latent θ (the
architecture of circuit-tracer's and Anthropic's CLTs). Trained to reconstruct every MLP output at
once (the sum over layers of the squared error, mean over tokens); a JumpReLU CLT adds the
published sparsity penalty and pre-activation loss (Ameisen et al. 2025, "Circuit Tracing",
methods) with the thresholds trained through straight-through estimators (sae/jumprelu.py):

    λ_s Σ_{i,j} tanh(c ‖W_dec_i[j]‖ z_ij)  +  λ_p Σ_{i,j} ReLU(θ_ij − pre_ij) ‖W_dec_i[j]‖

with ‖W_dec_i[j]‖ the norm of latent j's decoders to every layer it writes, concatenated; λ_s is
warmed up as the trainer warms up every sparsity penalty.

Saved in circuit-tracer's layout, so its `load_clt` reads the folder and this module reads its
files: per layer i, `W_enc_{i}.safetensors` holding W_enc_{i} [d_sae, d_model], b_enc_{i} [d_sae],
b_dec_{i} [d_model] (and threshold_{i} [d_sae] for a JumpReLU), and `W_dec_{i}.safetensors`
holding W_dec_{i} [d_sae, n_layers − i, d_model]; our `cfg.json` beside them records k, the model
and the hooks. circuit-tracer reads a folder without thresholds as a ReLU CLT: a TopK CLT's folder
is in its layout but it would not compute our latents (cfg.json and the files' metadata say TopK;
`convert --to circuit-tracer` refuses it); a JumpReLU CLT's files it reads as what they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from superposition.atomic import atomic_write_bytes, atomic_write_text
from superposition.errors import SuperpositionError
from superposition.sae.base import LossOut, StepState
from superposition.sae.dictionary import SourceDictionary

INPUT_HOOK, OUTPUT_HOOK = "hook_resid_mid", "hook_mlp_out"


def find_folder(path: Path) -> Path | None:
    """The CLT folder a path names: a CLT run's clt/, or a folder in circuit-tracer's layout itself."""
    return next((q for q in (path / "clt", path) if (q / "W_enc_0.safetensors").is_file()), None)


class CrossLayerTranscoder(SourceDictionary):
    """Shapes: inputs and outputs (batch, n_layers, d_model); latents (batch, n_layers, d_sae).

    Trained by the one trainer (sae/train.py) on rows (batch, 2·n_layers, d_model): every layer's
    (resid_mid, mlp_out), interleaved as the activation store reads them. Inputs and targets are
    scaled per layer so that their mean squared norm is d_model (buffers `scale_in`, `scale_out`,
    checkpointed with the weights) and folded in by `finish`."""

    label = "CLT"

    def __init__(self, n_layers: int, d_model: int, d_sae: int, k: int | None = 32,
                 generator: torch.Generator | None = None, sparsity: str = "topk",
                 init_threshold: float = 0.2, bandwidth: float = 0.05, sparsity_coefficient: float = 0.5,
                 tanh_scale: float = 4.0, preact_coefficient: float = 3e-6) -> None:  # fmt: skip
        super().__init__()
        if sparsity not in ("topk", "jumprelu"):
            raise SuperpositionError(f"clt_sparsity: topk or jumprelu, got {sparsity!r}")
        if sparsity == "jumprelu":
            k = None
        elif k is not None and not 0 < k <= d_sae:
            raise SuperpositionError(f"k: between 1 and d_sae ({d_sae}), got {k}")
        self.n_layers, self.d_model, self.d_sae, self.k = n_layers, d_model, d_sae, k
        self.sparsity, self.bandwidth = sparsity, bandwidth
        self.sparsity_coefficient, self.tanh_scale = sparsity_coefficient, tanh_scale
        self.preact_coefficient = preact_coefficient
        W_enc = torch.randn(n_layers, d_model, d_sae, generator=generator)
        self.W_enc = nn.Parameter(W_enc / W_enc.norm(dim=1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(n_layers, d_sae))
        # decoders start at zero (as a free transcoder decoder does): ŷ = b_dec at first
        self.W_dec = nn.ParameterList(
            [nn.Parameter(torch.zeros(d_sae, n_layers - i, d_model)) for i in range(n_layers)]
        )
        self.b_dec = nn.Parameter(torch.zeros(n_layers, d_model))
        self.register_buffer("threshold", None)
        # a JumpReLU CLT in training: θ = exp(log θ), trained (read from files: `threshold` instead)
        self.log_threshold = (
            nn.Parameter(torch.full((n_layers, d_sae), math.log(init_threshold)))
            if sparsity == "jumprelu"
            else None
        )
        self.register_buffer("scale_in", torch.ones(n_layers))
        self.register_buffer("scale_out", torch.ones(n_layers))
        self.metadata: dict = {}

    def extra_repr(self) -> str:
        sparsity = f"k={self.k}" if self.k is not None else "jumprelu"
        return f"clt, n_layers={self.n_layers}, d_model={self.d_model}, d_sae={self.d_sae}, {sparsity}"

    # ------------------------------------------------------------------ forward
    def pre_acts(self, x: Tensor, layer: int | None = None) -> Tensor:
        if layer is not None:
            return x @ self.W_enc[layer] + self.b_enc[layer]
        return torch.einsum("bld,ldf->blf", x, self.W_enc) + self.b_enc

    def activate(self, pre: Tensor, layer: int | None = None) -> Tensor:
        if self.log_threshold is not None:  # a JumpReLU being trained: straight-through for θ
            lt = self.log_threshold if layer is None else self.log_threshold[layer]
            if self.training and torch.is_grad_enabled():
                from superposition.sae.jumprelu import _JumpReLU

                return _JumpReLU.apply(pre, lt.expand_as(pre), self.bandwidth)
            return pre * (pre > lt.exp())
        if self.threshold is not None:  # JumpReLU
            t = self.threshold if layer is None else self.threshold[layer]
            return pre * (pre > t)
        pre = torch.relu(pre)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, vals)

    def encode(self, x: Tensor, layer: int | None = None) -> Tensor:
        """Latents of every layer ((batch, n_layers, d_model) in), or of one layer ((..., d_model) in)."""
        return self.activate(self.pre_acts(x, layer), layer)

    def decode(self, z: Tensor) -> Tensor:
        """ŷ (batch, n_layers, d_model) from every layer's latents."""
        out = self.b_dec.expand(z.shape[0], -1, -1).clone()
        for i in range(self.n_layers):
            out[:, i:] += torch.einsum("bf,fld->bld", z[:, i], self.W_dec[i])
        return out

    def decode_layer(self, z_upto: list[Tensor], layer: int) -> Tensor:
        """ŷ of one layer from the latents of layers 0..layer (each (..., d_sae))."""
        out = self.b_dec[layer]
        for i, z in enumerate(z_upto[: layer + 1]):
            out = out + z @ self.W_dec[i][:, layer - i]
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict]:
        """Σ over layers of ‖y_L − ŷ_L‖², mean over the batch; and per-layer FVU and L0 to log."""
        z = self.encode(x)
        y_hat = self.decode(z)
        err = (y_hat - y).square().sum(-1)  # (batch, n_layers)
        var = (y - y.mean(0)).square().sum(-1).mean(0).clamp(min=1e-12)
        per_layer = err.mean(0)
        return per_layer.sum(), {"fvu": per_layer / var, "l0": (z > 0).float().sum(-1).mean(0)}

    # ------------------------------------------------------------------ the trainer's protocol
    @property
    def n_latents(self) -> int:
        return self.n_layers * self.d_sae

    @torch.no_grad()
    def prepare(self, batch: Tensor) -> None:
        """Per layer, scales making the mean squared norm of inputs and targets d_model; b_dec the
        first batch's mean scaled target."""
        x, y = batch[:, 0::2], batch[:, 1::2]
        self.scale_in.copy_((self.d_model / x.square().sum(-1).mean(0).clamp(min=1e-12)).sqrt())
        self.scale_out.copy_((self.d_model / y.square().sum(-1).mean(0).clamp(min=1e-12)).sqrt())
        self.b_dec.copy_((y * self.scale_out.view(1, -1, 1)).mean(0))

    def scaled(self, batch: Tensor) -> Tensor:
        scales = torch.stack([self.scale_in, self.scale_out], 1).reshape(1, -1, 1)  # in_0, out_0, in_1, ...
        return batch * scales

    def target(self, batch: Tensor) -> Tensor:
        return batch[:, 1::2]

    def target_scale(self) -> Tensor:
        return self.scale_out

    def train_loss(self, batch: Tensor, state: StepState) -> LossOut:
        """`loss` on a scaled batch of interleaved (resid_mid, mlp_out) rows, as the trainer reads it;
        a JumpReLU CLT adds its sparsity penalty and pre-activation loss."""
        x, y = batch[:, 0::2], batch[:, 1::2]
        pre = self.pre_acts(x)
        z = self.activate(pre)
        y_hat = self.decode(z)
        err = (y_hat - y).square().sum(-1)  # (batch, n_layers)
        var = (y - y.mean(0)).square().sum(-1).mean(0).clamp(min=1e-12)
        per_layer = err.mean(0)
        total = per_layer.sum()
        active = z > 0
        terms = {"mse": total.detach().reshape(1), "fvu": (per_layer / var).mean().detach().reshape(1)}
        if self.log_threshold is not None:
            norms = self.decoder_norms()  # (n_layers, d_sae)
            sparsity = torch.tanh(self.tanh_scale * norms * z).sum((-1, -2)).mean()
            preact = (torch.relu(self.log_threshold.exp() - pre) * norms).sum((-1, -2)).mean()
            scale = (
                state.sparsity_scale.reshape(-1)[0]
                if torch.is_tensor(state.sparsity_scale)
                else state.sparsity_scale
            )
            total = total + scale * self.sparsity_coefficient * sparsity + self.preact_coefficient * preact
            terms["sparsity"] = sparsity.detach().reshape(1)
            terms["preact"] = preact.detach().reshape(1)
        l0 = active.float().sum(-1).mean().reshape(1)  # per layer and token
        return LossOut(total, terms, x_hat=y_hat.detach(), fired=active.any(0).reshape(1, -1), l0=l0)

    def decoder_norms(self) -> Tensor:
        """‖W_dec_i[j]‖ over every layer latent j of layer i writes to, concatenated (n_layers, d_sae)."""
        return torch.stack([(W.square().sum((-1, -2)) + 1e-12).sqrt() for W in self.W_dec])

    @torch.no_grad()
    def finish(self) -> None:
        self.fold_scales(self.scale_in, self.scale_out)
        self.scale_in.fill_(1.0)
        self.scale_out.fill_(1.0)

    def record(self) -> dict:
        sizes = {"n_layers": self.n_layers, "d_model": self.d_model, "d_sae": self.d_sae}
        return {"architecture": "clt", **sizes, "k": self.k, "clt_sparsity": self.sparsity}

    def thresholds(self) -> Tensor | None:
        """θ (n_layers, d_sae) of a JumpReLU CLT (trained or read), None for TopK."""
        if self.log_threshold is not None:
            return self.log_threshold.detach().exp()
        return self.threshold

    @torch.no_grad()
    def fold_scales(self, s_in: Tensor, s_out: Tensor) -> None:
        """Rewrite weights trained on inputs x·s_in[L] and targets y·s_out[L] (per layer) to take raw
        x and give raw y."""
        self.W_enc.mul_(s_in.view(-1, 1, 1))
        for i in range(self.n_layers):
            self.W_dec[i].div_(s_out[i:].view(1, -1, 1))
        self.b_dec.div_(s_out.view(-1, 1))

    # ------------------------------------------------------------------ files
    def save(self, folder: Path, cfg: dict | None = None) -> None:
        from safetensors.torch import save

        folder.mkdir(parents=True, exist_ok=True)
        theta = self.thresholds()
        # what the files hold, in their own header: a TopK CLT's folder is circuit-tracer's layout, but
        # circuit-tracer would read it as a ReLU CLT (it has no TopK); our loader reads k from here too
        # (one key: safetensors writes a header's keys in no fixed order, and files must be bit-stable)
        sparsity = {"activation": "jump_relu" if theta is not None else f"topk:{self.k}"}
        for i in range(self.n_layers):
            enc = {
                f"W_enc_{i}": self.W_enc[i].detach().T.contiguous().cpu(),
                f"b_enc_{i}": self.b_enc[i].detach().contiguous().cpu(),
                f"b_dec_{i}": self.b_dec[i].detach().contiguous().cpu(),
            }
            if theta is not None:
                enc[f"threshold_{i}"] = theta[i].detach().contiguous().cpu()
            atomic_write_bytes(folder / f"W_enc_{i}.safetensors", save(enc, metadata=sparsity))
            atomic_write_bytes(
                folder / f"W_dec_{i}.safetensors",
                save({f"W_dec_{i}": self.W_dec[i].detach().contiguous().cpu()}),
            )
        meta = {"architecture": "clt", "n_layers": self.n_layers, "d_in": self.d_model, "d_sae": self.d_sae,
                "k": self.k, "activation_function": "topk" if theta is None else "jump_relu",
                "hook_name": f"blocks.*.{INPUT_HOOK}", "hook_name_out": f"blocks.*.{OUTPUT_HOOK}",
                "layout": "circuit-tracer CLT (W_enc_i, W_dec_i)", **(cfg or {})}  # fmt: skip
        atomic_write_text(folder / "cfg.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> CrossLayerTranscoder:
        """A CLT folder in circuit-tracer's layout (ours, or one circuit-tracer wrote: its
        JumpReLU thresholds are read; without cfg.json, a file without thresholds is a TopK CLT
        needing `k` in cfg.json)."""
        from safetensors import safe_open

        folder = Path(folder)
        cfg = {}
        if (folder / "cfg.json").is_file():
            try:
                cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise SuperpositionError(
                    f"{folder / 'cfg.json'}: not readable JSON ({type(err).__name__})"
                ) from None
        n = 0
        while (folder / f"W_enc_{n}.safetensors").is_file():
            n += 1
        if n == 0:
            raise SuperpositionError(f"{folder}: no W_enc_0.safetensors; not a cross-layer transcoder")

        def read(name: str, key: str) -> Tensor:
            try:
                with safe_open(str(folder / name), "pt") as f:
                    return f.get_tensor(key) if key in f.keys() else None  # noqa: SIM118
            except Exception as err:
                raise SuperpositionError(f"{folder / name}: unreadable ({type(err).__name__})") from None

        W0 = read("W_enc_0.safetensors", "W_enc_0")
        if W0 is None or W0.ndim != 2:
            raise SuperpositionError(f"{folder}: W_enc_0 missing or not a matrix")
        d_sae, d_model = W0.shape
        has_t = read("W_enc_0.safetensors", "threshold_0") is not None
        k = cfg.get("k")
        if not isinstance(k, int):  # the files' own header (ours), else none
            try:
                with safe_open(str(folder / "W_enc_0.safetensors"), "pt") as f:
                    meta = f.metadata() or {}
                act = meta.get("activation", "")
                k = int(act.split(":", 1)[1]) if act.startswith("topk:") else None
            except (KeyError, ValueError, IndexError):
                k = None
        relu = not has_t and not isinstance(k, int)  # circuit-tracer's ReLU CLT: θ = 0
        clt = cls(n, d_model, d_sae, None if has_t or relu else k)
        if has_t or relu:
            clt.threshold = torch.zeros(n, d_sae)
        with torch.no_grad():
            for i in range(n):
                parts = {
                    "W_enc": (read(f"W_enc_{i}.safetensors", f"W_enc_{i}"), (d_sae, d_model)),
                    "b_enc": (read(f"W_enc_{i}.safetensors", f"b_enc_{i}"), (d_sae,)),
                    "b_dec": (read(f"W_enc_{i}.safetensors", f"b_dec_{i}"), (d_model,)),
                    "W_dec": (read(f"W_dec_{i}.safetensors", f"W_dec_{i}"), (d_sae, n - i, d_model)),
                }
                if has_t:
                    parts["threshold"] = (read(f"W_enc_{i}.safetensors", f"threshold_{i}"), (d_sae,))
                for name, (t, shape) in parts.items():
                    if t is None or tuple(t.shape) != shape:
                        got = None if t is None else tuple(t.shape)
                        raise SuperpositionError(f"{folder}: {name}_{i} is {got}, expected {shape}")
                    if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                        raise SuperpositionError(f"{folder}: {name}_{i} must hold finite floats")
                clt.W_enc[i].copy_(parts["W_enc"][0].T)
                clt.b_enc[i].copy_(parts["b_enc"][0])
                clt.b_dec[i].copy_(parts["b_dec"][0])
                clt.W_dec[i].copy_(parts["W_dec"][0])
                if has_t:
                    clt.threshold[i].copy_(parts["threshold"][0])
        clt.metadata = cfg
        return clt.eval()
