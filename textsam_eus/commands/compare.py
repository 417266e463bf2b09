"""``textsam-eus compare a.json b.json``: paired two-sided t-test on per-image Dice and NSD."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="evaluation JSON of method A (from 'textsam-eus eval --json')")
    p.add_argument("b", help="evaluation JSON of method B")
    p.add_argument("--json", default=None, help="write the test results to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    import sys
    from ..train.readers import DatasetError
    from ..train.evaluate import compare
    from ..core.files import write_text_atomic
    from ..train.outputs import check_not_inputs, check_output_file

    check_not_inputs({"--json": args.json}, {"A": args.a, "B": args.b})
    if args.json:
        check_output_file(args.json, "--json", args.overwrite, "comparison.json")
    docs = []
    for path in (args.a, args.b):
        try:
            docs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read evaluation JSON {path}: {exc}") from exc
        if "per_image" not in docs[-1]:
            raise DatasetError(f"{path} has no per_image results: write it with 'textsam-eus eval --json'")
    res = compare(*docs)
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for key in ("dice", "nsd"):
        r = res[key]
        print(f"{key:5s} mean difference (A - B) {100 * r['mean_diff']:+.2f} points, t = {r['t']:.3f}, "
              f"p = {r['p']:.4g} (paired two-sided, n = {r['n']})")
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=2), parents=True)
    return 0
