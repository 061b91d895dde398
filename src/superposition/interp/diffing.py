"""Model diffing with a crosscoder over two models (a, b): which latents belong to one model,
which to both, and which the decoder norms mislabel.

Relative decoder norm of latent j, in the two definitions in use:

    lindsey   r_j = ‖d_b‖ / (‖d_a‖ + ‖d_b‖)                          (Lindsey et al. 2024)
    minder    Δ_j = ½ ((‖d_b‖ − ‖d_a‖) / max(‖d_a‖, ‖d_b‖) + 1)        (Minder et al. 2025)

Both are 0 for a latent only model a decodes, 1 for one only b decodes and ½ for equal norms; at
a norm ratio ‖d_b‖/‖d_a‖ = ρ ≤ 1, r = ρ/(1 + ρ) and Δ = ρ/2 (0.0909 and 0.05 at ρ = 0.1; 0.333 and
0.25 at ρ = 0.5). Bands (on Δ, as Minder et al.): a-only below 0.1, b-only above 0.9, shared
between 0.4 and 0.6.

Latent scaling (Minder et al.): how much of a latent's direction d a model's activations y carry,
per unit of the latent's activation f, by least squares over tokens i:

    β = dᵀ Σ_i f_i y_i / (‖d‖² Σ_i f_i²)

A latent the norms call a-only, with d its model-a decoder row, should have β_b ≈ 0 on model b's
activations; an L1 crosscoder shrinks the decoder row of a feature that is merely weaker in b (its
penalty weighs ‖d_b‖), so such a latent looks a-only while β_b/β_a is the feature's true scale in
b. `flag_mislabelled` marks the a-only (or b-only) latents whose ratio ν = β_other/β_own is above
`nu`, with β measured on what the other latents leave of each model's activations.
"""

from __future__ import annotations

import torch
from torch import Tensor

A_ONLY, B_ONLY, SHARED = (0.0, 0.1), (0.9, 1.0), (0.4, 0.6)


def relative_norm(norms: Tensor, definition: str = "minder") -> Tensor:
    """norms (d_sae, 2): ‖d_a‖, ‖d_b‖ per latent; a value in [0, 1] per latent (nan where both are 0)."""
    a, b = norms[:, 0], norms[:, 1]
    if definition == "lindsey":
        return b / (a + b)
    if definition == "minder":
        return 0.5 * ((b - a) / torch.maximum(a, b) + 1)
    raise ValueError(f"definition: lindsey or minder, got {definition!r}")


def bands(rel: Tensor) -> dict[str, Tensor]:
    """Masks of the latents in each band of a relative norm (Minder's Δ)."""
    return {
        "a_only": rel < A_ONLY[1],
        "b_only": rel > B_ONLY[0],
        "shared": (rel >= SHARED[0]) & (rel <= SHARED[1]),
    }


def latent_scaling(direction: Tensor, f: Tensor, y: Tensor) -> Tensor:
    """β per latent: direction (d_sae, d), activations f (n, d_sae), model activations y (n, d)."""
    num = torch.einsum("jd,nj,nd->j", direction, f, y)
    den = direction.square().sum(-1) * f.square().sum(0)
    return num / den.clamp(min=1e-30)


class ScalingSums:
    """What `flag_mislabelled` needs from many tokens, summed batch by batch: per model m,
    E_m = Σ_i f_i (x_m − x̂_m)_iᵀ (d_sae, d), and F = Σ_i f_i² (d_sae)."""

    def __init__(self) -> None:
        self.fe: Tensor | None = None
        self.f2: Tensor | None = None

    def add(self, f: Tensor, x: Tensor, x_hat: Tensor) -> None:
        fe = torch.einsum("nj,nsd->sjd", f, x - x_hat)
        f2 = f.square().sum(0)
        self.fe = fe if self.fe is None else self.fe + fe
        self.f2 = f2 if self.f2 is None else self.f2 + f2


def flag_mislabelled(
    W_dec: Tensor, f: Tensor, x: Tensor, x_hat: Tensor, nu: float = 0.05
) -> dict[str, Tensor]:
    """Latent scaling of the latents the norms call a-only or b-only. W_dec (d_sae, 2, d); over n
    tokens: f (n, d_sae) the latents, x and x_hat (n, 2, d) both models' activations and their
    reconstructions. For latent j with its own model's decoder direction d, in each model m the
    target is what the other latents leave, y = x_m − x̂_m + f_j W_dec[j, m] (Minder et al.'s
    error-based scaling: other latents' interference removed), and β_m = dᵀΣ f_j y / (‖d‖² Σ f_j²).
    ν = β_other / β_own; flagged where it exceeds `nu`."""
    sums = ScalingSums()
    sums.add(f, x, x_hat)
    return flag_from_sums(W_dec, sums, nu)


def flag_from_sums(W_dec: Tensor, sums: ScalingSums, nu: float = 0.05) -> dict[str, Tensor]:
    """`flag_mislabelled` from sums over any number of batches (ScalingSums)."""
    norms = W_dec.norm(dim=-1)
    rel = relative_norm(norms)
    m = bands(rel)
    own = torch.where(m["b_only"].unsqueeze(-1), W_dec[:, 1], W_dec[:, 0])  # (d_sae, d)
    f2 = sums.f2
    beta = []
    for s in (0, 1):
        num = (sums.fe[s] * own).sum(-1) + f2 * (W_dec[:, s] * own).sum(-1)
        beta.append(num / (own.square().sum(-1) * f2).clamp(min=1e-30))
    beta_a, beta_b = beta
    nu_val = torch.where(m["b_only"], beta_a / beta_b, beta_b / beta_a)
    flagged = (m["a_only"] | m["b_only"]) & (nu_val > nu)
    return {"relative_norm": rel, "beta_a": beta_a, "beta_b": beta_b, "nu": nu_val, "flagged": flagged, **m}


# ---------------------------------------------------------------------- a crosscoder's latents
HIST_BINS = 40


def latent_table(W_dec: Tensor, density: Tensor, sums: ScalingSums | None) -> dict[str, Tensor]:
    """Per latent of a crosscoder (W_dec (d_sae, n_sources, d), in the space its relative norms are
    read in): decoder norms per source, density, and for two sources both relative norms, the band
    and latent scaling (from `sums` over held-out tokens)."""
    norms = W_dec.norm(dim=-1).cpu()
    table = {"norms": norms, "density": density}
    if sums is not None:
        table.update(flag_from_sums(W_dec.cpu(), sums))
        table["lindsey"] = relative_norm(norms, "lindsey")
    return table


def band_of(table: dict, j: int) -> str:
    """The band latent j falls in: a_only, b_only, shared, or other."""
    for name in ("a_only", "b_only", "shared"):
        if bool(table[name][j]):
            return name
    return "other"


def latents_csv(table: dict) -> str:
    """latents.csv: a row per latent (density, decoder norms; for two sources both relative norms, the
    band, β_a, β_b, ν and whether latent scaling flags it)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    n_sources = table["norms"].shape[1]
    two = "relative_norm" in table
    head = ["latent", "density", *[f"decoder_norm_{s}" for s in range(n_sources)]]
    if two:
        head += ["relative_norm", "relative_norm_lindsey", "band", "beta_a", "beta_b", "nu", "flagged"]
    w.writerow(head)
    for j in range(table["norms"].shape[0]):
        row = [j, f"{float(table['density'][j]):.6g}", *[f"{float(v):.6g}" for v in table["norms"][j]]]
        if two:
            row += [f"{float(table['relative_norm'][j]):.6g}", f"{float(table['lindsey'][j]):.6g}",
                    band_of(table, j), f"{float(table['beta_a'][j]):.6g}", f"{float(table['beta_b'][j]):.6g}",
                    f"{float(table['nu'][j]):.6g}", int(table["flagged"][j])]  # fmt: skip
        w.writerow(row)
    return buf.getvalue()


def diffing_summary(table: dict) -> dict:
    """For two sources, over the latents that fire on the held-out text: the relative-norm histogram
    in both definitions, the band counts, the latents latent scaling flags, and the most frequent
    a-only and b-only latents."""
    live = table["density"] > 0
    edges = torch.linspace(0, 1, HIST_BINS + 1)
    hist = {
        name: torch.histogram(table[key][live].float(), bins=edges).hist.int().tolist()
        for name, key in (("minder", "relative_norm"), ("lindsey", "lindsey"))
    }
    counts = {b: int((table[b] & live).sum()) for b in ("a_only", "b_only", "shared")}
    counts["other"] = int(live.sum()) - sum(counts.values())
    flagged = torch.nonzero(table["flagged"] & live).flatten().tolist()
    s = {
        "relative_norm": {
            "definitions": {
                "minder": "½((‖d_b‖ − ‖d_a‖) / max(‖d_a‖, ‖d_b‖) + 1) (Minder et al. 2025); the bands use it",
                "lindsey": "‖d_b‖ / (‖d_a‖ + ‖d_b‖) (Lindsey et al. 2024)",
            },
            "over": "latents that fire on the held-out text, decoder norms in the scaled space",
            "edges": edges.tolist(),
            **hist,
        },
        "bands": {"thresholds": {"a_only": "< 0.1", "b_only": "> 0.9", "shared": "0.4 to 0.6"}, **counts},
        "latent_scaling": {
            "nu_threshold": 0.05,
            "flagged": len(flagged),
            "latents": [
                {
                    "latent": j,
                    "band": band_of(table, j),
                    "relative_norm": float(table["relative_norm"][j]),
                    "beta_a": float(table["beta_a"][j]),
                    "beta_b": float(table["beta_b"][j]),
                    "nu": float(table["nu"][j]),
                }
                for j in flagged[:200]
            ],  # fmt: skip
        },
    }
    for band in ("a_only", "b_only"):
        idx = torch.nonzero(table[band] & live).flatten()
        order = table["density"][idx].argsort(descending=True)
        s[f"{band}_latents"] = idx[order][:50].tolist()
    return s
