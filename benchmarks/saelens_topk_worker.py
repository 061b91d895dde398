"""Runs inside the separate SAELens environment (see bench_sae_topk.py): trains SAELens's TopK SAE
on the activations in a safetensors file and writes its time and decoder. Not part of the package."""

import json
import sys
import time

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from safetensors.torch import load_file, save_file

from measure import peak_rss_mib
from saelens_common import make_trainer

data_path, out_path, d_sae, k, batch, lr = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    int(sys.argv[5]),
    float(sys.argv[6]),
)
dead_window_samples, aux_coefficient = int(sys.argv[7]), float(sys.argv[8])
seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
torch.manual_seed(seed)  # SAELens initialises from the global generator
x = load_file(data_path)["x"]
n, d_in = x.shape


sae = TopKTrainingSAE(
    TopKTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", aux_loss_coefficient=aux_coefficient
    )
)
# a latent is dead after more than this many steps without firing: the same number of samples as ours
trainer = make_trainer(sae, x, n, batch, lr, dead_window_samples // batch, feature_sampling_window=2000)
start = time.perf_counter()
trainer.fit()
seconds = time.perf_counter() - start
save_file({"W_dec": sae.W_dec.detach().contiguous()}, out_path)
print(
    json.dumps(
        {
            "seconds": seconds,
            "samples": n,
            "threads": torch.get_num_threads(),
            "peak_rss_mib": peak_rss_mib(),
        }
    )
)
