"""The one config of a language-model SAE run: saved with the run, read from YAML/JSON files, and
overridden with `--set key=value`.

It is composed: the language-model keys below, then every key of SAEConfig (the architecture and
its options) and of SAETrainConfig (optimisation, dead latents, resampling), under the names users
know from SAELens. A key added to either reaches `train-sae` without being written here. The
differences are the defaults that suit a language model (`LM_DEFAULTS`) and the sizes the run
derives: d_in from the hook, steps = training_tokens // batch_size_tokens, batch_size =
batch_size_tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from superposition.config import Config, compose
from superposition.errors import SuperpositionError
from superposition.lm.data import DEFAULT_DATASET
from superposition.lm.hooks import MLP_PAIR, hook_list, hook_position, read_names, several_hooks
from superposition.lm.model import DEFAULT_MODEL
from superposition.sae.config import SAEConfig, known_architecture
from superposition.sae.registry import ARCHITECTURES
from superposition.sae.train import SAETrainConfig


def _lm_architecture(name: str) -> str:
    return known_architecture(name, ("clt", "crosscoder"))


class LMSettings(Config):
    """The keys of a language-model run that are not SAE or trainer keys."""

    # model and data
    model_name: str = Field(DEFAULT_MODEL, description="alias, hub name, local folder or .gguf file")
    hook_name: str | list[str] = Field(
        "blocks.6.hook_resid_post",
        description="blocks.L.<kind> with TransformerLens's meanings, kind one of hook_resid_pre, "
        "ln1.hook_normalized, attn.hook_z, hook_attn_out, hook_resid_mid, hook_mlp_in (before the MLP's "
        "norm), "
        "ln2.hook_normalized (after it), mlp.hook_post, hook_mlp_out, hook_resid_post; blocks.L.mlp for a "
        "transcoder (from ln2.hook_normalized to hook_mlp_out). Several: a "
        "list, a glob (blocks.*.hook_resid_post) or braces (blocks.{2,6,10}.hook_mlp_out): one forward "
        "pass feeds one SAE per hook",
    )
    architecture: Annotated[str, AfterValidator(_lm_architecture)] = Field(
        "topk",
        description="an SAE architecture (topk, batchtopk, jumprelu, standard, gated, matryoshka), "
        "transcoder or skip_transcoder (hook_name blocks.L.mlp), or clt: one cross-layer transcoder over "
        "every layer (hook_name blocks.*.mlp; TopK with k per layer and token, or JumpReLU: clt_sparsity), "
        "or crosscoder: one "
        "dictionary over two models at one hook (model_name_b) or over several hooks of one model",
    )
    model_name_b: str | None = Field(
        None,
        description="crosscoder: the second model (b), read at the same hook as model_name (a) on the "
        "same tokens; it must share model_name's tokenizer and width",
    )
    clt_sparsity: Literal["topk", "jumprelu"] = Field(
        "topk",
        description="clt: topk (k latents per layer and token) or jumprelu (a trained threshold per latent, "
        "as circuit-tracer's and Anthropic's CLTs; with bandwidth and init_threshold as for jumprelu SAEs)",
    )
    clt_sparsity_coefficient: float = Field(
        0.5, ge=0.0, description="clt jumprelu: λ_s of the penalty λ_s Σ tanh(c ‖W_dec‖ z) (warmed up)"
    )
    clt_tanh_scale: float = Field(
        4.0, gt=0.0, description="clt jumprelu: c of the penalty λ_s Σ tanh(c ‖W_dec‖ z)"
    )
    clt_preact_coefficient: float = Field(
        3e-6, ge=0.0, description="clt jumprelu: λ_p of the pre-activation loss λ_p Σ ReLU(θ − pre) ‖W_dec‖"
    )
    crosscoder_sparsity: Literal["batchtopk", "l1"] = Field(
        "batchtopk",
        description="crosscoder: batchtopk (k latents per token on average) or l1 (ReLU; the L1 "
        "penalty weighted by the sum of each latent's decoder norms, Σ_j z_j Σ_s ‖W_dec[j, s]‖)",
    )
    dataset_path: str = Field(
        DEFAULT_DATASET, description="python-docs, a .txt/.jsonl/.parquet file, or a hub dataset"
    )
    text_column: str | None = Field(None, description="default: the first of text, content, document, body")
    context_size: int = Field(128, gt=1, description="tokens per sequence")
    batch_size_tokens: int = Field(2048, gt=0, description="activations per training step")
    prepend_bos: bool = Field(True, description="start every sequence with the BOS token")
    n_batches_in_buffer: int = Field(
        8, gt=0, description="activations are shuffled across this many batches' worth of sequences"
    )
    model_batch_size: int = Field(16, gt=0, description="sequences per forward pass of the model")
    activation_cache: str | None = Field(
        None, description="folder of cached activations (written if new, read if it matches)"
    )
    # what the SAE is trained to preserve (lm/e2e.py)
    loss: Literal["local", "e2e", "e2e_ds"] = Field(
        "local",
        description="local: reconstruct the activation (MSE); e2e: preserve the model's output "
        "(KL through the rest of the model); e2e_ds: e2e plus MSE at downstream_hooks",
    )
    kl_coefficient: float = Field(
        1.0, gt=0.0, description="e2e, e2e_ds: weight β of KL(P_clean ‖ P_with_SAE)"
    )
    downstream_hooks: list[str] = Field(
        [], description="e2e_ds: later hook points whose activations the SAE-run must keep (MSE)"
    )
    downstream_coefficient: float = Field(
        1.0, ge=0.0, description="e2e_ds: weight γ of the downstream MSE, split evenly over the hooks"
    )
    # the SAE's width, relative to the hook's
    d_sae: int | None = Field(None, gt=0, description="number of latents; default: expansion_factor × d_in")
    expansion_factor: int = Field(
        8, gt=0, description="d_sae = expansion_factor × d_in when d_sae is not set"
    )
    training_tokens: int = Field(500_000, gt=0, description="a few minutes on 2 cores with the defaults")
    # run and evaluation
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ...")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="of the language model")
    dead_feature_threshold: float = Field(
        1e-8, ge=0.0, description="evaluation: a latent firing on at most this fraction of tokens is dead"
    )
    eval_sequences: int = Field(64, gt=0, description="held-out sequences for the end-of-run evaluation")
    tensorboard: bool = Field(True, description="write TensorBoard event files when tensorboard is installed")
    wandb: bool = Field(False, description="log to Weights & Biases (needs the wandb package)")
    wandb_project: str = Field("superposition", description="the W&B project")
    # several processes (torchrun, or train-sae --nproc N)
    parallel: Literal["data", "hooks"] = Field(
        "data",
        description="with several processes: data (each rank runs the model on its share of the "
        "sequences; SAE gradients averaged) or hooks (each rank trains the SAEs of some hooks)",
    )
    dist_timeout: float = Field(
        600.0, gt=0, description="seconds a rank waits for the others before giving up with an error"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.training_tokens < self.batch_size_tokens:
            raise ValueError(f"training_tokens: at least one batch ({self.batch_size_tokens}) is needed")
        arch = getattr(self, "architecture", None)  # composed with SAEConfig in LMSAEConfig
        if arch == "clt":
            self._check_clt()
        elif arch == "crosscoder":
            self._check_crosscoder()
        elif self.multi_hook:
            self._check_multi(arch)
        elif arch is not None:
            transcoder = ARCHITECTURES[arch].transcodes
            if transcoder and not MLP_PAIR.match(self.hook_name):
                raise ValueError(
                    f"hook_name: a {arch} reads an MLP's input and predicts its output: blocks.L.mlp, "
                    f"got {self.hook_name!r}"
                )
            if not transcoder and MLP_PAIR.match(self.hook_name):
                raise ValueError(
                    f"hook_name: {self.hook_name} is the MLP input/output pair of a transcoder "
                    "(architecture=transcoder or skip_transcoder); an SAE reads one hook"
                )
            if transcoder and self.loss != "local":
                raise ValueError(f"loss: {self.loss} trains SAEs; a {arch} trains with loss=local")
        self._check_downstream()
        return self

    def _check_clt(self) -> None:
        if self.hook_name != "blocks.*.mlp":
            raise ValueError(
                f"hook_name: a clt reads every layer's resid_mid and writes every MLP output: blocks.*.mlp, "
                f"got {self.hook_name!r}"
            )
        if getattr(self, "k", None) is None:
            raise ValueError("k: required for architecture clt (latents per layer and token)")
        if self.loss != "local":
            raise ValueError(f"loss: a clt trains with loss=local, got {self.loss}")

    def _check_crosscoder(self) -> None:
        if self.model_name_b is not None and self.multi_hook:
            raise ValueError(
                "hook_name: a crosscoder over two models (model_name_b) reads one hook in each; "
                f"got {self.hook_name!r}"
            )
        if self.model_name_b is None and not self.multi_hook:
            raise ValueError(
                "model_name_b: a crosscoder needs two sources: set model_name_b (two models at one hook) "
                "or give several hooks (e.g. blocks.{4,6,8}.hook_resid_post)"
            )
        names = [self.hook_name] if isinstance(self.hook_name, str) else self.hook_name
        if any(n.endswith(".mlp") for n in names):
            raise ValueError("hook_name: a crosscoder reads hooks, not blocks.L.mlp transcoder pairs")
        if self.loss != "local":
            raise ValueError(f"loss: a crosscoder trains with loss=local, got {self.loss}")

    @property
    def multi_hook(self) -> bool:
        """SAEs at several hooks (hooks.several_hooks)."""
        return several_hooks(self.hook_name)

    def _check_multi(self, arch: str | None) -> None:
        names = hook_list(self.hook_name)
        if not names:
            raise ValueError("hook_name: an empty list; give at least one hook point")
        pairs = [n.endswith(".mlp") for n in names]
        transcoder = arch is not None and ARCHITECTURES[arch].transcodes
        if transcoder and not all(pairs):
            raise ValueError(
                f"hook_name: a {arch} reads an MLP's input and predicts its output: give blocks.L.mlp names "
                "(a list, or a pattern such as blocks.*.mlp)"
            )
        if any(pairs) and not transcoder:
            raise ValueError(
                "hook_name: blocks.L.mlp is the MLP input/output pair of a transcoder "
                "(architecture=transcoder or skip_transcoder); an SAE reads one hook"
            )
        if self.loss != "local":
            raise ValueError(f"loss: {self.loss} trains one SAE per run; several hooks train with loss=local")

    def _check_downstream(self) -> None:
        if self.model_name_b is not None and getattr(self, "architecture", None) != "crosscoder":
            raise ValueError("model_name_b: used by architecture=crosscoder only")
        if self.loss == "e2e_ds" and not self.downstream_hooks:
            raise ValueError(
                "downstream_hooks: loss=e2e_ds needs at least one, e.g. [blocks.8.hook_resid_post]"
            )
        if self.loss != "e2e_ds" and self.downstream_hooks:
            raise ValueError(f"downstream_hooks: used by loss=e2e_ds only (loss is {self.loss})")
        own = None if self.multi_hook else hook_position(self.hook_name)
        for h in self.downstream_hooks:
            where = hook_position(h)
            if where is None:
                raise ValueError(f"downstream_hooks: {h!r} is not a hook point name (blocks.L.<kind>)")
            if own is not None and where <= own:
                raise ValueError(f"downstream_hooks: {h} is not after the SAE's hook {self.hook_name}")

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size_tokens

    def sae_width(self, d_in: int) -> int:
        return self.d_sae or self.expansion_factor * d_in

    def sae_config(self, d_in: int, d_out: int | None = None) -> SAEConfig:
        """The SAE this run trains on a hook of width d_in (a transcoder: to one of width d_out):
        every SAEConfig key of this config."""
        values = {k: getattr(self, k) for k in SAEConfig.model_fields if k in type(self).model_fields}
        values.update(d_in=d_in, d_sae=self.sae_width(d_in))
        if self.multi_hook:  # each SAE's own hook is written when it is saved
            values["hook_name"] = None
        if d_out is not None:
            values["d_out"] = d_out
            if not self.multi_hook:  # several: each transcoder's hooks are written when it is saved
                names = read_names(self.hook_name)
                values.update(hook_name=names[0], hook_name_out=names[-1])
        return SAEConfig.build(values, "config")

    def train_config(self) -> SAETrainConfig:
        values = {k: getattr(self, k) for k in SAETrainConfig.model_fields if k in type(self).model_fields}
        return SAETrainConfig.build(
            {**values, "steps": self.steps, "batch_size": self.batch_size_tokens}, "config"
        )


LM_DEFAULTS = {
    "k": 32,
    "l1_coefficient": 5.0,
    "l0_coefficient": 1e-3,
    "normalize_activations": True,
    "lr_warm_up_steps": 20,
    "dead_feature_window": 200,
    "log_every": 0,  # about 100 rows a run, every step of a short one: the report's curves are curves
}

LMSAEConfig = compose(
    "LMSAEConfig",
    LMSettings,
    SAEConfig,
    SAETrainConfig,
    exclude=("d_in", "n_instances", "steps", "batch_size"),
    defaults=LM_DEFAULTS,
    doc="Every key of a `train-sae` run: the language model and data, the SAE, the trainer.",
)


def load_config_file(path: str | Path) -> dict:
    """A YAML or JSON file of config keys."""
    path = Path(path)
    if not path.is_file():
        raise SuperpositionError(f"config {path}: no such file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise SuperpositionError(
            f"config {path}: {path.stat().st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SuperpositionError(
            f"config {path}: not UTF-8 text (byte {err.start}); expected YAML or JSON"
        ) from None
    if not text.strip():
        raise SuperpositionError(f"config {path}: empty; expected a mapping of keys to values")
    try:
        if path.suffix in (".yaml", ".yml"):
            data = _yaml_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # yaml and json raise their own types; both mean a malformed file
        raise SuperpositionError(f"config {path}: cannot parse ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SuperpositionError(f"config {path}: expected a mapping of keys to values")
    return data


MAX_CONFIG_BYTES = 1 << 20


def _yaml_load(text: str):
    """YAML with 1.2's numbers: PyYAML (YAML 1.1) reads `3e-4` as a string, which a strict config
    would refuse, so floats without a dot are resolved as floats too."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # anchors and aliases: 700 bytes of them took 19.5 GB
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError(
                    f"aliases (*name) are not allowed in a config, {self.peek_event().start_mark}"
                )
            return super().compose_node(parent, index)

    number = r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$"
    pattern = number + r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(pattern), list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # a SafeLoader: no arbitrary objects


def make_lm_config(config_file: str | None = None, overrides: list[str] = ()) -> LMSAEConfig:
    base = (
        LMSAEConfig.build(load_config_file(config_file), f"config {config_file}")
        if config_file
        else LMSAEConfig()
    )
    return base.with_overrides(overrides)
