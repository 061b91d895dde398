"""The `superposition` command.

    superposition list
    superposition run EXPERIMENT --out DIR [--quick] [--seed N] [--set key=value ...] [--help-config]
    superposition demo [--out DIR] [--quick]
    superposition train-sae [--config FILE] [--set key=value ...] --out DIR [--resume] [--help-config]
    superposition eval-sae SAE [--model M] [--hook H] [--out DIR] [--sequences N]
    superposition dashboard SAE --out SITE [--model M] [--hook H] [--sequences N] [--latents N] [--sae NAME]
                            [--meta DIR]
    superposition analyze SAE --prompt TEXT [--model M] [--hook H] [--token TOKEN] [--top N]
    superposition convert SRC --to saelens|sparsify --out DST
    superposition compare-saes A B --out DIR [--threshold T]
    superposition meta-sae RUN_DIR --out DIR [--width N] [--k K] [--steps N] [--lr LR] [--sae NAME]
    superposition autointerp RUN_DIR --out DIR [--latents N | --latent-ids 3,17] [--explainer local|openai]
                             [--model NAME] [--base-url URL] [--sequences N] [--cache DIR]
    superposition self-explain RUN_DIR --out DIR [--latents N | --latent-ids 3,17] [--layer L] [--scales ...]

Each command is one `_cmd_*` function; the work itself lives in superposition.experiments and
superposition.runs. Bad input exits with code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from superposition.errors import SuperpositionError
from superposition.files import describe_write_failure, resolve_out, write_failure

SET_HELP = "override a config key; repeatable. Values are JSON (numbers, lists, true) or plain strings"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        raise SuperpositionError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="superposition", description="Toy models of superposition and sparse autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the experiments")

    run = sub.add_parser("run", help="run one experiment and write its run directory")
    run.add_argument("experiment", help="experiment name (see `superposition list`)")
    run.add_argument("--out", help="run directory to write (replaced if it holds an earlier run); required")
    run.add_argument("--quick", action="store_true", help="a smaller version that still shows the effect")
    run.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 0)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP
    )
    run.add_argument(
        "--help-config", action="store_true", help="print every config key of the experiment and exit"
    )

    demo = sub.add_parser("demo", help="run `intro` and `geometry` and print where their reports are")
    demo.add_argument(
        "--out", default="runs/demo", help="parent directory of the two runs (default: runs/demo)"
    )
    demo.add_argument("--quick", action="store_true", help="quick versions (for a smoke test)")

    train = sub.add_parser(
        "train-sae", help="train an SAE on a language model's activations (default: SmolLM2-135M, offline)"
    )
    train.add_argument("--config", default=None, help="YAML or JSON file of config keys")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=SET_HELP + " (every key: superposition train-sae --help-config)",
    )
    train.add_argument("--out", help="run directory (must be new or empty, unless --resume); required")
    train.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="train on N local processes (launches torchrun for you; see parallel=data|hooks)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out exactly where it stopped"
    )
    train.add_argument(
        "--help-config", action="store_true", help="print every config key with its default and exit"
    )

    ev = sub.add_parser(
        "eval-sae", help="evaluate an SAE on its language model: L0, explained variance, CE loss recovered"
    )
    ev.add_argument("run_dir", metavar="SAE", help=SAE_HELP)
    _model_hook_flags(ev)
    ev.add_argument(
        "--out", default=None, help="folder for the evaluation; needed unless SAE is a train-sae run"
    )
    ev.add_argument(
        "--sequences",
        type=int,
        default=None,
        help="held-out sequences to evaluate on (default: the run's eval_sequences)",
    )

    dash = sub.add_parser("dashboard", help="write a static, offline site of an SAE run's latents")
    dash.add_argument("run_dir", metavar="SAE", help=SAE_HELP + ", or an SAE experiment run (sae-toy, ...)")
    _model_hook_flags(dash)
    dash.add_argument(
        "--out", required=True, help="folder for the site (replaced if it holds an earlier site)"
    )
    dash.add_argument(
        "--sequences",
        type=int,
        default=None,
        help="held-out sequences to collect examples from (default 256)",
    )
    dash.add_argument("--latents", type=int, default=None, help="only the first N latents (default: all)")
    dash.add_argument(
        "--sae", default=None, help="experiment runs: which SAE under saes/ (default: the first)"
    )
    dash.add_argument(
        "--meta", default=None, help="a meta-sae output folder of this SAE: show each latent's meta-latents"
    )
    dash.add_argument(
        "--explanations",
        default=None,
        help="an autointerp output folder of this SAE: explanations and scores (default: RUN_DIR/autointerp)",
    )

    an = sub.add_parser(
        "analyze", help="which latents drive a prompt's next token: activation, attribution, ablation"
    )
    an.add_argument("run_dir", metavar="SAE", help=SAE_HELP)
    _model_hook_flags(an)
    an.add_argument("--prompt", required=True, help="text; analysed at its last token")
    an.add_argument(
        "--token", default=None, help="target next token (text; default: the model's top prediction)"
    )
    an.add_argument("--top", type=int, default=10, help="latents to list (default 10)")

    conv = sub.add_parser("convert", help="write any readable SAE in SAELens's or sparsify's layout")
    conv.add_argument("src", metavar="SRC", help=SAE_HELP.replace("a train-sae run, or ", ""))
    conv.add_argument("--to", required=True, choices=["saelens", "sparsify"], help="the layout to write")
    conv.add_argument("--out", required=True, help="the SAE folder to write (new, or an earlier conversion)")

    cmp = sub.add_parser(
        "compare-saes", help="feature splitting: each latent of the wider SAE against the narrower one's"
    )
    cmp.add_argument("a", metavar="A", help=SAE_HELP)
    cmp.add_argument("b", metavar="B", help="the other SAE, with the same d_in (either may be the wider)")
    cmp.add_argument(
        "--out", required=True, help="folder to write (replaced if it holds an earlier comparison)"
    )
    cmp.add_argument(
        "--threshold",
        type=float,
        default=0.7,
        help="a wide latent whose best decoder cosine is below this is novel (default 0.7)",
    )

    meta = sub.add_parser(
        "meta-sae", help="a BatchTopK meta-SAE on an SAE's decoder directions (Bussmann et al.)"
    )
    meta.add_argument(
        "run_dir", metavar="RUN_DIR", help=SAE_HELP + ", or an SAE experiment run (sae-toy, ...)"
    )
    meta.add_argument(
        "--out", required=True, help="folder to write (replaced if it holds an earlier meta-SAE)"
    )
    meta.add_argument(
        "--width", type=int, default=None, help="meta-latents (default: a quarter of the base latents)"
    )
    meta.add_argument("--k", type=int, default=4, help="mean meta-latents per base latent (default 4)")
    meta.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    meta.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    meta.add_argument(
        "--sae", default=None, help="experiment runs: which SAE under saes/ (default: the first)"
    )

    ai = sub.add_parser("autointerp", help="explain latents with a language model and score the explanations")
    ai.add_argument("run_dir", metavar="RUN_DIR", help=SAE_HELP)
    ai.add_argument(
        "--out", required=True, help="folder to write (replaced if it holds an earlier autointerp)"
    )
    _latent_flags(ai)
    ai.add_argument("--explainer", default="local", help="local (in-process, default) or openai (HTTP)")
    ai.add_argument(
        "--model", default=None, help="explainer model: local folder or hub name, or the server's model name"
    )
    ai.add_argument(
        "--base-url", default=None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1"
    )
    ai.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key"
    )
    ai.add_argument("--concurrency", type=int, default=8, help="parallel HTTP requests (default 8)")
    ai.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request (default 60)")
    ai.add_argument("--sequences", type=int, default=256, help="held-out sequences (default 256)")
    ai.add_argument("--cache", default=None, help="answer cache folder (default: the project cache)")
    ai.add_argument("--subject-model", default=None, help="the SAE's language model, if not the one it names")
    ai.add_argument("--hook", default=None, help="the SAE's hook point, if not the one it names")
    ai.add_argument("--seed", type=int, default=0)

    se = sub.add_parser(
        "self-explain", help="the model explains a latent itself: its direction patched into a prompt"
    )
    se.add_argument("run_dir", metavar="RUN_DIR", help=SAE_HELP)
    se.add_argument("--out", required=True, help="folder to write (replaced if it holds an earlier one)")
    _latent_flags(se)
    se.add_argument("--layer", type=int, default=None, help="layer to patch (default: the SAE's)")
    se.add_argument(
        "--scales",
        default=None,
        help="comma-separated multiples of the typical residual norm to sweep (default 0.5,1,2,4,8)",
    )
    se.add_argument("--max-tokens", type=int, default=16, help="tokens to generate (default 16)")
    _model_hook_flags(se)
    return parser


def _latent_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latents", type=int, default=None, help="the first N latents (default 20)")
    p.add_argument("--latent-ids", default=None, help="these latents, comma-separated (e.g. 3,17)")


SAE_HELP = (
    "a train-sae run, or any SAE: a SAELens, sparsify, Gemma Scope or dictionary_learning folder or file, "
    "or hf://owner/repo/path"
)


def _model_hook_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="the language model (default: the one the run or SAE names)")
    p.add_argument(
        "--hook", default=None, help="the hook point, e.g. blocks.6.hook_resid_post (default: the SAE's)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input or a resource the machine lacks (one line
    on stderr), 130 interrupted, 1 an internal error (one line; SUPERPOSITION_DEBUG=1 shows the
    traceback). Whatever happens, a run directory is written whole or not at all."""
    from superposition.perf import tune_allocator

    tune_allocator()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SuperpositionError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("superposition: interrupted; no run directory was written", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a read-only file system, a file that vanished ...
        where = f"{err.filename}: " if err.filename else ""
        return _fail(f"{where}{err.strerror or err}")
    except MemoryError:
        return _fail("out of memory; use smaller sizes (batch, width, instances)")
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if _allocation_failure(err):
            return _fail(f"out of memory ({_first_line(err)}); use smaller sizes (batch, width, instances)")
        if write_failure(err):
            return _fail(f"cannot write: {describe_write_failure(err)}")
        if os.environ.get("SUPERPOSITION_DEBUG"):
            raise
        print(
            f"superposition: internal error: {type(err).__name__}: {_first_line(err)} "
            "(run with SUPERPOSITION_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _fail(message: str) -> int:
    print(f"superposition: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _allocation_failure(err: Exception) -> bool:
    """torch's CPU allocator and CUDA report running out of memory as RuntimeErrors."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc")
    )


def _positive(args: argparse.Namespace, *flags: str) -> None:
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise SuperpositionError(f"--{flag.replace('_', '-')}: must be positive, got {value}")


def _required_out(args: argparse.Namespace) -> str:
    if args.out is None:
        raise SuperpositionError(f"superposition {args.command}: the following arguments are required: --out")
    return args.out


def _cmd_list(args: argparse.Namespace) -> int:
    from superposition.experiments import REGISTRY

    width = max(len(n) for n in REGISTRY)
    for name in sorted(REGISTRY):
        print(f"{name:<{width}}  {REGISTRY[name].description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from superposition.config import describe_fields
    from superposition.experiments import get_experiment, run_experiment

    if args.help_config:
        exp = get_experiment(args.experiment)
        print(
            describe_fields(
                exp.config, f"{args.experiment}: every key (--set key=value); --quick sets {exp.quick}"
            )
        )
        return 0
    out = run_experiment(
        args.experiment, _required_out(args), quick=args.quick, seed=args.seed, overrides=args.overrides
    )
    print(f"wrote {out}\nreport: {out / 'report.html'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from superposition.experiments import run_experiment

    reports = []
    for name in ("intro", "geometry"):
        print(f"running {name}{' (quick)' if args.quick else ''} ...", flush=True)
        out = run_experiment(name, Path(args.out) / name, quick=args.quick)
        reports.append(out / "report.html")
    print("done. Open the reports:")
    for r in reports:
        print(f"  {r}")
    return 0


def _cmd_train_sae(args: argparse.Namespace) -> int:
    from superposition.lm.config import LMSAEConfig, make_lm_config
    from superposition.runs.train_sae import train_lm_sae

    if args.help_config:
        from superposition.config import describe_fields

        print(
            describe_fields(
                LMSAEConfig, "train-sae: every key (--set key=value, or in a --config YAML/JSON file)"
            )
        )
        return 0
    out = _required_out(args)
    if args.resume and (args.config or args.overrides):
        raise SuperpositionError(
            "--resume: continues with the run's saved config.json; drop --config and --set"
        )
    cfg = None if args.resume else make_lm_config(args.config, args.overrides)
    if args.nproc is not None and args.nproc != 1:
        from superposition.dist import launch

        argv = ["train-sae", "--out", str(out), *(["--resume"] if args.resume else [])]
        argv += [
            *(["--config", args.config] if args.config else []),
            *(a for s in args.overrides for a in ("--set", s)),
        ]
        code = launch(args.nproc, argv)
        if code == 0:
            _print_eval(resolve_out(out))
        return code
    run = train_lm_sae(cfg, out, resume=args.resume)
    if run is not None:  # None: a torchrun rank other than 0
        _print_eval(run)
    return 0


def _cmd_eval_sae(args: argparse.Namespace) -> int:
    from superposition.runs.train_sae import evaluate_run

    _positive(args, "sequences")
    evaluate_run(args.run_dir, eval_sequences=args.sequences, out=args.out, model=args.model, hook=args.hook)
    _print_eval(resolve_out(args.out) if args.out is not None else Path(args.run_dir).expanduser().absolute())
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from superposition.runs.dashboard import build_dashboard

    _positive(args, "sequences", "latents")
    site = build_dashboard(
        args.run_dir,
        args.out,
        args.sequences,
        args.latents,
        args.sae,
        model=args.model,
        hook=args.hook,
        meta=args.meta,
        explanations=args.explanations,
    )
    print(f"wrote {site}\nopen: {site / 'index.html'}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from superposition.runs.analyze import analyze_prompt

    _positive(args, "top")
    print(analyze_prompt(args.run_dir, args.prompt, args.token, args.top, model=args.model, hook=args.hook))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from superposition.files import staged_directory
    from superposition.sae.formats import load, save

    sae = load(args.src)
    with staged_directory(resolve_out(args.out), "converted SAE") as tmp:
        save(sae, tmp, to=args.to)
    cfg = sae.cfg
    shape = f"{cfg.architecture}, d_in {cfg.d_in}, d_sae {cfg.d_sae}"
    print(f"wrote {resolve_out(args.out)} ({args.to} layout; {shape})")
    return 0


def _cmd_compare_saes(args: argparse.Namespace) -> int:
    from superposition.runs.compare import compare_saes

    out = compare_saes(args.a, args.b, args.out, args.threshold)
    s = json.loads((out / "summary.json").read_text())
    print(
        f"{s['d_sae_wide']} latents ({s['wide']}) against {s['d_sae_narrow']}: "
        f"{s['frac_narrow_split']:.1%} of narrow latents split, {s['frac_novel']:.1%} of wide latents novel, "
        f"mean best cosine {s['mean_max_cosine']:.3f}\nwrote {out}\nreport: {out / 'report.html'}"
    )
    return 0


def _cmd_meta_sae(args: argparse.Namespace) -> int:
    from superposition.runs.meta_sae import meta_sae

    out = meta_sae(args.run_dir, args.out, args.width, args.k, args.steps, args.lr, args.sae)
    s = json.loads((out / "summary.json").read_text())
    print(
        f"meta-SAE of {s['width']} latents on {s['n_base_latents']} decoder rows: FVE {s['fve']:.3f}, "
        f"L0 {s['l0']:.2f}, {s['frac_dead']:.1%} dead\nwrote {out}\nreport: {out / 'report.html'}"
    )
    return 0


def _cmd_autointerp(args: argparse.Namespace) -> int:
    from superposition.runs.autointerp import autointerp

    _positive(args, "concurrency", "timeout")  # --sequences and the latent flags: autointerp checks them
    out = autointerp(
        args.run_dir,
        args.out,
        args.latents,
        args.latent_ids,
        args.explainer,
        args.model,
        args.base_url,
        args.sequences,
        args.cache,
        args.api_key_env,
        args.concurrency,
        args.timeout,
        args.seed,
        args.subject_model,
        args.hook,
    )
    s = json.loads((out / "summary.json").read_text())

    def mean(block: dict, key: str) -> str:
        m = block[key]["mean"]
        return "n/a" if m is None else f"{m:.3f}"

    print(
        f"{s['explained']} of {s['latents']} latents explained; detection balanced accuracy "
        f"{mean(s['scores'], 'detection.balanced_accuracy')} (shuffled "
        f"{mean(s['controls']['shuffled'], 'detection.balanced_accuracy')}, top tokens "
        f"{mean(s['controls']['top_tokens'], 'detection.balanced_accuracy')}); {s['calls']} calls, "
        f"{s['cached_calls']} cached, {s['seconds']:.0f} s\nwrote {out}\nreport: {out / 'report.html'}"
    )
    return 0


def _cmd_self_explain(args: argparse.Namespace) -> int:
    from superposition.runs.self_explain import self_explain

    out = self_explain(
        args.run_dir, args.out, args.latents, args.latent_ids, args.layer, args.scales, args.max_tokens,
        args.model, args.hook,
    )  # fmt: skip
    print(f"wrote {out / 'self_explanations.jsonl'}")
    return 0


COMMANDS = {
    "list": _cmd_list,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "train-sae": _cmd_train_sae,
    "eval-sae": _cmd_eval_sae,
    "dashboard": _cmd_dashboard,
    "analyze": _cmd_analyze,
    "convert": _cmd_convert,
    "compare-saes": _cmd_compare_saes,
    "meta-sae": _cmd_meta_sae,
    "autointerp": _cmd_autointerp,
    "self-explain": _cmd_self_explain,
}


def _print_eval(run: Path) -> None:
    from superposition.runs.train_sae import DEPTH_KEYS, HEADLINE_KEYS

    s = json.loads((run / "summary.json").read_text())
    if "hooks" in s:  # a multi-hook run: a row per hook
        keys = DEPTH_KEYS
        width = max(len(h) for h in s["hooks"])
        print(f"{'hook':<{width}}  " + "  ".join(f"{k:>18}" for k in keys))
        for hook, rec in s["hooks"].items():
            print(f"{hook:<{width}}  " + "  ".join(f"{rec[k]:>18.4g}" for k in keys))
    else:
        print("\n".join(f"{k:>22}  {s[k]:.4g}" for k in HEADLINE_KEYS))
    print(f"wrote {run}\nreport: {run / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
