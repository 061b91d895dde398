"""Which SAE a command was pointed at: one of an experiment run's saes/, a train-sae run's sae/,
or any SAE folder or file another library wrote."""

from __future__ import annotations

from pathlib import Path

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE


def experiment_saes(run: Path) -> list[str] | None:
    """The SAEs under an experiment run's saes/ (sae-toy, sae-synthetic, ...), or None when `run`
    is not an experiment run (an SAE folder, a train-sae run, a file)."""
    if not (run.is_dir() and (run / "saes").is_dir() and not (run / "cfg.json").exists()):
        return None
    return sorted(p.name for p in (run / "saes").iterdir() if (p / "cfg.json").is_file())


def experiment_sae(run: Path, sae_name: str | None) -> Path:
    """The folder of one SAE of an experiment run: `sae_name`, or the first by name."""
    names = experiment_saes(run) or []
    if not names:
        raise SuperpositionError(f"RUN_DIR {run}: saes/ holds no SAE")
    name = sae_name or names[0]
    if name not in names:
        raise SuperpositionError(f"--sae {name!r}: not in this run; choose one of {', '.join(names)}")
    return run / "saes" / name


def load_single_sae(path: str | Path, label: str) -> BatchedSAE:
    """The SAE at `path`: a train-sae run (its sae/ folder) or any readable SAE folder or file."""
    from superposition.sae.formats import load

    p = Path(path).expanduser() if not str(path).startswith("hf://") else None
    if p is not None and not p.exists():
        raise SuperpositionError(f"{label} {p}: no such file or folder")
    names = experiment_saes(p) if p is not None else None
    if names is not None:
        raise SuperpositionError(
            f"{label} {p}: an experiment run holds several SAEs; give one folder, "
            f"e.g. {p / 'saes' / names[0]}"
            if names
            else f"{label} {p}: saes/ holds no SAE"
        )
    if p is not None and (p / "sae" / "cfg.json").is_file():
        p = p / "sae"
    try:
        sae = load(p if p is not None else path)
    except SuperpositionError as err:
        raise SuperpositionError(f"{label}: {err}") from None
    if sae.n_instances != 1:
        raise SuperpositionError(f"{label} {path}: holds {sae.n_instances} SAEs; give one")
    return sae
