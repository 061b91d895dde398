"""Hostile files, servers and ranks (issue: never write outside --out, never leak a secret, never
run the wrong model, one line for every bad input). One test (or a few) per class, each failing on
the code before the fix:

- links: a link planted at any name a command writes is replaced or refused, never written through;
- secrets: an API key or URL credentials reach no file, and no line printed;
- identity: a derived model cache is keyed by content, and the run records the model's identity;
- server answers: a malformed answer is one request's failure, never cached, never a crash;
- JSON: every JSON file written is strict (no bare NaN).
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from superposition.cli import main

QUICK_TRAIN = [
    a
    for s in ("hook_name=blocks.0.hook_resid_post", "context_size=32", "batch_size_tokens=128",
              "training_tokens=1280", "n_batches_in_buffer=3", "model_batch_size=8", "expansion_factor=2",
              "k=8", "eval_sequences=4")
    for a in ("--set", s)
]  # fmt: skip


def _one_line_exit_2(capsys, argv: list[str], needle: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("a file outside --out: never to be touched\n")
    return victim


# ---------------------------------------------------------------------- links
@pytest.mark.parametrize("name", ["report.html", "summary.json", "latent_density.png", "sae/cfg.json"])
def test_eval_in_place_refuses_a_run_holding_a_link(tiny_run, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    victim = _victim(tmp_path)
    (run / name).unlink()
    (run / name).symlink_to(victim)
    _one_line_exit_2(capsys, ["eval-sae", str(run), "--sequences", "2"], f"{name} is a symbolic link")
    assert victim.read_text().startswith("a file outside")


def test_resume_refuses_a_run_holding_a_link(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    victim = _victim(tmp_path)
    (run / "log.jsonl").unlink()
    (run / "log.jsonl").symlink_to(victim)
    _one_line_exit_2(capsys, ["train-sae", "--out", str(run), "--resume"], "log.jsonl is a symbolic link")
    assert victim.read_text().startswith("a file outside")


def test_a_lock_file_planted_as_a_link_is_refused(tmp_path, capsys):
    victim = _victim(tmp_path)
    (tmp_path / ".out.lock").symlink_to(victim)
    _one_line_exit_2(
        capsys, ["run", "intro", "--quick", "--out", str(tmp_path / "out")], "is a symbolic link"
    )
    assert victim.read_text().startswith("a file outside") and not (tmp_path / "out").exists()


def test_replacing_an_output_replaces_its_links_and_never_writes_through_them(tmp_path, capsys):
    from superposition.sae import SAEConfig, make_sae
    from superposition.sae.io import save_sae

    cfg = SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2)
    for name, seed in (("a", 0), ("b", 1)):
        save_sae(make_sae(cfg, torch.Generator().manual_seed(seed)), tmp_path / name)
    out = tmp_path / "cmp"
    argv = ["compare-saes", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    assert main(argv) == 0
    victim = _victim(tmp_path)
    for name in ("report.html", "summary.json", "families.png"):  # names the marker lists
        (out / name).unlink()
        (out / name).symlink_to(victim)
    assert main(argv) == 0
    assert victim.read_text().startswith("a file outside")
    assert not any(p.is_symlink() for p in out.rglob("*")) and json.loads((out / "summary.json").read_text())


def test_an_atomic_write_replaces_a_link_instead_of_following_it(tmp_path):
    from superposition.atomic import atomic_write_text, write_json

    victim = _victim(tmp_path)
    (tmp_path / "a.json").symlink_to(victim)
    (tmp_path / "b.txt").symlink_to(victim)
    write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_text(tmp_path / "b.txt", "text")
    assert victim.read_text().startswith("a file outside")
    assert not (tmp_path / "a.json").is_symlink() and json.loads((tmp_path / "a.json").read_text()) == {
        "x": 1
    }


def test_an_activation_cache_holding_a_link_is_refused(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    victim = _victim(tmp_path)
    (cache / "state.json").symlink_to(victim)
    argv = ["train-sae", "--out", str(tmp_path / "r"), *QUICK_TRAIN, "--set", f"activation_cache={cache}"]
    _one_line_exit_2(capsys, argv, "state.json is a symbolic link")
    assert victim.read_text().startswith("a file outside") and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- secrets
def test_redact_covers_keys_urls_and_headers():
    from superposition.redact import redact, register

    register("sk-live-0123456789abcdef")
    text = (
        "HTTP 400: you sent Authorization: Bearer sk-live-0123456789abcdef to "
        "http://alice:hunter2@gateway.local/v1 with api_key=abcd1234efgh and sk-other-9876543210"
    )
    out = redact(text)
    for secret in ("sk-live-0123456789abcdef", "hunter2", "alice", "abcd1234efgh", "sk-other-9876543210"):
        assert secret not in out, out
    assert "http://***@gateway.local/v1" in out and "HTTP 400" in out


def test_no_secret_reaches_any_file_or_line(tiny_run, server, tmp_path, capsys, monkeypatch):
    """A gateway that echoes the Authorization header in its 4xx text, and credentials in
    --base-url: neither the key nor the URL's password appears in any file autointerp writes
    (explanations, summary, config, report, the answer cache) or in anything it prints."""
    monkeypatch.setenv("HOSTILE_KEY", "sk-secret-4242424242")
    url = server.replace("http://", "http://alice:hunter2@")
    out, cache = tmp_path / "ai", tmp_path / "cache"
    code = main(["autointerp", str(tiny_run), "--out", str(out), "--latents", "2", "--sequences", "24",
                 "--explainer", "openai", "--explainer-model", "echo-auth", "--base-url", url,
                 "--api-key-env", "HOSTILE_KEY", "--cache", str(cache)])  # fmt: skip
    printed = "".join(capsys.readouterr())
    assert code == 0, printed
    files = [p for p in (*out.rglob("*"), *cache.rglob("*")) if p.is_file()]
    assert any(p.name == "explanations.jsonl" for p in files)
    rows = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert any("error" in r and "Authorization" in r["error"] for r in rows)  # the echo was there ...
    for text in [p.read_text(errors="replace") for p in files] + [printed]:
        assert "sk-secret-4242424242" not in text and "hunter2" not in text  # ... and redacted


# ---------------------------------------------------------------------- the model's identity
def test_a_gguf_cache_is_keyed_by_content_not_name_and_size(tmp_path, monkeypatch):
    from superposition.lm import model as lm_model

    monkeypatch.setenv("SUPERPOSITION_CACHE", str(tmp_path / "cache"))
    converted = []

    def fake_convert(gguf, folder):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(gguf.read_bytes())
        (folder / lm_model.PORTABLE).write_text("1\n")  # a finished conversion is marked, as the real one's
        converted.append(folder)

    monkeypatch.setattr(lm_model, "_convert_gguf", fake_convert)
    a, b = tmp_path / "a" / "tune.gguf", tmp_path / "b" / "tune.gguf"
    for p, byte in ((a, b"\x01"), (b, b"\x02")):
        p.parent.mkdir()
        p.write_bytes(b"GGUF" + byte * 64)  # same name, same size, other weights
    folder_a, folder_b = lm_model.resolve(str(a)), lm_model.resolve(str(b))
    assert folder_a != folder_b and len(converted) == 2
    assert Path(folder_b, "model.safetensors").read_bytes() == b.read_bytes()
    assert lm_model.resolve(str(a)) == folder_a and len(converted) == 2  # the same file: its own copy again


# ---------------------------------------------------------------------- server answers
@pytest.mark.parametrize("model", ["badlogprob", "numcontent", "badusage"])
def test_a_malformed_answer_fails_its_request_and_is_never_cached(server, tmp_path, monkeypatch, model):
    from superposition.interp.clients import CachedClient, OpenAIClient, Request

    monkeypatch.setenv("FAKE_KEY", "sk-test")
    client = CachedClient(OpenAIClient(model, server, api_key_env="FAKE_KEY", max_retries=0), tmp_path)
    a = client.complete([Request((("user", "q"),), choices=("Yes", "No"))])[0]
    assert a.error is not None and a.error.startswith("malformed response"), a
    assert client.usage.failed == 1 and not [p for p in tmp_path.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------- strict JSON
def test_json_files_are_strict_even_for_non_finite_numbers(tmp_path):
    from superposition.atomic import write_json, write_jsonl

    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    write_jsonl(tmp_path / "r.jsonl", [{"x": float("-inf")}])
    strict = {"parse_constant": lambda c: (_ for _ in ()).throw(ValueError(c))}
    assert json.loads((tmp_path / "s.json").read_text(), **strict) == {"a": None, "b": [None, 1.5]}
    assert json.loads((tmp_path / "r.jsonl").read_text(), **strict) == {"x": None}
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl", "s.json"]  # no temporary file left beside them


# ---------------------------------------------------------------------- weights
def _sae_folder(folder: Path, tensors: dict, cfg: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg or {"architecture": "standard", "d_in": 4, "d_sae": 8}))
    return folder


def _weights(**change) -> dict:
    t = {
        "W_enc": torch.randn(4, 8),
        "W_dec": torch.randn(8, 4),
        "b_enc": torch.zeros(8),
        "b_dec": torch.zeros(4),
    }
    return {**t, **change}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"W_dec": torch.full((8, 4), float("nan"))}, "W_dec holds 32 non-finite values"),
        ({"b_enc": torch.tensor([float("inf")] + [0.0] * 7)}, "b_enc holds 1 non-finite values"),
        ({"W_enc": torch.ones(4, 8, dtype=torch.int8)}, "W_enc is int8; SAE weights must be"),
        ({"W_enc": torch.ones(4, 8, dtype=torch.bool)}, "W_enc is bool"),
        ({"W_dec": torch.ones(8, 4, dtype=torch.float8_e4m3fn)}, "W_dec is float8_e4m3fn"),
        ({"W_enc": torch.ones(4, 8, dtype=torch.complex64)}, "W_enc is complex64"),
    ],
    ids=["nan", "inf", "int8", "bool", "float8", "complex"],
)
def test_weights_that_are_not_finite_floats_are_refused_in_one_line(tmp_path, capsys, change, needle):
    sae = _sae_folder(tmp_path / "sae", _weights(**change))
    _one_line_exit_2(capsys, ["convert", str(sae), "--to", "saelens", "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


def test_a_claimed_width_is_checked_before_it_is_allocated(tmp_path, capsys):
    sae = _sae_folder(
        tmp_path / "sae", _weights(), {"architecture": "standard", "d_in": 4, "d_sae": 400_000_000}
    )
    _one_line_exit_2(capsys, ["convert", str(sae), "--to", "saelens", "--out", str(tmp_path / "o")],
                     "W_dec has shape [8, 4], but the config claims d_sae 400000000")  # fmt: skip


def test_a_gemma_scope_file_of_strings_is_refused(tmp_path, capsys):
    import numpy as np

    arrays = {k: np.zeros(s, np.float32) for k, s in (("W_enc", (4, 8)), ("W_dec", (8, 4)), ("b_enc", 8),
                                                       ("b_dec", 4), ("threshold", 8))}  # fmt: skip
    arrays["W_enc"] = np.array([["x"] * 8] * 4)
    np.savez(tmp_path / "params.npz", **arrays)
    _one_line_exit_2(capsys, ["convert", str(tmp_path / "params.npz"), "--to", "saelens", "--out",
                              str(tmp_path / "o")], "W_enc holds <U1 values, not numbers")  # fmt: skip


@pytest.mark.parametrize("rows", [1, 0], ids=["one-latent", "all-zero-decoder"])
def test_a_meta_sae_needs_directions(tmp_path, capsys, rows):
    d_sae = 1 if rows == 1 else 8
    t = {"W_enc": torch.randn(4, d_sae), "W_dec": torch.randn(d_sae, 4) if rows else torch.zeros(d_sae, 4),
         "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(4)}  # fmt: skip
    sae = _sae_folder(tmp_path / "sae", t, {"architecture": "standard", "d_in": 4, "d_sae": d_sae})
    _one_line_exit_2(capsys, ["meta-sae", str(sae), "--out", str(tmp_path / "m"), "--width", "1", "--k", "1"],
                     f"{rows} non-zero decoder rows of {d_sae}; a meta-SAE needs at least 2")  # fmt: skip


# ---------------------------------------------------------------------- resume layouts
def _hook_parallel_run(run: Path) -> None:
    from superposition.lm.config import LMSAEConfig

    cfg = LMSAEConfig.build({"hook_name": ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                             "parallel": "hooks"})  # fmt: skip
    (run / "checkpoint" / "rank0-of-2").mkdir(parents=True)
    (run / "checkpoint" / "rank1-of-2").mkdir()
    (run / "config.json").write_text(json.dumps(cfg.model_dump()))
    (run / "log.jsonl").write_text('{"step": 0, "mse": 1.0}\n')


def test_a_hook_parallel_run_resumes_with_its_own_processes_or_refuses(tmp_path, capsys):
    run = tmp_path / "run"
    _hook_parallel_run(run)
    before = (run / "log.jsonl").read_text()
    _one_line_exit_2(capsys, ["train-sae", "--out", str(run), "--resume"],
                     "was checkpointed by 2 hook-parallel processes; resume it with --nproc 2 (it was given 1)")  # fmt: skip
    assert (run / "log.jsonl").read_text() == before  # not restarted from step 0


@pytest.mark.parametrize("text", ['{"hook_name": "blocks.0.hook_resid_post", ', b"\xff\xfe\x00", "[1, 2]"],
                         ids=["truncated", "not-utf8", "not-an-object"])  # fmt: skip
def test_a_damaged_config_json_on_resume_is_one_line(tmp_path, capsys, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    _one_line_exit_2(capsys, ["train-sae", "--out", str(run), "--resume"], "config.json is not")


def test_a_torn_or_damaged_log_is_read_without_its_bad_lines(tmp_path):
    from superposition.runs.evaluate import read_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0, "mse": 1.5, "hook_name": "h"}\n{"step": 1, "mse": "abc", "l0": 3}\n'
                   '[1]\n{"step": "2"}\n{"step": 3, "mse": 0.5')  # the last line cut by a kill  # fmt: skip
    assert read_log(log) == [{"step": 0, "mse": 1.5, "hook_name": "h"}, {"step": 1, "l0": 3}]


# ---------------------------------------------------------------------- inputs that expand
def test_yaml_aliases_and_huge_config_files_are_refused(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    ) + "hook_name: *i\n")  # fmt: skip
    _one_line_exit_2(capsys, ["train-sae", "--config", str(bomb), "--out", str(tmp_path / "o")],
                     "aliases (*name) are not allowed")  # fmt: skip
    big = tmp_path / "big.yaml"
    big.write_text("k: 32\n" + "#" * (2 << 20))
    _one_line_exit_2(capsys, ["train-sae", "--config", str(big), "--out", str(tmp_path / "o")], "at most")


def test_brace_alternatives_are_bounded_before_they_expand():
    from superposition.errors import SuperpositionError
    from superposition.lm.hooks import expand_hooks

    with pytest.raises(SuperpositionError, match="expand to more than 4096 names"):
        expand_hooks("blocks." + "{0,1}" * 24 + ".hook_resid_post", 30)


def test_a_long_document_is_tokenised_in_pieces_and_packed_in_linear_time():
    from superposition.lm import data

    class Tok:
        bos_token_id, eos_token_id = 0, 1
        longest = 0

        def __call__(self, text, add_special_tokens=False):
            Tok.longest = max(Tok.longest, len(text))
            return {"input_ids": [2 + (len(w) % 50) for w in text.split()]}

    doc = "word " * (data.PIECE // 2)  # 2.5 pieces
    seqs = list(data.packed_sequences(Tok(), iter([doc, "", "   "]), 128))
    assert Tok.longest <= data.PIECE
    assert sum(int((s > 1).sum()) for s in seqs) == len(seqs) * 127 <= data.PIECE // 2  # every word kept
    assert (
        list(data.packed_sequences(Tok(), iter(["", " \n"] * 1000), 16)) == []
    )  # empty documents add nothing


def test_more_processes_than_cores_is_one_line_before_any_starts(tmp_path, capsys):
    _one_line_exit_2(capsys, ["train-sae", "--out", str(tmp_path / "o"), "--nproc", "64"],
                     f"nproc: 64 processes, but this machine has {os.cpu_count()} CPU cores")  # fmt: skip
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- waits and bounds
def test_a_corpus_of_empty_documents_is_one_line_not_a_loop(tmp_path, capsys):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text('{"text": ""}\n' * 500 + '{"text": "   "}\n' * 500)
    _one_line_exit_2(capsys, ["train-sae", "--out", str(tmp_path / "o"), *QUICK_TRAIN, "--set",
                              f"dataset_path={corpus}"], "too little text")  # fmt: skip


def test_a_prompt_longer_than_the_context_is_one_line(tiny_run, capsys):
    _one_line_exit_2(capsys, ["analyze", str(tiny_run), "--prompt", "word " * 9000], "reads at most 8192")


def test_an_unreachable_server_is_found_before_the_held_out_pass(
    tiny_run, server, tmp_path, capsys, monkeypatch
):
    from superposition.runs import targets

    def never(self):
        raise AssertionError("the model was loaded before the server was checked")

    monkeypatch.setattr(targets.LMRun, "load_model", never)
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    _one_line_exit_2(capsys, ["autointerp", str(tiny_run), "--out", str(tmp_path / "o"), "--explainer", "openai",
                              "--explainer-model", "nope", "--base-url", server, "--api-key-env", "FAKE_KEY"],
                     "has no such model (404)")  # fmt: skip


@pytest.mark.alone  # signals a real process 8 s in: make test runs it after the rest
def test_sigterm_stops_a_run_like_ctrl_c_and_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "superposition", "run", "geometry", "--quick", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(8)  # well inside training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []  # neither the run nor its staging folder


def test_a_sigterm_while_the_process_exits_adds_nothing_to_the_one_line(tmp_path):
    """torchrun's agent stops the other ranks of a failed run with SIGTERM, and it can arrive after a
    rank printed its one-line error, while its interpreter runs its exit handlers: raised there, the
    run's handler printed a traceback. Once main has returned, SIGTERM ends the process as it did
    before main (CI saw rank 0 do this); while the line is printed, or a written run says where it
    is, it waits for the lines."""
    import signal
    import subprocess
    import sys

    def python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    def one_error_line(err: str) -> bool:
        lines = err.strip().splitlines()
        return len(lines) == 1 and lines[0].startswith("superposition: error:")

    before = signal.getsignal(signal.SIGTERM)
    assert main(["no-such-command"]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    done = python(
        "import atexit, os, signal, sys, time\n"
        "from superposition.cli import main\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))\n"
        "sys.exit(main(['run', 'no-such-experiment']))\n"
    )
    assert done.returncode == -signal.SIGTERM and one_error_line(done.stderr), done.stderr
    # nor while the line is being printed: the run has stopped, the line comes first
    done = python(
        "import os, signal, sys\n"
        "import superposition.cli as cli\n"
        "fail = cli._fail\n"
        "cli._fail = lambda message: (os.kill(os.getpid(), signal.SIGTERM), fail(message))[1]\n"
        "sys.exit(cli.main(['run', 'no-such-experiment']))\n"
    )
    assert done.returncode == 2 and one_error_line(done.stderr), done.stderr
    # nor while a run that has written its folder prints where it is: it was not interrupted
    done = python(
        "import builtins, os, pathlib, signal, sys, types\n"
        "import superposition.cli as cli, superposition.commands as commands\n"
        "done = types.SimpleNamespace(folder=None, message='', report=True)\n"
        "commands.execute = lambda name, opts, out: (pathlib.Path(out), done)\n"
        "cli.print = lambda *a, **k: (os.kill(os.getpid(), signal.SIGTERM), builtins.print(*a, **k))\n"
        f"sys.exit(cli.main(['run', 'intro', '--out', {str(tmp_path / 'r')!r}]))\n"
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == [
        f"wrote {tmp_path / 'r'}",
        f"report: {tmp_path / 'r' / 'report.html'}",
    ]


def test_an_hf_address_is_printed_as_typed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_line_exit_2(capsys, ["eval-sae", "hf://someone/saes/layer_3", "--model", "m", "--hook", "h",
                                    "--out", str(tmp_path / "o")], "hf://someone/saes/layer_3")  # fmt: skip
    assert "hf:/someone" not in err


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_timeout(server, monkeypatch):
    """--timeout bounds each answer, not each read: a body trickled a byte every 0.2 s (40 s in all)
    fails its request after about the timeout, as a silent server does."""
    import time

    from superposition.interp.clients import OpenAIClient, Request

    monkeypatch.setenv("FAKE_KEY", "sk-test")
    client = OpenAIClient("trickle", server, api_key_env="FAKE_KEY", timeout=1.0, max_retries=0)
    started = time.monotonic()
    a = client.complete([Request((("user", "q"),))])[0]
    assert a.error is not None and "timed out" in a.error, a
    assert time.monotonic() - started < 10
