"""A chat-completions server on localhost for the OpenAI back-end's tests (run as a process).

    python fake_openai_server.py PORT_FILE

Binds a free port, writes it to PORT_FILE, and answers POST /v1/chat/completions by model name:
  yes        "Yes" with top_logprobs (Yes -0.1, No -2.4)
  nolog      "No" without logprobs
  flaky      HTTP 500 on the first try of every distinct request, then like `yes`
  slow       sleeps 3 s, then like `yes`
  garbage    200 with a body that is not JSON
  text       echoes the last user message back, for generation
  echo-auth  400 whose error text echoes the request's Authorization header (a careless gateway);
             accepts any key
  badlogprob "Yes" whose top_logprobs hold the string "abc"
  numcontent a message whose content is the number 42
  badusage   usage counts that are strings
  trickle    a 200 answer whose body comes a byte every 0.2 s (40 s in all)
Any other model: 404. A key other than "sk-test": 401.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN: set[str] = set()


def completion(content: str, logprobs: bool) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs:
        top = [
            {"token": "Yes", "logprob": -0.1, "bytes": None},
            {"token": " No", "logprob": -2.4, "bytes": None},
        ]
        choice["logprobs"] = {
            "content": [{"token": content, "logprob": -0.1, "bytes": None, "top_logprobs": top}]
        }
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12},
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if b'"echo-auth"' in raw:
            msg = f"bad request; you sent Authorization: {self.headers.get('Authorization')}"
            return self._send(400, json.dumps({"error": {"message": msg, "type": "invalid"}}).encode())
        if self.headers.get("Authorization") != "Bearer sk-test":
            return self._send(401, json.dumps({"error": {"message": "bad key", "type": "auth"}}).encode())
        if not self.path.endswith("/chat/completions"):
            return self._send(404, b"{}")
        req = json.loads(raw)
        model, want_lp = req["model"], bool(req.get("logprobs"))
        if model == "flaky":
            key = json.dumps(req["messages"], sort_keys=True)
            if key not in SEEN:
                SEEN.add(key)
                return self._send(500, json.dumps({"error": {"message": "try again"}}).encode())
            model = "yes"
        if model == "slow":
            time.sleep(3)
            model = "yes"
        if model == "yes":
            return self._send(200, json.dumps(completion("Yes", want_lp)).encode())
        if model == "nolog":
            return self._send(200, json.dumps(completion("No", False)).encode())
        if model == "trickle":
            body = json.dumps(completion("Yes", False)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for b in body:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up
                pass
            return None
        if model in ("badlogprob", "numcontent", "badusage"):
            body = completion("Yes", True)
            if model == "badlogprob":
                body["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["logprob"] = "abc"
            elif model == "numcontent":
                body["choices"][0]["message"]["content"] = 42
            else:
                body["usage"] = {"prompt_tokens": "many", "completion_tokens": "1", "total_tokens": "x"}
            return self._send(200, json.dumps(body).encode())
        if model == "garbage":
            return self._send(200, b"<html>not json", "application/json")
        if model == "text":
            last = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
            return self._send(200, json.dumps(completion(f"echo: {last[:40]}", False)).encode())
        return self._send(404, json.dumps({"error": {"message": f"no model {model}"}}).encode())


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()
