"""Language-model clients for autointerp: one small interface, two back-ends, a disk cache.

- `LocalClient`: a causal LM in-process through transformers (the offline SmolLM2 by default, any
  local folder or hub name), prompts batched with left padding. Besides generating, it reads the
  log-probabilities of given answer tokens, at the end of the prompt or after given segments of a
  pre-filled answer (`Request.prefill`/`probe_after`), which the simulation scorer needs.
- `OpenAIClient`: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp's server,
  Ollama) through the official `openai` package, requests in parallel threads; answer
  log-probabilities from `top_logprobs` where the server returns them.
- `CachedClient` wraps either: every answer is kept on disk under a key of the back-end, model,
  prompt and settings, so a re-run or a resumed run sends nothing twice. It counts calls, cache
  hits, tokens and seconds spent in the back-end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from superposition.errors import SuperpositionError
from superposition.redact import redact, register


@dataclass(frozen=True)
class Request:
    """One chat prompt. With `choices`, the answer carries the log-probability of each choice as the
    first answer token (and `text` is the likeliest). With `prefill` (segments of the start of the
    answer) and `probe_after` (segment indices), it carries the choices' log-probabilities right
    after each of those segments instead: one forward pass reads a whole pre-filled answer."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    max_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    choices: tuple[str, ...] = ()
    prefill: tuple[str, ...] = ()
    probe_after: tuple[int, ...] = ()


@dataclass
class Answer:
    text: str = ""
    choice_logprobs: dict[str, float] | None = None  # first answer token; None: the back-end gave none
    probe_logprobs: list[dict[str, float]] | None = None  # one dict per probe
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when this request failed (the run records it and goes on)


class Client(Protocol):
    key: str  # back-end and model: part of every cache key
    supports_probes: bool

    def complete(self, requests: Sequence[Request]) -> list[Answer]: ...


@dataclass
class Usage:
    calls: int = 0  # requests answered by the back-end (not from the cache)
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # wall time inside the back-end


class CachedClient:
    """`client` with every successful answer kept in `folder` (one JSON file per request)."""

    def __init__(self, client: Client, folder: str | Path) -> None:
        self.client = client
        self.key = client.key
        self.supports_probes = client.supports_probes
        self.folder = Path(folder).expanduser()
        self.usage = Usage()
        self._lock = threading.Lock()

    def _path(self, r: Request) -> Path:
        blob = json.dumps({"client": self.client.key, "request": asdict(r)}, sort_keys=True)
        h = hashlib.sha256(blob.encode()).hexdigest()
        return self.folder / h[:2] / f"{h}.json"

    def complete(self, requests: Sequence[Request]) -> list[Answer]:
        out: list[Answer | None] = [None] * len(requests)
        todo = []
        for i, r in enumerate(requests):
            p = self._path(r)
            try:
                out[i] = Answer(**json.loads(p.read_text()))
            except (OSError, ValueError, TypeError):
                todo.append(i)
        self.usage.cached += len(requests) - len(todo)
        if todo:
            t = time.perf_counter()
            fresh = self.client.complete([requests[i] for i in todo])
            self.usage.seconds += time.perf_counter() - t
            for i, a in zip(todo, fresh):
                out[i] = a
                self.usage.calls += 1
                self.usage.prompt_tokens += a.prompt_tokens
                self.usage.completion_tokens += a.completion_tokens
                if a.error is not None:
                    self.usage.failed += 1
                    continue  # failures are not cached: a re-run tries again
                p = self._path(requests[i])
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
                tmp.write_text(json.dumps(asdict(a)))
                tmp.replace(p)  # atomic: an interrupted run never leaves half an entry
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------- local (transformers)
class LocalClient:
    """A causal LM in this process. Greedy unless `temperature` > 0 (then seeded sampling)."""

    supports_probes = True

    def __init__(self, name: str | None = None, batch_size: int = 16, device: str = "cpu") -> None:
        from superposition.lm.model import DEFAULT_MODEL, load_model

        self.name = name or DEFAULT_MODEL
        try:
            lm = load_model(self.name, device)
        except SuperpositionError as err:
            raise SuperpositionError(
                f"explainer_model {self.name}: the explainer cannot be loaded ({err})"
            ) from None
        self.model, self.tok, self.device = lm.model, lm.tokenizer, device
        self.batch_size = batch_size
        self.key = f"local:{self.name}"
        if getattr(self.tok, "chat_template", None) is None:
            raise SuperpositionError(
                f"explainer_model {self.name}: its tokenizer has no chat template; "
                "use an instruction-tuned model"
            )
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def _prompt_ids(self, r: Request) -> tuple[list[int], list[int]]:
        """Token ids of the chat prompt (and pre-filled answer), and the index of the last token of
        each probed segment."""
        msgs = [{"role": role, "content": text} for role, text in r.messages]
        text = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = self.tok.encode(text, add_special_tokens=False)  # the template writes its own specials
        probes = []
        for k, seg in enumerate(r.prefill):
            ids += self.tok.encode(seg, add_special_tokens=False)
            if k in r.probe_after:
                probes.append(len(ids) - 1)
        return [int(i) for i in ids], probes

    def _choice_ids(self, choices: Sequence[str]) -> list[int]:
        return [self.tok.encode(c, add_special_tokens=False)[0] for c in choices]

    def complete(self, requests: Sequence[Request]) -> list[Answer]:
        out: list[Answer | None] = [None] * len(requests)
        prepared = [self._prompt_ids(r) for r in requests]
        gen = [i for i, r in enumerate(requests) if not r.choices]
        score = [i for i, r in enumerate(requests) if r.choices]
        for group, fn in ((score, self._score), (gen, self._generate)):
            group = sorted(group, key=lambda i: len(prepared[i][0]))  # similar lengths pad less
            for s in range(0, len(group), self.batch_size):
                idx = group[s : s + self.batch_size]
                for i, a in zip(idx, fn([requests[i] for i in idx], [prepared[i] for i in idx])):
                    out[i] = a
        return out  # type: ignore[return-value]

    def _batch(self, seqs: list[list[int]]):
        import torch

        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for b, s in enumerate(seqs):  # left padding: every prompt ends at the last column
            ids[b, n - len(s) :] = torch.tensor(s)
            mask[b, n - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device), n

    def _score(self, reqs: list[Request], prepared) -> list[Answer]:
        import torch

        ids, mask, n = self._batch([p[0] for p in prepared])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            hidden = self.model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            answers = []
            for b, (r, (seq, probes)) in enumerate(zip(reqs, prepared)):
                at = [n - len(seq) + p for p in probes] if r.prefill else [n - 1]
                # the unembedding only where an answer is read: most of a small model's compute
                logp = torch.log_softmax(self.model.lm_head(hidden[b, at]).float(), -1)
                cid = self._choice_ids(r.choices)
                dicts = [{c: float(row[t]) for c, t in zip(r.choices, cid)} for row in logp]
                a = Answer(prompt_tokens=len(seq), completion_tokens=0)
                if r.prefill:
                    a.probe_logprobs = dicts
                else:
                    a.choice_logprobs = dicts[0]
                    a.text = max(dicts[0], key=dicts[0].get)
                    a.completion_tokens = 1
                answers.append(a)
        return answers

    def _generate(self, reqs: list[Request], prepared) -> list[Answer]:
        import torch

        ids, mask, n = self._batch([p[0] for p in prepared])
        r0 = reqs[0]
        sample = r0.temperature > 0
        if sample:
            torch.manual_seed(r0.seed)
        with torch.no_grad():
            seqs = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(r.max_tokens for r in reqs),
                do_sample=sample,
                temperature=r0.temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad,
            )
        answers = []
        eos = {self.tok.eos_token_id, self.pad, *getattr(self.tok, "all_special_ids", [])}
        for b, (r, (seq, _)) in enumerate(zip(reqs, prepared)):
            new = seqs[b, n:].tolist()[: r.max_tokens]
            for k, t in enumerate(new):
                if t in eos:
                    new = new[:k]
                    break
            answers.append(
                Answer(self.tok.decode(new, skip_special_tokens=True), None, None, len(seq), len(new))
            )
        return answers


# ---------------------------------------------------------------------- OpenAI-compatible (HTTP)
class OpenAIClient:
    """Chat completions over HTTP with the official `openai` package. The API key is read from the
    environment variable `api_key_env`; retries with back-off on rate limits, 5xx and timeouts are the
    package's own (`max_retries`)."""

    supports_probes = False

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise SuperpositionError(
                "explainer openai needs the openai package: pip install 'superposition-toolkit[lm]'"
            ) from None
        key = os.environ.get(api_key_env)
        if not key:
            raise SuperpositionError(
                f"explainer openai: set the environment variable {api_key_env} to the API key "
                "(any non-empty value for a local server that checks none)"
            )
        register(key)  # never written or printed (redact.py)
        self.openai = openai
        self.model = model
        url = base_url or "https://api.openai.com/v1"
        register(urlsplit(url).password)
        register(urlsplit(url).username if urlsplit(url).password else None)
        self.base_url = redact(url)  # what messages, summaries and cache keys say
        self.url = url
        self.client = openai.OpenAI(
            base_url=url, api_key=key, timeout=timeout, max_retries=max_retries,
            http_client=_deadline_client(openai, timeout),
        )  # fmt: skip
        self.concurrency = concurrency
        self.key = f"openai:{model}@{self.base_url}"

    def check(self) -> None:
        """One one-token request before any real work: an unreachable server, a rejected key or an
        unknown model is a one-line error in a second, not after the held-out pass (minutes)."""
        self._one(Request((("user", "Say yes."),), max_tokens=1))

    def complete(self, requests: Sequence[Request]) -> list[Answer]:
        if any(r.prefill for r in requests):
            raise SuperpositionError("OpenAI-compatible back-ends cannot read pre-filled answers (probes)")
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, r: Request) -> Answer:
        o = self.openai
        kw: dict = {
            "model": self.model,
            "messages": [{"role": role, "content": text} for role, text in r.messages],
            "max_tokens": 1 if r.choices else r.max_tokens,
            "temperature": r.temperature,
            "seed": r.seed,
        }
        if r.choices:
            kw.update(logprobs=True, top_logprobs=10)
        try:
            resp = self.client.chat.completions.create(**kw)
        except o.APITimeoutError:
            return Answer(error="timed out (after retries)")
        except o.APIConnectionError as err:
            raise SuperpositionError(f"base_url {self.base_url}: unreachable ({err})") from None
        except o.AuthenticationError:
            raise SuperpositionError(f"base_url {self.base_url}: the API key was rejected (401)") from None
        except o.NotFoundError:
            raise SuperpositionError(
                f"explainer_model {self.model}: {self.base_url} has no such model (404)"
            ) from None
        except o.APIStatusError as err:  # the server's text may echo headers: redacted
            return Answer(error=redact(f"HTTP {err.status_code}: {str(err)[:200]}"))
        except (o.OpenAIError, ValueError) as err:  # a response the package cannot parse (bad JSON, ...)
            return Answer(error=redact(f"malformed response: {type(err).__name__}: {str(err)[:200]}"))
        try:  # every field the server sent is checked: an unreadable answer fails this request only
            return _answer(resp, r.choices)
        except (AttributeError, IndexError, TypeError, ValueError, OverflowError) as err:
            return Answer(error=redact(f"malformed response: {type(err).__name__}: {str(err)[:120]}"))


def _deadline_client(openai, seconds: float):
    """The openai package's HTTP client with a deadline on each answer's body: its `timeout` bounds
    each read, so a server that trickles a byte at a time would keep a request waiting forever. The
    package raises the same ReadTimeout it retries and reports for a silent server."""
    import importlib

    base = openai.DefaultHttpxClient
    hx = importlib.import_module(base.__mro__[1].__module__.split(".")[0])  # httpx, or the fork it uses

    class Deadline(hx.HTTPTransport):
        def handle_request(self, request):
            start = time.monotonic()
            response = super().handle_request(request)
            body = response.stream

            class Bounded(hx.SyncByteStream):
                def __iter__(self):
                    for chunk in body:
                        if time.monotonic() - start > seconds:
                            raise hx.ReadTimeout(f"no whole answer within {seconds:g} s", request=request)
                        yield chunk

                def close(self):
                    body.close()

            response.stream = Bounded()
            return response

    return base(transport=Deadline())


def _answer(resp, choices: Sequence[str] | None) -> Answer:
    """An Answer from a chat-completions response, or an error for a field of the wrong kind."""
    choice = resp.choices[0]
    text = choice.message.content
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not text")
    usage = getattr(resp, "usage", None)
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        v = getattr(usage, name, 0) or 0
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TypeError(f"usage.{name} is {v!r}, not a count")
        counts.append(v)
    a = Answer(text=text, prompt_tokens=counts[0], completion_tokens=counts[1])
    if choices:
        a.choice_logprobs = _choice_logprobs(choice, choices)
    return a


def _choice_logprobs(choice, choices: Sequence[str]) -> dict[str, float] | None:
    """Log-probabilities of each choice as the first answer token, from top_logprobs (a choice
    not among them gets -inf); None when the server returned no log-probabilities."""
    try:
        top = choice.logprobs.content[0].top_logprobs
    except (AttributeError, IndexError, TypeError):
        return None
    if not top:
        return None
    out = {c: -math.inf for c in choices}
    for t in top:
        if not isinstance(t.token or "", str):
            raise TypeError(f"a top_logprobs token is {type(t.token).__name__}, not text")
        word = (t.token or "").strip().lower()
        lp = float(t.logprob)  # "abc" raises ValueError: a malformed answer
        if math.isnan(lp) or lp > 0:
            raise ValueError(f"logprob {t.logprob!r} is not a log-probability")
        for c in choices:
            if word == c.lower():
                out[c] = max(out[c], lp)
    return out


def make_client(
    explainer: str,
    model: str | None = None,
    base_url: str | None = None,
    cache: str | Path | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    timeout: float = 60.0,
    batch_size: int = 16,
) -> CachedClient:
    """The client `explainer` names, behind the disk cache (default: the project cache folder)."""
    from superposition.lm.model import cache_dir

    if explainer == "local":
        inner: Client = LocalClient(model, batch_size=batch_size)
    elif explainer == "openai":
        if not model:
            raise SuperpositionError("explainer openai needs `explainer_model` (the server's model name)")
        inner = OpenAIClient(model, base_url, api_key_env, concurrency, timeout)
    else:
        raise SuperpositionError(f"explainer {explainer!r}: use local or openai")
    return CachedClient(inner, cache if cache is not None else cache_dir() / "autointerp")


@dataclass
class ScriptedClient:
    """A client whose answers come from a function: for tests and dry runs."""

    fn: object  # Callable[[Request], Answer]
    key: str = "scripted"
    supports_probes: bool = True
    seen: list = field(default_factory=list)

    def complete(self, requests: Sequence[Request]) -> list[Answer]:
        self.seen.extend(requests)
        return [self.fn(r) for r in requests]  # type: ignore[operator]
