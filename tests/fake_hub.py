"""A Hugging Face hub on localhost for the tests: it serves repositories from a folder laid out as the
hub's (root/owner/repo/<files>), takes uploads the way huggingface_hub sends them (create repo,
pre-upload, commit with the files inline) and writes them into that folder, and records every
request (method, path, headers) so a test can check what was sent. Only 127.0.0.1.

    hub = FakeHub(root); hub.start(); env HF_ENDPOINT=hub.url; ...; hub.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "a" * 40


class FakeHub:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _record(self, body: bytes = b"") -> None:
                hub.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )

            def _json(self, code: int, obj, extra: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _repo(self, owner: str, name: str) -> Path:
                return hub.root / owner / name

            def _not_found(self) -> None:
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                self._record()
                parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                    repo = self._repo(parts[2], parts[3])
                    if not repo.is_dir():
                        return self._not_found()
                    under = repo.joinpath(*parts[6:])
                    files = sorted(p for p in under.rglob("*") if p.is_file()) if under.is_dir() else []
                    return self._json(
                        200,
                        [
                            {
                                "type": "file",
                                "path": p.relative_to(repo).as_posix(),
                                "size": p.stat().st_size,
                                "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                            }
                            for p in files
                        ],
                    )
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = self._repo(parts[2], parts[3])
                    if not repo.is_dir():
                        return self._not_found()
                    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
                    return self._json(
                        200,
                        {
                            "id": f"{parts[2]}/{parts[3]}",
                            "sha": SHA,
                            "siblings": [{"rfilename": f} for f in files],
                        },
                    )
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = self._repo(parts[0], parts[1])
                    f = repo / "/".join(parts[4:])
                    if not repo.is_dir():
                        return self._not_found()
                    if not f.is_file():
                        return self._json(
                            404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
                        )
                    data = f.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Repo-Commit", SHA)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return None
                return self._json(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self._record(body)
                parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
                if parts == ["api", "validate-yaml"]:
                    return self._json(200, {"errors": [], "warnings": []})
                if parts == ["api", "repos", "create"]:
                    req = json.loads(body or b"{}")
                    repo_id = (
                        f"{req.get('organization') or 'me'}/{req['name']}"
                        if "/" not in req["name"]
                        else req["name"]
                    )
                    (hub.root / repo_id).mkdir(parents=True, exist_ok=True)
                    return self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
                    req = json.loads(body or b"{}")
                    files = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in req["files"]
                    ]
                    return self._json(200, {"files": files, "commitOid": SHA})
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
                    repo = self._repo(parts[2], parts[3])
                    written = []
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            v = item["value"]
                            dest = repo / v["path"]
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            dest.write_bytes(base64.b64decode(v["content"]))
                            written.append(v["path"])
                    hub.commits.append({"repo": f"{parts[2]}/{parts[3]}", "files": written})
                    return self._json(
                        200,
                        {
                            "commitUrl": f"{hub.url}/{parts[2]}/{parts[3]}/commit/{SHA}",
                            "commitOid": SHA,
                            "success": True,
                        },
                    )
                return self._json(404, {"error": "not found"})

        return Handler
