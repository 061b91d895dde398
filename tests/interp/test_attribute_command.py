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
    # fields as circuit-tracer fills them: no clerp on errors and embeddings, no influence on logits
    by_type = {}
    for n in data["nodes"]:
        by_type.setdefault(n["feature_type"], []).append(n)
    assert all(
        n["clerp"] == "" for t in ("mlp reconstruction error", "embedding") for n in by_type.get(t, [])
    )
    assert all(n["influence"] is None and n["clerp"].startswith("Output ") for n in by_type["logit"])
    assert all(isinstance(n["influence"], float) for n in by_type["embedding"])
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
    # the logit labels never cover each other
    boxes = page.evaluate(
        "[...document.querySelectorAll('.logit-label')].map(t => { const b = t.getBBox(); "
        "return [b.x, b.y, b.width, b.height]; })"
    )
    n_logits = len([n for n in data["nodes"] if n["feature_type"] == "logit"])
    assert len(boxes) == n_logits >= 2
    for i, a in enumerate(boxes):
        assert a[2] > 0
        for b in boxes[i + 1 :]:
            apart = a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
            assert apart, (a, b)
    # errors and embeddings are named by the viewer
    emb = next(n for n in data["nodes"] if n["feature_type"] == "embedding")
    page.locator(f"svg .node[data-id='{emb['node_id']}']").click()
    assert page.locator("#detail .row").first.text_content().startswith("token ")
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


def test_latents_are_labelled_with_their_autointerp_explanations(tiny_llama, tmp_path):
    run = make_transcoder_run(tmp_path / "tc", layers=(0, 1), d_model=64, model=str(tiny_llama))
    expl = tmp_path / "expl"
    (expl / "blocks.1.mlp").mkdir(parents=True)
    rows = [{"latent": j, "explanation": f"  the   word number {j}\n"} for j in range(0, 64, 2)]
    (expl / "blocks.1.mlp" / "explanations.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "g"
    argv = ["attribute", str(run), "--prompt", "one two three four", "--explanations", str(expl)]
    assert main([*argv, "--out", str(out)]) == 0
    nodes = [
        n
        for n in json.loads((out / "graph.json").read_text())["nodes"]
        if n["feature_type"].startswith("cross")
    ]
    labelled = 0
    for n in nodes:
        L, f, _ = (int(x) for x in n["node_id"].split("_"))
        if L == 1 and f % 2 == 0:
            assert n["clerp"] == f"the word number {f}"
            labelled += 1
        else:  # no explanation: the logit-lens tokens
            assert n["clerp"].startswith("→ ")
    assert labelled > 0 and labelled < len(nodes)


def test_explanations_that_are_not_there_are_one_line(transcoder_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for src, needle in ((tmp_path / "nope", "no such folder or file"), (empty, "holds no autointerp output")):
        argv = ["attribute", str(transcoder_run), "--prompt", "x", "--explanations", str(src)]
        _one_line_exit_2(capsys, [*argv, "--out", str(tmp_path / "o")], needle)
        assert not (tmp_path / "o").exists()
