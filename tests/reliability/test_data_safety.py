"""Never lose a user's data: --out replaces only an earlier output of this tool holding nothing
else, and a full disk or a read-only file system is one line with nothing half-written."""

import errno
import json
import os
import subprocess
from contextlib import contextmanager

import pytest

from superposition.atomic import MARKER
from superposition.cli import main

QUICK = ["--quick", "--set", "steps=200"]


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_users_folder_holding_a_config_json_is_never_replaced(tmp_path, capsys):
    """The reported case: config.json, src/main.py and NOTES.md were taken for a run and deleted."""
    user = tmp_path / "project"
    (user / "src").mkdir(parents=True)
    (user / "config.json").write_text("{}")
    (user / "src" / "main.py").write_text("print('mine')\n")
    (user / "NOTES.md").write_text("notes\n")
    code, err = _run(capsys, "run", "intro", *QUICK, "--out", str(user))
    assert code == 2 and "is not empty and is not a previous run of superposition" in err
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == [
        "NOTES.md",
        "config.json",
        "src",
        "src/main.py",
    ]


def test_an_earlier_run_is_replaced_whole(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "intro", *QUICK, "--out", str(out)]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "superposition" and marker["kind"] == "experiment run"
    assert set(marker["files"]) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MARKER}
    (out / "loss.png").unlink()  # a run missing files of its own is still replaceable
    assert main(["run", "importance", *QUICK, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["experiment"] == "importance"
    assert not (out / "directions.png").exists()  # the intro run's figures went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_earlier_run_with_a_users_file_added_is_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "intro", *QUICK, "--out", str(out)]) == 0
    (out / "analysis.ipynb").write_text("{}")
    code, err = _run(capsys, "run", "intro", *QUICK, "--out", str(out))
    assert code == 2 and "holds files superposition did not write (analysis.ipynb)" in err
    assert (out / "analysis.ipynb").is_file() and (out / "report.html").is_file()


def test_outputs_of_one_kind_never_replace_another(tmp_path, capsys):
    run, site = tmp_path / "run", tmp_path / "site"
    assert (
        main(
            [
                "run",
                "sae-toy",
                "--quick",
                "--set",
                "samples=20000",
                "--set",
                "toy_steps=300",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["dashboard", str(run), "--out", str(site)]) == 0
    code, err = _run(capsys, "run", "intro", *QUICK, "--out", str(site))
    assert code == 2 and "holds a superposition 'dashboard', not a experiment run" in err
    code, err = _run(capsys, "dashboard", str(run), "--out", str(run))
    assert code == 2 and (run / "summary.json").is_file()


@contextmanager
def _mounted(kind, where):
    """A 1 MiB tmpfs ('full') or a read-only bind mount ('ro') at `where`, where mounting is
    permitted (root with CAP_SYS_ADMIN); otherwise the test is skipped."""
    where.mkdir()
    if kind == "full":
        cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)]
    else:
        (where.parent / "source").mkdir()
        cmd = ["mount", "-o", "bind,ro", str(where.parent / "source"), str(where)]
    if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("mounting a file system needs root with CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize(
    "kind, reason", [("full", "No space left on device"), ("ro", "Read-only file system")]
)
def test_a_full_or_read_only_file_system_is_one_line_and_leaves_nothing(tmp_path, capsys, kind, reason):
    with _mounted(kind, tmp_path / "mnt") as mnt:
        code, err = _run(capsys, "run", "intro", *QUICK, "--out", str(mnt / "run"))
        assert code == 2 and f"--out {mnt / 'run'}: cannot write there ({reason}" in err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert os.listdir(mnt) == []


def test_a_disk_that_fills_mid_run_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """Everywhere (no mount needed): the disk fills while the report is written."""
    from superposition.report import output

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "report.html")

    monkeypatch.setattr(output, "render_report", full)
    code, err = _run(capsys, "run", "intro", *QUICK, "--out", str(tmp_path / "run"))
    assert (
        code == 2
        and "cannot write there (No space left on device: report.html)" in err
        and err.count("\n") == 1
    )
    assert os.listdir(tmp_path) == []


def test_train_sae_on_a_full_disk_leaves_nothing_to_trip_over(tmp_path, capsys):
    with _mounted("full", tmp_path / "mnt") as mnt:
        from tests.conftest import TINY

        code, err = _run(
            capsys, "train-sae", "--out", str(mnt / "run"), *[a for s in TINY for a in ("--set", s)]
        )
        assert code == 2 and "cannot write there (No space left on device" in err
        assert err.strip().splitlines()[-1].startswith("superposition: error:")
        assert os.listdir(mnt) == []  # no checkpoint was ever written: the half-made run is removed
