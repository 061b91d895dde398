"""Bad input never shows a traceback and never touches anything: every case in CASES runs the CLI
and asserts exit code 2, exactly one line on stderr (no traceback), and every file under the
test's folder unchanged (nothing written, nothing deleted).

A case is (id, argv, needle). In argv, `{name}` is replaced by the path of a fixture made for the
case (see FIXTURES); a new command adds its rows here.
"""

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from superposition.cli import main
from superposition.experiments import REGISTRY

TINY_SETS = [
    "hook_name=blocks.0.hook_resid_post", "context_size=32", "batch_size_tokens=128", "training_tokens=1280",
    "n_batches_in_buffer=3", "model_batch_size=8", "expansion_factor=2", "k=8", "eval_sequences=4",
]  # fmt: skip
TINY = [a for s in TINY_SETS for a in ("--set", s)]


def _user_dir(p: Path) -> None:  # a folder of a user's that merely holds a config.json
    (p / "src").mkdir(parents=True)
    (p / "config.json").write_text("{}")
    (p / "src" / "main.py").write_text("print('mine')\n")
    (p / "NOTES.md").write_text("do not lose me\n")


def _toy_run(p: Path, damage: str | None = None) -> None:  # an SAE experiment run, optionally damaged
    (p / "saes" / "topk").mkdir(parents=True)
    save_file({"features": torch.eye(4)}, str(p / "ground_truth.safetensors"))
    cfg = {"architecture": "topk", "d_in": 4, "d_sae": 8, "k": 2}
    t = {
        "W_enc": torch.randn(4, 8),
        "W_dec": torch.randn(8, 4),
        "b_enc": torch.zeros(8),
        "b_dec": torch.zeros(4),
    }
    save_file(t, str(p / "saes" / "topk" / "sae_weights.safetensors"))
    (p / "saes" / "topk" / "cfg.json").write_text(json.dumps(cfg))
    weights = p / "saes" / "topk" / "sae_weights.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "shape":
        save_file({**t, "W_dec": torch.randn(8, 5)}, str(weights))
    elif damage == "cfg":
        (p / "saes" / "topk" / "cfg.json").write_text('{"architecture": "topk", "d_in": 4,')


def _lm_run(p: Path, damage: str) -> None:  # a train-sae run directory, damaged
    (p / "sae").mkdir(parents=True)
    (p / "config.json").write_text(json.dumps({"hook_name": "blocks.0.hook_resid_post"}))
    weights = {
        "W_enc": torch.randn(576, 8),
        "W_dec": torch.randn(8, 576),
        "b_enc": torch.zeros(8),
        "b_dec": torch.zeros(576),
    }
    save_file(weights, str(p / "sae" / "sae_weights.safetensors"))
    (p / "sae" / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 576, "d_sae": 8, "k": 2}))
    if damage == "config":
        (p / "config.json").write_text(json.dumps({"hook_name": "blocks.0.hook_resid_post", "k": "eight"}))
    elif damage == "weights":
        (p / "sae" / "sae_weights.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "no_sae":
        shutil.rmtree(p / "sae")
    elif damage == "width":
        narrow = {"W_enc": torch.randn(64, 8), "W_dec": torch.randn(8, 64), "b_dec": torch.zeros(64)}
        save_file({**weights, **narrow}, str(p / "sae" / "sae_weights.safetensors"))
        (p / "sae" / "cfg.json").write_text(
            json.dumps({"architecture": "topk", "d_in": 64, "d_sae": 8, "k": 2})
        )


class _Code:
    """Unpickling it would run a command: what a hostile ae.pt holds."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/superposition-fuzz-code-ran",))


def _pickled_ae(p: Path) -> None:
    p.mkdir()
    (p / "ae.pt").write_bytes(pickle.dumps({"encoder.weight": _Code()}))
    (p / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))


FIXTURES = {
    "file": lambda p: p.write_text("just a file\n"),
    "empty": lambda p: p.write_bytes(b""),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "user": _user_dir,
    "emptydir": lambda p: p.mkdir(),
    "yaml_truncated": lambda p: p.write_text("k: 16\narchitecture: [topk\n"),
    "yaml_list": lambda p: p.write_text("- k\n- 16\n"),
    "yaml_unknown": lambda p: p.write_text("k: 16\nlearning_rate: 0.1\n"),
    "yaml_string_int": lambda p: p.write_text('k: "16"\n'),
    "json_bad": lambda p: p.write_text('{"k": 16,'),
    "jsonl_binary": lambda p: p.write_bytes(b'{"text": "fine"}\n' + bytes(range(128, 256)) + b"\n"),
    "jsonl_latin1": lambda p: p.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1")),
    "jsonl_notobj": lambda p: p.write_text('["a list"]\n'),
    "txt_empty": lambda p: p.write_text("\n\n"),
    "parquet_bad": lambda p: p.write_bytes(b"PAR1" + b"\x00" * 40),
    "toy_run": _toy_run,
    "toy_truncated": lambda p: _toy_run(p, "truncated"),
    "toy_shape": lambda p: _toy_run(p, "shape"),
    "toy_cfg": lambda p: _toy_run(p, "cfg"),
    "lm_config": lambda p: _lm_run(p, "config"),
    "lm_weights": lambda p: _lm_run(p, "weights"),
    "lm_no_sae": lambda p: _lm_run(p, "no_sae"),
    "lm_width": lambda p: _lm_run(p, "width"),
    "npz_no_threshold": lambda p: np.savez(
        p,
        W_enc=np.zeros((4, 8), np.float32),
        W_dec=np.zeros((8, 4), np.float32),
        b_enc=np.zeros(8, np.float32),
        b_dec=np.zeros(4, np.float32),
    ),
    "pickled_ae": _pickled_ae,
}
SUFFIX = {
    "yaml_truncated": ".yaml", "yaml_list": ".yaml", "yaml_unknown": ".yaml", "yaml_string_int": ".yaml",
    "json_bad": ".json", "jsonl_binary": ".jsonl", "jsonl_latin1": ".jsonl", "jsonl_notobj": ".jsonl",
    "txt_empty": ".txt", "parquet_bad": ".parquet", "npz_no_threshold": ".npz",
}  # fmt: skip

RUN = ["run", "intro", "--out", "{new}"]
# a foreign SAE with the model and hook it reads given on the command line (checked before loading the model)
AI_SAE = [
    "{toy_run}/saes/topk",
    "--model",
    "smollm2-135m-instruct",
    "--hook",
    "blocks.0.hook_resid_post",
]
SE_SAE = ["{toy_run}/saes/topk", "--model", "smollm2-135m-instruct", "--hook", "blocks.0.hook_resid_post"]
# fmt: off
CASES = [
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["nope"], "invalid choice: 'nope'"),
    ("list-extra", ["list", "extra"], "unrecognized arguments: extra"),
    ("run-unknown-experiment", ["run", "nope", "--out", "{new}"], "unknown experiment 'nope'"),
    ("run-no-out", ["run", "intro"], "required: --out"),
    ("run-empty-out", ["run", "intro", "--out", ""], "--out: an empty path"),
    ("run-out-is-file", ["run", "intro", "--out", "{file}"], "exists and is not a directory"),
    ("run-out-under-file", ["run", "intro", "--out", "{file}/sub"], "cannot write there"),
    ("run-out-users-folder", ["run", "intro", "--out", "{user}"], "not empty and is not a previous run"),
    ("run-out-a-dashboard", ["run", "intro", "--out", "{toy_run}"], "not a previous run"),
    ("run-unknown-key", [*RUN, "--set", "bogus=1"], "--set bogus: unknown key"),
    ("run-no-equals", [*RUN, "--set", "steps"], "expected key=value"),
    ("run-bool-for-int", [*RUN, "--set", "steps=true"], "--set steps: Input should be a valid integer"),
    ("run-string-for-int", [*RUN, "--set", "steps=\"10\""], "--set steps: Input should be a valid integer"),
    ("run-float-for-int", [*RUN, "--set", "steps=10.5"], "--set steps: Input should be a valid integer"),
    ("run-word-for-float", [*RUN, "--set", "lr=fast"], "--set lr: Input should be a valid number"),
    ("run-nan", [*RUN, "--set", "lr=NaN"], "--set lr"),
    ("run-negative", [*RUN, "--set", "n_features=-3"], "greater than 0"),
    ("run-probability", [*RUN, "--set", "feature_probability=1.5"], "less than or equal to 1"),
    ("run-list-length", [*RUN, "--set", "importance=[1,2]"], "one value per feature"),
    ("run-schedule", [*RUN, "--set", "schedule=warm"], "--set schedule: Input should be"),
    ("run-huge-features", [*RUN, "--set", "n_features=1000000000"], "needs about"),
    ("run-huge-batch", [*RUN, "--set", "batch_size=1000000000"], "needs about"),
    ("run-huge-instances", [*RUN, "--set", "n_instances=100000000"], "needs about"),
    ("run-seed-word", [*RUN, "--seed", "abc"], "invalid int value"),
    ("sae-synthetic-k", ["run", "sae-synthetic", "--out", "{new}", "--set", "k=4096"], "k: must be at most d_sae"),
    ("sae-synthetic-arch", ["run", "sae-synthetic", "--out", "{new}", "--set", "architecture=relu"], "Input should be"),
    ("sae-synthetic-huge", ["run", "sae-synthetic", "--out", "{new}", "--set", "d_sae=100000000"], "needs about"),
    ("demo-out-is-file", ["demo", "--quick", "--out", "{file}"], "cannot write there"),
    ("demo-into-users-folder", ["demo", "--quick", "--out", "{demo_parent}"], "not a previous run"),
    ("train-no-out", ["train-sae"], "required: --out"),
    ("train-empty-out", ["train-sae", "--out", ""], "--out: an empty path"),
    ("train-out-users-folder", ["train-sae", "--out", "{user}"], "not empty; continue it with --resume"),
    ("train-out-is-file", ["train-sae", "--out", "{file}"], "exists and is not a directory"),
    ("train-resume-nothing", ["train-sae", "--out", "{emptydir}", "--resume"], "--resume: "),
    ("train-resume-with-set", ["train-sae", "--out", "{emptydir}", "--resume", "--set", "k=4"], "drop --config and --set"),
    ("train-config-missing", ["train-sae", "--out", "{new}", "--config", "{tmp}/none.yaml"], "no such file"),
    ("train-config-empty", ["train-sae", "--out", "{new}", "--config", "{empty}"], "empty; expected a mapping"),
    ("train-config-binary", ["train-sae", "--out", "{new}", "--config", "{binary}"], "not UTF-8 text"),
    ("train-config-truncated", ["train-sae", "--out", "{new}", "--config", "{yaml_truncated}"], "cannot parse"),
    ("train-config-list", ["train-sae", "--out", "{new}", "--config", "{yaml_list}"], "expected a mapping"),
    ("train-config-unknown", ["train-sae", "--out", "{new}", "--config", "{yaml_unknown}"], "learning_rate: unknown key"),
    ("train-config-string-int", ["train-sae", "--out", "{new}", "--config", "{yaml_string_int}"], "valid integer"),
    ("train-config-json", ["train-sae", "--out", "{new}", "--config", "{json_bad}"], "cannot parse"),
    ("train-architecture", ["train-sae", "--out", "{new}", "--set", "architecture=relu"], "Input should be"),
    ("train-k-zero", ["train-sae", "--out", "{new}", "--set", "k=0"], "greater than 0"),
    ("train-k-bool", ["train-sae", "--out", "{new}", "--set", "k=true"], "valid integer"),
    ("train-tokens", ["train-sae", "--out", "{new}", "--set", "training_tokens=10"], "at least one batch"),
    ("train-hook", ["train-sae", "--out", "{new}", "--set", "hook_name=blocks.99.hook_resid_post"], "not a hook point"),
    ("train-transcoder-hook", ["train-sae", "--out", "{new}", "--set", "architecture=transcoder", "--set", "hook_name=blocks.2.hook_mlp_out"], "hook_name: a transcoder reads an MLP's input"),
    ("train-sae-on-mlp-pair", ["train-sae", "--out", "{new}", "--set", "hook_name=blocks.2.mlp"], "is the MLP input/output pair of a transcoder"),
    ("train-transcoder-sparsity", ["train-sae", "--out", "{new}", "--set", "architecture=transcoder", "--set", "hook_name=blocks.2.mlp", "--set", "sparsity=dense"], "sparsity: one of"),
    ("train-e2e-downstream-before", ["train-sae", "--out", "{new}", "--set", "loss=e2e_ds", "--set", "downstream_hooks=[blocks.2.hook_resid_post]"], "is not after the SAE's hook"),
    ("train-e2e-ds-no-hooks", ["train-sae", "--out", "{new}", "--set", "loss=e2e_ds"], "needs at least one"),
    ("train-e2e-loss", ["train-sae", "--out", "{new}", "--set", "loss=global"], "Input should be 'local', 'e2e' or 'e2e_ds'"),
    ("train-transcoder-layer", ["train-sae", "--out", "{new}", *TINY, "--set", "architecture=transcoder", "--set", "hook_name=blocks.99.mlp"], "not a hook point"),
    ("train-model", ["train-sae", "--out", "{new}", "--set", "model_name=/nonexistent/model"], "model_name '/nonexistent/model': no such folder or file"),
    ("train-huge-d_sae", ["train-sae", "--out", "{new}", *TINY, "--set", "d_sae=1000000000"], "needs about"),
    ("train-huge-expansion", ["train-sae", "--out", "{new}", *TINY, "--set", "expansion_factor=100000"], "needs about"),
    ("train-k-over-width", ["train-sae", "--out", "{new}", *TINY, "--set", "d_sae=16", "--set", "k=32"], "k: must be"),
    ("train-data-missing", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={tmp}/no.jsonl"], "no file at"),
    ("train-data-dir", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={emptydir}"], "dataset_path"),
    ("train-data-dir-suffix", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={emptydir}.jsonl"], "no file"),
    ("train-data-binary", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={jsonl_binary}"], "line 2 is not valid UTF-8"),
    ("train-data-latin1", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={jsonl_latin1}"], "line 1 is not valid UTF-8"),
    ("train-data-notobj", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={jsonl_notobj}"], "not a JSON object"),
    ("train-data-empty", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={txt_empty}"], "too little text"),
    ("train-data-parquet", ["train-sae", "--out", "{new}", *TINY, "--set", "dataset_path={parquet_bad}"], "not a readable parquet"),
    ("train-cache-is-file", ["train-sae", "--out", "{new}", *TINY, "--set", "activation_cache={file}"], "is a file; give a folder"),
    ("train-context", ["train-sae", "--out", "{new}", "--set", "context_size=10000"], "longer than the model allows"),
    ("eval-missing", ["eval-sae", "{tmp}/none"], "not a train-sae run directory"),
    ("eval-file", ["eval-sae", "{file}"], "not a train-sae run directory"),
    ("eval-users-folder", ["eval-sae", "{user}"], "not a train-sae run directory"),
    ("eval-bad-config", ["eval-sae", "{lm_config}"], "Input should be a valid integer"),
    ("eval-bad-weights", ["eval-sae", "{lm_weights}"], "not a readable safetensors file"),
    ("eval-no-sae", ["eval-sae", "{lm_no_sae}"], "not a train-sae run directory"),
    ("eval-sae-width", ["eval-sae", "{lm_width}"], "d_in"),
    ("eval-sequences", ["eval-sae", "{lm_weights}", "--sequences", "0"], "--sequences: must be positive"),
    ("eval-sequences-word", ["eval-sae", "{lm_weights}", "--sequences", "many"], "invalid int value"),
    ("dash-no-out", ["dashboard", "{toy_run}"], "required: --out"),
    ("dash-missing-run", ["dashboard", "{tmp}/none", "--out", "{new}"], "no such directory"),
    ("dash-users-folder-run", ["dashboard", "{user}", "--out", "{new}"], "not a train-sae run"),
    ("dash-out-users-folder", ["dashboard", "{toy_run}", "--out", "{user}"], "not a previous run"),
    ("dash-empty-out", ["dashboard", "{toy_run}", "--out", ""], "--out: an empty path"),
    ("dash-latents", ["dashboard", "{toy_run}", "--out", "{new}", "--latents", "0"], "--latents: must be positive"),
    ("dash-unknown-sae", ["dashboard", "{toy_run}", "--out", "{new}", "--sae", "relu"], "--sae 'relu': not in this run"),
    ("dash-truncated-sae", ["dashboard", "{toy_truncated}", "--out", "{new}"], "not a readable safetensors file"),
    ("dash-misshapen-sae", ["dashboard", "{toy_shape}", "--out", "{new}"], "W_dec has shape [8, 5]"),
    ("dash-bad-cfg", ["dashboard", "{toy_cfg}", "--out", "{new}"], "not valid JSON"),
    ("analyze-missing", ["analyze", "{tmp}/none", "--prompt", "x"], "not a train-sae run directory"),
    ("analyze-no-prompt", ["analyze", "{lm_weights}"], "required: --prompt"),
    ("analyze-top", ["analyze", "{lm_weights}", "--prompt", "x", "--top", "0"], "--top: must be positive"),
    ("analyze-bad-weights", ["analyze", "{lm_weights}", "--prompt", "x"], "not a readable safetensors file"),
    # superposition convert, and SAEs of other libraries anywhere an SAE is taken
    ("convert-no-sae", ["convert", "{user}", "--to", "saelens", "--out", "{new}"], "no SAE in a known format"),
    ("convert-npz-no-threshold", ["convert", "{npz_no_threshold}", "--to", "saelens", "--out", "{new}"], "missing threshold"),
    ("convert-into-users-folder", ["convert", "{toy_run}/saes/topk", "--to", "sparsify", "--out", "{user}"], "not a previous run"),
    ("convert-misshapen", ["convert", "{toy_shape}/saes/topk", "--to", "saelens", "--out", "{new}"], "W_dec has shape [8, 5]"),
    ("eval-pickled-ae", ["eval-sae", "{pickled_ae}", "--model", "m", "--hook", "h", "--out", "{new}"], "holds pickled objects"),
    ("eval-foreign-no-out", ["eval-sae", "{toy_run}/saes/topk", "--model", "smollm2-135m-instruct", "--hook", "blocks.0.hook_resid_post"], "give --out DIR"),
    ("eval-npz-no-threshold", ["eval-sae", "{npz_no_threshold}", "--out", "{new}"], "missing threshold"),
    ("meta-no-sae", ["meta-sae", "{emptydir}", "--out", "{new}"], "no SAE in a known format"),
    # superposition autointerp and self-explain
    ("ai-missing-run", ["autointerp", "{tmp}/none", "--out", "{new}"], "not a train-sae run directory"),
    ("ai-latent-ids", ["autointerp", "{toy_run}/saes/topk", "--out", "{new}", "--latent-ids", "3,x"], "--latent-ids '3,x': comma-separated"),
    ("ai-both-latent-flags", ["autointerp", *AI_SAE, "--out", "{new}", "--latents", "3", "--latent-ids", "1"], "give one of them"),
    ("ai-latents-zero", ["autointerp", *AI_SAE, "--out", "{new}", "--latents", "0"], "--latents: must be positive"),
    ("ai-latent-out-of-range", ["autointerp", *AI_SAE, "--out", "{new}", "--latent-ids", "4000"], "out of range"),
    ("ai-explainer", ["autointerp", *AI_SAE, "--out", "{new}", "--explainer", "gpt"], "--explainer 'gpt': use local or openai"),
    ("ai-base-url-local", ["autointerp", *AI_SAE, "--out", "{new}", "--base-url", "http://x"], "--base-url: only with --explainer openai"),
    ("ai-openai-no-model", ["autointerp", *AI_SAE, "--out", "{new}", "--explainer", "openai"], "needs --explainer-model"),
    ("ai-openai-no-key", ["autointerp", *AI_SAE, "--out", "{new}", "--explainer", "openai", "--explainer-model", "m", "--api-key-env", "SUPERPOSITION_NO_SUCH_KEY"], "set the environment variable SUPERPOSITION_NO_SUCH_KEY"),
    ("ai-sequences", ["autointerp", *AI_SAE, "--out", "{new}", "--sequences", "0"], "--sequences: must be positive"),
    ("ai-explanations-unreadable", ["dashboard", "{toy_run}", "--out", "{new}", "--explanations", "{tmp}/none"], "not a readable autointerp output"),
    ("se-scales", ["self-explain", *SE_SAE, "--out", "{new}", "--scales", "1,-2"], "--scales '1,-2': comma-separated positive"),
    ("se-scales-text", ["self-explain", *SE_SAE, "--out", "{new}", "--scales", "big"], "comma-separated positive"),
    ("se-max-tokens", ["self-explain", *SE_SAE, "--out", "{new}", "--max-tokens", "0"], "--max-tokens: must be positive"),
    # superposition compare-saes
    ("compare-experiment-run", ["compare-saes", "{toy_run}", "{toy_run}/saes/topk", "--out", "{new}"], "an experiment run holds several SAEs"),
    ("compare-into-users-folder", ["compare-saes", "{toy_run}/saes/topk", "{toy_run}/saes/topk", "--out", "{user}"], "not a previous run"),
    ("compare-misshapen", ["compare-saes", "{toy_shape}/saes/topk", "{toy_run}/saes/topk", "--out", "{new}"], "W_dec has shape [8, 5]"),
    ("compare-threshold", ["compare-saes", "{toy_run}/saes/topk", "{toy_run}/saes/topk", "--out", "{new}", "--threshold", "0"], "--threshold: must be between 0 and 1"),
] + [
    # every experiment refuses a key it does not have and a boolean seed
    (f"{name}-unknown-key", ["run", name, "--out", "{new}", "--set", "no_such_key=1"], "--set no_such_key: unknown key")
    for name in sorted(REGISTRY)
] + [(f"{name}-seed-bool", ["run", name, "--out", "{new}", "--set", "seed=true"], "valid integer") for name in sorted(REGISTRY)]
# fmt: on


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder below root with a digest of its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _materialise(argv: list[str], tmp: Path) -> list[str]:
    names = {part.split("}")[0] for a in argv for part in a.split("{")[1:]}
    paths = {"tmp": str(tmp), "new": str(tmp / "new-out")}
    for name in names - {"tmp", "new"}:
        if name == "demo_parent":  # a demo parent whose `intro` folder is a user's
            _user_dir(tmp / "demo" / "intro")
            paths[name] = str(tmp / "demo")
            continue
        path = tmp / f"{name}{SUFFIX.get(name, '')}"
        FIXTURES[name](path)
        paths[name] = str(path)
    return [a.format(**paths) for a in argv]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, capsys, argv, needle):
    args = _materialise(argv, tmp_path)
    before = _tree(tmp_path)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert needle in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superposition: error: ") and "Traceback" not in err, err
    assert _tree(tmp_path) == before
    assert not Path("/tmp/superposition-fuzz-code-ran").exists()  # no file's pickle was ever run
