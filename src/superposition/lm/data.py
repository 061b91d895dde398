"""Text for activations: the offline default corpus, local files, or Hugging Face datasets
(streamed), tokenised and packed into fixed-length sequences.

The offline default, `python-docs`, is real human-written English that every Python installation
carries: the documentation topics of the language reference (`pydoc_data.topics`) followed by
the docstrings of the standard library's modules, classes and functions, read from the source
files with `ast` (nothing is imported or run). Tests, generated code and third-party packages
are left out.

Packing: documents are tokenised, joined with the EOS token between them, and cut into
sequences of `context_size` tokens (one fewer when a BOS token is prepended to each). Every
`HOLDOUT`-th sequence is kept out of training and used for evaluation.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from superposition.errors import SuperpositionError

DEFAULT_DATASET = "python-docs"
HOLDOUT = 20  # sequence i is held out for evaluation when i % HOLDOUT == HOLDOUT - 1
TEXT_COLUMNS = ("text", "content", "document", "body")
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
    "ensurepip",
    "venv",
    "tkinter",
}


def python_docs() -> Iterator[str]:
    """The language-reference topics, then the standard library's docstrings, in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in [tree] + [
            n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ]:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 200:  # one-liners are more code than prose
                yield doc


def _column(record: dict, text_column: str | None, where: str) -> str:
    names = [text_column] if text_column else list(TEXT_COLUMNS)
    for name in names:
        if name in record and isinstance(record[name], str):
            return record[name]
    raise SuperpositionError(
        f"dataset_path {where}: no text column ({' or '.join(names)}); columns: {', '.join(map(str, record))}"
    )


def texts(
    dataset_path: str = DEFAULT_DATASET, text_column: str | None = None, split: str = "train"
) -> Iterator[str]:
    """Documents from `python-docs`, a .txt file (paragraphs), .jsonl, .parquet, a local dataset
    folder, or a hub dataset. Unreadable input is a one-line error naming the file (and line)."""
    if dataset_path == DEFAULT_DATASET:
        yield from python_docs()
        return
    path = Path(dataset_path).expanduser()
    if path.exists() and not (path.is_file() or path.is_dir()):  # a pipe or a device: never opened
        raise SuperpositionError(
            f"dataset_path {path}: not a regular file (a pipe or a device?); give a text file"
        )
    if path.suffix in (".txt", ".jsonl", ".parquet") and not path.is_file():
        where = f"{path} is a directory, not a file" if path.is_dir() else f"no file at {path}"
        raise SuperpositionError(f"dataset_path: {where}")
    readers = {".txt": _txt, ".jsonl": _jsonl, ".parquet": _parquet}
    if path.suffix in readers:
        yield from readers[path.suffix](path, text_column)
    else:
        yield from _hub(dataset_path, text_column, split)


MAX_TEXT_INPUT = 256 << 20  # bytes: a pairs file or a prompt list read whole
MAX_LINE = 1 << 20  # characters of one line of such a file


def read_text_input(
    path: str | Path, what: str, max_bytes: int = MAX_TEXT_INPUT, max_line: int = MAX_LINE
) -> str:
    """A text file given on the command line (a pairs dataset, ...), read whole within the limits of
    every text input: a regular file (a named pipe or a device such as /dev/zero is refused, never
    opened, so nothing waits on it), at most `max_bytes`, UTF-8 text without NUL bytes, lines of at
    most `max_line` characters. Anything else is one line naming `what`."""
    import stat

    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise SuperpositionError(f"{what} {path}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe or a device?)"
        raise SuperpositionError(f"{what} {path}: {kind}; give a text file")
    if st.st_size > max_bytes:
        raise SuperpositionError(f"{what} {path}: {st.st_size:,} bytes; at most {max_bytes:,}")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise SuperpositionError(f"{what} {path}: cannot read it ({type(err).__name__})") from None
    if len(data) > max_bytes:  # grew while being read
        raise SuperpositionError(f"{what} {path}: more than {max_bytes:,} bytes")
    if b"\x00" in data:
        raise SuperpositionError(f"{what} {path}: not text (it holds NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SuperpositionError(f"{what} {path}: line {line} is not valid UTF-8 text") from None
    longest = max((len(line) for line in text.splitlines()), default=0)
    if longest > max_line:
        raise SuperpositionError(f"{what} {path}: a line of {longest:,} characters; at most {max_line:,}")
    return text


def looks_binary(chunk: bytes) -> str | None:
    """Why a file's first bytes are not text (NUL bytes, or more than 1% of them not UTF-8), or None."""
    if b"\x00" in chunk:
        return "it holds NUL bytes"
    bad = chunk.decode("utf-8", errors="replace").count("\ufffd")
    if chunk and bad > 0.01 * len(chunk) and bad > 3:
        return f"{bad} of its first {len(chunk):,} bytes are not UTF-8"
    return None


def _txt(path: Path, text_column: str | None) -> Iterator[str]:
    """Paragraphs (separated by blank lines); the odd undecodable byte becomes U+FFFD, but a file
    that is not text (NUL bytes, or more than 1% of its first 64 KiB not UTF-8) is refused."""
    with open(path, "rb") as f:
        why = looks_binary(f.read(65536))
    if why:
        raise SuperpositionError(f"dataset_path {path}: not text ({why})")
    with open(path, encoding="utf-8", errors="replace") as f:
        para: list[str] = []
        for line in f:
            if line.strip():
                para.append(line)
            elif para:
                yield "".join(para)
                para = []
        if para:
            yield "".join(para)


def _jsonl(path: Path, text_column: str | None) -> Iterator[str]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SuperpositionError(f"dataset_path {path}: line {n} is not valid UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SuperpositionError(f"dataset_path {path}: line {n} is not JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise SuperpositionError(f"dataset_path {path}: line {n} is not a JSON object")
            yield _column(record, text_column, f"{path} line {n}")


def _parquet(path: Path, text_column: str | None) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=256)
        for batch in batches:
            for record in batch.to_pylist():
                yield _column(record, text_column, str(path))
    except (pa.ArrowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SuperpositionError(f"dataset_path {path}: not a readable parquet file ({first})") from None


def _hub(dataset_path: str, text_column: str | None, split: str) -> Iterator[str]:
    """A Hugging Face dataset: a local dataset folder, or a hub name (streamed; needs a network)."""
    try:
        import datasets
    except ImportError:
        raise SuperpositionError(
            "dataset_path: hub datasets need the `datasets` package (pip install datasets)"
        ) from None

    def refuse(err: Exception) -> SuperpositionError:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return SuperpositionError(
            f"dataset_path {dataset_path!r}: not python-docs, a .txt/.jsonl/.parquet file, or a loadable "
            f"dataset folder or hub dataset ({first})"
        )

    try:
        records = iter(datasets.load_dataset(dataset_path, split=split, streaming=True))
    except Exception as err:  # noqa: BLE001 - the hub and the loaders raise many types; all mean "cannot use it"
        raise refuse(err) from None
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - a file inside the dataset that cannot be read
            raise refuse(err) from None
        yield _column(record, text_column, dataset_path)


def packed_sequences(
    tokenizer, docs: Iterator[str], context_size: int, prepend_bos: bool = True
) -> Iterator[Tensor]:
    """LongTensor (context_size,) sequences: documents joined by EOS, cut to length, BOS first."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if prepend_bos and bos is None:
        raise SuperpositionError("prepend_bos: this tokenizer has no BOS token; set prepend_bos=false")
    body = context_size - 1 if prepend_bos else context_size
    if body < 1:
        raise SuperpositionError(
            f"context_size: must be at least {2 if prepend_bos else 1}, got {context_size}"
        )
    buf: list[int] = []
    for doc in docs:
        if not doc.strip():  # an empty document adds nothing (a corpus of them would pack EOS alone)
            continue
        pieces = list(_pieces(doc))
        for n, piece in enumerate(pieces):
            buf.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
            if eos is not None and n == len(pieces) - 1:
                buf.append(eos)
            start = 0  # cut whole sequences off the front, then drop them once: linear in the tokens
            while len(buf) - start >= body:
                yield torch.tensor(
                    ([bos] if prepend_bos else []) + buf[start : start + body], dtype=torch.long
                )
                start += body
            del buf[:start]


PIECE = 1 << 20  # characters of a document tokenised per call


def _pieces(doc: str) -> Iterator[str]:
    """A long document in pieces of about PIECE characters, cut after whitespace: one call on a
    50 MB document peaked at 11.9 GB. (A cut may tokenise its boundary differently: one token in
    a million characters.)"""
    start = 0
    while len(doc) - start > PIECE:
        cut = doc.rfind(" ", start + PIECE // 2, start + PIECE)
        cut = start + PIECE if cut < 0 else cut + 1
        yield doc[start:cut]
        start = cut
    yield doc[start:]


def special_mask(tokenizer, ids: Tensor) -> Tensor:
    """True where a token is special (BOS, EOS, padding): excluded from training activations."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    return torch.isin(ids, special)


def split_sequences(seqs: Iterator[Tensor], holdout: bool) -> Iterator[Tensor]:
    """The training sequences (holdout=False) or the held-out evaluation ones (holdout=True)."""
    for i, s in enumerate(seqs):
        if (i % HOLDOUT == HOLDOUT - 1) == holdout:
            yield s
