"""circuit-tracer's (and dictionary_learning's) side of check_circuit_tracer.py; runs in the
circuit-tracer environment (circuit-tracer 0.5.0, nnsight 0.6.3, transformers 4.57), never in ours.

    python circuit_tracer_worker.py logits FOLDER IDS OUT
        transformers 4.57 loads the model folder: logits on IDS (a JSON list) and the tokenizer's ids
        of a fixed sentence, into OUT (safetensors + JSON beside it)
    python circuit_tracer_worker.py attribute FOLDER plt|clt TRANSCODERS IDS OUT [MAX_FEATURE_NODES]
        circuit-tracer's attribution graph of IDS through the model with the transcoders (a folder
        of layer_L.safetensors per-layer transcoders, or a CLT folder in its own layout), NNsight
        backend on the CPU: adjacency, nodes, logits, pruned masks and scores into OUT
    python circuit_tracer_worker.py relu_clt FOLDER X OUT
        circuit-tracer's own ReLU CLT written into FOLDER by its to_safetensors; its activations of X
    python circuit_tracer_worker.py crosscoder AE_PT DICTLEARN_SRC X OUT
        dictionary_learning's (Minder et al.'s fork, the checkout at DICTLEARN_SRC) CrossCoder or
        BatchTopKCrossCoder `from_pretrained(AE_PT)`: its activations and reconstructions of X
"""

import importlib
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SENTENCE = "The capital of France is Paris, and the capital of Italy is Rome."


def logits(folder: str, ids: str, out: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(torch.tensor([json.loads(ids)])).logits[0]
    save_file({"logits": got.contiguous()}, out)
    try:
        tokens = AutoTokenizer.from_pretrained(folder)(SENTENCE).input_ids
    except Exception as err:  # what 4.57 makes of a folder is the point: recorded, not raised
        tokens = f"{type(err).__name__}: {str(err)[:120]}"
    info = {"tokens": tokens, "rope_theta": getattr(model.config, "rope_theta", None),
            "transformers": __import__("transformers").__version__}  # fmt: skip
    Path(out).with_suffix(".json").write_text(json.dumps(info))


def attribute(folder: str, kind: str, transcoders: str, ids: str, out: str, max_nodes: str = "") -> None:
    from circuit_tracer import ReplacementModel
    from circuit_tracer import attribute as ct_attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    if kind == "clt":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        tc = load_clt(transcoders, feature_input_hook="hook_resid_mid", feature_output_hook="hook_mlp_out",
                      device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False)  # fmt: skip
    else:
        from circuit_tracer.transcoder.single_layer_transcoder import TranscoderSet, load_relu_transcoder

        files = sorted(Path(transcoders).glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
        tcs = {
            i: load_relu_transcoder(
                str(p),
                i,
                device=torch.device("cpu"),
                dtype=torch.float32,
                lazy_encoder=False,
                lazy_decoder=False,
            )  # fmt: skip
            for i, p in enumerate(files)
        }
        tc = TranscoderSet(
            tcs, feature_input_hook="mlp.hook_in", feature_output_hook="hook_mlp_out", scan="check"
        )
    model = ReplacementModel.from_pretrained_and_transcoders(
        folder, tc, backend="nnsight", device=torch.device("cpu"), dtype=torch.float32
    )
    graph = ct_attribute(torch.tensor(json.loads(ids)), model, batch_size=64,
                         max_feature_nodes=int(max_nodes) if max_nodes else None)  # fmt: skip
    pruned = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    replacement, completeness = compute_graph_scores(graph)
    feats = graph.active_features[graph.selected_features]
    tensors = {
        "adjacency": graph.adjacency_matrix.float().contiguous(),
        "features": feats.long().contiguous(),  # (layer, position, latent) of each feature node
        "activations": graph.activation_values[graph.selected_features].float().contiguous(),
        "logit_ids": torch.tensor([t.vocab_idx for t in graph.logit_targets], dtype=torch.long),
        "logit_probs": graph.logit_probabilities.float().contiguous(),
        "node_mask": pruned.node_mask.to(torch.uint8).contiguous(),
        "edge_mask": pruned.edge_mask.to(torch.uint8).contiguous(),
        "n_active": torch.tensor(int(graph.active_features.shape[0])),
    }
    save_file(tensors, out)
    Path(out).with_suffix(".json").write_text(
        json.dumps({"replacement_score": float(replacement), "completeness_score": float(completeness)})
    )


def relu_clt(folder: str, x: str, out: str) -> None:
    """circuit-tracer's own ReLU CLT (random weights), written by its `to_safetensors`, and its
    activations of X (batch, n_layers, d)."""
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    xs = load_file(x)["x"]
    n, d = xs.shape[1], xs.shape[2]
    clt = CrossLayerTranscoder(n, 24, d, activation_function="relu", lazy_decoder=False,
                               device=torch.device("cpu"), dtype=torch.float32)  # fmt: skip
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    clt.to_safetensors(folder)
    with torch.no_grad():
        z = clt.encode(xs.transpose(0, 1)).transpose(0, 1)
    save_file({"z": z.contiguous()}, out)


def crosscoder(ae_pt: str, src: str, x: str, out: str) -> None:
    # the fork's package __init__ imports training code (nnsight, datasets); its classes need neither
    root = Path(src) / "dictionary_learning"
    package = types.ModuleType("dictionary_learning")
    package.__path__ = [str(root)]
    sys.modules["dictionary_learning"] = package
    dictionary = importlib.import_module("dictionary_learning.dictionary")
    cfg = json.loads((Path(ae_pt).parent / "config.json").read_text())["trainer"]
    cls = getattr(dictionary, cfg["dict_class"])
    ae = cls.from_pretrained(ae_pt)
    xs = load_file(x)["x"]
    with torch.no_grad():
        z = ae.encode(xs)
        x_hat = ae.decode(z)
    save_file({"z": z.contiguous(), "x_hat": x_hat.contiguous()}, out)


if __name__ == "__main__":
    commands = {"logits": logits, "attribute": attribute, "relu_clt": relu_clt, "crosscoder": crosscoder}
    commands[sys.argv[1]](*sys.argv[2:])
