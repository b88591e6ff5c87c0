"""`fastsiren fit TASK [INPUT] --out DIR [options]`: thin parsing over ``fastsiren.fit``.

Each task's options are generated from its settings dataclass (``fastsiren.tasks.base``): a
field ``batch_fraction`` becomes ``--batch-fraction``, its help and its default (per device where
it depends on it) come from the field, so the CLI and the Python API cannot drift apart. The task
parsers are built only when ``fit`` runs, so ``fastsiren --help`` imports no task.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import typing


def _option_type(hint, meta):
    """The argparse ``type`` for a field's annotation (None for flags)."""
    if meta.get("parse") is not None:
        parse = meta["parse"]

        def parse_or_usage(text):
            try:
                return parse(text)
            except ValueError as exc:  # InputError included: argparse prints it with the usage
                raise argparse.ArgumentTypeError(str(exc)) from None

        return parse_or_usage
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if base is bool:
        return None
    if base in (int, float, str):
        return base
    raise TypeError(f"no CLI type for annotation {hint!r}; give the setting a parse=")


def _default_text(field: dataclasses.Field) -> str:
    meta = field.metadata
    if meta.get("cpu") is not None or meta.get("cuda") is not None:
        return f" (default: {meta.get('cpu')} on CPU, {meta.get('cuda')} on CUDA)"
    if field.default is None or field.default is dataclasses.MISSING:
        return ""
    return f" (default: {field.default})"


def add_settings_options(parser: argparse.ArgumentParser, settings_class) -> None:
    """One option per field of ``settings_class`` with ``cli=True``; defaults are None so that
    the handler passes on only what was given."""
    hints = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        meta = field.metadata
        if not meta.get("cli", True):
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _option_type(hints[field.name], meta)
        help_text = (meta.get("help") or "") + _default_text(field)
        if kind is None:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=None,
                                choices=meta.get("choices"), metavar=meta.get("metavar"),
                                help=help_text)


def build_fit_parser() -> argparse.ArgumentParser:
    from ..tasks import TASKS, get_task

    parser = argparse.ArgumentParser(
        prog="fastsiren fit",
        description="Fit a SIREN to a signal on the analytic-jet engine. Writes DIR/metrics.json, "
        "the curve, a checkpoint (reload with fastsiren.load_model(DIR)) and the task's outputs.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in TASKS:
        task = get_task(name)
        doc = (task.settings_class.__doc__ or "").strip().splitlines()[0]
        sub = tasks.add_parser(
            name, help=doc, description=doc,
            epilog="example:\n  " + task.example if task.example else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("input", nargs="*", metavar="INPUT",
                         help="input file(s) or folder (default: the built-in sample)")
        sub.add_argument("--out", metavar="DIR", default=None,
                         help=f"run folder for outputs and checkpoints (default: runs/{name})")
        sub.add_argument("--resume", metavar="DIR", default=None,
                         help="continue the run in DIR from its checkpoint (its settings; "
                         "--steps may be raised)")
        sub.add_argument("--overwrite", action="store_true",
                         help="replace the run already in --out (refused otherwise)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        add_settings_options(sub, task.settings_class)
    return parser


def _fit(args: argparse.Namespace) -> int:
    from ..env import torchrun_ranks
    from ..errors import InputError
    from ..fit import FitInterrupted, fit

    parsed = build_fit_parser().parse_args(args.rest)
    options = vars(parsed)
    task, out, resume = options.pop("task"), options.pop("out"), options.pop("resume")
    quiet, inputs = options.pop("quiet"), options.pop("input")
    overwrite = options.pop("overwrite")
    if resume is not None and out is not None and out != resume:
        raise InputError(f"--resume {resume} and --out {out} name different folders; "
                         "a resumed run writes into its own folder")
    settings = {k: v for k, v in options.items() if v is not None}
    try:
        result = fit(task, inputs or None, out=resume or out, resume=resume is not None,
                     overwrite=overwrite, progress=not quiet, **settings)
    except FitInterrupted as exc:  # a stop signal: the message says what was saved
        print(f"fastsiren fit {task}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt as exc:  # a stop signal before training: nothing to save
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"fastsiren fit {task}: interrupted ({signal.Signals(signum).name}) before "
              "training began", file=sys.stderr)
        return 128 + signum
    except FloatingPointError as exc:
        print(f"fastsiren fit {task}: error: {exc}", file=sys.stderr)
        return 1
    rank, world_size, _ = torchrun_ranks()
    print(summary_line(task, result.metrics, result.out_dir, rank, world_size))
    return 0


def summary_line(task: str, summary: dict, out_dir, rank: int = 0, world_size: int = 1) -> str:
    """The one line a finished fit prints. Under torchrun every process prints its own (the
    shards of a sharded fit differ), so the line says which process it is."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items()
                      if isinstance(v, (int, float)))
    who = f" [process {rank} of {world_size}]" if world_size > 1 else ""
    return (f"fit {task}{who}: {shown} after {summary['steps']} steps, "
            f"{summary['train_seconds']:.1f} s on {summary['device']} ({summary['backend']}); "
            f"wrote {out_dir}/")


class _LazyHelp(argparse.Action):
    """``fastsiren fit --help``: build the task parsers only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        build_fit_parser().print_help()
        parser.exit()


def register(sub) -> None:
    fit = sub.add_parser("fit", add_help=False, help="fit a SIREN to a signal (image, ...)",
                         usage="fastsiren fit TASK [INPUT ...] [--out DIR] [options]")
    fit.add_argument("-h", "--help", action=_LazyHelp, help="show the tasks and their options")
    fit.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    fit.set_defaults(func=_fit)
