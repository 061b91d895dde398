"""SAELens side of check_saelens_snippets.py; runs in SAELens's own environment (not a dependency).

python snippets_saelens_worker.py DIR   runs saelens_snippets.run with sae_lens.SAE on every SAE
                                        folder in DIR/saes/ and writes DIR/<case>.saelens.safetensors
"""

import sys
from pathlib import Path

from sae_lens import SAE
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saelens_snippets import run  # noqa: E402

root = Path(sys.argv[1])
inputs = load_file(str(root / "inputs.safetensors"))
for folder in sorted((root / "saes").iterdir()):
    out = run(SAE, str(folder), inputs["x"], inputs["W_U"])
    save_file(
        {k: v.detach().clone().contiguous() for k, v in out.items()},
        str(root / f"{folder.name}.saelens.safetensors"),
    )
