"""``tem-keras watch``: live segmentation of the micrographs written into a folder
(:func:`tem_keras.live.watch`)."""

from __future__ import annotations

import sys
from pathlib import Path

from .console import as_input_errors
from .prediction_commands import add_prediction_options, prediction_options

#: exit status after Ctrl-C (128 + SIGINT, the shell's convention); the outputs are complete
EXIT_INTERRUPTED = 130


def add_watch_command(sub) -> None:
    """Add ``watch`` to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "watch", help="segment each new micrograph as the microscope writes it into a folder",
        description="Segment each micrograph written into FOLDER once it is complete (size and "
        "time unchanged for --settle seconds, then read whole): masks as `predict` writes them, "
        "particles appended to OUT/particles.csv, OUT/summary.png redrawn, one line per file with "
        "its latency. Ctrl-C stops after the current file (exit status 130); run the same "
        "command again to continue: files already done (OUT/watch_done.jsonl) are not done again, "
        "files modified since are.")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("folder", type=Path, help="the folder the acquisition software writes into")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--pattern", action="append", default=None,
                   help="glob pattern of the files to take, relative to FOLDER, e.g. '*.dm4' "
                   "(repeatable; default: every format tem-keras reads)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between two looks at the folder")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds a file's size and time must stay unchanged before it is read")
    p.add_argument("--give-up", type=float, default=10.0,
                   help="seconds a file that stopped changing may stay unreadable before it is "
                   "reported and skipped")
    p.add_argument("--once", action="store_true",
                   help="segment what is in the folder, wait for files being written, then exit")
    p.add_argument("--stop-after", type=int, default=None, help="exit after this many files")
    p.add_argument("--timeout", type=float, default=None,
                   help="exit after this many seconds without a new or changing file")
    add_prediction_options(p)
    p.add_argument("--min-area", type=int, default=10, help="smallest particle in px")
    p.add_argument("--no-split", action="store_true",
                   help="do not split touching particles (about twice as fast to measure)")
    p.add_argument("--pixel-size-nm", type=float, default=None, help="for files without calibration")
    p.add_argument("--mask-format", choices=("png", "tif"), default="png")
    p.add_argument("--summary-every", type=float, default=5.0,
                   help="seconds between two drawings of summary.png")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not a watch's, or start OUT again")
    p.add_argument("--quiet", action="store_true", help="no line per file")
    p.set_defaults(func=run_watch)


@as_input_errors
def run_watch(args) -> int:
    """``tem-keras watch``: returns the exit status (0, or 130 after Ctrl-C)."""
    from ..live import watch

    try:
        report = watch(args.model, args.folder, args.out, pattern=args.pattern,
                       interval=args.interval, settle=args.settle, give_up=args.give_up, once=args.once,
                       stop_after=args.stop_after, timeout=args.timeout,
                       options=prediction_options(args), min_area=args.min_area,
                       split_touching=not args.no_split, mask_format=args.mask_format,
                       summary_every=args.summary_every, overwrite=args.overwrite,
                       verbose=not args.quiet)
    except KeyboardInterrupt:  # before the folder was watched (loading the model)
        print("tem-keras watch: stopped before the folder was watched", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.quiet:
        print(report)
    return EXIT_INTERRUPTED if report.interrupted else 0
