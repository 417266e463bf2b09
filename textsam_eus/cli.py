"""The ``textsam-eus`` command: ``main(argv) -> int`` with subcommands.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen inside
``run`` so ``textsam-eus --help`` stays fast.

A :class:`~textsam_eus.core.errors.UserError` (bad input or environment: its message names the problem and the
fix) is printed as ``textsam-eus COMMAND: error: MESSAGE`` and the command returns 1; any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .core.errors import UserError

# name -> (module, help)
SUBCOMMANDS = {
    "demo": ("textsam_eus.commands.demo", "run the shipped demo model on a synthetic EUS clip (no downloads)"),
    "info": ("textsam_eus.commands.info", "print a preset's configuration and parameter counts"),
    "train": ("textsam_eus.commands.train", "train TextSAM-EUS on your data"),
    "eval": ("textsam_eus.commands.evaluate", "evaluate a checkpoint or a folder of predicted masks"),
    "compare": ("textsam_eus.commands.compare", "paired t-test between two evaluation JSON files"),
    "export": ("textsam_eus.commands.export", "export ONNX (and TensorRT) deployment bundles"),
    "stream": ("textsam_eus.commands.stream", "segment a video file, folder or capture device"),
    "annotate": ("textsam_eus.commands.annotate", "annotate an archive of recordings on Ray workers (resumable)"),
    "serve": ("textsam_eus.commands.serve", "serve the model on Triton Inference Server for stream --engine triton"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textsam-eus", description="Text-prompted SAM for pancreatic tumours "
                                     "in endoscopic ultrasound video.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:  # names the problem and the fix: no traceback
        print(f"textsam-eus {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
