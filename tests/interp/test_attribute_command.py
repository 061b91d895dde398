"""`superposition attribute`: the files it writes (circuit-tracer's graph JSON, safetensors, the
offline viewer, tested in Chromium) and its one-line refusals."""

import json
import re

import pytest
import torch

from superposition.cli import main
from superposition.interp.attribution import load_graph
from tests.conftest import make_transcoder_run
from tests.reliability.test_hostile import _one_line_exit_2
from tests.report.test_dashboard import _open, browser  # noqa: F401

HOSTILE = 'x = "</script><img src=x onerror=window.pwned=1>" & <b>'


@pytest.fixture(scope="module")
def graph_out(transcoder_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("attr") / "g"
    assert main(["attribute", str(transcoder_run), "--prompt", HOSTILE, "--out", str(out)]) == 0
    return out


def test_attribute_writes_the_graph_in_circuit_tracers_format(graph_out):
    summary = json.loads((graph_out / "summary.json").read_text())
    for key in ("replacement_score", "completeness_score", "n_nodes", "n_edges"):
        assert key in summary and key in summary["pruned"]
    assert 0 <= summary["pruned"]["replacement_score"] <= 1 and summary["transcoder_layers"] == [0, 1]
    assert summary["pruned"]["n_nodes"] < summary["n_nodes"]
    data = json.loads((graph_out / "graph.json").read_text())
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    assert data["metadata"]["prompt"] == HOSTILE and data["metadata"]["schema_version"] == 1
    patterns = {
        "cross layer transcoder": r"^\d+_\d+_\d+$",
        "mlp reconstruction error": r"^0_\d+_\d+$",
        "embedding": r"^E_\d+_\d+$",
        "logit": r"^31_\d+_\d+$",  # n_layers + 1 for SmolLM2's 30 layers
    }
    ids = {n["node_id"] for n in data["nodes"]}
    for n in data["nodes"]:
        assert re.match(patterns[n["feature_type"]], n["node_id"]), n
    assert len([n for n in data["nodes"] if n["feature_type"] == "embedding"]) == summary["n_tokens"]
    # circuit-tracer's BOS rule: nothing but the embedding at position 0
    assert summary["zeroed_positions"] == 1
    assert {n["feature_type"] for n in data["nodes"] if n["ctx_idx"] == 0} == {"embedding"}
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    meta = json.loads((graph_out / "graph-metadata.json").read_text())
    assert meta == {"graphs": [data["metadata"]]}
    graph = load_graph(graph_out / "graph.safetensors")
    assert graph.prompt == HOSTILE and graph.adjacency.shape == (summary["n_nodes"],) * 2
    assert graph.zero_positions == 1 and int((graph.features[:, 1] == 0).sum()) == 0
    assert torch.count_nonzero(graph.adjacency) == summary["n_edges"]
    # an edge of the JSON is the adjacency's entry
    link = max(data["links"], key=lambda x: abs(x["weight"]))
    assert link["weight"] != 0


def test_the_viewer_works_offline_and_runs_no_prompt_text(browser, graph_out):  # noqa: F811
    page, errors = _open(browser, (graph_out / "graph.html").as_uri())
    data = json.loads((graph_out / "graph.json").read_text())
    nodes = page.locator("svg .node")
    assert nodes.count() == len(data["nodes"])
    assert page.locator("#prompt").text_content() == HOSTILE
    assert page.evaluate("window.pwned") is None and page.locator("img").count() == 0
    target = next(n for n in data["nodes"] if n["feature_type"] == "logit")
    page.locator(f"svg .node[data-id='{target['node_id']}']").click()
    assert page.locator("#detail h1").first.text_content() == target["node_id"]
    inputs = [link for link in data["links"] if link["target"] == target["node_id"]]
    assert page.locator("#detail h1").nth(1).text_content() == f"inputs ({len(inputs)})"
    assert errors == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--prompt", ""], "prompt: empty"),
        (["--prompt", "a " * 9000], "tokens; smollm2-135m-instruct reads at most 8192"),
        (["--prompt", "x", "--node-threshold", "1.5"], "--node-threshold"),
    ],
    ids=["empty", "too-long", "threshold"],
)
def test_bad_prompts_and_flags_are_one_line(transcoder_run, tmp_path, capsys, argv, needle):
    _one_line_exit_2(capsys, ["attribute", str(transcoder_run), *argv, "--out", str(tmp_path / "o")], needle)
    assert not (tmp_path / "o").exists()


def test_a_run_without_transcoders_or_with_wrong_layers_is_one_line(tiny_run, tmp_path, capsys):
    out = tmp_path / "o"
    _one_line_exit_2(
        capsys, ["attribute", str(tiny_run), "--prompt", "x", "--out", str(out)], "holds no transcoders"
    )
    bad = make_transcoder_run(tmp_path / "bad", layers=(0, 31))
    _one_line_exit_2(capsys, ["attribute", str(bad), "--prompt", "x", "--out", str(out)], "has layers 0..29")
    _one_line_exit_2(
        capsys, ["attribute", str(tmp_path), "--prompt", "x", "--out", str(out)], "not a train-sae run"
    )
    assert not out.exists()


def test_sparsify_transcoders_by_hook_are_a_run_attribute_reads(transcoder_run, tmp_path):
    """EleutherAI's releases are folders of sparsify transcoders (layers.L.mlp/): read with the model
    named, they are the same transcoders at the same layers as the run they were written from."""
    from superposition.runs.targets import load_transcoders
    from superposition.sae.formats import load
    from superposition.sae.formats.sparsify import write

    folder = tmp_path / "eleuther-style"
    for L in (0, 1):
        write(load(transcoder_run / "saes" / f"blocks.{L}.mlp"), folder / f"layers.{L}.mlp")
        cfg = json.loads((folder / f"layers.{L}.mlp" / "cfg.json").read_text())
        del cfg["superposition"]  # sparsify's own files name no model and no hook: the folder says which MLP
        (folder / f"layers.{L}.mlp" / "cfg.json").write_text(json.dumps(cfg))
    theirs = load_transcoders(folder, model="smollm2-135m-instruct")
    ours = load_transcoders(transcoder_run)
    assert sorted(theirs.transcoders) == sorted(ours.transcoders) == [0, 1]
    for L, sae in ours.transcoders.items():
        for k, v in sae.saved_tensors(0).items():
            torch.testing.assert_close(theirs.transcoders[L].saved_tensors(0)[k], v)
    with pytest.raises(Exception, match="does not name the model its SAEs read; give `model`"):
        load_transcoders(folder)


def test_a_graph_without_latents_says_so_and_why(tiny_llama, tmp_path, capsys):
    """A transcoder whose decoder writes nothing: its latents have no outgoing edges, so the pruned
    graph is errors, embeddings and logits only; the summary line and the report say so, naming the
    MLP without a transcoder and the errors' share of the influence."""
    from safetensors.torch import load_file, save_file

    run = make_transcoder_run(tmp_path / "tc", layers=(0,), d_model=64, model=str(tiny_llama))
    w = run / "saes" / "blocks.0.mlp" / "sae_weights.safetensors"
    t = load_file(w)
    t["W_dec"] = torch.zeros_like(t["W_dec"])
    save_file(t, w)
    out = tmp_path / "g"
    assert main(["attribute", str(run), "--prompt", "one two three", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["n_active_features"] > 0 and s["pruned"]["n_features"] == 0
    assert s["layers_without_transcoder"] == [1] and 0 < s["error_influence_share"] < 1
    share = f"{s['error_influence_share']:.0%}"
    for text in (line, (out / "report.html").read_text()):
        assert "the pruned graph holds no latent" in text and f"error nodes carry {share}" in text
        assert "1 of 2 MLPs have no transcoder" in text and "layers 1)" in text
