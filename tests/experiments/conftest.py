import json

import pytest

from superposition.experiments import run_experiment


@pytest.fixture
def run_quick(tmp_path_factory):
    """Run an experiment's quick form; return its run directory and summary.json."""

    def run(name, *overrides):
        out = tmp_path_factory.mktemp(name) / "run"
        run_experiment(name, out, quick=True, overrides=list(overrides))
        return out, json.loads((out / "summary.json").read_text())

    return run
