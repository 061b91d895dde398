"""The `superposition` command.

    superposition list
    superposition run EXPERIMENT --out DIR [--quick] [--seed N] [--set key=value ...]
    superposition demo [--out DIR] [--quick]
    superposition train-sae [--config FILE] [--set key=value ...] --out DIR [--resume]
    superposition eval-sae RUN_DIR [--sequences N]
    superposition dashboard RUN_DIR --out SITE_DIR [--sequences N] [--latents N] [--sae NAME]
    superposition analyze RUN_DIR --prompt TEXT [--token TOKEN] [--top N]

Bad input exits with code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superposition.errors import SuperpositionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        raise SuperpositionError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="superposition", description="Toy models of superposition and sparse autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run one experiment and write its run directory")
    run.add_argument("experiment", help="experiment name (see `superposition list`)")
    run.add_argument(
        "--out", required=True, help="run directory to write (replaced if it holds an earlier run)"
    )
    run.add_argument("--quick", action="store_true", help="a smaller version that still shows the effect")
    run.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 0)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key; repeatable. Values are JSON (numbers, lists, true) or plain strings",
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
        help="override a config key; repeatable (keys: see docs/lm.md)",
    )
    train.add_argument("--out", required=True, help="run directory (must be new or empty, unless --resume)")
    train.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out exactly where it stopped"
    )
    ev = sub.add_parser(
        "eval-sae", help="evaluate a train-sae run: L0, explained variance, CE loss recovered, ..."
    )
    ev.add_argument("run_dir", help="a train-sae run directory")
    ev.add_argument(
        "--sequences",
        type=int,
        default=None,
        help="held-out sequences to evaluate on (default: the run's eval_sequences)",
    )
    dash = sub.add_parser("dashboard", help="write a static, offline site of an SAE run's latents")
    dash.add_argument(
        "run_dir", help="a train-sae run, or an SAE experiment run (sae-toy, sae-synthetic, ...)"
    )
    dash.add_argument("--out", required=True, help="folder for the site (replaced if it exists)")
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
    an = sub.add_parser(
        "analyze", help="which latents drive a prompt's next token: activation, attribution, ablation"
    )
    an.add_argument("run_dir", help="a train-sae run directory")
    an.add_argument("--prompt", required=True, help="text; analysed at its last token")
    an.add_argument(
        "--token", default=None, help="target next token (text; default: the model's top prediction)"
    )
    an.add_argument("--top", type=int, default=10, help="latents to list (default 10)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from superposition.perf import tune_allocator

    tune_allocator()
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except SuperpositionError as err:
        print(f"superposition: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("superposition: interrupted; no run directory was written", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from superposition.experiments import REGISTRY, run_experiment

    if args.command == "list":
        width = max(len(n) for n in REGISTRY)
        for name in sorted(REGISTRY):
            print(f"{name:<{width}}  {REGISTRY[name].description}")
        return 0
    if args.command == "run":
        out = run_experiment(
            args.experiment, args.out, quick=args.quick, seed=args.seed, overrides=args.overrides
        )
        print(f"wrote {out}\nreport: {out / 'report.html'}")
        return 0
    if args.command == "demo":
        reports = []
        for name in ("intro", "geometry"):
            print(f"running {name}{' (quick)' if args.quick else ''} ...", flush=True)
            out = run_experiment(name, Path(args.out) / name, quick=args.quick)
            reports.append(out / "report.html")
        print("done. Open the reports:")
        for r in reports:
            print(f"  {r}")
        return 0
    if args.command == "train-sae":
        from superposition.lm.config import make_lm_config
        from superposition.lm.run import train_lm_sae

        if args.resume and (args.config or args.overrides):
            raise SuperpositionError(
                "--resume: continues with the run's saved config.json; drop --config and --set"
            )
        cfg = None if args.resume else make_lm_config(args.config, args.overrides)
        out = train_lm_sae(cfg, args.out, resume=args.resume)
        _print_eval(out)
        return 0
    if args.command == "eval-sae":
        from superposition.lm.run import evaluate_run

        if args.sequences is not None and args.sequences <= 0:
            raise SuperpositionError(f"--sequences: must be positive, got {args.sequences}")
        evaluate_run(args.run_dir, eval_sequences=args.sequences)
        _print_eval(Path(args.run_dir))
        return 0
    if args.command == "dashboard":
        from superposition.report.build import build_dashboard

        for flag in ("sequences", "latents"):
            if getattr(args, flag) is not None and getattr(args, flag) <= 0:
                raise SuperpositionError(f"--{flag}: must be positive, got {getattr(args, flag)}")
        site = build_dashboard(args.run_dir, args.out, args.sequences, args.latents, args.sae)
        print(f"wrote {site}\nopen: {site / 'index.html'}")
        return 0
    if args.command == "analyze":
        from superposition.lm.prompt import analyze_prompt

        if args.top <= 0:
            raise SuperpositionError(f"--top: must be positive, got {args.top}")
        print(analyze_prompt(args.run_dir, args.prompt, args.token, args.top))
        return 0
    raise SuperpositionError(f"unknown command {args.command!r}")


def _print_eval(run: Path) -> None:
    import json

    s = json.loads((run / "summary.json").read_text())
    keys = (
        "l0",
        "mse",
        "explained_variance",
        "ce_loss_clean",
        "ce_loss_with_sae",
        "ce_loss_zero_ablation",
        "ce_loss_recovered",
        "kl_div",
        "frac_dead",
        "frac_dense",
    )
    print("\n".join(f"{k:>22}  {s[k]:.4g}" for k in keys))
    print(f"wrote {run}\nreport: {run / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
