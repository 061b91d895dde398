"""`autointerp`, `self-explain` and the dashboard's explanations on a tiny train-sae run, with a
scripted explainer (the local model's own behaviour is tested in test_clients.py and, slow, below)."""

import json
import math

import pytest

from superposition.cli import main
from superposition.commands.autointerp import autointerp
from superposition.interp.clients import Answer, CachedClient, ScriptedClient


def _scripted(r) -> Answer:
    if r.prefill:
        return Answer(
            probe_logprobs=[{d: -float(d) for d in "0123456789"}] * len(r.probe_after), prompt_tokens=5
        )
    if r.choices:
        yes = "fire" in r.messages[-1][1] and len(r.messages[-1][1]) % 2 == 0
        return Answer(text="Yes" if yes else "No", choice_logprobs={"Yes": -0.5 if yes else -1.5, "No": -1.0})
    return Answer(
        text="Explanation: <script>alert(1)</script> tokens.", prompt_tokens=20, completion_tokens=6
    )


def test_outputs_controls_and_disjoint_examples(tiny_run, tmp_path):
    client = CachedClient(ScriptedClient(_scripted), tmp_path / "cache")
    out = autointerp(str(tiny_run), tmp_path / "ai", latents=6, sequences=48, client=client)
    rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["latent"] for r in rows] == list(range(6))
    ok = [r for r in rows if "error" not in r]
    assert len(ok) >= 2
    for r in ok:
        assert r["explanation"] == "<script>alert(1)</script> tokens"
        expl = {(w["seq"], w["pos"]) for w in r["explanation_examples"]}
        score = {
            (w["seq"], w["pos"])
            for w in r["scoring_examples"]["activating"] + r["scoring_examples"]["negative"]
        }
        assert expl and score and not expl & score
        for key in ("detection", "fuzzing", "simulation"):
            assert key in r
        assert set(r["controls"]) == {"shuffled", "top_tokens"} and r["shuffled_from"] != r["latent"]
        ba = r["detection"]["balanced_accuracy"]  # null where a class is missing: strict JSON has no NaN
        assert ba is None or 0 <= ba <= 1
    for r in rows:
        if "error" in r:
            assert "never fires" in r["error"] or "too few" in r["error"]
    s = json.loads((out / "summary.json").read_text())
    assert s["latents"] == 6 and s["explained"] == len(ok)
    assert (
        set(s["controls"]) == {"shuffled", "top_tokens"}
        and s["scores"]["detection.balanced_accuracy"]["n"] >= 1
    )
    assert s["calls"] == client.usage.calls > 0 and s["prompt_tokens"] > 0 and s["seconds"] > 0
    assert (
        "&lt;script&gt;" in (out / "report.html").read_text()
        and "<script>alert" not in (out / "report.html").read_text()
    )

    # the dashboard shows the explanations (escaped) and their scores
    site = tmp_path / "site"
    assert main(["dashboard", str(tiny_run), "--out", str(site), "--latents", "6", "--sequences", "16",
                 "--explanations", str(out)]) == 0  # fmt: skip
    page = (site / "latents" / f"{ok[0]['latent']}.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; tokens" in page and "<script>alert(1)" not in page
    index = (site / "index.html").read_text()
    assert '"explanation"' in index and '"detection"' in index and "<script>alert(1)" not in index


def test_interrupted_run_resumes_from_the_cache(tiny_run, tmp_path):
    calls = {"n": 0}

    def flaky(r):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return _scripted(r)

    first = CachedClient(ScriptedClient(flaky), tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        autointerp(str(tiny_run), tmp_path / "ai", latents=4, sequences=48, client=first)
    assert not (tmp_path / "ai").exists()  # nothing half-written
    second = CachedClient(ScriptedClient(_scripted), tmp_path / "cache")
    autointerp(str(tiny_run), tmp_path / "ai", latents=4, sequences=48, client=second)
    third = CachedClient(ScriptedClient(_scripted), tmp_path / "cache")
    autointerp(str(tiny_run), tmp_path / "ai2", latents=4, sequences=48, client=third)
    total = third.usage.cached
    # the cached answers of the interrupted run are not asked again; a complete re-run asks nothing
    assert second.usage.cached > 0 and second.usage.calls == total - second.usage.cached
    assert third.usage.calls == 0


def test_self_explain(tiny_run, tmp_path):
    out = tmp_path / "se"
    assert main(["self-explain", str(tiny_run), "--out", str(out), "--latent-ids", "0,3", "--scales", "1,4",
                 "--max-tokens", "6"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (out / "self_explanations.jsonl").read_text().splitlines()]
    assert [r["latent"] for r in rows] == [0, 3]
    cfg = json.loads((out / "config.json").read_text())  # every command's folder says how it was made
    assert cfg["command"] == "self-explain" and cfg["latent_ids"] == "0,3" and cfg["max_tokens"] == 6
    vocab = math.log(49152)
    for r in rows:
        assert {"latent", "layer", "scale", "explanation", "self_similarity", "entropy"} <= set(r)
        assert r["layer"] == 0 and len(r["sweep"]) == 2 and isinstance(r["explanation"], str)
        assert all(-1 <= s["self_similarity"] <= 1 and 0 <= s["entropy"] <= vocab for s in r["sweep"])
        best = max(r["sweep"], key=lambda s: s["self_similarity"] - s["entropy"] / vocab)
        assert r["scale"] == best["scale"]


@pytest.mark.slow
def test_local_explainer_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "ai"
    assert main(["autointerp", str(tiny_run), "--out", str(out), "--latents", "2", "--sequences", "48",
                 "--cache", str(tmp_path / "c")]) == 0  # fmt: skip
    s = json.loads((out / "summary.json").read_text())
    assert s["explainer"].startswith("local:") and s["calls"] > 0
