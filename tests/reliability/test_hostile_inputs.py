"""Hostile models, datasets and values for the commands added since the first hostile round
(attribute, intervene, steer, circuit, finetune, CLT and crosscoder runs, eval-sae --model). One
test (or a few) per class, each failing on the code before its fix; all on tiny random Llamas, so
they cost seconds:

1. a corrupt or foreign model folder is one line naming the model (every command, every
   model-taking flag: tests/test_commands.py generates those from the registry);
2. a device is checked before any work, and a figure never loses a finished result;
3. huge values are refused, and a NaN is never printed as a result;
4. a dataset is a bounded regular file (no /dev/zero, no pipe, no 100 MB line);
5. inputs are checked before any model is loaded, and the error is the only line;
6. a binary file is not text;
7. a killed CLT or crosscoder run resumes (tests/lm/test_dictionary_runs.py);
8. a full disk during a crosscoder run names the folder it could not write;
and the leftovers: a damaged log.jsonl, duplicated node ids, a killed torchrun rank."""

import errno
import json
import os
import shutil

import pytest

from superposition.cli import main
from tests.conftest import make_transcoder_run


def one_line(capsys, argv, needle) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert needle in err and len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    return err


# ---------------------------------------------------------------------- 1. models
@pytest.mark.parametrize("damage, says", [
    ("truncated", "cannot load it (SafetensorError"),
    ("gpt2-config", "its weights do not fit its config"),
    ("no-tokenizer", "cannot load it"),
])  # fmt: skip
def test_a_damaged_second_model_of_a_crosscoder_is_one_line(hostile_models, tmp_path, capsys, damage, says):
    sets = ["architecture=crosscoder", f"model_name={hostile_models['good']}", f"model_name_b={hostile_models[damage]}",
            "hook_name=blocks.1.hook_resid_post", "context_size=32", "batch_size_tokens=64", "training_tokens=128"]  # fmt: skip
    err = one_line(
        capsys, ["train-sae", "--out", tmp_path / "cc", *[a for s in sets for a in ("--set", s)]], says
    )
    assert f"model_name {str(hostile_models[damage])!r}" in err and not (tmp_path / "cc").exists()


# ---------------------------------------------------------------------- 2. devices, figures
def test_a_device_the_machine_lacks_is_refused_before_any_work(hostile_models, tmp_path, capsys):
    for device, says in (("meta", "device 'meta': not a device models run on here"),
                         ("cuda:7", "device 'cuda:7': this machine has"), ("banana", "device 'banana': not a device")):  # fmt: skip
        one_line(
            capsys,
            ["finetune", "--out", tmp_path / "ft", "--model", hostile_models["good"], "--device", device],
            says,
        )
        assert not (tmp_path / "ft").exists()


def test_a_figure_that_cannot_be_drawn_costs_only_itself(tmp_path):
    from superposition.report.output import FigureSpec, Result, write_output

    def broken():
        raise ValueError("Data has no positive values, and therefore cannot be log-scaled.")

    result = Result(title="t", summary={"faithfulness": float("nan"), "n": 3},
                    figures=[FigureSpec("curve", "a curve", broken)])  # fmt: skip
    write_output(tmp_path / "out", "test", lambda tmp: result, {})
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"faithfulness": None, "n": 3,
                                                                          "elapsed_seconds": 0.0}  # fmt: skip
    page = (tmp_path / "out" / "report.html").read_text()
    assert "could not be drawn (ValueError: Data has no positive values" in page
    assert not (tmp_path / "out" / "curve.png").exists()


def test_a_circuit_over_pairs_the_model_cannot_tell_apart_is_one_line(hostile_models, tmp_path, capsys):
    run = make_transcoder_run(tmp_path / "tc", d_model=64, model=str(hostile_models["good"]))
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"clean": "The cat", "patch": "The dog", "clean_answer": " is",
                                "patch_answer": " is"}) + "\n")  # fmt: skip
    one_line(capsys, ["circuit", run, "--dataset", same, "--out", tmp_path / "c"],
             "clean_answer and patch_answer are the same token")  # fmt: skip
    twin = tmp_path / "twin.jsonl"
    twin.write_text(json.dumps({"clean": "The cat", "patch": "The cat", "clean_answer": " is",
                                "patch_answer": " are"}) + "\n")  # fmt: skip
    one_line(capsys, ["circuit", run, "--dataset", twin, "--out", tmp_path / "c"], "are the same tokens")
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------- 3. values
def test_huge_values_are_refused_and_nan_is_never_printed(hostile_models, tmp_path, capsys):
    run = make_transcoder_run(tmp_path / "tc", d_model=64, model=str(hostile_models["good"]))
    one_line(capsys, ["intervene", run, "--prompt", "The cat", "--nodes", "0_1_1", "--mode", "add", "--value", "1e308"],
             "--value: Input should be less than or equal to 1000000")  # fmt: skip
    one_line(capsys, ["intervene", run, "--prompt", "The cat", "--nodes", "0_1_1,0_1_1"], "named twice")
    code = main(
        [
            "intervene",
            str(run),
            "--prompt",
            "The cat sat",
            "--nodes",
            "0_1_*",
            "--mode",
            "add",
            "--value",
            "1e6",
        ]
    )
    out, err = capsys.readouterr()
    assert "nan" not in (out + err).lower().replace("nan-", "")
    assert code == 0 or "not finite" in err


# ---------------------------------------------------------------------- 4-6. datasets
@pytest.fixture
def hostile_files(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    binary = tmp_path / "random.txt"
    binary.write_bytes(os.urandom(200_000))
    long = tmp_path / "long.jsonl"
    long.write_text("x" * (2 << 20))
    return {"fifo": fifo, "binary": binary, "long": long, "zero": "/dev/zero"}


@pytest.mark.parametrize("kind, says", [
    ("fifo", "not a regular file"), ("zero", "not a regular file"),
    ("long", "a line of 2,097,152 characters"), ("binary", "not text"),
])  # fmt: skip
def test_a_circuit_dataset_is_a_bounded_regular_text_file(
    hostile_models, tmp_path, capsys, hostile_files, kind, says
):
    run = make_transcoder_run(tmp_path / "tc", d_model=64, model=str(hostile_models["good"]))
    one_line(capsys, ["circuit", run, "--dataset", hostile_files[kind], "--out", tmp_path / "c"], says)


@pytest.mark.parametrize("kind, says", [
    ("fifo", "not a regular file"), ("zero", "not a regular file"), ("binary", "not text"),
])  # fmt: skip
def test_finetune_checks_its_dataset_before_loading_any_model(
    tmp_path, capsys, monkeypatch, hostile_files, kind, says
):
    from superposition.lm import model as lm_model

    def never(*a, **k):
        raise AssertionError("the model was loaded before the dataset was read")

    monkeypatch.setattr(lm_model, "load_model", never)
    err = one_line(capsys, ["finetune", "--out", tmp_path / "ft", "--dataset", hostile_files[kind]], says)
    assert err.startswith("superposition: error: --dataset")


def test_train_sae_refuses_a_binary_text_file(hostile_models, tmp_path, capsys, hostile_files):
    sets = [f"model_name={hostile_models['good']}", f"dataset_path={hostile_files['binary']}", "hook_name=blocks.0.hook_resid_post",
            "context_size=32", "batch_size_tokens=64", "training_tokens=128"]  # fmt: skip
    one_line(
        capsys, ["train-sae", "--out", tmp_path / "r", *[a for s in sets for a in ("--set", s)]], "not text"
    )


def test_a_transfer_to_a_model_of_another_tokenizer_is_the_only_line(hostile_models, tmp_path, capsys):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from superposition.sae import SAE, SAEConfig

    other = tmp_path / "other"
    words = {w: i for i, w in enumerate(["[UNK]", "<s>", "the", "a"])}
    tok = Tokenizer(tok_models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4)).save_pretrained(other)  # fmt: skip
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>").save_pretrained(other)
    sae = SAE(SAEConfig(architecture="topk", d_in=64, d_sae=128, k=4, hook_name="blocks.1.hook_resid_post",
                        model_name=str(hostile_models["good"])))  # fmt: skip
    folder = sae.save_model(tmp_path / "sae")
    one_line(
        capsys, ["eval-sae", folder, "--model", other, "--out", tmp_path / "ev"], "has another tokenizer"
    )


# ---------------------------------------------------------------------- 8. a full disk
def test_a_full_disk_during_a_crosscoder_run_names_the_folder(hostile_models, tmp_path, capsys, monkeypatch):
    from superposition.sae.crosscoder import Crosscoder

    def full(self, folder, cfg=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "crosscoder.safetensors"))

    monkeypatch.setattr(Crosscoder, "save", full)
    out = tmp_path / "cc"
    sets = ["architecture=crosscoder", f"model_name={hostile_models['good']}", f"model_name_b={hostile_models['good']}",
            "hook_name=blocks.1.hook_resid_post", "context_size=32", "batch_size_tokens=64", "training_tokens=128",
            "d_sae=64", "k=4", "eval_sequences=2"]  # fmt: skip
    assert main(["train-sae", "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after its progress, the error is the last line
    assert last == (f"superposition: error: --out {out}: cannot write there (No space left on device: "
                    f"{out / 'crosscoder' / 'crosscoder.safetensors'}); continue with --resume once there is room "
                    "(from step 2)")  # fmt: skip


# ---------------------------------------------------------------------- leftovers
def test_a_log_with_values_that_are_not_numbers_still_evaluates(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows[0]["tokens"] = "many"
    rows[1]["mse"] = "NaN!"
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval-sae", str(run), "--sequences", "2"]) == 0, capsys.readouterr().err
    assert (run / "training_curves.png").is_file()
