"""The clients: the disk cache, the OpenAI-compatible back-end against a real HTTP server process on
localhost, and the local back-end's answer log-probabilities against a direct forward pass."""

import socket

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.interp.clients import Answer, CachedClient, OpenAIClient, Request, ScriptedClient

YES_NO = ("Yes", "No")


def _req(text: str, **kw) -> Request:
    return Request((("user", text),), **kw)


def test_cache_answers_a_repeat_without_a_call_and_keys_on_settings(tmp_path):
    inner = ScriptedClient(
        lambda r: Answer(text=r.messages[0][1].upper(), prompt_tokens=3, completion_tokens=2)
    )
    c = CachedClient(inner, tmp_path)
    first = c.complete([_req("a"), _req("b")])
    assert [a.text for a in first] == ["A", "B"] and c.usage.calls == 2 and c.usage.prompt_tokens == 6
    again = CachedClient(ScriptedClient(lambda r: Answer(text="never")), tmp_path)  # a fresh process
    assert [a.text for a in again.complete([_req("a"), _req("b")])] == ["A", "B"]
    assert again.usage.calls == 0 and again.usage.cached == 2
    c.complete([_req("a", temperature=0.7), _req("a", seed=1)])  # other settings: other keys
    assert c.usage.calls == 4


def test_failed_answers_are_not_cached(tmp_path):
    c = CachedClient(ScriptedClient(lambda r: Answer(error="boom")), tmp_path)
    assert c.complete([_req("a")])[0].error == "boom" and c.usage.failed == 1
    ok = CachedClient(ScriptedClient(lambda r: Answer(text="fine")), tmp_path)
    assert ok.complete([_req("a")])[0].text == "fine" and ok.usage.calls == 1


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")


def _client(server, model, **kw):
    return OpenAIClient(model, server, api_key_env="FAKE_KEY", **kw)


def test_http_answer_logprobs_and_usage(server, key):
    a = _client(server, "yes").complete([_req("q", choices=YES_NO)])[0]
    assert a.error is None and a.text == "Yes"
    assert a.choice_logprobs == pytest.approx({"Yes": -0.1, "No": -2.4})  # " No" matched after stripping
    assert (a.prompt_tokens, a.completion_tokens) == (11, 1)
    b = _client(server, "nolog").complete([_req("q", choices=YES_NO)])[0]
    assert b.text == "No" and b.choice_logprobs is None  # the scorer falls back to the text
    g = _client(server, "text").complete([_req("hello there", max_tokens=8)])[0]
    assert g.text == "echo: hello there"


def test_http_retries_server_errors(server, key):
    answers = _client(server, "flaky", max_retries=2).complete(
        [_req(f"r{i}", choices=YES_NO) for i in range(3)]
    )
    assert [a.text for a in answers] == ["Yes"] * 3 and all(a.error is None for a in answers)
    no_retry = _client(server, "flaky", max_retries=0).complete([_req("fresh", choices=YES_NO)])[0]
    assert no_retry.error is not None and "500" in no_retry.error


def test_http_timeout_is_a_per_request_failure(server, key):
    a = _client(server, "slow", timeout=0.5, max_retries=0).complete([_req("q", choices=YES_NO)])[0]
    assert a.error is not None and "timed out" in a.error


def test_http_malformed_body_is_a_per_request_failure(server, key):
    a = _client(server, "garbage", max_retries=0).complete([_req("q")])[0]
    assert a.error is not None


def test_http_bad_key_unknown_model_unreachable_and_missing_key(server, key, monkeypatch):
    monkeypatch.setenv("WRONG_KEY", "sk-wrong")
    with pytest.raises(SuperpositionError, match="API key was rejected"):
        OpenAIClient("yes", server, api_key_env="WRONG_KEY", max_retries=0).complete([_req("q")])
    with pytest.raises(
        SuperpositionError, match="explainer_model nope"
    ):  # the option key; the CLI shows --explainer-model
        _client(server, "nope", max_retries=0).complete([_req("q")])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(SuperpositionError, match="unreachable"):
        _client(dead, "yes", max_retries=0).complete([_req("q")])
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(SuperpositionError, match="MISSING_KEY"):
        OpenAIClient("yes", server, api_key_env="MISSING_KEY")


def test_local_choice_and_probe_logprobs_match_a_direct_forward(smol):
    from superposition.interp.clients import LocalClient

    lm, _ = smol
    c = LocalClient(batch_size=4)
    short, long = (
        _req("Is the sky blue?", choices=YES_NO),
        _req("Answer: is water wet, yes or no?", choices=YES_NO),
    )
    probe = _req("Count.", choices=("1", "2"), prefill=("1\t", "x\n", "2\t"), probe_after=(0, 2))
    answers = c.complete([short, long, probe])  # padded together in one batch
    for r, a in zip([short, long], answers):
        ids, _ = c._prompt_ids(r)
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        for choice, lp in a.choice_logprobs.items():
            assert lp == pytest.approx(float(logp[c._choice_ids([choice])[0]]), abs=2e-3)
        assert a.text == max(a.choice_logprobs, key=a.choice_logprobs.get)
    ids, at = c._prompt_ids(probe)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert len(answers[2].probe_logprobs) == 2
    for k, pos in enumerate(at):
        for choice, lp in answers[2].probe_logprobs[k].items():
            assert lp == pytest.approx(float(logp[pos, c._choice_ids([choice])[0]]), abs=2e-3)
    gen = c.complete([_req("Say hello.", max_tokens=5)])[0]
    assert 0 < gen.completion_tokens <= 5 and gen.text.strip()
