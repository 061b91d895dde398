"""A small SAE training that checkpoints every step, for kill -9 drills (run as a process).

    python drill_worker.py CHECKPOINT_DIR OUT_FILE [STEPS]

Resumes from CHECKPOINT_DIR when it holds a checkpoint; writes the final weights to OUT_FILE.
With SUPERPOSITION_TEST_PAUSE set, every checkpoint write pauses between its stages, so a kill
at a random moment often lands inside one.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from superposition.atomic import atomic_write_bytes
from superposition.sae import SAEConfig, checkpoint, make_sae
from superposition.sae.sources import SyntheticDictionary
from superposition.sae.train import SAETrainConfig, SAETrainer

ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 40
torch.set_num_threads(1)
source = SyntheticDictionary(n_features=64, d=16, mean_l0=3, seed=0)
sae = make_sae(
    SAEConfig(architecture="topk", d_in=16, d_sae=64, k=3, n_instances=2), torch.Generator().manual_seed(0)
)
cfg = SAETrainConfig(
    steps=steps, batch_size=64, lr=1e-2, checkpoint_every=1, dead_feature_window=4, resample="anthropic",
    feature_sampling_window=7, lr_decay_steps=10, seed=3,
)  # fmt: skip
trainer = SAETrainer(sae, source, cfg, checkpoint_dir=ckpt)
if checkpoint.exists(ckpt):
    trainer.load_checkpoint()
trainer.train(progress=False)
tmp = out.with_suffix(".tmp")
save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, str(tmp))
atomic_write_bytes(out, tmp.read_bytes())
print("done", trainer.step)
