"""One run's state: its options, cohort, policy, models, case matrix and case runner.

Built once per process in ``pytest_configure`` and kept in ``config.stash``. Everything heavy
(the cohort, models) is made lazily, on first use, so ``pytest --help`` stays fast.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from umdbench.cases import Case, GapCase, build_cases
from umdbench.cohort import Cohort, ScanLoader
from umdbench.organs import MODALITIES
from umdbench.policy import Policy, load_policy
from umdbench.prediction_cache import PredictionCache
from umdbench.provenance import new_run_id
from umdbench.registry import ModelRegistry
from umdbench.targets import check_target, known_targets, user_target_definitions

__all__ = ["UmdOptions", "UmdSession", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$UMD_CACHE_DIR`` or ``~/.cache/umdbench``: cohorts and decoded volumes live here."""
    return Path(os.environ.get("UMD_CACHE_DIR", Path.home() / ".cache" / "umdbench")).expanduser()


@dataclass
class UmdOptions:
    """The ``--umd-*`` options, parsed once."""

    device: str = "auto"
    #: Patterns to audit; None: every model that can run here (see ``UmdSession.model_names``).
    models: list[str] | None = None
    skip_models: list[str] = field(default_factory=list)
    extra_models: list[str] = field(default_factory=list)
    modalities: list[str] | None = None
    organs: list[str] | None = None
    targets: Path | None = None
    cohort: str = "synthetic"
    subjects: int = 8
    seed: int = 0
    dataset: str | None = None
    results: Path = Path("umd-results/results.json")
    policy: Path | None = None
    weights: Path | None = None
    cache: Path = field(default_factory=default_cache_dir)
    prediction_dir: Path | None = None
    threads: int | None = None
    shard: tuple[int, int] | None = None
    #: Where ``shard`` came from: "option", or the scheduler's variable for ``auto``.
    shard_source: str = ""
    shard_costs: Path | None = None
    baseline: Path | None = None
    baseline_update: bool = False
    report: Path | None = None
    no_report: bool = False
    isolation: str = "process"
    timeout: float | None = 3600.0
    #: ``--umd-amp``: none, bf16 or fp16 (torch.autocast around every inference call).
    amp: str = "none"
    resume: bool = False
    allow_outside_root: bool = False
    run_id: str = ""

    @classmethod
    def from_config(cls, config: pytest.Config, workerinput: dict[str, Any] | None) -> UmdOptions:
        get = config.getoption
        results = get("umd_results") or config.rootpath / "umd-results" / "results.json"
        prediction_dir = get("umd_prediction_cache")
        if prediction_dir is None and workerinput and workerinput.get("umd_prediction_dir"):
            prediction_dir = Path(workerinput["umd_prediction_dir"])
        shard = _parse_shard(get("umd_shard"))
        options = cls(
            device=get("umd_device"),
            models=get("umd_models"),
            skip_models=get("umd_skip_models"),
            extra_models=get("umd_model"),
            modalities=get("umd_modalities"),
            organs=get("umd_organs"),
            targets=get("umd_targets"),
            cohort=get("umd_cohort"),
            subjects=get("umd_subjects"),
            seed=get("umd_seed"),
            dataset=get("umd_dataset"),
            results=Path(results),
            policy=get("umd_policy"),
            weights=get("umd_weights"),
            cache=get("umd_cache") or default_cache_dir(),
            prediction_dir=prediction_dir,
            threads=get("umd_threads"),
            shard=shard[:2] if shard else None,
            shard_source=shard[2] if shard else "",
            shard_costs=get("umd_shard_costs"),
            baseline=get("umd_baseline"),
            baseline_update=get("umd_baseline_update"),
            report=get("umd_report"),
            no_report=get("umd_no_report"),
            isolation=get("umd_isolation"),
            timeout=get("umd_timeout") or None,
            amp=get("umd_amp"),
            resume=get("umd_resume"),
            allow_outside_root=get("umd_allow_outside_root"),
            run_id=(workerinput or {}).get("umd_run_id") or new_run_id(),
        )
        options.validate()
        return options

    def validate(self) -> None:
        """Refuse impossible values before any work, with the accepted values in the message."""
        for arm in self.modalities or []:
            if arm not in MODALITIES:
                raise pytest.UsageError(
                    f"--umd-modalities must name arms among {', '.join(MODALITIES)}, got {arm!r}"
                )
        self._use_targets()
        for organ in self.organs or []:
            try:
                check_target(organ)
            except ValueError as error:
                raise pytest.UsageError(f"--umd-organs: {error}") from error
        if self.timeout is not None and not self.timeout > 0:
            raise pytest.UsageError(f"--umd-timeout must be seconds > 0 (0: none), got {self.timeout}")
        if self.amp != "none":  # only then is the device resolved (torch imported) here
            from umdbench.devices import resolve_device
            from umdbench.timing import check_amp

            try:
                check_amp(self.amp, resolve_device(self.device))
            except ValueError as error:
                raise pytest.UsageError(f"--umd-amp {self.amp}: {error}") from error
        if self.policy is not None and not self.policy.is_file():
            raise pytest.UsageError(f"--umd-policy file not found: {self.policy}")
        if self.shard_costs is not None and not self.shard_costs.is_file():
            raise pytest.UsageError(f"--umd-shard-costs file not found: {self.shard_costs}")
        if self.baseline_update and self.baseline is None:
            raise pytest.UsageError("--umd-baseline-update needs --umd-baseline FILE to write to")
        if self.baseline is not None and not self.baseline_update and not self.baseline.is_file():
            raise pytest.UsageError(
                f"--umd-baseline file not found: {self.baseline} (write one with --umd-baseline-update)"
            )
        if self.weights is not None:
            if not self.weights.is_dir():
                raise pytest.UsageError(f"--umd-weights must be a folder, got {self.weights}")
            os.environ["UMD_WEIGHTS"] = str(self.weights)

    def _use_targets(self) -> None:
        """``--umd-targets FILE`` goes to ``$UMD_TARGETS``, so model hosts read it too; a
        ``$UMD_TARGETS`` set without the option is checked (and recorded) the same way."""
        if self.targets is None and os.environ.get("UMD_TARGETS"):
            self.targets = Path(os.environ["UMD_TARGETS"])
        if self.targets is None:
            return
        from umdbench.targets import load_targets_file

        try:
            load_targets_file(self.targets)
        except ValueError as error:
            raise pytest.UsageError(f"--umd-targets: {error}") from error
        os.environ["UMD_TARGETS"] = str(self.targets.resolve())

    def recorded(self) -> dict[str, Any]:
        """The options as written into the results file."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()}

    def fingerprinted(self) -> dict[str, Any]:
        """The options a resumed run must share with the interrupted one."""
        recorded = self.recorded()
        return {key: recorded[key] for key in FINGERPRINT_OPTIONS}


#: Options that change what a run computes (the others change where it writes, or how fast).
FINGERPRINT_OPTIONS = (
    "device", "models", "skip_models", "extra_models", "modalities", "organs", "targets", "cohort",
    "subjects", "seed", "dataset", "policy", "weights", "shard", "shard_costs", "timeout",
    "allow_outside_root",
    "amp",
)


def _parse_shard(value: str | None) -> tuple[int, int, str] | None:
    """``K/N`` or ``auto`` (read from the scheduler's environment) -> (K, N, source)."""
    if value is None:
        return None
    from umdbench.shards import resolve_shard

    try:
        return resolve_shard(value, os.environ)
    except ValueError as error:
        raise pytest.UsageError(f"--umd-shard: {error}") from error


#: Why a model with ``synthetic_audit = False`` is not in an audit of the synthetic cohort.
SYNTHETIC_LEFT_OUT = (
    "left out of the built-in synthetic cohort (its task means nothing on synthetic anatomy):"
    " audit a real dataset (--umd-dataset) or name it in --umd-models"
)


class DatasetUnavailable(Exception):
    """The dataset asked for is not on this machine (e.g. ../shared/samples is absent)."""


class UmdSession:
    """Lazily built cohort, registry, policy and runner for one process."""

    def __init__(self, options: UmdOptions, is_controller: bool) -> None:
        self.options = options
        self.is_controller = is_controller
        self._cohort: Cohort | None = None
        self._cohort_error: str | None = None
        self._registry: ModelRegistry | None = None
        self._policy: Policy | None = None
        self._runner: Any = None
        self._owned_prediction_dir: Path | None = None
        self._baseline: Any = None
        self._checked = False
        self._models_selected: tuple[list[str], dict[str, str]] | None = None
        self._plan: Any = None
        #: A usage error found while parametrizing, raised once collection ends (plugin).
        self.usage_error: pytest.UsageError | None = None

    # -- what the run is about ------------------------------------------------------------
    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            try:
                self._registry = ModelRegistry(self.options.extra_models)
            except (ValueError, TypeError) as error:
                raise pytest.UsageError(str(error)) from error
        return self._registry

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            try:
                self._policy = load_policy(self.options.policy)
            except (ValueError, FileNotFoundError) as error:
                raise pytest.UsageError(str(error)) from error
        return self._policy

    def cohort(self) -> Cohort | None:
        """The cohort, or None when the dataset is unavailable here (see ``cohort_error``)."""
        if self._cohort is None and self._cohort_error is None:
            try:
                self._cohort = self._open_cohort()
            except DatasetUnavailable as error:
                self._cohort_error = str(error)
        return self._cohort

    @property
    def cohort_error(self) -> str | None:
        return self._cohort_error

    def _open_cohort(self) -> Cohort:
        if self.options.dataset is not None:
            return _open_dataset(
                self.options.dataset, self.options.cache, self.options.allow_outside_root
            )
        from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

        return build_synthetic_cohort(
            n_subjects=self.options.subjects, seed=self.options.seed, cache_dir=self.options.cache
        )

    def model_names(self) -> list[str]:
        """The models this run audits: selected by pattern, then by shard. Without
        ``--umd-models``, only those that can run here; :meth:`models_not_run` says why the
        others are left out (one line each, instead of a skip per case)."""
        return self._selection()[0]

    def models_not_run(self) -> dict[str, str]:
        """Model -> why it is not in this run's matrix (missing weights, package, CUDA; left out
        of the synthetic cohort). A model named in ``--umd-models`` is never left out for being
        unavailable: its cases are skips, with this reason."""
        return self._selection()[1]

    def _selection(self) -> tuple[list[str], dict[str, str]]:
        if self._models_selected is None:
            self._models_selected = self._select_models()
        return self._models_selected

    def _select_models(self) -> tuple[list[str], dict[str, str]]:
        named = self.options.models
        patterns = ["*" if p == "all" else p for p in (named or ["*"])]
        try:
            names = self.registry.select(patterns, self.options.skip_models)
        except KeyError as error:
            raise pytest.UsageError(f"--umd-models: {error.args[0]}") from error
        left_out: dict[str, str] = {}
        if self.options.dataset is None:  # the built-in synthetic cohort
            left_out = {
                name: SYNTHETIC_LEFT_OUT
                for name in names
                if not self.registry.get(name).synthetic_audit and name not in (named or [])
            }
            names = [name for name in names if name not in left_out]
        if self.options.shard is not None:  # before availability: every machine agrees
            self._plan = self._plan_shards(names)
            if self._plan is not None:
                on_shard = self._plan.subjects_of(self.options.shard[0])
                names = [name for name in names if name in on_shard]
        if named is None:
            from umdbench.devices import resolve_device
            from umdbench.registry import unavailable_reason

            device = resolve_device(self.options.device)
            for name in names:
                reason = unavailable_reason(self.registry.get(name), device)
                if reason is not None:
                    left_out[name] = reason
            names = [name for name in names if name not in left_out]
        return names, dict(sorted(left_out.items()))

    def shard_plan(self) -> Any:
        """The :class:`~umdbench.shards.ShardPlan` of a sharded run (None otherwise)."""
        self._selection()
        return self._plan

    def shard_subjects(self) -> dict[str, frozenset[str]] | None:
        """Model -> the subjects this shard runs it on; None: every subject (no shard)."""
        plan = self.shard_plan()
        if plan is None or self.options.shard is None:
            return None
        return plan.subjects_of(self.options.shard[0])

    def shard_info(self) -> dict[str, Any] | None:
        """``run.shard`` of the results: this shard's index, where it came from, the plan."""
        plan = self.shard_plan()
        if plan is None or self.options.shard is None:
            return None
        k, n = self.options.shard
        return {"index": k, "count": n, "source": self.options.shard_source,
                "load": round(plan.load(k), 6), "plan": plan.as_dict()}

    def _plan_shards(self, names: list[str]) -> Any:
        """Cut (model, subject) units of the whole matrix (every shard's models, before any
        probe) into the run's N shards; None when the dataset is not here."""
        from umdbench.models.base import PromptKind
        from umdbench.runner import scans_of_case
        from umdbench.shards import expected_costs, plan_shards, prediction_counts

        cohort = self.cohort()
        if cohort is None or self.options.shard is None:
            return None
        models = [self.registry.get(name) for name in names]
        cases = build_cases(models, self._arms(cohort))
        automatic = {m.name: m.prompt_kind is PromptKind.NONE for m in models}
        weights = {m.name: float(m.shard_cost) for m in models}
        counts = prediction_counts(cases, lambda case: scans_of_case(cohort, case), automatic,
                                   weights)
        earlier, source = None, "prediction counts x each model's shard_cost"
        if self.options.shard_costs is not None:
            earlier, source = self._earlier_costs(self.options.shard_costs)
        return plan_shards(expected_costs(counts, earlier), self.options.shard[1], source)

    @staticmethod
    def _earlier_costs(path: Path) -> tuple[dict[str, dict[str, float]], str]:
        from umdbench.results import read_results
        from umdbench.shards import costs_from_results

        try:
            document = read_results(path)
        except (ValueError, FileNotFoundError) as error:
            raise pytest.UsageError(f"--umd-shard-costs: {error}") from error
        return costs_from_results(document), f"inference seconds of {path}"

    def baseline(self) -> Any:
        """The known-failure baseline to check against, or None (also while updating it)."""
        if self.options.baseline is None or self.options.baseline_update:
            return None
        if self._baseline is None:
            from umdbench.baseline import load_baseline

            try:
                self._baseline = load_baseline(self.options.baseline)
            except (ValueError, FileNotFoundError) as error:
                raise pytest.UsageError(str(error)) from error
        return self._baseline

    def _unavailable_param(self) -> Any:
        """One skipped parameter whose reason says why the dataset cannot be audited here."""
        reason = self._cohort_error or "no cohort"
        return pytest.param(None, marks=pytest.mark.skip(reason=reason), id="dataset-unavailable")

    def _selected(self, available: tuple[str, ...], chosen: list[str] | None) -> list[str]:
        return [x for x in available if chosen is None or x in chosen]

    def cases(self) -> list[Any]:
        """The case matrix, or one skipped placeholder that says why there is none."""
        self.check_startup()
        cohort = self.cohort()
        if cohort is None:
            return [self._unavailable_param()]
        models = [self.registry.get(name) for name in self.model_names()]
        for model in models:
            _check_model_protocols(model)
        if not models and self.shard_plan() is not None:
            return [self._empty_shard_param()]
        return build_cases(models, self._arms(cohort))

    def _empty_shard_param(self) -> Any:
        """A shard with nothing to run (more shards than (model, subject) units) says so."""
        k, n = self.options.shard or (0, 0)
        reason = (f"shard {k}/{n} has no work: the audit has fewer (model, subject) units than"
                  " shards; its results file still records the plan for `umdbench merge`")
        return pytest.param(None, marks=pytest.mark.skip(reason=reason), id="empty-shard")

    def _arms(self, cohort: Cohort) -> dict[str, list[str]]:
        """Selected modality -> the selected organs labelled in it."""
        return {
            arm: self._selected(cohort.organs_of(arm), self.options.organs)
            for arm in self._selected(cohort.modalities, self.options.modalities)
        }

    def gap_cases(self) -> list[Any]:
        """Every (model, organ, arm pair) with both arms in the cohort."""
        cohort = self.cohort()
        if cohort is None:
            return [self._unavailable_param()]
        arms = self._arms(cohort)
        gaps = []
        for name in self.model_names():
            model = self.registry.get(name)
            for a, b in cohort.paired_comparisons:
                shared = [o for o in arms.get(a, []) if o in arms.get(b, []) and model.runs(o)]
                for organ in shared:
                    for protocol in model.protocols or (None,):
                        gaps.append(GapCase(name, organ, a, b, protocol))
        return gaps

    # -- start-up ---------------------------------------------------------------------------
    def check_startup(self) -> None:
        """Everything a user can get wrong, checked before any work (each a one-line
        ``pytest.UsageError``): the models, the policy's names, the dataset."""
        if self._checked:
            return
        from umdbench.volume import max_volume_bytes

        try:
            max_volume_bytes()  # a bad $UMD_MAX_VOLUME_BYTES: once here, not once per scan
        except ValueError as error:
            raise pytest.UsageError(str(error)) from error
        self.model_names()
        self.check_policy_names()
        self.cohort()
        self._checked = True

    def check_policy_names(self) -> None:
        from umdbench.policy import KNOWN_METRICS

        try:
            self.policy.check_names(self.registry.names(), known_targets(), KNOWN_METRICS)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from error

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one (see :mod:`umdbench.journal`)."""
        from umdbench import __version__
        from umdbench.provenance import cohort_identity, model_code_version

        cohort = self.cohort()
        return {
            "umdbench": __version__,
            "options": self.options.fingerprinted(),
            "cohort": None
            if cohort is None
            else {
                "name": cohort.name,
                "provenance": dict(cohort.provenance),
                "files": cohort_identity(cohort.scans),
            },
            "policy": self.policy.describe(),
            "targets": user_target_definitions(),
            "models": {
                name: model_code_version(self.registry.get(name)) for name in self.model_names()
            },
        }

    def journal_folder(self) -> Path:
        from umdbench.journal import journal_folder

        return journal_folder(self.options.results)

    # -- running ----------------------------------------------------------------------------
    def prediction_dir(self) -> Path:
        """The folder every process of this run shares predictions through."""
        if self.options.prediction_dir is None:
            self._owned_prediction_dir = Path(tempfile.mkdtemp(prefix="umd-predictions-"))
            self.options.prediction_dir = self._owned_prediction_dir
        return self.options.prediction_dir

    def cleanup(self) -> None:
        """End of the session in this process: stop model hosts, drop our temporary folder."""
        if self._runner is not None:
            self._runner.close()
        if self._owned_prediction_dir is not None:
            import shutil

            shutil.rmtree(self._owned_prediction_dir, ignore_errors=True)

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from umdbench.devices import resolve_device
            from umdbench.journal import JournalWriter, read_journal
            from umdbench.runner import CaseRunner

            cohort = self.cohort()
            if cohort is None:
                raise DatasetUnavailable(self._cohort_error or "no cohort")
            options = self.options
            folder = self.journal_folder()
            resumed = read_journal(folder)[0] if options.resume else None
            self._runner = CaseRunner(
                cohort,
                self.registry,
                resolve_device(options.device),
                PredictionCache(self.prediction_dir(), run_id=options.run_id),
                loader=_scan_loader(options.cache),
                isolation=options.isolation,
                timeout=options.timeout,
                amp=options.amp,
                journal=JournalWriter(folder, os.environ.get("PYTEST_XDIST_WORKER", "main")),
                resumed=resumed,
                subjects=self.shard_subjects(),
            )
        return self._runner

    def run_case(self, case: Case) -> Any:
        """Evaluate one case (a :class:`~umdbench.runner.CaseOutcome`)."""
        threshold = self.policy.threshold(case.model, case.modality, case.organ)
        return self.runner.run_case(case, threshold)


def _open_dataset(spec: str, cache: Path, allow_outside_root: bool = False) -> Cohort:
    try:
        from umdbench.data import DatasetUnavailable as DataUnavailable
        from umdbench.data import open_dataset
    except ImportError as error:  # pragma: no cover - the data package ships with umdbench
        raise pytest.UsageError(f"--umd-dataset needs umdbench.data: {error}") from error
    try:
        return open_dataset(spec, cache, allow_outside_root=allow_outside_root)
    except DataUnavailable as error:
        raise DatasetUnavailable(str(error)) from error
    except (ValueError, FileNotFoundError) as error:
        raise pytest.UsageError(f"--umd-dataset {spec}: {error}") from error


def _scan_loader(cache: Path) -> ScanLoader:
    """The cached, resampling loader from umdbench.data when present, else the plain one."""
    try:
        from umdbench.data import CachedScanLoader
    except ImportError:
        return ScanLoader()
    return CachedScanLoader(cache)


def _check_model_protocols(model: type[Any]) -> None:
    """A promptable model must name protocols the suite knows; say which one is wrong."""
    from umdbench.models.base import PromptKind
    from umdbench.protocols import check_protocols

    if model.prompt_kind is PromptKind.NONE:
        return
    try:
        check_protocols(model)
    except (ValueError, TypeError) as error:
        raise pytest.UsageError(f"model {model.name}: {error}") from error
