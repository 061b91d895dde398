"""The one config of a language-model SAE run: saved with the run, read from YAML/JSON files, and
overridden with `--set key=value` (the keys are exactly the fields below)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.lm.data import DEFAULT_DATASET
from superposition.lm.model import DEFAULT_MODEL
from superposition.sae.base import Architecture


class LMSAEConfig(Config):
    # model and data
    model_name: str = Field(DEFAULT_MODEL, description="alias, hub name, local folder or .gguf file")
    hook_name: str = Field(
        "blocks.6.hook_resid_post",
        description="blocks.L.hook_resid_pre|hook_resid_post|hook_mlp_out|hook_attn_out|attn.hook_z",
    )
    dataset_path: str = Field(
        DEFAULT_DATASET, description="python-docs, a .txt/.jsonl/.parquet file, or a hub dataset"
    )
    text_column: str | None = Field(None, description="default: the first of text, content, document, body")
    context_size: int = Field(128, gt=1)
    batch_size_tokens: int = Field(2048, gt=0)
    prepend_bos: bool = True
    n_batches_in_buffer: int = Field(
        8, gt=0, description="activations are shuffled across this many batches' worth of sequences"
    )
    model_batch_size: int = Field(16, gt=0, description="sequences per forward pass of the model")
    activation_cache: str | None = Field(
        None, description="folder of cached activations (written if new, read if it matches)"
    )
    # SAE
    architecture: Architecture = "topk"
    d_sae: int | None = Field(None, gt=0, description="default: expansion_factor × d_in")
    expansion_factor: int = Field(8, gt=0)
    k: int = Field(32, gt=0)
    l1_coefficient: float = Field(5.0, ge=0.0)
    l0_coefficient: float = Field(1e-3, ge=0.0)
    aux_k: int | None = Field(None, gt=0)
    aux_coefficient: float = Field(1 / 32, ge=0.0)
    bandwidth: float = Field(0.05, gt=0.0)
    init_threshold: float = Field(0.2, gt=0.0)
    prefixes: list[int] | None = None
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    normalize_activations: bool = Field(True, description="scale inputs so E‖x‖² = d_in; folded back at save")
    # optimisation
    lr: float = Field(1e-3, gt=0.0)
    lr_warm_up_steps: int = Field(20, ge=0)
    lr_decay_steps: int = Field(0, ge=0, description="linear decay to 0 over the last this many steps")
    sparsity_warm_up_steps: int = Field(0, ge=0)
    training_tokens: int = Field(500_000, gt=0, description="a few minutes on 2 cores with the defaults")
    # dead latents and resampling
    feature_sampling_window: int = Field(1000, gt=0, description="steps between resamplings")
    dead_feature_window: int = Field(
        200, gt=0, description="steps without firing after which a latent is dead"
    )
    dead_feature_threshold: float = Field(
        1e-8, ge=0.0, description="evaluation: a latent firing on at most this fraction of tokens is dead"
    )
    resample: Literal["none", "simple", "anthropic"] = "none"
    # run
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    checkpoint_every: int = Field(0, ge=0, description="steps; 0: at the end and on Ctrl-C only")
    log_every: int = Field(10, gt=0)
    eval_sequences: int = Field(64, gt=0, description="held-out sequences for the end-of-run evaluation")
    tensorboard: bool = Field(True, description="write TensorBoard event files when tensorboard is installed")
    wandb: bool = False
    wandb_project: str = "superposition"

    @model_validator(mode="after")
    def _check(self):
        if self.training_tokens < self.batch_size_tokens:
            raise ValueError(f"training_tokens: at least one batch ({self.batch_size_tokens}) is needed")
        return self

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size_tokens

    def sae_width(self, d_in: int) -> int:
        return self.d_sae or self.expansion_factor * d_in


def load_config_file(path: str | Path) -> dict:
    """A YAML or JSON file of config keys."""
    path = Path(path)
    if not path.is_file():
        raise SuperpositionError(f"--config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # yaml and json raise their own types; both mean a malformed file
        raise SuperpositionError(f"--config {path}: cannot parse ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SuperpositionError(f"--config {path}: expected a mapping of keys to values")
    return data


def make_lm_config(config_file: str | None = None, overrides: list[str] = ()) -> LMSAEConfig:
    base = (
        LMSAEConfig.build(load_config_file(config_file), f"--config {config_file}")
        if config_file
        else LMSAEConfig()
    )
    return base.with_overrides(overrides)
