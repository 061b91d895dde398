"""The example notebook runs top to bottom in a real Jupyter kernel (nbclient), with figures
inline: its cells assert what they show (a toy model's geometry, an SAE's recovery, an LM SAE
loaded from a folder encoding plain token rows)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_the_tour_notebook_runs(tmp_path, smol):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # the figure is shown inline as an image, so the library left matplotlib's backend alone
    assert any("image/png" in o.get("data", {}) for o in outputs)
    # progress bars without ipywidgets: a plain bar, not tqdm.auto's "IProgress not found" warning
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "IProgress" not in text and "TqdmWarning" not in text
    # a loaded or trained SAE hands back tensors without gradients to numbers and prints
    assert "requires_grad" not in text
