"""The ``umdbench`` command: render, merge, compare and baseline results files.

``umdbench report RESULTS.json [-o DIR]``, ``umdbench merge A.json B.json -o OUT.json`` (exit 1
when a shard of the plan is missing),
``umdbench compare OLD.json NEW.json [--dice-tol ...]`` (exit 1 on a regression),
``umdbench baseline RESULTS.json -o BASELINE.json`` and
``umdbench check-baseline BASELINE.json RESULTS.json`` (exit 1 on a new failure) and
``umdbench train-baseline ARM --out DIR`` (an nnU-Net v2 baseline, ``umdbench.baseline_training``).
``compare`` and ``check-baseline`` also exit 1 when cases are missing (cases of OLD absent from
NEW; baseline cases not run, absent or skipped) or when NEW / RESULTS is an interrupted run
(``"complete": false``); ``--allow-missing`` lists them without failing.
Bad input exits 2 with a message that names the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from error
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


#: Case ids shown in a "missing" line before "... and N more".
_SHOWN_IDS = 5
_ALLOW_MISSING_HELP = "list missing cases and an incomplete run without failing (default: exit 1)"


def _case_ids(ids: Sequence[str]) -> str:
    more = len(ids) - _SHOWN_IDS
    return ", ".join(ids[:_SHOWN_IDS]) + (f" ... and {more} more" if more > 0 else "")


def _missing_lines(missing: Sequence[str], what: str, document: Mapping[str, Any], path: Path,
                   allow: bool) -> tuple[list[str], bool]:
    """Lines on cases that did not run and on an interrupted run; True when they fail the run."""
    found = [("missing", f"{len(missing)} {what}: {_case_ids(missing)}")] if missing else []
    if document.get("complete") is False:  # absent from files older than the key: complete
        not_run = [str(c) for c in document.get("missing_cases") or []]
        listed = f": {_case_ids(not_run)}" if not_run else ""
        found.append(("incomplete", f"{path} is an interrupted run (complete: false), "
                                    f"{len(not_run)} case(s) not run{listed}"))
    if allow:
        return [f"{tag}: {line} (allowed by --allow-missing)" for tag, line in found], False
    return [f"{tag.upper()}: {line} (fails; --allow-missing to accept)"
            for tag, line in found], bool(found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umdbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = sub.add_parser("report", help="render report.md/.html, CSVs and plots")
    report.add_argument("results", type=Path, metavar="RESULTS.json")
    report.add_argument("-o", "--out", type=Path, metavar="DIR", default=None,
                        help="output folder (default: <results folder>/report)")
    report.add_argument("--seed", type=int, default=0, metavar="N",
                        help="bootstrap seed (default: 0)")
    merge = sub.add_parser("merge", help="join shard results files into one")
    merge.add_argument("inputs", type=Path, nargs="+", metavar="RESULTS.json")
    merge.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.json")
    compare = sub.add_parser("compare", help="changes between two runs; exit 1 on a regression "
                             "or a missing case")
    compare.add_argument("old", type=Path, metavar="OLD.json")
    compare.add_argument("new", type=Path, metavar="NEW.json")
    for name, default, what in (("dice-tol", 0.02, "absolute Dice change"),
                                ("nsd-tol", 0.02, "absolute NSD change"),
                                ("time-tol", 0.25, "relative time change"),
                                ("time-floor", 0.5, "smallest time change in seconds")):
        compare.add_argument(f"--{name}", type=_non_negative, default=default, metavar="X",
                             help=f"{what} tolerated (default: {default})")
    compare.add_argument("--allow-missing", action="store_true", help=_ALLOW_MISSING_HELP)
    base = sub.add_parser("baseline", help="write a known-failure baseline from a results file")
    base.add_argument("results", type=Path, metavar="RESULTS.json")
    base.add_argument("-o", "--out", type=Path, required=True, metavar="BASELINE.json")
    base.add_argument("--include-errors", action="store_true",
                      help="record errored cases too (default: only failed ones)")
    check = sub.add_parser("check-baseline", help="classify a run against a baseline; exit 1 on "
                           "a new failure or a missing case")
    check.add_argument("baseline", type=Path, metavar="BASELINE.json")
    check.add_argument("results", type=Path, metavar="RESULTS.json")
    check.add_argument("--allow-missing", action="store_true", help=_ALLOW_MISSING_HELP)
    from umdbench.baseline_training import add_arguments

    train = sub.add_parser("train-baseline", help="train an nnU-Net v2 baseline on one arm "
                           "(nnU-Net's planning, preprocessing and trainer)")
    add_arguments(train)
    return parser


def _report(args: argparse.Namespace) -> int:
    from umdbench.report import render_report

    out = args.out if args.out is not None else args.results.parent / "report"
    written = render_report(args.results, out, seed=args.seed)
    print(f"wrote {len(written)} files to {out} (open {out / 'report.html'})")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """Join shards; 1 when a planned shard is missing (the merged file is then incomplete)."""
    from umdbench.merging import merge_shards
    from umdbench.results import read_results, write_results

    merged = merge_shards([read_results(p) for p in args.inputs], [str(p) for p in args.inputs])
    write_results(args.out, run=merged["run"], models=merged["models"], cases=merged["cases"],
                  records=merged["records"], complete=merged["complete"],
                  missing_cases=merged["missing_cases"])
    print(f"merged {len(args.inputs)} files: {len(merged['cases'])} cases, "
          f"{len(merged['records'])} records -> {args.out}")
    missing = merged["run"].get("missing_shards", [])
    for gap in missing:
        count = merged["run"]["shard"]["count"]
        work = "; ".join(f"{u['model']} on {len(u['subjects'])} subject(s)"
                         f" ({', '.join(u['subjects'][:3])}{', ...' if len(u['subjects']) > 3 else ''})"
                         for u in gap["units"])
        print(f"missing shard {gap['shard']}/{count}: {work}; rerun it with"
              f" --umd-shard {gap['shard']}/{count} and the same options, then merge again",
              file=sys.stderr)
    if missing:
        print(f"{args.out} is marked incomplete: {len(missing)} shard(s) missing",
              file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from umdbench.report.compare import Tolerances, change_table, compare_documents
    from umdbench.results import read_results

    tol = Tolerances(args.dice_tol, args.nsd_tol, args.time_tol, args.time_floor)
    old, new = read_results(args.old), read_results(args.new)
    changes = compare_documents(old, new, tol)
    regressions = sum(c.kind == "regression" for c in changes)
    if changes:
        print(change_table(changes).to_text())
    print(f"{regressions} regression(s), {len(changes) - regressions} other change(s) "
          f"(dice-tol {tol.dice:g}, nsd-tol {tol.nsd:g}, time-tol {tol.time:g})")
    removed = [c.case_id for c in changes if c.kind == "removed"] + _newly_skipped(old, new)
    lines, failing = _missing_lines(removed, f"case(s) of {args.old} missing (absent or newly"
                                    f" skipped) from {args.new}",
                                    new, args.new, args.allow_missing)
    if lines:
        print("\n".join(lines))
    return 1 if regressions or failing else 0


def _newly_skipped(old: dict, new: dict) -> list[str]:
    """Cases that ran in OLD and were skipped in NEW (weights gone, a package missing): they
    were not run, whatever ``compare_documents`` makes of their absent figures."""
    ran = {c["case_id"] for c in old["cases"] if c.get("outcome") not in ("skipped", None)}
    return sorted(c["case_id"] for c in new["cases"]
                  if c["case_id"] in ran and c.get("outcome") == "skipped")


def _baseline(args: argparse.Namespace) -> int:
    from umdbench.baseline import load_baseline, write_baseline
    from umdbench.results import read_results

    write_baseline(read_results(args.results), args.out, include_errors=args.include_errors)
    print(f"wrote {len(load_baseline(args.out).known)} known failure(s) to {args.out}")
    return 0


def _check_baseline(args: argparse.Namespace) -> int:
    from umdbench.baseline import load_baseline
    from umdbench.results import read_results

    results = read_results(args.results)
    review = load_baseline(args.baseline).review(results)
    lines, failing = _missing_lines(review.not_run, f"baseline case(s) not run (absent or "
                                    f"skipped) in {args.results}", results, args.results,
                                    args.allow_missing)
    print("\n".join([*review.summary_lines(), *lines]))
    return 0 if review.ok and not failing else 1


def _train_baseline(args: argparse.Namespace) -> int:
    from umdbench.baseline_training import run_command

    return run_command(args, sys.argv[1:])


_COMMANDS = {"report": _report, "merge": _merge, "compare": _compare, "baseline": _baseline,
             "check-baseline": _check_baseline, "train-baseline": _train_baseline}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``umdbench`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"umdbench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
