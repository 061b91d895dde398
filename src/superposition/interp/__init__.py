"""Automated interpretability: explain every latent with a language model, score the explanations
against held-out activations (with controls), and self-explanation by patching a latent's direction
into the model's own residual stream."""
