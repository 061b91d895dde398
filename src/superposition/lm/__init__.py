"""Language models: loading (hub, local, GGUF), hook points, text data, the activation store,
and the evaluations that splice an SAE into the model."""
