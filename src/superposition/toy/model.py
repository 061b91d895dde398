"""The toy models of superposition, batched over independent instances.

Shapes: W is (inst, hidden, feat), so column W[i, :, f] is feature f's direction in instance
i's hidden space; data is (batch, inst, feat). Internally the batch is laid out (inst, batch,
feat) so every product is one batched matmul over instances.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_CHUNK_BYTES = 8 * 2**20  # working-set size per chunk of instances in accumulate_grads


class ToyModel(nn.Module):
    """``h = W x`` (or ``h = ReLU(W x)`` with `hidden_relu`), ``x' = ReLU(Wᵀ h + b)``.

    Loss per instance: mean over batch and features of importance · (x − x')²; the training loss
    is the sum over instances, so each instance's gradient is independent of the others.
    """

    def __init__(
        self,
        n_instances: int,
        n_features: int,
        d_hidden: int,
        importance: Tensor | None = None,
        hidden_relu: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.hidden_relu = hidden_relu
        W = torch.empty(n_instances, d_hidden, n_features)
        # Xavier-normal per instance: std = sqrt(2 / (fan_in + fan_out))
        W.normal_(0.0, (2.0 / (d_hidden + n_features)) ** 0.5, generator=generator)
        self.W = nn.Parameter(W)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))
        self._scratch: dict = {}  # persistent (out, d) buffers per batch shape and instance set
        self.register_buffer("importance", _importance(importance, n_instances, n_features))

    @property
    def n_instances(self) -> int:
        return self.W.shape[0]

    def extra_repr(self) -> str:
        n, d, f = self.W.shape
        return f"n_instances={n}, n_features={f}, d_hidden={d}" + (
            ", hidden_relu=True" if self.hidden_relu else ""
        )

    def hidden(self, x: Tensor) -> Tensor:
        """Float[Tensor, "batch inst feat"] -> Float[Tensor, "batch inst hidden"]."""
        return self._hidden(_inst_major(x)).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Float[Tensor, "batch inst feat"] -> reconstruction, same shape."""
        return self._forward(_inst_major(x)).transpose(0, 1)

    def instance_losses(self, x: Tensor) -> Tensor:
        """Float[Tensor, "inst"]: importance-weighted MSE, mean over batch and features."""
        xi = _inst_major(x)
        err = (self._forward(xi) - xi).square_()
        return torch.einsum("ibf,if->i", err, self.importance) / (xi.shape[1] * xi.shape[2])

    def loss(self, x: Tensor) -> Tensor:
        return self.instance_losses(x).sum()

    @torch.no_grad()
    def accumulate_grads(self, x: Tensor, want_loss: bool = False) -> Tensor | None:
        """Set ``.grad`` of W and b to the gradient of ``loss(x)`` without autograd.

        With N = batch·feat, pre = h W + b, out = ReLU(pre) and d = out − x:

            ∂L/∂pre = (2/N) · imp ⊙ d ⊙ [pre > 0]
            ∂L/∂b   = Σ_batch ∂L/∂pre
            ∂L/∂W   = hᵀ ∂L/∂pre  (decoder)  +  (∂L/∂h)ᵀ x  (encoder),
            ∂L/∂h   = ∂L/∂pre Wᵀ  (⊙ [W x > 0] with `hidden_relu`)

        Autograd would allocate a fresh (inst, batch, feat) tensor per elementwise op, and on a CPU
        the page faults of those allocations cost more than the arithmetic. Here the two big
        buffers persist across steps and every elementwise op is in place; importance is applied
        to the small (inst, hidden, feat) results instead of the big ones. Returns the
        per-instance losses when `want_loss` (one extra pass), else None.
        """
        grad_W, grad_b, losses = self.grads_for(x, None, want_loss)
        self.W.grad = grad_W
        self.b.grad = grad_b
        return losses

    @torch.no_grad()
    def grads_for(
        self, x: Tensor, instances: Tensor | None = None, want_loss: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Gradients of some instances: x holds just those instances (batch, len(instances), feat).

        Returns (grad_W, grad_b, losses) for them without touching ``.grad``, so several threads
        can each work on their own instances; `instances=None` means all of them.
        """
        xi = x.transpose(0, 1)
        if not xi.is_contiguous():
            xi = xi.contiguous()
        n_inst, batch, n_feat = xi.shape
        key = (tuple(xi.shape), None if instances is None else tuple(instances.tolist()))
        if key not in self._scratch:
            self._scratch[key] = (torch.empty_like(xi), torch.empty_like(xi))
        out, d = self._scratch[key]
        W, b, importance = self.W.detach(), self.b.detach(), self.importance
        if instances is not None:
            W, b, importance = W[instances], b[instances], importance[instances]
        grad_W, grad_b = torch.empty_like(W), torch.empty_like(b)
        losses = torch.empty(n_inst) if want_loss else None
        # A few instances at a time, so the (chunk, batch, feat) blocks stay in cache between the
        # passes over them (about 20% faster than all instances at once on 2 cores).
        chunk = max(1, _CHUNK_BYTES // (batch * n_feat * xi.element_size()))
        for s in range(0, n_inst, chunk):
            sl = slice(s, s + chunk)
            loss = self._grads_chunk(
                xi[sl], W[sl], b[sl], importance[sl], out[sl], d[sl], grad_W[sl], grad_b[sl], want_loss
            )
            if losses is not None:
                losses[sl] = loss
        return grad_W, grad_b, losses

    def _grads_chunk(self, xi, W, b, importance, out, d, grad_W, grad_b, want_loss):
        """`accumulate_grads` for a slice of instances; writes into the grad_W, grad_b slices."""
        batch, n_feat = xi.shape[1], xi.shape[2]
        # Hidden activations are kept as hᵀ (inst, hidden, batch): with hidden ≪ feat, products
        # written as W xᵀ run about 1.5x faster on a CPU than x Wᵀ.
        hT_pre = torch.bmm(W, xi.transpose(1, 2))
        hT = hT_pre.clamp(min=0) if self.hidden_relu else hT_pre
        torch.baddbmm(b.unsqueeze(1), hT.transpose(1, 2), W, out=out).clamp_(min=0)
        torch.sub(out, xi, out=d)
        n = batch * n_feat
        loss = None
        if want_loss:
            sq = torch.linalg.vecdot(d.transpose(1, 2), d.transpose(1, 2))  # (inst, feat)
            loss = (sq * importance).sum(1) / n
        d.mul_(out.sign_())  # out ≥ 0, so sign is the indicator [pre > 0]
        scale = (2.0 / n) * importance.unsqueeze(1)  # (inst, 1, feat)
        torch.bmm(hT, d, out=grad_W).mul_(scale)
        torch.sum(d, 1, out=grad_b).mul_(scale.squeeze(1))
        grad_hT = torch.bmm(W * scale, d.transpose(1, 2))
        if self.hidden_relu:
            grad_hT.mul_(hT_pre > 0)
        grad_W.baddbmm_(grad_hT, xi)
        return loss

    def _hidden(self, xi: Tensor) -> Tensor:
        h = torch.bmm(self.W, xi.transpose(1, 2)).transpose(1, 2)  # (inst, batch, hidden)
        return torch.relu(h) if self.hidden_relu else h

    def _forward(self, xi: Tensor) -> Tensor:
        return torch.relu(torch.baddbmm(self.b.unsqueeze(1), self._hidden(xi), self.W))


def _importance(importance: Tensor | None, n_instances: int, n_features: int) -> Tensor:
    """Per-instance, per-feature weights of the loss (all 1 by default): Float[Tensor, "inst feat"]."""
    if importance is None:
        return torch.ones(n_instances, n_features)
    return torch.as_tensor(importance, dtype=torch.float32).expand(n_instances, n_features).clone()


def _inst_major(x: Tensor) -> Tensor:
    """(batch, inst, feat) -> contiguous (inst, batch, feat); free for tensors from the sampler."""
    return x.transpose(0, 1).contiguous()


class ComputationModel(nn.Module):
    """Computation in superposition: ``y = ReLU(W_out ReLU(W_in x) + b)`` trained to output |x|.

    W_in is (inst, hidden, feat) (column f: feature f's input weights to the neurons), W_out is
    (inst, feat, hidden) (row f: how the neurons write feature f's output). Inputs are signed, so
    computing |x| needs a neuron for each sign of a feature: the dense-regime solution is a pair
    of neurons per feature with input weights of opposite sign and positive output weights.
    """

    def __init__(
        self,
        n_instances: int,
        n_features: int,
        d_hidden: int,
        importance: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        std = (2.0 / (d_hidden + n_features)) ** 0.5
        self.W_in = nn.Parameter(
            torch.empty(n_instances, d_hidden, n_features).normal_(0.0, std, generator=generator)
        )
        self.W_out = nn.Parameter(
            torch.empty(n_instances, n_features, d_hidden).normal_(0.0, std, generator=generator)
        )
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))
        self.register_buffer("importance", _importance(importance, n_instances, n_features))

    def extra_repr(self) -> str:
        n, d, f = self.W_in.shape
        return f"n_instances={n}, n_features={f}, d_hidden={d}"

    @property
    def n_instances(self) -> int:
        return self.W_in.shape[0]

    def neurons(self, x: Tensor) -> Tensor:
        """Float[Tensor, "batch inst feat"] -> neuron activations, Float[Tensor, "batch inst hidden"]."""
        return torch.relu(torch.bmm(self.W_in, _inst_major(x).transpose(1, 2))).permute(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Float[Tensor, "batch inst feat"] -> output, same shape (ideally |x|)."""
        return self._forward(_inst_major(x)).transpose(0, 1)

    def _forward(self, xi: Tensor) -> Tensor:
        hT = torch.relu(torch.bmm(self.W_in, xi.transpose(1, 2)))  # (inst, hidden, batch)
        return torch.relu(torch.baddbmm(self.b.unsqueeze(1), hT.transpose(1, 2), self.W_out.transpose(1, 2)))

    def instance_losses(self, x: Tensor) -> Tensor:
        """Float[Tensor, "inst"]: importance-weighted MSE to |x|, mean over batch and features."""
        xi = _inst_major(x)
        err = (self._forward(xi) - xi.abs()).square_()
        return torch.einsum("ibf,if->i", err, self.importance) / (xi.shape[1] * xi.shape[2])

    def loss(self, x: Tensor) -> Tensor:
        return self.instance_losses(x).sum()
