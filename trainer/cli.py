"""Command line: `python -m trainer train ...` and `python -m trainer sample ...`.

`trainhook train DATA --out DIR` delegates here with the same arguments. Exit status: 0 on
success (one JSON summary line on stdout), 2 for bad input (unusable data, unsafe data paths,
invalid parameters or usage), 1 for any other failure; messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from trainer import TRAINER_VERSION

COMMANDS = ("train", "sample")
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def build_parser(prog: str = "python -m trainer") -> argparse.ArgumentParser:
    """The argument parser for all subcommands; `prog` is how usage lines name the program
    (`trainhook` when run as `trainhook train`)."""
    from trainer.discovery import DEFAULT_CANDIDATES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a text classifier from a labelled CSV (trainhook's trainer).",
    )
    parser.add_argument("--version", action="version", version=f"trainer {TRAINER_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model and write its artifacts",
        description="Train on DATA (a CSV file, or a directory searched for the first existing "
        "candidate file; if none exists, a generated sample is used and the summary says so). "
        "Writes model.joblib, vectorizer.joblib, metrics.json and model_card.md into --out, "
        "atomically.",
    )
    train.add_argument("data", metavar="DATA", help="CSV file or data root directory")
    train.add_argument("--out", required=True, metavar="DIR", help="output directory")
    train.add_argument("--text-column", metavar="NAME", help="text column (default: text)")
    train.add_argument("--label-column", metavar="NAME", help="label column (default: label)")
    train.add_argument("--sample", type=int, metavar="N", help="stratified sample of N rows")
    train.add_argument("--seed", type=int, metavar="S", help="seed for sampling/split (default 0)")
    train.add_argument(
        "--params", metavar="JSON|@FILE", help="training parameters as JSON or @file.json"
    )
    train.add_argument(
        "--data-candidates",
        metavar="A,B,C",
        default=",".join(DEFAULT_CANDIDATES),
        help="comma-separated paths tried in order when DATA is a directory (default: %(default)s)",
    )
    train.add_argument("--nltk-data", metavar="DIR", help="NLTK data directory (download here)")
    train.add_argument("--nltk-index", metavar="URL", help="NLTK data index URL")
    train.add_argument("--workers", type=int, metavar="N", help="preprocessing processes")
    shown = train.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="never show progress")
    shown.add_argument("--progress", action="store_true", help="show progress even if not a TTY")

    sample = commands.add_parser(
        "sample",
        help="write a synthetic labelled CSV",
        description="Write a deterministic synthetic tweet-like CSV (text,label; 3 classes).",
    )
    sample.add_argument("--out", required=True, metavar="PATH", help="CSV file to write")
    sample.add_argument("--rows", type=int, default=2000, metavar="N", help="rows (default 2000)")
    sample.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m trainer") -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit status.

    Arguments without a subcommand (e.g. `DATA --out DIR`) mean `train`.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in COMMANDS and not args_list[0].startswith("-"):
        args_list.insert(0, "train")
    try:
        args = build_parser(prog).parse_args(args_list)
    except SystemExit as exc:  # argparse exits for --help/--version (0) and usage errors (2)
        return int(exc.code or 0)
    if args.command == "sample":
        return _sample(args)
    return _train(args)


def _sample(args: argparse.Namespace) -> int:
    from trainer.sample import generate_sample

    if args.rows < 1:
        print("trainer: --rows must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        path = generate_sample(args.out, rows=args.rows, seed=args.seed)
    except OSError as exc:
        print(f"trainer: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps({"path": str(path), "rows": args.rows, "seed": args.seed}))
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from trainer.data import DataError
    from trainer.params import ParamsError, load_params
    from trainer.progress import Progress

    try:
        params = load_params(args.params)
        overrides = {
            "text_column": args.text_column,
            "label_column": args.label_column,
            "sample_rows": args.sample,
            "seed": args.seed,
        }
        params = params.replace(**{k: v for k, v in overrides.items() if v is not None})
    except ParamsError as exc:
        print(f"trainer: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.workers is not None and args.workers < 1:
        print("trainer: --workers must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    candidates = [c.strip() for c in args.data_candidates.split(",") if c.strip()]
    mode = "off" if args.quiet else "on" if args.progress else "auto"
    progress = Progress.for_mode(mode)
    _map_large_allocations()
    from trainer.pipeline import train

    try:
        result = train(
            args.data,
            args.out,
            params,
            candidates=candidates,
            nltk_data=args.nltk_data,
            nltk_index=args.nltk_index,
            workers=args.workers,
            progress=progress,
        )
    except DataError as exc:
        progress.close()
        print(f"trainer: data error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        progress.close()
        print("trainer: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        progress.close()
        print(f"trainer: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    progress.close(f"done: macro-F1 {result.macro_f1:.4f}")
    for notice in result.notices:
        print(f"trainer: WARNING: {notice}", file=sys.stderr)
    print(json.dumps(result.summary(), sort_keys=True))
    return EXIT_OK


def _map_large_allocations(threshold: int = 1 << 20) -> None:
    """Have glibc's malloc serve blocks of `threshold` bytes or more with their own mappings,
    returned to the system when freed (elsewhere, or if that fails: nothing).

    By default glibc raises this threshold up to 32 MB as large blocks are freed, and the
    training's many 10-30 MB numpy temporaries then stay in the heap after use: at 200k
    synthetic rows that kept ~110 MB more resident after counting (measured, with and without).
    This process only trains, so the setting is made here and not in the library.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, threshold)
