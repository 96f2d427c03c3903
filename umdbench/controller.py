"""The controller's side of a run: gather what the workers report, write it, sum it up.

Workers attach a case's summary and per-subject records to the test report through
``record_property`` (pytest-benchmark is off under xdist, so the suite measures and ships its own
timings this way); xdist sends reports to the controller, where :meth:`Controller.
pytest_runtest_logreport` receives them. Without xdist the same hook sees the same reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from umdbench.cases import parse_case_id
from umdbench.journal import begin_journal
from umdbench.results import environment_info, read_results, write_results
from umdbench.session import UmdSession

__all__ = ["CASE_PROPERTY", "GAP_PROPERTY", "RECORDS_PROPERTY", "Controller", "not_run_lines"]

CASE_PROPERTY = "umd_case"
RECORDS_PROPERTY = "umd_records"
GAP_PROPERTY = "umd_gap"


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


class Controller:
    """Registered as a plugin on the controller process only."""

    def __init__(self, session: UmdSession) -> None:
        self.session = session
        self.cases: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []
        self.gaps: dict[str, dict[str, Any]] = {}
        self.results_path: Any = None
        self.notes: list[str] = []
        #: Case ids collected for this run (None until collection ends, or when none are).
        self.expected: set[str] | None = None
        self.collect_only = False  # --collect-only: no journal, no results

    # -- start: what will run, the journal, a results file that says "not finished" ------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Without xdist the items are known here, before anything runs."""
        self.collect_only = bool(session.config.option.collectonly)
        self._expect(item.nodeid for item in session.items)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """With xdist, the first worker's collection (workers collect alike; nothing runs
        before every worker has collected)."""
        if any(nodeid.endswith("[usage-error]") for nodeid in ids):
            self.session.cases()  # raises the usage error the workers met, as one line
        if self.expected is None:
            self._expect(ids)

    def _expect(self, nodeids: Iterable[str]) -> None:
        expected = {case for case in map(_case_id_of, nodeids) if case is not None}
        if not expected or self.collect_only:
            return
        self.expected = expected
        options = self.session.options
        try:
            begin_journal(self.session.journal_folder(), self.session.fingerprint(), options.resume)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from error
        if options.results.exists() and not options.resume:
            options.results.replace(options.results.with_suffix(".previous.json"))
        write_results(
            options.results, run={**self._run_info(), "state": "running"}, models={}, cases=[],
            records=[], complete=False, missing_cases=expected,
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not report.failed:
            return  # a passing setup or teardown says nothing about the verdict
        properties: dict[str, Any] = {str(k): v for k, v in report.user_properties}
        if CASE_PROPERTY in properties:
            self._take_case(report, properties)
        elif GAP_PROPERTY in properties:
            gap = dict(properties[GAP_PROPERTY])  # a copy: the report keeps its own
            gap["outcome"] = _outcome(report)
            self.gaps[gap["gap_id"]] = gap
        elif report.failed and "test_segmentation[" in report.nodeid:
            self._take_crashed_case(report)

    def _take_case(self, report: pytest.TestReport, properties: dict[str, Any]) -> None:
        case = dict(properties[CASE_PROPERTY])
        case["outcome"] = _outcome(report)
        case["duration_s"] = round(report.duration, 4)
        if report.failed or report.skipped:
            case["message"] = _long_text(report)
        if case["case_id"] not in self.cases:
            self.records.extend(properties.get(RECORDS_PROPERTY, []))
        self.cases[case["case_id"]] = case

    def _take_crashed_case(self, report: pytest.TestReport) -> None:
        """A case that failed before it could record anything (a fixture error, a crash)."""
        case_id = report.nodeid.partition("[")[2].rstrip("]")
        if case_id in self.cases:
            return
        try:
            case = parse_case_id(case_id)
        except ValueError:
            return
        self.cases[case_id] = {
            "case_id": case_id,
            "model": case.model,
            "modality": case.modality,
            "organ": case.organ,
            "protocol": case.protocol,
            "outcome": "error",
            "value": None,
            "n_valid": 0,
            "n_empty_reference": 0,
            "n_errors": 0,
            "message": _long_text(report),
            "duration_s": round(report.duration, 4),
        }

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the results, then what is derived from them (baseline, report)."""
        if not self.cases and self.expected is None and not self._empty_shard():
            return
        options = self.session.options
        missing = sorted((self.expected or set()) - set(self.cases))
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
        complete = not missing and not interrupted
        run = self._run_info()
        if not complete:
            run["state"] = "interrupted" if interrupted else "incomplete"
            self.notes.append(
                f"umdbench: the run is incomplete, {len(missing)} case(s) have no result;"
                f" every finished subject is in {self.session.journal_folder()}: rerun the same"
                " command with --umd-resume to compute only what is missing"
            )
        self.results_path = write_results(
            options.results,
            run=run,
            models=self._models_info(),
            cases=list(self.cases.values()),
            records=self.records,
            complete=complete,
            missing_cases=missing,
        )
        document = read_results(self.results_path)
        if options.baseline is not None:
            self._baseline_step(document, options.baseline)
        if not options.no_report:
            self._report_step(options.report or self.results_path.parent)

    def _empty_shard(self) -> bool:
        """A shard with nothing to run still writes its results: merge then sees the plan
        and knows the shard is not missing."""
        return self.session.options.shard is not None and not self.collect_only

    def _baseline_step(self, document: dict[str, Any], baseline: Path) -> None:
        from umdbench.baseline import write_baseline

        if self.session.options.baseline_update:
            path = write_baseline(document, baseline)
            self.notes.append(f"umdbench baseline written: {path}")
            return
        self.notes.extend(self.session.baseline().review(document).summary_lines())

    def _report_step(self, folder: Any) -> None:
        """Render the report; a failure here is reported and never costs the results file."""
        from umdbench.report import render_report

        try:
            written = render_report(self.results_path, folder, seed=self.session.options.seed)
        except Exception as error:
            self.notes.append(
                f"umdbench report FAILED ({type(error).__name__}: {error}); the results are safe in"
                f" {self.results_path}: render again with `umdbench report {self.results_path}`"
            )
            return
        html = next((p for p in written if p.name == "report.html"), None)
        self.notes.append(f"umdbench report: {html or folder}")

    def _run_info(self) -> dict[str, Any]:
        cohort = self.session.cohort()
        from umdbench.devices import resolve_device

        info: dict[str, Any] = {
            "options": self.session.options.recorded(),
            "environment": environment_info(resolve_device(self.session.options.device)),
            "policy": self.session.policy.describe(),
            "gaps": sorted(self.gaps.values(), key=lambda g: g["gap_id"]),
            "models_not_run": self._models_not_run(),
        }
        shard = self._shard_info()
        if shard is not None:
            info["shard"] = shard
        if cohort is not None:
            info["cohort"] = {
                "name": cohort.name,
                "provenance": dict(cohort.provenance),
                "subjects": list(cohort.subjects),
                "modalities": list(cohort.modalities),
                "organs": list(cohort.organs),
                "comparisons": [f"{a}~{b}" for a, b in cohort.paired_comparisons],
            }
        return info

    def _shard_info(self) -> dict[str, Any] | None:
        try:
            return self.session.shard_info()
        except pytest.UsageError:
            return None

    def _shard_line(self) -> str | None:
        """What this shard ran, and that its verdicts are over its subjects only."""
        plan, shard = self.session.shard_plan(), self.session.options.shard
        if plan is None or shard is None:
            return None
        source = self.session.options.shard_source
        where = f" (from {source})" if source and source != "option" else ""
        return (f"umdbench: {plan.describe(shard[0])}{where}; verdicts cover these subjects only:"
                " join every shard's results with `umdbench merge`")

    def _models_not_run(self) -> list[dict[str, str]]:
        """The models left out of the matrix, and why; never fatal to writing the results."""
        try:
            left_out = self.session.models_not_run()
        except pytest.UsageError:
            return []
        return [{"model": name, "reason": reason} for name, reason in left_out.items()]

    def _models_info(self) -> dict[str, Any]:
        registry = self.session.registry
        models: dict[str, Any] = {}
        for name in sorted({case["model"] for case in self.cases.values()}):
            try:
                cls = registry.get(name)
            except KeyError:
                continue
            info = cls.metadata()
            info["origin"] = registry.origin(name)
            weights = sorted(
                {
                    str(r["weights_id"])
                    for r in self.records
                    if r["model"] == name and r.get("weights_id")
                }
            )
            info["weights_id"] = weights[0] if len(weights) == 1 else weights
            models[name] = info
        return models

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.cases:
            return
        for line in summary_table(list(self.cases.values())):
            terminalreporter.write_line(line)
        for line in not_run_lines(self._models_not_run()):
            terminalreporter.write_line(line)
        shard = self._shard_line()
        if shard:
            terminalreporter.write_line(shard)
        if self.results_path is not None:
            terminalreporter.write_line(f"umdbench results: {self.results_path}")
        for note in self.notes:
            terminalreporter.write_line(note)


def _case_id_of(nodeid: str) -> str | None:
    """The case id of a ``test_segmentation[...]`` node id, None for any other test."""
    name, sep, param = nodeid.partition("[")
    if not sep or not name.endswith("test_segmentation"):
        return None
    case_id = param[:-1] if param.endswith("]") else param
    try:
        parse_case_id(case_id)
    except ValueError:
        return None  # a placeholder such as dataset-unavailable
    return case_id


def _long_text(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    lines = str(report.longreprtext or "").splitlines()
    # xdist puts "[gw2] linux -- Python ..." first: where it ran is in the case's `worker`
    text = "\n".join(line for line in lines if not line.startswith("[gw"))
    return text[-2000:]


def summary_table(cases: list[dict[str, Any]]) -> list[str]:
    """Model x modality: mean of the cases' figures, and passed/failed/other counts."""
    arms = ("CT", "PET_CT", "MRI", "PET_MRI")
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        cells[(case["model"], case["modality"])].append(case)
    models = sorted({model for model, _ in cells})
    present = [arm for arm in arms if any((m, arm) in cells for m in models)]
    width = max([len(m) for m in models] + [5])
    lines = ["", "umdbench: mean Dice per model and arm (passed/failed/other cases)"]
    lines.append(" " * width + "".join(f" {arm:>18}" for arm in present))
    for model in models:
        row = f"{model:<{width}}"
        for arm in present:
            row += f" {_cell(cells.get((model, arm), [])):>18}"
        lines.append(row)
    return lines


def not_run_lines(not_run: list[dict[str, str]]) -> list[str]:
    """One line per model left out of the matrix, each with its fix."""
    if not not_run:
        return []
    head = (f"umdbench: {len(not_run)} model(s) not run here (name them in --umd-models, or"
            " --umd-models all, to list their cases as skips):")
    from umdbench.report.findings import model_reason

    return [head, *(f"  {_shortened(model_reason(item['model'], item['reason']))}"
                    for item in not_run)]


def _shortened(line: str, limit: int = 240) -> str:
    """A terminal line; the whole reason is in results.json (run.models_not_run) and the report."""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _cell(cases: list[dict[str, Any]]) -> str:
    if not cases:
        return "-"
    values = [
        c["value"]
        for c in cases
        if isinstance(c.get("value"), (int, float)) and math.isfinite(c["value"])
    ]
    passed = sum(c["outcome"] in ("passed", "xpassed") for c in cases)
    failed = sum(c["outcome"] == "failed" for c in cases)
    other = len(cases) - passed - failed
    mean = f"{sum(values) / len(values):.3f}" if values else "  n/a"
    return f"{mean} ({passed}/{failed}/{other})"
