"""The reference pages under docs/, generated from the registries so they cannot drift from the
code: every command's flags (docs/commands.md), every train-sae key (docs/reference.md) and every
experiment's keys (the end of docs/experiments.md). `make docs` rewrites them;
tests/test_docs.py fails when a committed page differs from what this generates.

    python -m superposition.commands.docs [--check] [DOCS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from superposition.config import _type_name

MARK = "<!-- generated below by `make docs` from the code: edit the code, not this -->"


def _default(info) -> str:
    if info.is_required():
        return "required"
    return f"`{json.dumps(info.get_default(call_default_factory=True))}`"


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def keys_table(cls, flags: bool = False) -> str:
    from superposition.commands.base import flag_name, is_positional

    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, info in cls.model_fields.items():
        name = key
        if flags:
            name = info.json_schema_extra["metavar"] if is_positional(info) else flag_name(key, info)
        rows.append(f"| `{name}` | {_cell(_type_name(info.annotation))} | {_cell(_default(info))} | "
                    f"{_cell(info.description)} |")  # fmt: skip
    return "\n".join(rows)


def commands_page() -> str:
    from superposition.commands import COMMANDS

    out = [
        "# Commands",
        "",
        "Every command's flags, from its options class (`superposition CMD --help` prints the same).",
        "Every command also takes `--help-config` and `--threads N` (CPU threads for torch; by default",
        "toy runs choose one thread for small steps, where a second costs more than it gains). A command",
        "that writes a folder takes `--out DIR`; the folder gets `config.json` with these options.",
        "",
    ]
    for name in sorted(COMMANDS):
        cmd = COMMANDS[name]
        out += [f"## `{name}`", "", cmd.help[0].upper() + cmd.help[1:] + ".", ""]
        if cmd.options.model_fields:
            out += [keys_table(cmd.options, flags=True), ""]
        if cmd.kind is not None:
            where = "" if cmd.out_required else " (optional: without it, a train-sae run is updated in place)"
            out += [f"Writes a `{cmd.kind}` folder at `--out`{where}.", ""]
    return "\n".join(out)


def reference_page() -> str:
    from superposition.lm.config import LMSAEConfig

    return "\n".join(
        [
            "# train-sae configuration keys",
            "",
            "Every key of a `train-sae` run, in a YAML/JSON file (`--config`) or with `--set key=value`.",
            "The config is composed: the language-model keys, then every SAE key (any architecture's)",
            "and every trainer key, so a key added to the SAE or trainer config appears here by itself.",
            "",
            keys_table(LMSAEConfig),
            "",
        ]
    )


def experiments_tail() -> str:
    from superposition.experiments import REGISTRY

    out = [MARK, "", "## Every experiment's keys", ""]
    for name in sorted(REGISTRY):
        exp = REGISTRY[name]
        quick = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in exp.quick.items()) or "nothing"
        out += [f"### `{name}`", "", exp.description[0].upper() + exp.description[1:] + ".", "",
                f"`--quick` sets {quick}.", "", keys_table(exp.config), ""]  # fmt: skip
    return "\n".join(out)


def pages(docs: Path) -> dict[Path, str]:
    """Each generated page's path and the text it must hold."""
    experiments = docs / "experiments.md"
    head = experiments.read_text(encoding="utf-8").split(MARK)[0].rstrip() + "\n\n"
    return {
        docs / "commands.md": commands_page(),
        docs / "reference.md": reference_page(),
        experiments: head + experiments_tail(),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    rest = [a for a in argv if a != "--check"]
    docs = Path(rest[0]) if rest else Path("docs")
    stale = []
    for path, text in pages(docs).items():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8")
    verb = "out of date" if check else "rewrote"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "docs are up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
