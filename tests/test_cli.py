"""The CLI contract: list, run, and one-line errors with exit code 2 and nothing half-written."""

import os
import subprocess
import sys

import pytest

from superposition.cli import main
from superposition.experiments import make_config


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_experiment(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    for name in (
        "intro",
        "importance",
        "correlated",
        "geometry",
        "neurons",
        "compute-abs",
        "phase-diagram",
        "dynamics",
        "double-descent",
    ):
        assert any(line.startswith(name) for line in out.splitlines())


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "nope", "--out", "{tmp}/x"], "unknown experiment 'nope'; available: "),
        (["run", "intro", "--out", "{tmp}/x", "--set", "bogus=1"], "--set bogus: unknown key; allowed: "),
        (["run", "intro", "--out", "{tmp}/x", "--set", "steps=ten"], "--set steps:"),
        (
            ["run", "intro", "--out", "{tmp}/x", "--set", "steps=0"],
            "--set steps: Input should be greater than 0",
        ),
        (
            ["run", "intro", "--out", "{tmp}/x", "--set", "feature_probability=1.5"],
            "--set feature_probability",
        ),
        (
            ["run", "intro", "--out", "{tmp}/x", "--set", "feature_probability=[0.5,0.2]"],
            "one value per instance",
        ),
        (["run", "intro", "--out", "{tmp}/x", "--set", "lr=-1"], "--set lr: Input should be greater than 0"),
        (["run", "intro", "--out", "{tmp}/x", "--set", "d_hidden"], "expected key=value"),
        (["run", "intro", "--out", "{tmp}/x", "--seed", "abc"], "invalid int value"),
        (["run", "intro"], "--out"),
        (["run", "intro", "--out", "{tmp}/file.txt"], "exists and is not a directory"),
        (["run", "intro", "--out", "{tmp}/notrun"], "not empty and is not a previous run"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "precious.txt").write_text("keep me")
    before = sorted(os.listdir(tmp_path))
    code, out, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing half-written
    assert (tmp_path / "notrun" / "precious.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = _run(capsys, "run", "intro", "--out", str(ro / "run"))
    assert code == 2 and "cannot write there" in err


def test_unwritable_out_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    code, _, err = _run(capsys, "run", "intro", "--out", str(tmp_path / "f" / "run"))
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1


def test_failure_during_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    from superposition.experiments import base

    def boom(cfg, out):
        (out / "partial.json").write_text("{}")
        raise RuntimeError("simulated crash")

    monkeypatch.setitem(
        base.REGISTRY, "intro", base.Experiment("intro", "", base.REGISTRY["intro"].config, boom, {})
    )
    code, _, err = _run(capsys, "run", "intro", "--out", str(tmp_path / "run"))
    # an internal error is one line too (exit 1, not 2: it is not the user's input) ...
    assert code == 1 and "internal error: RuntimeError: simulated crash" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # ... and leaves nothing behind


def test_overrides_compose():
    cfg = make_config(
        "geometry", quick=True, seed=5, overrides=["n_features=50", "lr=0.01", "feature_probability=0.1"]
    )
    assert (cfg.n_features, cfg.lr, cfg.seed, cfg.feature_probability, cfg.d_hidden) == (50, 0.01, 5, 0.1, 20)
    with pytest.raises(Exception, match="importance: a list needs one value per feature"):
        make_config("intro", overrides=["importance=[1,2]"])


def test_entry_point_runs_as_a_process(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "superposition.cli",
            "run",
            "intro",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "n_instances=0",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "superposition: error: --set n_instances: Input should be greater than 0 (got 0)"
    )


def test_diverging_training_is_a_one_line_error(tmp_path, capsys):
    code, _, err = _run(
        capsys,
        "run",
        "intro",
        "--quick",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "lr=1e30",
        "--set",
        "steps=50",
    )
    assert code == 2 and "the loss is not finite" in err and "lower lr" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv",
    [["train-sae", "--help-config"], *[["run", n, "--help-config"] for n in ("intro", "sae-synthetic")]],
)
def test_help_config_prints_every_key_with_type_default_and_description(capsys, argv):
    from superposition.experiments import get_experiment
    from superposition.lm.config import LMSAEConfig

    cls = LMSAEConfig if argv[0] == "train-sae" else get_experiment(argv[1]).config
    assert main(argv) == 0
    out = capsys.readouterr().out
    for key, info in cls.model_fields.items():
        line = next(x for x in out.splitlines() if x.split()[:1] == [key])
        assert "default" in line, key
        assert info.description, f"{key} has no description"
    if argv[0] == "train-sae":  # SAE and trainer keys reach train-sae without being written there
        for key in (
            "tied",
            "weighted_l1",
            "l0_target",
            "low_precision",
            "prefixes",
            "bandwidth",
            "log_every",
        ):
            assert any(x.split()[:1] == [key] for x in out.splitlines()), key


def test_train_sae_help_points_at_help_config(capsys):
    with pytest.raises(SystemExit):
        main(["train-sae", "--help"])
    out = capsys.readouterr().out
    assert "--help-config" in out and "docs/" not in out
