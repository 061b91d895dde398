"""dictionary_learning side of check_formats.py; runs in its own environment (not a dependency),
with the library's model classes imported from PyPI's dictionary-learning 0.1.0 (its package
__init__ needs nnsight, which these classes do not, so the package is entered directly).

    python formats_dictlearn_worker.py write DIR   one ae.pt + config.json folder per dict_class in
                                                   DIR/dictlearn/, with the class's own outputs on
                                                   DIR/x.safetensors beside each

Outputs: z = ae.encode(x) and x_hat = ae.decode(z) with the classes' default arguments.
"""

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

spec = importlib.util.find_spec("dictionary_learning")
package = types.ModuleType("dictionary_learning")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["dictionary_learning"] = package
dictionary = importlib.import_module("dictionary_learning.dictionary")
top_k = importlib.import_module("dictionary_learning.trainers.top_k")
batch_top_k = importlib.import_module("dictionary_learning.trainers.batch_top_k")
matryoshka = importlib.import_module("dictionary_learning.trainers.matryoshka_batch_top_k")

D, M, K = 16, 64, 4


def write(root: Path) -> None:
    x = load_file(str(root / "x.safetensors"))["x"]
    models = {
        "AutoEncoder": dictionary.AutoEncoder(D, M),
        "GatedAutoEncoder": dictionary.GatedAutoEncoder(D, M),
        "JumpReluAutoEncoder": dictionary.JumpReluAutoEncoder(D, M),
        "AutoEncoderTopK": top_k.AutoEncoderTopK(D, M, K),
        "BatchTopKSAE": batch_top_k.BatchTopKSAE(D, M, K),
        "MatryoshkaBatchTopKSAE": matryoshka.MatryoshkaBatchTopKSAE(D, M, K, [16, 16, 32]),
    }
    for n, (name, ae) in enumerate(models.items()):
        g = torch.Generator().manual_seed(300 + n)
        with torch.no_grad():
            for pname, p in ae.named_parameters():
                scale = 0.3 if "bias" in pname or pname.startswith("b_") else 1.0
                p.copy_(
                    torch.rand(p.shape, generator=g) * 0.6 + 0.1
                    if pname == "threshold"
                    else torch.randn(p.shape, generator=g) * scale
                )
            if hasattr(ae, "threshold") and not isinstance(ae.threshold, torch.nn.Parameter):
                ae.threshold.fill_(0.35)  # a trained BatchTopK threshold (a buffer)
        folder = root / "dictlearn" / name
        folder.mkdir(parents=True)
        torch.save(ae.state_dict(), folder / "ae.pt")
        trainer = {
            "dict_class": name,
            "activation_dim": D,
            "dict_size": M,
            "lm_name": "EleutherAI/pythia-70m-deduped",
            "layer": 3,
        }
        if hasattr(ae, "k"):
            trainer["k"] = K
        (folder / "config.json").write_text(json.dumps({"trainer": trainer}))
        with torch.no_grad():
            z = ae.encode(x)
            out = {"z": z.contiguous(), "x_hat": ae.decode(z).contiguous()}
        save_file(out, str(root / "dictlearn" / f"{name}.out.safetensors"))


if __name__ == "__main__":
    {"write": write}[sys.argv[1]](Path(sys.argv[2]))
