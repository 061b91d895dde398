"""Every registered command keeps the CLI contract: its flags come from its options, --help-config
lists every option, and bad input of every kind is one line on stderr, exit 2, and nothing
written. The cases are generated from the registry, so a new command is checked without a line
added here."""

import hashlib
import typing
from pathlib import Path

import pytest

from superposition.cli import _scalar, main
from superposition.commands import COMMANDS
from superposition.commands.base import flag_name
from superposition.commands.base import is_positional as _is_positional


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _base_argv(cmd, tmp: Path) -> list[str]:
    """The command with every positional and required flag given (an SAE that does not exist)."""
    argv = [cmd.name]
    for key, info in cmd.options.model_fields.items():
        if _is_positional(info):
            argv.append("intro" if key == "experiment" else str(tmp / f"no-such-{key}"))
        elif info.is_required():
            typ, _ = _scalar(info.annotation)
            if typing.get_origin(typ) is typing.Literal:
                value = typing.get_args(typ)[0]
            else:
                value = "1" if typ in (int, float) else "x"
            argv += [flag_name(key, info), str(value)]
    return argv


def _bad_cases():
    """(command, extra argv, needle): an unknown flag, a non-positive count, a word for a number,
    for every command and every numeric option it has."""
    for name, cmd in sorted(COMMANDS.items()):
        yield name, ["--no-such-flag"], "unrecognized arguments: --no-such-flag"
        yield name, ["--threads", "0"], "--threads: must be positive"
        for key, info in cmd.options.model_fields.items():
            typ, _ = _scalar(info.annotation)
            if _is_positional(info) or typ not in (int, float):
                continue
            flag = flag_name(key, info)
            yield name, [flag, "many"], f"argument {flag}: invalid {typ.__name__} value: 'many'"
            if typ is float:
                yield name, [flag, "inf"], f"argument {flag}: inf is not a finite number"
                yield name, [flag, "nan"], f"argument {flag}: nan is not a finite number"
            else:
                yield (
                    name,
                    [flag, "100000000000000000000000"],
                    f"argument {flag}: 100000000000000000000000 is more than",
                )
            if any(getattr(m, "gt", None) == 0 for m in info.metadata):
                yield name, [flag, "0"], f"{flag}: must be positive, got 0"


CASES = list(_bad_cases())


def test_the_registry_holds_every_command():
    assert set(COMMANDS) >= {
        "list", "run", "demo", "train-sae", "eval-sae", "dashboard", "analyze", "convert",
        "compare-saes", "meta-sae", "autointerp", "self-explain",
    }  # fmt: skip
    assert len(CASES) > 3 * len(COMMANDS)


@pytest.mark.parametrize("name, extra, needle", CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in CASES])
def test_bad_input_of_every_command_is_one_line_exit_2_and_writes_nothing(
    tmp_path, capsys, name, extra, needle
):
    cmd = COMMANDS[name]
    argv = _base_argv(cmd, tmp_path) + extra + (["--out", str(tmp_path / "out")] if cmd.kind else [])
    before = _tree(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superposition: error: ") and "Traceback" not in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_missing_target_names_it_in_one_line(tmp_path, capsys, name):
    """Pointed at a path that does not exist, every command that reads one says so and writes nothing."""
    cmd = COMMANDS[name]
    if not any(_is_positional(i) and k != "experiment" for k, i in cmd.options.model_fields.items()):
        pytest.skip("reads no path")
    argv = _base_argv(cmd, tmp_path) + (["--out", str(tmp_path / "out")] if cmd.kind else [])
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "no-such-" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_config_lists_every_option_with_its_description(capsys, name):
    cmd = COMMANDS[name]
    argv = [name] + (["intro"] if name == "run" else []) + ["--help-config"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    shown = cmd.options if cmd.help_config is None else None
    for key, info in (shown or cmd.options).model_fields.items():
        assert info.description, f"{name}: option {key} has no description"
        if shown is not None:
            assert any(line.split()[:1] == [key] for line in out.splitlines()), (name, key)


def test_model_means_the_language_model_everywhere():
    """--model is the model the SAE reads in every command that has it (autointerp's explainer is
    --explainer-model)."""
    for name, cmd in COMMANDS.items():
        for key, info in cmd.options.model_fields.items():
            if flag_name(key, info) == "--model":
                assert key == "model" and "language model" in info.description, name
    assert "explainer_model" in COMMANDS["autointerp"].options.model_fields


def test_convert_writes_a_loadable_sae_with_its_config(tmp_path, capsys):
    """Every folder a command writes holds config.json with its options (here convert's, the one
    command whose folder is an SAE), beside what it wrote."""
    import json

    import torch

    from superposition.sae import SAEConfig, make_sae
    from superposition.sae.formats import load
    from superposition.sae.io import save_sae

    sae = make_sae(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2), torch.Generator().manual_seed(0))
    save_sae(sae, tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), "--to", "sparsify", "--out", str(tmp_path / "dst")]) == 0
    assert "wrote" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert cfg["command"] == "convert" and cfg["to"] == "sparsify" and cfg["src"] == str(tmp_path / "src")
    x = torch.randn(5, 8)
    assert torch.allclose(load(tmp_path / "dst").encode(x), sae.encode(x), atol=1e-6)


# ---------------------------------------------------------------------- hostile models and datasets
@pytest.fixture(scope="module")
def targets(hostile_models, tmp_path_factory):
    """What a model-taking command is pointed at, for the tiny model: an SAE folder and a run of
    transcoders, and a valid pairs file (so that the model, not they, is what fails)."""
    import json

    from superposition.sae import SAE, SAEConfig
    from tests.conftest import make_transcoder_run

    root = tmp_path_factory.mktemp("targets")
    good = str(hostile_models["good"])
    sae = SAE(SAEConfig(architecture="topk", d_in=64, d_sae=128, k=4, hook_name="blocks.1.hook_resid_post",
                        model_name=good)).save_model(root / "sae")  # fmt: skip
    run = make_transcoder_run(root / "run", d_model=64, model=good)
    pairs = root / "pairs.jsonl"
    pairs.write_text(json.dumps({"clean": "The cat", "patch": "The dog", "clean_answer": " is",
                                 "patch_answer": " are"}) + "\n")  # fmt: skip
    return {"sae": sae, "run": run, "pairs": pairs}


REQUIRED = {"prompt": "The cat", "latent": "0", "nodes": "0_1_1", "dataset": "{pairs}"}
MODEL_COMMANDS = sorted(n for n, c in COMMANDS.items() if "model" in c.options.model_fields)


def _pointed(name: str, targets: dict, tmp: Path, **given) -> list[str]:
    """Command `name` with its positional and required options valid (for the tiny model)."""
    cmd = COMMANDS[name]
    argv = [name]
    for key, info in cmd.options.model_fields.items():
        if key in given:
            argv += [flag_name(key, info), str(given[key])]
        elif (
            _is_positional(info) and info.is_required()
        ):  # an optional one (eval-sae's more SAEs) is left out
            argv.append(str(targets[key]))
        elif info.is_required():
            argv += [flag_name(key, info), REQUIRED[key].format(**targets)]
    if cmd.kind is not None:
        argv += ["--out", str(tmp / "out")]
    return argv


@pytest.mark.parametrize("damage", ["truncated", "gpt2-config", "no-tokenizer"])
@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_a_damaged_model_folder_is_one_line_for_every_model_flag(
    name, damage, hostile_models, targets, tmp_path, capsys
):
    model = hostile_models[damage]
    code = main(_pointed(name, targets, tmp_path, model=model))
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"model_name {str(model)!r}" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "out").exists()


DATASET_FLAGS = [
    (n, k) for n, c in sorted(COMMANDS.items()) for k in c.options.model_fields if k == "dataset"
]


@pytest.mark.parametrize("kind", ["fifo", "zero", "binary"])
@pytest.mark.parametrize("name, key", [*DATASET_FLAGS, ("train-sae", "dataset_path")])
def test_a_hostile_dataset_is_one_line_for_every_dataset_flag(
    name, key, kind, hostile_models, targets, tmp_path, capsys
):
    path, says = hostile_files_of(tmp_path)[kind]
    if key == "dataset_path":  # a config key of train-sae
        sets = [f"model_name={hostile_models['good']}", f"dataset_path={path}", "hook_name=blocks.0.hook_resid_post",
                "context_size=32", "batch_size_tokens=64", "training_tokens=128"]  # fmt: skip
        argv = ["train-sae", "--out", str(tmp_path / "out"), *[a for s in sets for a in ("--set", s)]]
    else:
        argv = _pointed(name, targets, tmp_path, **{key: path}, model=hostile_models["good"])
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err and not (tmp_path / "out").exists()


def hostile_files_of(tmp: Path) -> dict:
    import os

    fifo = tmp / "pipe.jsonl"
    os.mkfifo(fifo)
    binary = tmp / "random.txt"
    binary.write_bytes(os.urandom(100_000))
    return {"fifo": (fifo, "not a regular file"), "zero": ("/dev/zero", "not a regular file"),
            "binary": (binary, "not text")}  # fmt: skip
