"""``python -m medvq.report compare RUN_DIR [RUN_DIR ...] [--output DIR] [--json]`` and
``python -m medvq.report card RUN_DIR [RUN_DIR ...]`` (write each run's ``MODEL_CARD.md`` again, e.g. after an
evaluation added ``eval/metrics.json``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from medvq.report.compare import compare_runs
from medvq.report.model_card import write_model_card


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvq.report", description="medvq reports")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="side-by-side table and plots of evaluated runs")
    compare.add_argument("runs", nargs="+", help="run output directories, each with eval/metrics.json")
    compare.add_argument("--output", default="comparison", help="where compare.md/.json and plots go")
    compare.add_argument("--json", action="store_true", help="print the JSON instead of the markdown table")
    card = commands.add_parser("card", help="write MODEL_CARD.md of trained runs from what they recorded")
    card.add_argument("runs", nargs="+", help="run folders with run_info.json (odir_var: its tokenizer/, generator/)")
    args = parser.parse_args(argv)
    if args.command == "card":
        for run in args.runs:
            try:
                print(write_model_card(run))
            except FileNotFoundError as error:
                parser.error(str(error))
        return 0
    try:
        result = compare_runs(args.runs, args.output)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if args.json:
        print(json.dumps({"runs": result["runs"]}, indent=2, default=str))
    else:
        print(result["table"])
    for path in result["plots"]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
