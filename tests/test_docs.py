"""The documentation cannot drift from the code.

- The generated pages (docs/commands.md, docs/reference.md, the keys at the end of
  docs/experiments.md) equal what `make docs` makes from the registries now.
- Every code block of README.md and docs/*.md is run or checked, by its fence:
  `python` blocks run as written, in a scratch folder and a process of their own
  (tests/forked.py); the README's `bash` blocks run as written, a process per line; the docs'
  `bash` blocks are checked line by line through the real parser and the options' and configs'
  validation (`main(check_only=True)`): their runs take minutes to hours, need a GPU, several
  nodes or the network, so they are not run here, but every flag, key and value they show is
  valid; `console` blocks run each `$ ` line and compare what it prints; `text` blocks are
  diagrams and sample output. `make X` must be a Makefile target and a `python FILE` must exist.
  A block of any other kind fails the test.
"""

import re
import shlex
from pathlib import Path

import pytest

from superposition.cli import main
from superposition.commands.docs import pages
from tests import forked

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```([a-z]*)[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks():
    for f in FILES:
        for n, m in enumerate(BLOCK.finditer(f.read_text(encoding="utf-8"))):
            yield pytest.param(
                f, m.group(1), m.group(2), id=f"{f.relative_to(ROOT)}#{n}-{m.group(1) or 'plain'}"
            )


def _commands(body: str) -> list[str]:
    """The block's command lines, continuations joined, comments and blank lines left out."""
    text = body.replace("\\\n", " ")
    return [
        line.split(" #")[0].strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _argv_after(words: list[str], marker: list[str]) -> list[str] | None:
    for i in range(len(words) - len(marker) + 1):
        if words[i : i + len(marker)] == marker:
            return words[i + len(marker) :]
    return None


def _check_line(line: str, run: bool, cwd: Path) -> None:
    words = shlex.split(line)
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"make {words[1]}: no such target"
        return
    if words[0] == "python":
        assert (ROOT / words[1]).is_file(), f"{words[1]}: no such file"
        return
    argv = words[1:] if words[0] == "superposition" else _argv_after(words, ["-m", "superposition"])
    assert argv is not None, f"a documented command this test does not know how to check: {line}"
    if not run:
        assert main(argv, check_only=True) == 0, line
        return
    done = forked.run(argv, cwd=cwd)  # its own process, as `superposition ...` in a shell
    assert done.returncode == 0, (line, done.stderr[-2000:])


@pytest.mark.parametrize("path, text", [(p.relative_to(ROOT), t) for p, t in pages(ROOT / "docs").items()])
def test_generated_pages_are_up_to_date(path, text):
    assert (ROOT / path).read_text(encoding="utf-8") == text, f"{path} is stale: run make docs"


@pytest.mark.parametrize("doc, lang, body", list(_blocks()))
def test_every_code_block_runs_or_checks(doc, lang, body, tmp_path, capsys):
    assert lang in ("python", "bash", "console", "text"), f"{doc}: a code block without a known language"
    if lang == "text":
        return
    if lang == "python":
        done = forked.run_python(body, cwd=tmp_path, timeout=600)  # as `python -c`, in its own process
        assert done.returncode == 0, done.stderr[-3000:]
        return
    if lang == "console":
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                expected = []
                for nxt in lines[i + 1 :]:
                    if nxt.startswith("$ "):
                        break
                    expected.append(nxt)
                argv = shlex.split(line[2:])
                assert argv[0] == "superposition"
                done = forked.run(argv[1:], cwd=tmp_path)
                assert (done.stdout + done.stderr).strip() == "\n".join(expected).strip()
        return
    for line in _commands(body):
        _check_line(line, run=doc.name == "README.md" and not line.startswith("make "), cwd=tmp_path)
