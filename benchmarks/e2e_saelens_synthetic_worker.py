"""SAELens side of bench_sae_grid.py's end-to-end run: what a SAELens user writes to train a TopK
SAE on synthetic data with SAELens's own tools (sae_lens.synthetic: FeatureDictionary,
ActivationGenerator, train_toy_sae), data generated during training. Runs in SAELens's environment
(not a dependency); writes the decoder and the true features for the MCC.

    python e2e_saelens_synthetic_worker.py OUT N_FEATURES D D_SAE K SAMPLES SEED LR

The data match `superposition run sae-synthetic`'s: N_FEATURES random unit directions (no
orthogonalisation), feature i firing with probability ∝ (i+1)^-0.8 scaled to K active on average,
magnitudes with the mean and standard deviation of a uniform on (0, 1] (SAELens draws
ReLU(mean + std·N(0, 1)) rather than uniforms).
"""

import sys

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, train_toy_sae
from safetensors.torch import save_file

out, n, d, d_sae, k, samples, seed, lr = sys.argv[1:9]
n, d, d_sae, k, samples, seed, lr = int(n), int(d), int(d_sae), int(k), int(samples), int(seed), float(lr)
torch.manual_seed(seed)
features = FeatureDictionary(n, d, initializer=None, seed=seed)
weights = (torch.arange(n, dtype=torch.float64) + 1) ** -0.8
probability = (weights * k / weights.sum()).clamp(max=1.0).float()
generator = ActivationGenerator(
    n, firing_probabilities=probability, mean_firing_magnitudes=0.5, std_firing_magnitudes=12**-0.5
)
sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
train_toy_sae(sae, features, generator, training_samples=samples, batch_size=1024, lr=lr)
save_file(
    {"W_dec": sae.W_dec.detach().contiguous(), "features": features.feature_vectors.detach().contiguous()},
    out,
)
