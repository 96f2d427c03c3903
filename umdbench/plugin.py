"""The pytest plugin: ``--umd-*`` options, the case matrix, xdist scheduling, results at the end.

Registered through the ``pytest11`` entry point, so it is active wherever umdbench is installed;
it parametrizes only tests that ask for the ``umd_case`` fixture. Options are read once into a
:class:`~umdbench.session.UmdSession` kept in ``config.stash``. On the controller process (the
only process without xdist, or xdist's controller) a :class:`~umdbench.controller.Controller`
is registered too: it gathers every report's records and writes the results at session end.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from umdbench.isolation import DEFAULT_TIMEOUT_S, ISOLATION_MODES
from umdbench.session import UmdOptions, UmdSession

__all__ = ["session_of"]

SESSION_KEY = pytest.StashKey[UmdSession]()


def session_of(config: pytest.Config) -> UmdSession:
    """The run's :class:`UmdSession` (options, cohort, policy, runner)."""
    return config.stash[SESSION_KEY]


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"must be a number of seconds >= 0, got {value}")
    return number


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("umdbench", "umdbench: audit segmentation models across modalities")
    add = group.addoption
    add(
        "--umd-device",
        metavar="DEVICE",
        default="auto",
        help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N. Default: auto.",
    )
    add(
        "--umd-models",
        metavar="PATTERNS",
        type=_csv,
        default=None,
        help="comma-separated model names or fnmatch patterns to audit; 'all' for every"
        " registered model. A named model that cannot run here gives skipped cases. Default:"
        " every model that can run here (the others are listed once, with the fix).",
    )
    add(
        "--umd-skip-models",
        metavar="PATTERNS",
        type=_csv,
        default=[],
        help="comma-separated model names or patterns to leave out. Default: none.",
    )
    add(
        "--umd-model",
        metavar="MODULE:CLASS",
        action="append",
        default=[],
        help="add a model class without editing the suite (repeatable).",
    )
    add(
        "--umd-modalities",
        metavar="ARMS",
        type=_csv,
        default=None,
        help="comma-separated arms among CT,PET_CT,MRI,PET_MRI. Default: every arm of the cohort.",
    )
    add(
        "--umd-organs",
        metavar="ORGANS",
        type=_csv,
        default=None,
        help="comma-separated targets (the 13 organs, tumor, or --umd-targets names)."
        " Default: every target the cohort labels.",
    )
    add(
        "--umd-targets",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML file of extra targets ([targets.NAME] kind, text, labels, parts; see"
        " umdbench/targets.py); also $UMD_TARGETS. Default: the built-in targets.",
    )
    add(
        "--umd-cohort",
        metavar="NAME",
        default="synthetic",
        choices=["synthetic"],
        help="built-in cohort to audit when no --umd-dataset is given. Default: synthetic.",
    )
    add(
        "--umd-subjects",
        metavar="N",
        type=_positive_int,
        default=8,
        help="subjects in the built-in synthetic cohort. Default: 8.",
    )
    add(
        "--umd-seed",
        metavar="SEED",
        type=int,
        default=0,
        help="seed of the built-in synthetic cohort. Default: 0.",
    )
    add(
        "--umd-dataset",
        metavar="PATH",
        default=None,
        help="audit a real dataset: a manifest file, a dataset folder, or samples / semireal /"
        " ibsi-sts (the real CT, PET and MRI sarcoma cohort).",
    )
    add(
        "--umd-results",
        metavar="FILE",
        type=Path,
        default=None,
        help="where the merged results JSON goes. Default: umd-results/results.json in rootdir.",
    )
    add(
        "--umd-policy",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML policy whose rules are added after the defaults. Default: built-in policy.",
    )
    add(
        "--umd-weights",
        metavar="DIR",
        type=Path,
        default=None,
        help="folder with model weights (or set UMD_WEIGHTS). Default: none.",
    )
    add(
        "--umd-cache",
        metavar="DIR",
        type=Path,
        default=None,
        help="cohort and decoded-volume cache. Default: $UMD_CACHE_DIR or ~/.cache/umdbench.",
    )
    add(
        "--umd-prediction-cache",
        metavar="DIR",
        type=Path,
        default=None,
        help="keep predictions here across runs. Default: a temporary folder for this run.",
    )
    add(
        "--umd-threads",
        metavar="N",
        type=_positive_int,
        default=None,
        help="torch CPU threads per process. Default: CPU cores divided by xdist workers.",
    )
    add(
        "--umd-shard",
        metavar="K/N|auto",
        default=None,
        help="run only shard K of N, split by (model, block of subjects) of about equal cost;"
        " auto: K and N from the scheduler (SLURM array, Kubernetes Indexed Job, CI_NODE_INDEX)."
        " Join the shards' results with `umdbench merge`.",
    )
    add(
        "--umd-shard-costs",
        metavar="RESULTS.json",
        type=Path,
        default=None,
        help="balance --umd-shard by the inference seconds of an earlier run's results."
        " Default: by the number of predictions each (model, subject) makes.",
    )
    add(
        "--umd-baseline",
        metavar="FILE",
        type=Path,
        default=None,
        help="known-failure baseline: its cases are xfail; a new failure fails the run.",
    )
    add(
        "--umd-baseline-update",
        action="store_true",
        default=False,
        help="write this run's failing cases to --umd-baseline instead of checking them.",
    )
    add(
        "--umd-report",
        metavar="DIR",
        type=Path,
        default=None,
        help="where report.md/.html and the CSVs go. Default: beside the results file.",
    )
    add(
        "--umd-no-report",
        action="store_true",
        default=False,
        help="write the results JSON only, no report.",
    )
    add(
        "--umd-isolation",
        choices=ISOLATION_MODES,
        default="process",
        help="process: models run in a child process per worker, so a crash or hang costs one"
        " subject; none: in the worker (a crash ends the run). Default: process.",
    )
    add(
        "--umd-timeout",
        metavar="SECONDS",
        type=_non_negative_float,
        default=DEFAULT_TIMEOUT_S,
        help="longest one subject's inference (or a model's load) may take before its process"
        f" is killed and the subject is an error; 0: no limit. Default: {DEFAULT_TIMEOUT_S:g}.",
    )
    add(
        "--umd-amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="mixed precision: run every inference under torch.autocast in bfloat16 or float16"
        " (fp16 needs CUDA); recorded in run.options and each record's timing. Default: none.",
    )
    add(
        "--umd-resume",
        action="store_true",
        default=False,
        help="continue an interrupted run from its journal (<results>.journal/), computing only"
        " what is missing; refused when options, cohort, policy or model code differ.",
    )
    add(
        "--umd-allow-outside-root",
        action="store_true",
        default=False,
        help="let a manifest name files outside its dataset folder (refused by default).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "speed: a pytest-benchmark timing benchmark (run with -n 0)")
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        from umdbench.devices import pin_worker_gpu

        pin_worker_gpu(workerinput.get("workerid"))  # before anything initialises CUDA
    options = UmdOptions.from_config(config, workerinput)
    session = UmdSession(options, is_controller=workerinput is None)
    config.stash[SESSION_KEY] = session
    _limit_threads(options.threads, workerinput)
    _interrupt_on_sigterm(config)
    if session.is_controller:
        from umdbench.controller import Controller

        config.pluginmanager.register(Controller(session), "umdbench-controller")


def _interrupt_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a CI runner cancelling, ``kill``) ends the run as Ctrl-C does, so the results
    are written, marked incomplete, instead of the process vanishing. Left alone when someone
    else already handles SIGTERM, and restored at the end."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, interrupt)
    config.add_cleanup(restore)


def _limit_threads(threads: int | None, workerinput: dict[str, Any] | None) -> None:
    """With N workers on C cores each worker gets C // N threads, so they do not thrash. C is
    what this process may use (a SLURM task's CPUs, the CPU affinity), not the node's count."""
    if threads is None and workerinput is None and not _slurm_cpus():
        return
    if threads is None:
        count = int(workerinput.get("workercount", 1)) if workerinput else 1
        threads = max(1, _available_cores() // count)
    import torch

    torch.set_num_threads(threads)


def _slurm_cpus() -> int | None:
    value = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _available_cores() -> int:
    """A SLURM task's ``--cpus-per-task``, else the cores of this process's CPU affinity."""
    slurm = _slurm_cpus()
    if slurm is not None:
        return slurm
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand each worker the shared prediction folder and the run's id."""
    session = session_of(node.config)
    node.workerinput["umd_prediction_dir"] = str(session.prediction_dir())
    node.workerinput["umd_run_id"] = session.options.run_id


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` means one worker per GPU on a GPU machine (xdist's default otherwise)."""
    from umdbench.devices import visible_gpu_ids

    return len(visible_gpu_ids()) or None


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For ``--dist load`` (the default) and ``loadscope``: keep each (model, modality) group of
    cases on one worker, so a scan's prediction is made once; other tests are spread as usual."""
    if config.getoption("dist") not in ("load", "loadscope"):
        return None
    from umdbench.scheduling import CaseGroupScheduling

    return CaseGroupScheduling(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the audit. A usage error found here (a manifest, a policy, a model name) is
    kept and raised after collection, where pytest prints it as one ``ERROR:`` line; raised
    here it would be a collection error with a 40-line traceback."""
    session = session_of(metafunc.config)
    for fixture, make in (("umd_case", session.cases), ("umd_gap", session.gap_cases)):
        if fixture not in metafunc.fixturenames:
            continue
        try:
            params = make()
        except pytest.UsageError as error:
            session.usage_error = session.usage_error or error
            params = [pytest.param(None, marks=pytest.mark.skip(reason=str(error)), id="usage-error")]
        metafunc.parametrize(fixture, params, ids=[param.id for param in params])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Raise a usage error found while parametrizing; then mark the baseline's known failures
    xfail (not strict: a newly passing case is reported)."""
    session = session_of(config)
    if session.usage_error is not None and not hasattr(config, "workerinput"):
        raise session.usage_error  # an xdist worker leaves it to the controller (controller.py)
    _deselect_unasked_benchmarks(config, items)
    baseline = session.baseline()
    if baseline is None:
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("umd_case") if callspec else None
        known = baseline.expectation(case.id) if case is not None else None
        if known is not None:
            item.add_marker(pytest.mark.xfail(reason=known.reason(), strict=False))


def _deselect_unasked_benchmarks(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Speed and timing benchmarks (marker ``speed``) run only when asked for: a path at or
    inside their folder (``pytest benchmarks/speed -n 0``) or a ``-m`` expression (``tox -e
    bench``). A serial audit (``pytest benchmarks -n 0``) then stays the audit, instead of
    also timing metrics on 512^3 volumes and every model's inference."""
    if config.option.markexpr:
        return
    asked = [Path(str(arg).split("::")[0]).resolve() for arg in config.args]

    def wanted(item: pytest.Item) -> bool:
        folder = Path(str(item.path)).parent
        return any(path == folder or folder in path.parents for path in asked)

    unasked = [i for i in items if i.get_closest_marker("speed") and not wanted(i)]
    if unasked:
        config.hook.pytest_deselected(items=unasked)
        dropped = {id(item) for item in unasked}
        items[:] = [item for item in items if id(item) not in dropped]


@pytest.fixture(scope="session")
def umd_session(request: pytest.FixtureRequest) -> UmdSession:
    """The run's options, cohort, policy and case runner."""
    return session_of(request.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.cleanup()
