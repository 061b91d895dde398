"""`hf://owner/repo/path/in/repo`: an SAE on the Hugging Face hub, anywhere a path is accepted.

The folder (or file) is fetched with huggingface_hub into its cache (HF_HOME, by default
~/.cache/huggingface) and read from there; offline, what the cache already holds is used, and
anything else is a one-line error naming what could not be fetched.
"""

from __future__ import annotations

from pathlib import Path

from superposition.errors import SuperpositionError

PREFIX = "hf://"


def resolve(path: str | Path) -> Path:
    """A local path as it is; an hf:// path fetched (or found in the cache) and made local."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(text).expanduser()
    parts = [p for p in text[len(PREFIX) :].split("/") if p]
    if len(parts) < 2:
        raise SuperpositionError(f"{text}: expected hf://owner/repo[/path/in/repo]")
    repo, inside = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SuperpositionError(
            f"{text}: hf:// paths need huggingface_hub (pip install huggingface_hub)"
        ) from None
    patterns = [inside, f"{inside}/*"] if inside else None
    import os

    try:
        root = Path(
            snapshot_download(
                repo_id=repo, allow_patterns=patterns, endpoint=os.environ.get("HF_ENDPOINT") or None
            )
        )
    except Exception as err:  # noqa: BLE001 - the hub raises many types; all mean "not available here"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise SuperpositionError(
            f"{text}: cannot fetch {repo}{'/' + inside if inside else ''} from the Hugging Face hub, and the "
            f"hub cache does not hold it ({type(err).__name__}: {reason})"
        ) from None
    local = root / inside
    if not local.exists():
        raise SuperpositionError(f"{text}: {repo} has no {inside!r} (in the hub cache or online)")
    return local


def parse_address(text: str) -> tuple[str, str]:
    """`hf://owner/repo[/path]` -> ("owner/repo", "path" or "")."""
    if not str(text).startswith(PREFIX):
        raise SuperpositionError(f"{text}: expected hf://owner/repo[/path/in/repo]")
    parts = [p for p in str(text)[len(PREFIX) :].split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise SuperpositionError(f"{text}: expected hf://owner/repo[/path/in/repo]")
    return "/".join(parts[:2]), "/".join(parts[2:])


def upload(folder: Path, address: str, message: str, private: bool = False) -> str:
    """Upload everything in `folder` to hf://owner/repo[/path] in one commit (creating the repo if
    needed), with huggingface_hub. The token is huggingface_hub's own (HF_TOKEN, or a login); the
    server is HF_ENDPOINT's, else the hub. Returns the repository's URL."""
    import os

    from superposition.redact import redact, register

    repo, inside = parse_address(address)
    register(os.environ.get("HF_TOKEN"))  # never printed, even when a server echoes it back
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise SuperpositionError("push: needs huggingface_hub (pip install huggingface_hub)") from None
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo, folder_path=str(folder), path_in_repo=inside or None, commit_message=message
        )
    except Exception as err:  # noqa: BLE001 - the hub raises many types; each is one line here
        reason = redact((str(err).strip().splitlines() or [type(err).__name__])[0][:200])
        raise SuperpositionError(f"{address}: upload failed ({type(err).__name__}: {reason})") from None
    return str(url)
