"""The `superposition` command: every subcommand, its flags and its help come from the command
registry (superposition.commands): a command's options are a typed config, each field a flag
(`latent_ids` is `--latent-ids`) or a positional argument, with its type, default and description.

    superposition list | run | demo | train-sae | eval-sae | dashboard | analyze | convert
                 | compare-saes | meta-sae | autointerp | self-explain      (--help on each)

Every command also takes `--help-config` (its keys with types, defaults and descriptions) and
`--threads N`. Bad input exits with code 2 and a one-line message naming the flag, never a
traceback; errors from the library name option keys, and this layer shows them as the flags.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from superposition.atomic import describe_write_failure, write_failure
from superposition.commands.base import flag_name
from superposition.commands.base import is_positional as _is_positional
from superposition.errors import Reported, SuperpositionError
from superposition.redact import redact


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        raise SuperpositionError(f"{self.prog}: {message}")


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """The type inside Optional[...] and whether None is allowed."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), len(rest) < len(args)
    return annotation, False


def _add_command(sub, cmd) -> None:
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help + (f". {cmd.options.__doc__}" if
                       cmd.options.__doc__ else ""))  # fmt: skip
    for key, info in cmd.options.model_fields.items():
        desc = info.description or ""
        if _is_positional(info):
            # optional for argparse, so that --help-config needs nothing else; checked in parse_options
            metavar = info.json_schema_extra["metavar"]
            many = typing.get_origin(_scalar(info.annotation)[0]) is list  # the rest of the positionals
            p.add_argument(
                key, nargs="*" if many else "?", default=argparse.SUPPRESS, metavar=metavar, help=desc
            )
            continue
        name = flag_name(key, info)
        typ, _ = _scalar(info.annotation)
        default = info.get_default(call_default_factory=True)
        shown = "" if default in (None, False, []) or info.is_required() else f" (default {default})"
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS, "help": desc + shown}
        if typ is bool:
            p.add_argument(name, action="store_true", **kw)
        elif typing.get_origin(typ) is list:
            p.add_argument(name, action="append", metavar="KEY=VALUE", **kw)
        elif typing.get_origin(typ) is typing.Literal:
            p.add_argument(name, choices=list(typing.get_args(typ)), **kw)
        else:
            conv = {int: _count, float: _finite}.get(typ, str)
            p.add_argument(name, type=conv, metavar=key.upper(), **kw)
    if cmd.kind is not None:
        default = f" (default: {cmd.out_default})" if cmd.out_default else ""
        p.add_argument("--out", default=cmd.out_default, help=f"the folder to write{default}")
    p.add_argument("--help-config", action="store_true", help="print every option with its type, default and "
                   "description, and exit")  # fmt: skip
    threads = "CPU threads for torch (default: torch's, one per core; toy runs choose by size)"
    p.add_argument("--threads", type=int, default=None, metavar="N", help=threads)


LARGEST = 10**12  # no count this tool takes (steps, sequences, latents, tokens) is larger


def _count(text: str) -> int:
    """An integer flag: a number of things, so bounded (10^21 steps is a typo, not a plan)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if abs(value) > LARGEST:
        raise argparse.ArgumentTypeError(f"{text} is more than {LARGEST:.0e}")
    return value


def _finite(text: str) -> float:
    """A float flag: a finite number (inf and nan are accepted by float(), and by nothing here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from superposition.commands import COMMANDS

    parser = _Parser(prog="superposition", description="Toy models of superposition and sparse autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in sorted(COMMANDS):
        _add_command(sub, COMMANDS[name])
    return parser


# ---------------------------------------------------------------------- errors as the user typed them
def _flags(options) -> dict[str, str]:
    """Option key -> how the command line spells it."""
    out = {"out": "--out"}
    for key, info in options.model_fields.items():
        out[key] = info.json_schema_extra["metavar"] if _is_positional(info) else flag_name(key, info)
    return out


def as_typed(message: str, options) -> str:
    """A library message names option keys (`latent_ids: ...`, or `key` in backticks inside the
    text); on the command line they are flags (`--latent-ids: ...`)."""
    flags = _flags(options)
    m = re.match(r"^([a-z][a-z_]*)(?: and ([a-z][a-z_]*))?(?=[ :])", message)
    if m and m.group(1) in flags and (m.group(2) is None or m.group(2) in flags):
        lead = flags[m.group(1)] + (f" and {flags[m.group(2)]}" if m.group(2) else "")
        message = lead + message[m.end() :]
    return re.sub(r"`([a-z][a-z_]*)`", lambda k: flags.get(k.group(1), k.group(1)), message)


def _validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].replace("\n", " ").removeprefix("Value error, ")
    if first["type"] == "value_error":
        return msg if not key or msg.startswith(key.split(".")[0]) else f"{key}: {msg}"
    if first["type"] == "greater_than" and first.get("ctx", {}).get("gt") == 0:
        return f"{key}: must be positive, got {first['input']}"
    if first["type"] == "missing":
        return f"{key}: required"
    return f"{key}: {msg} (got {first.get('input')!r})"


def parse_options(cmd, args: argparse.Namespace):
    """The command's options from the parsed flags, validated (a one-line error names the flag)."""
    values = {k: getattr(args, k) for k in cmd.options.model_fields if hasattr(args, k)}
    flags = _flags(cmd.options)
    missing = [
        flags[k] for k, info in cmd.options.model_fields.items() if info.is_required() and k not in values
    ]
    if missing:
        raise SuperpositionError(
            f"superposition {cmd.name}: the following arguments are required: {', '.join(missing)}"
        )
    try:
        return cmd.options.model_validate(values)
    except ValidationError as err:
        raise SuperpositionError(as_typed(_validation_message(err), cmd.options)) from None


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None, check_only: bool = False) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input or a resource the machine lacks (one line
    on stderr), 130 interrupted, 1 an internal error (one line; SUPERPOSITION_DEBUG=1 shows the
    traceback). Whatever happens, a run directory is written whole or not at all. `check_only`:
    parse and validate everything the command line says (flags, options, config keys), run nothing
    (tests/test_docs.py checks the documentation's commands this way)."""
    from superposition.cpu import tune_allocator

    tune_allocator()
    previous = _sigterm_as_interrupt()
    try:
        return _main(argv, check_only)
    finally:
        # once the command has said what it had to say, a SIGTERM (torchrun's agent stopping the
        # ranks of a failed run) ends the process as it did before: raised inside the interpreter's
        # exit (atexit, a finalizer) it printed a traceback after the one-line error
        _restore_sigterm(previous)


def _main(argv: list[str] | None, check_only: bool) -> int:
    cmd = None
    try:
        from superposition.commands import COMMANDS

        args = build_parser().parse_args(argv)
        cmd = COMMANDS[args.command]
        return _run(cmd, args, check_only)
    except (Exception, KeyboardInterrupt) as err:
        # the run has stopped and cleaned up; a SIGTERM while its line is printed (torchrun's agent
        # stopping the other ranks) would raise inside the except clause: the line first
        _ignore_sigterm()
        return _report(err, cmd)


def _report(err: BaseException, cmd) -> int:
    """The one line (and the exit code) for what stopped a command."""
    if isinstance(err, SuperpositionError):
        return _fail(as_typed(str(err), cmd.options) if cmd is not None else str(err))
    if isinstance(err, Reported):
        return err.code
    if isinstance(err, KeyboardInterrupt):
        print("superposition: interrupted; no run directory was written", file=sys.stderr)
        return 130
    if isinstance(err, OSError):  # a full disk, a read-only file system, a file that vanished ...
        where = f"{err.filename}: " if err.filename else ""
        return _fail(f"{where}{err.strerror or err}")
    if isinstance(err, MemoryError):
        return _fail("out of memory; use smaller sizes (batch, width, instances)")
    # the last line of defence: one line, never a traceback
    if _allocation_failure(err):
        return _fail(f"out of memory ({_first_line(err)}); use smaller sizes (batch, width, instances)")
    if write_failure(err):
        return _fail(f"cannot write: {describe_write_failure(err)}")
    if os.environ.get("SUPERPOSITION_DEBUG"):
        raise err
    print(
        f"superposition: internal error: {type(err).__name__}: {redact(_first_line(err))} "
        "(run with SUPERPOSITION_DEBUG=1 for the traceback, and please report it)",
        file=sys.stderr,
    )
    return 1


def _run(cmd, args: argparse.Namespace, check_only: bool = False) -> int:
    import matplotlib  # figures go to files: never open a window (set here, not on import)

    from superposition.commands import execute
    from superposition.config import describe_fields

    matplotlib.use("Agg")
    if args.threads is not None:
        if args.threads <= 0:
            raise SuperpositionError(f"--threads: must be positive, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        os.environ["SUPERPOSITION_THREADS"] = str(args.threads)  # toy runs keep the user's choice
    if args.help_config:
        opts = cmd.options.model_construct(
            **{k: getattr(args, k) for k in vars(args) if k in cmd.options.model_fields}
        )
        if cmd.help_config is not None:
            print(cmd.help_config(opts))
        else:
            print(describe_fields(cmd.options, f"{cmd.name}: every option (flags as in --help)"))
        return 0
    opts = parse_options(cmd, args)
    out = getattr(args, "out", None)
    if cmd.kind is not None and out is None and cmd.out_required:
        raise SuperpositionError(f"superposition {cmd.name}: the following arguments are required: --out")
    if check_only:
        if hasattr(opts, "settings"):  # train-sae: the run's config from --config and --set
            opts.settings()
        if cmd.name == "run":
            from superposition.experiments import make_config

            make_config(opts.experiment, opts.quick, opts.seed, opts.overrides)
        return 0
    folder, result = execute(cmd.name, opts, out)
    _ignore_sigterm()  # the run is written: a SIGTERM now would call it interrupted; its lines first
    folder = result.folder or folder
    if result.message:
        print(redact(result.message))
    if folder is not None and cmd.kind is not None:
        print(f"wrote {folder}")
        if result.report:
            print(f"report: {folder / 'report.html'}")
        elif (Path(folder) / "index.html").is_file():
            print(f"open: {folder / 'index.html'}")
    return 0


def _sigterm_as_interrupt():
    """SIGTERM (timeout, docker stop, Slurm) stops a run as Ctrl-C does: whatever was staged is
    removed and a train-sae run stays resumable. (A torchrun worker replaces this with its own
    handler, dist.Comm.) Returns the handler it replaced, for _restore_sigterm."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return _set_sigterm(interrupt)


def _ignore_sigterm() -> None:
    import signal

    _set_sigterm(signal.SIG_IGN)


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not False:  # None: a handler set outside Python, which cannot be put back
        _set_sigterm(signal.SIG_DFL if previous is None else previous)


def _set_sigterm(handler):
    """The handler it replaced; False where it may not replace it (not the main thread: an embedding
    application's handlers are left alone)."""
    import signal

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return False


def _fail(message: str) -> int:
    """One line: whitespace folded, at most MAX_MESSAGE characters (a message quotes what it was
    given, which may be huge), secrets redacted. Under torchrun, an error every rank meets alike
    is printed by rank 0 alone (64 ranks printed 65 copies); a rank's own ("rank R: ...") by it."""
    rank = os.environ.get("RANK")
    if rank not in (None, "0") and os.environ.get("WORLD_SIZE") and not message.startswith(f"rank {rank}:"):
        return 2
    text = redact(" ".join(message.split()))
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 30] + f" ... ({len(text) - MAX_MESSAGE + 30} more characters)"
    print(f"superposition: error: {text}", file=sys.stderr)
    return 2


MAX_MESSAGE = 600


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _allocation_failure(err: Exception) -> bool:
    """torch's CPU allocator and CUDA report running out of memory as RuntimeErrors."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc")
    )


if __name__ == "__main__":
    sys.exit(main())
