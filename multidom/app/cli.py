"""The ``multidom`` command line: ``train``, ``evaluate`` and ``rewards list``.

Usage::

    multidom train                                    # the embedded quickstart (configs/quickstart.yaml)
    multidom train --config configs/hh_rlhf_online.yaml training.learning_rate=1e-6 --output-dir runs/hh
    multidom train --config ... --resume              # continue from the last checkpoint in --output-dir
    multidom evaluate --config configs/evaluate_example.yaml
    multidom evaluate --model ref=runs/sft --model aligned=runs/hh --prompts prompts.txt -G 8 \\
        --reward sentiment --reward '{type: length, target: 40}' --estimator quantile --estimator sinkhorn
    multidom evaluate --model ref=runs/sft --checkpoints runs/hh --prompts prompts.txt --reward sentiment
    multidom rewards list

Several GPUs: the same commands run under ``accelerate launch``, e.g.
``accelerate launch --num_processes 8 -m multidom train --config configs/hh_rlhf_online.yaml``.

Errors a user can cause (missing config, unknown key, unknown reward type, missing model path,
unwritable output directory) print ONE line on stderr and exit with status 1; ``--debug`` shows the
traceback instead. Ctrl-C keeps the last checkpoint and the wandb files, and exits with 130; rerun
with ``--resume`` to continue.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from multidom.app.config import apply_overrides, load_config
from multidom.app.guards import (
    check_local_paths,
    check_reward_types,
    ensure_writable,
    find_default_config,
    finish_wandb,
    one_line,
)
from multidom.app.rundir import after_interrupt, claim
from multidom.keys import ConfigError, unknown_key_message

__all__ = ["main", "TRAINERS", "build_parser"]

#: ``trainer:`` values (the recipes of :mod:`multidom.app.recipes`, plus the quickstart pipeline).
TRAINERS = ("online", "aot", "offline", "quickstart")

_EXIT_ERROR = 1
_EXIT_INTERRUPT = 130
_EXIT_TERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (the checkpoints are made safe, wandb closed) but exiting with 143."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    config_path = Path(args.config) if args.config else find_default_config()
    config = load_config(config_path, args.overrides)
    trainer = config.pop("trainer", None)
    if not isinstance(trainer, str) or trainer not in TRAINERS:
        if trainer is None:
            raise ConfigError(f"config has no 'trainer:' key; choose one of {', '.join(TRAINERS)}")
        raise ConfigError(unknown_key_message(str(trainer), TRAINERS).replace("unknown key", "unknown trainer", 1))
    if trainer == "quickstart":
        from multidom.app.quickstart import run_quickstart as run
    else:
        from functools import partial

        from multidom.app.recipes import run_training

        run = partial(run_training, trainer)
    output_dir = args.output_dir or config.pop("output_dir", None) or str(Path("runs") / config_path.stem)
    config.pop("output_dir", None)
    check_local_paths(config)
    check_reward_types(config)
    out = ensure_writable(output_dir)
    claim(out, resume=bool(args.resume), overwrite=bool(args.overwrite))
    args.resolved_output_dir = str(out)
    _say(f"{trainer} run from {config_path} -> {out}")
    summary = run(config, output_dir=str(out), resume=bool(args.resume))
    finish_wandb(0)  # transformers leaves its wandb run open; close it so the offline files are complete
    _write_summary(out / "summary.json", {"trainer": trainer, "config": str(config_path), **(summary or {})})
    _say(f"done; outputs in {out}")
    return 0


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _say(message: str) -> None:
    """Progress information on stdout, from the main process only (stderr is kept for errors)."""
    if _main_process():
        print(f"multidom: {message}", flush=True)


def _write_summary(path: Path, summary: dict) -> None:
    if _main_process():
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from multidom.app.evaluate import run_evaluation

    config: dict[str, Any] = {}
    if args.config:
        config = load_config(args.config, ())
    config = apply_overrides(config, args.overrides)
    config.update(_evaluate_flags(args))
    output_dir = args.output_dir or config.pop("output_dir", None) or "runs/evaluate"
    config.pop("output_dir", None)
    check_local_paths(config)
    check_reward_types(config)
    out = ensure_writable(output_dir)
    args.resolved_output_dir = str(out)
    result = run_evaluation(config, output_dir=str(out))
    print(result.get("summary_text", ""), end="")
    _say(f"report written to {result['report']}")
    return 0


def _evaluate_flags(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    flags: dict[str, Any] = {}
    if args.model:
        models = []
        for item in args.model:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).name, item
            models.append({"name": name, "path": path})
        flags["models"] = models
    if args.reward:
        flags["rewards"] = [_parse_reward_flag(item, yaml) for item in args.reward]
    simple = {
        "prompts": args.prompts, "completions": args.completions, "checkpoints": args.checkpoints, "num_generations": args.num_generations,
        "dominance": args.estimator, "eps0": args.eps0, "alpha": args.alpha, "n_boot": args.n_boot,
        "seed": args.seed, "max_new_tokens": args.max_new_tokens, "html": args.html or None,
        "report_to": args.report_to,
    }
    flags.update({k: v for k, v in simple.items() if v is not None})
    return flags


def _parse_reward_flag(item: str, yaml: Any) -> Any:
    if item.lstrip().startswith("{"):
        try:
            return yaml.safe_load(item)
        except yaml.YAMLError:
            raise ConfigError(f"--reward {item!r} is not a valid YAML mapping") from None
    return item


def cmd_baseline(args: argparse.Namespace) -> int:
    from multidom.app.baseline import run_baseline

    config = load_config(args.config, args.overrides)
    trainer = config.pop("trainer", "online")
    if trainer != "online":
        raise ConfigError(f"multidom baseline needs an online config (trainer: online), got trainer: {trainer}")
    config.pop("output_dir", None)
    check_local_paths(config)
    check_reward_types(config)
    summary = run_baseline(config, output=args.output, say=_say)
    _say(f"baseline of {summary['prompts']} prompts x {summary['samples_per_prompt']} ({summary['engine']}, "
         f"{summary['world_size']} process(es)) -> {', '.join(summary['outputs'].values())}")
    return 0


def cmd_rewards_list(args: argparse.Namespace) -> int:
    import reward_models  # importing the package registers the built-ins

    entries = reward_models.available()
    broken = reward_models.plugin_errors()
    width = max((len(name) for name in [*entries, *broken]), default=0)
    for name in sorted(entries):
        print(f"{name:<{width}}  {entries[name] or ''}".rstrip())
    for name in sorted(broken):
        print(f"{name:<{width}}  [plug-in failed to load: {broken[name]}]")
    return 0


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser = argparse.ArgumentParser(
        prog="multidom", description="Multi-reward alignment by multivariate stochastic dominance.",
        epilog="Several GPUs: accelerate launch -m multidom train --config CONFIG.yaml", parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,baseline,rewards}")
    sub.required = True

    train = sub.add_parser("train", parents=[common], help="train from a YAML config (default: the quickstart)")
    train.add_argument("--config", "-c", help="YAML config; default configs/quickstart.yaml")
    train.add_argument("--output-dir", "-o", help="where checkpoints, metrics and wandb files go")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last complete checkpoint in --output-dir")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --output-dir (its own files only)")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", parents=[common], help="compare models or completions by dominance")
    ev.add_argument("--config", "-c", help="YAML evaluation config (flags below override it)")
    ev.add_argument("--output-dir", "-o", help="where the report goes (default runs/evaluate)")
    ev.add_argument("--model", action="append", metavar="NAME=PATH",
                    help="a model or checkpoint (repeat; the first is the reference)")
    ev.add_argument("--checkpoints", metavar="RUN_DIR",
                    help="add every checkpoint-N (by step) and final/ of a training output dir as models")
    ev.add_argument("--prompts", help="held-out prompts: .txt (one per line) or .jsonl with a 'prompt' field")
    ev.add_argument("--completions", help="JSONL of completions to score instead of generating")
    ev.add_argument("-G", "--num-generations", type=int, help="completions per prompt and model")
    ev.add_argument("--reward", action="append", metavar="SPEC",
                    help="a reward model: a registered name or a YAML mapping '{type: ..., ...}' (repeat)")
    ev.add_argument("--estimator", action="append",
                    help="quantile | sliced | sinkhorn | exact (repeat; each with its default spec, see configs)")
    ev.add_argument("--eps0", type=float, help="threshold of the absolute test")
    ev.add_argument("--alpha", type=float, help="level of the tests")
    ev.add_argument("--n-boot", type=int, help="bootstrap replicates")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--max-new-tokens", type=int)
    ev.add_argument("--html", action="store_true", help="also write report.html")
    ev.add_argument("--report-to", action="append", help="wandb to log the report (offline by default)")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    ev.set_defaults(func=cmd_evaluate)

    base = sub.add_parser("baseline", parents=[common],
                          help="precompute the baseline cloud of an online config into a dataset file")
    base.add_argument("--config", "-c", required=True, help="an online training config (YAML)")
    base.add_argument("--output", "-o", required=True, help="the dataset file to write (.jsonl or .parquet)")
    base.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    base.set_defaults(func=cmd_baseline)

    rewards = sub.add_parser("rewards", parents=[common], help="reward models")
    rsub = rewards.add_subparsers(dest="rewards_command", metavar="{list}")
    rsub.required = True
    rlist = rsub.add_parser("list", parents=[common], help="every registered reward model, with its description")
    rlist.set_defaults(func=cmd_rewards_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multidom`` console script and of ``python -m multidom``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not debug:  # deprecation notices of the libraries are for developers; --debug shows them
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    previous = signal.signal(signal.SIGTERM, _terminated) if _main_thread() else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (what schedulers send) through _terminated
        code = _EXIT_TERM if isinstance(exc, Terminated) else _EXIT_INTERRUPT
        finish_wandb(code)
        where = getattr(args, "resolved_output_dir", None)
        if where and _main_process():
            for path in after_interrupt(Path(where)):
                print(f"multidom: set aside a checkpoint cut short by the interrupt: {path}", file=sys.stderr)
        what = "terminated (SIGTERM)" if code == _EXIT_TERM else "interrupted"
        print(f"multidom: {what}; complete checkpoints and wandb files in {where or 'the output directory'} are "
              "kept (rerun with --resume to continue)", file=sys.stderr)
        if debug:
            raise
        return code
    except Exception as exc:
        finish_wandb(_EXIT_ERROR)
        if debug:
            raise
        print(f"multidom: error: {one_line(exc)}", file=sys.stderr)
        return _EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
