"""Where models run: in a child process of each worker (the default), or in the worker itself.

A model that kills its process (``os._exit``, a segfault in an extension, the kernel's OOM
killer) used to take its xdist worker with it; xdist then requeued the case onto nine fresh
workers, and with ``-n 0`` the whole run died without writing a line. TorchBench runs each
model in a subprocess for the same reason. Here every worker starts one *host* process
(``spawn``: no CUDA or OpenMP state is inherited) that loads the models the worker asks for and
runs one subject's inference per request. When the host dies or overruns ``--umd-timeout`` the
worker kills it, records that subject as an error naming the signal or exit code, and starts a
fresh host (reloading the model) for the next subject. Nothing else is lost.

The same request handler (:class:`_Server`) answers in-process under ``--umd-isolation none``
(and for model classes that cannot be imported by name, e.g. ones defined inside a function):
there a crash still ends the process and a timeout cannot be enforced.

Each host runs inference under the run's ``--umd-amp`` autocast and times it where it runs
(:mod:`umdbench.timing`); the first call of each model in a host is marked ``warmup``, so a
fresh host after a crash warms up again and says so.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from umdbench.inference import (
    InferenceRequest,
    InferenceResult,
    describe_error,
    run_inference,
    source_file,
)
from umdbench.models.base import ModelUnavailable, PromptKind, SegmentationModel

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ISOLATION_MODES",
    "ChildHost",
    "HostFailure",
    "InProcessHost",
    "LoadFailed",
    "ModelCallError",
    "ModelHandle",
    "ModelSpec",
]

ISOLATION_MODES = ("process", "none")
#: One subject's inference (or one model's load) may take this long before it is killed: an hour
#: covers the slowest real models measured on CPU (TotalSegmentator --fast ~1 min, nnInteractive
#: and SAT-Pro several minutes a scan) with a wide margin.
DEFAULT_TIMEOUT_S = 3600.0
#: How long a new host may take to start (an interpreter, torch) before it counts as failed.
STARTUP_TIMEOUT_S = 600.0


class HostFailure(Exception):
    """The host process died or overran the timeout; the message names the signal or limit."""


class LoadFailed(Exception):
    """``check_available`` or ``load`` raised (not :class:`ModelUnavailable`) or crashed."""


class ModelCallError(Exception):
    """The model raised while serving a request; the message is one line naming where."""


@dataclass(frozen=True)
class ModelSpec:
    """How a host process finds a model class again: its module and its registered name."""

    name: str
    module: str
    qualname: str

    @classmethod
    def of(cls, model: type[SegmentationModel]) -> ModelSpec | None:
        """The spec when ``model`` can be imported by name in a fresh process, else None."""
        spec = cls(model.name, model.__module__, model.__qualname__)
        if model.__module__ == "__main__" or "<locals>" in model.__qualname__:
            return None
        try:
            return spec if spec.resolve() is model else None
        except (ImportError, LookupError):
            return None

    def resolve(self) -> type[SegmentationModel]:
        module = importlib.import_module(self.module)
        found: Any = module
        for part in self.qualname.split("."):
            found = getattr(found, part, None)
        if _is_model(found, self.name):
            return found
        # classes made by a factory (nnunet_model_class) may live under another attribute name
        for value in vars(module).values():
            if _is_model(value, self.name):
                return value
        raise LookupError(f"{self.module} defines no model named {self.name!r}")


def _is_model(value: Any, name: str) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, SegmentationModel)
        and getattr(value, "name", None) == name
    )


class _Server:
    """Answers a worker's requests with the models it holds; the same code in both hosts."""

    def __init__(self, device: str, amp: str = "none") -> None:
        self.device = device
        self.amp = amp
        self.models: dict[str, SegmentationModel] = {}
        #: Models that have had an inference call in this host (the next one is not a warm-up).
        self.warmed: set[str] = set()

    def handle(self, op: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        """``("ok", value)``, ``("unavailable", reason)`` or ``("error", one line)``."""
        if op == "load":
            return self._load(*args)
        name = args[0]
        model = self.models.get(name)
        if model is None:
            return ("error", f"model {name} is not loaded in this host")
        if op == "infer":
            request: InferenceRequest = args[1]
            warmup = name not in self.warmed
            self.warmed.add(name)  # a first call that raised did the warming up all the same
            return self._guarded(
                model,
                request.where(name),
                lambda: run_inference(model, request, self.device, amp=self.amp, warmup=warmup),
            )
        if op == "call":
            method, method_args = args[1], args[2]
            return self._guarded(
                model, f"model {name}: {method}()", getattr(model, method), *method_args
            )
        return ("error", f"unknown host request {op!r}")

    def _load(self, cls: type[SegmentationModel]) -> tuple[str, Any]:
        step = "__init__"
        try:
            model = cls()
            step = "check_available"
            model.check_available(self.device)
            step = "load"
            model.load(self.device)
            step = "weights_id"
            weights = model.weights_id()
        except ModelUnavailable as reason:
            return ("unavailable", str(reason))
        except Exception as error:
            where = f"model {cls.name} could not be loaded: {step}({self.device!r})"
            return ("error", describe_error(where, error, source_file(cls)))
        self.models[cls.name] = model
        self.warmed.discard(cls.name)
        return ("ok", weights)

    @staticmethod
    def _guarded(model: SegmentationModel, where: str, work: Any, *args: Any) -> tuple[str, Any]:
        try:
            return ("ok", work(*args))
        except Exception as error:
            return ("error", describe_error(where, error, source_file(type(model))))


class Host(Protocol):
    """What the runner needs of a host, wherever it runs."""

    isolation: str

    def request(self, op: str, args: tuple[Any, ...], where: str) -> tuple[str, Any]: ...

    def loaded(self, name: str) -> bool: ...

    def close(self) -> None: ...


class InProcessHost:
    """Models in the worker's own process: no protection, no timeout (``--umd-isolation none``)."""

    isolation = "in-process"

    def __init__(self, device: str, amp: str = "none") -> None:
        self._server = _Server(device, amp)

    def request(self, op: str, args: tuple[Any, ...], where: str) -> tuple[str, Any]:
        return self._server.handle(op, args)

    def loaded(self, name: str) -> bool:
        return name in self._server.models

    def close(self) -> None:
        self._server.models.clear()
        self._server.warmed.clear()


class ChildHost:
    """One spawned process serving a worker's models; replaced when it dies or hangs."""

    isolation = "child process"

    def __init__(
        self,
        device: str,
        timeout: float | None,
        threads: int | None = None,
        amp: str = "none",
    ) -> None:
        self.device = device
        self.amp = amp
        self.timeout = timeout if timeout else None
        self.threads = threads
        self.restarts = 0
        self._process: Any = None
        self._conn: Any = None
        self._loaded: set[str] = set()
        atexit.register(self.close)

    def loaded(self, name: str) -> bool:
        return self._process is not None and name in self._loaded

    def request(self, op: str, args: tuple[Any, ...], where: str) -> tuple[str, Any]:
        """Send one request and wait for its answer, at most ``timeout`` seconds."""
        try:
            self._start()
        except HostFailure as failure:
            raise HostFailure(f"{where}: {failure}") from failure
        try:
            self._conn.send((op, args))
            if not self._conn.poll(self.timeout):
                self._kill()
                raise HostFailure(
                    f"{where}: no answer after {self.timeout:g} s (--umd-timeout {self.timeout:g});"
                    " its process was killed. Raise --umd-timeout if the model is only slow"
                )
            answer = self._conn.recv()
        except (EOFError, OSError) as error:
            code = self._reap()
            raise HostFailure(f"{where}: {describe_exit(code)}") from error
        if op == "load" and answer[0] == "ok":
            self._loaded.add(args[0].name)
        return answer

    def _start(self) -> None:
        if self._process is not None:
            return
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        threads = self.threads
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        process = context.Process(
            target=_child_main,
            args=(theirs, self.device, threads, os.getpid(), self.amp),
            name="umdbench-model-host",
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        self._loaded = set()
        # Starting an interpreter and importing torch is not the model's time: wait for the
        # host to say it is ready before any request's timeout starts.
        if not ours.poll(max(self.timeout or 0, STARTUP_TIMEOUT_S)):
            self._kill()
            raise HostFailure(f"the model host process did not start in {STARTUP_TIMEOUT_S:g} s")
        try:
            ours.recv()
        except (EOFError, OSError) as error:
            code = self._reap()
            raise HostFailure(
                f"the model host process failed to start: {describe_exit(code)}"
            ) from error

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the host and whatever it started
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        self._reap()

    def _reap(self) -> int | None:
        process, self._process = self._process, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._loaded = set()
        if process is None:
            return None
        process.join(timeout=30)
        self.restarts += 1
        return process.exitcode

    def close(self) -> None:
        """Ask the host to exit, and make sure it does."""
        if self._process is None:
            return
        with contextlib.suppress(Exception):
            self._conn.send(None)
            self._process.join(timeout=10)
        if self._process is not None and self._process.is_alive():
            self._kill()
        else:
            self._reap()
        self.restarts -= 1  # a requested exit is not a restart


def describe_exit(code: int | None) -> str:
    """What a host's exit code means, and what to do about it."""
    if code is None or code == 0:
        return "the model's process ended without answering"
    if code < 0:
        name = _signal_name(-code)
        if -code == signal.SIGKILL:
            return (
                f"the model's process was killed by {name} (exit {code}): the kernel's"
                " out-of-memory killer does this when memory runs out (see `dmesg`); try fewer"
                " workers (-n), a smaller cohort or --umd-device cpu"
            )
        if -code == signal.SIGSEGV:
            return (
                f"the model's process crashed with {name} (exit {code}), a segmentation fault in"
                " native code (the model's extension, torch or a driver)"
            )
        return f"the model's process was killed by {name} (exit {code})"
    return f"the model's process exited with status {code} (the model's code called exit?)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _child_main(conn: Any, device: str, threads: int, parent: int, amp: str = "none") -> None:
    """The host's loop: one request in, one answer out, until the worker says stop."""
    with contextlib.suppress(OSError):
        os.setsid()  # its own process group: the worker can kill it and its children at once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(max(1, threads))
    server = _Server(device, amp)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        op, args = message
        if op == "load":
            args = (args[0].resolve(),)
        answer = server.handle(op, args)
        try:
            conn.send(answer)
        except Exception as error:  # an answer that does not pickle
            conn.send(("error", f"the answer to {op} could not be sent back: {error}"))


def _exit_with_parent(parent: int) -> None:
    """A host whose worker died (SIGKILL, a lost runner) must not run on, maybe hung, forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


class ModelHandle:
    """A loaded model as the runner sees it, wherever its host runs."""

    def __init__(self, cls: type[SegmentationModel], host: Host, weights_id: str) -> None:
        self.cls = cls
        self.host = host
        self.weights_id = weights_id

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def prompt_kind(self) -> PromptKind:
        return self.cls.prompt_kind

    @property
    def isolation(self) -> str:
        return self.host.isolation

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        return self._call("unsupported", organ, protocol)

    def output_value(self, organ: str) -> int:
        return int(self._call("output_value", organ))

    def infer(self, request: InferenceRequest) -> InferenceResult:
        """One subject's checked prediction; raises :class:`HostFailure` or
        :class:`ModelCallError` with a one-line message."""
        return self._answer(self._request("infer", (self.name, request), request.where(self.name)))

    def _call(self, method: str, *args: Any) -> Any:
        where = f"model {self.name}: {method}()"
        return self._answer(self._request("call", (self.name, method, args), where))

    def _request(self, op: str, args: tuple[Any, ...], where: str) -> tuple[str, Any]:
        if not self.host.loaded(self.name):  # a fresh host after a crash: load again
            status, value = load_model(self.cls, self.host)
            if status != "ok":
                raise ModelCallError(f"{where}: reloading after a crash failed: {value}")
        return self.host.request(op, args, where)

    @staticmethod
    def _answer(answer: tuple[str, Any]) -> Any:
        status, value = answer
        if status != "ok":
            raise ModelCallError(str(value))
        return value


def load_model(cls: type[SegmentationModel], host: Host) -> tuple[str, Any]:
    """Ask ``host`` to load ``cls``: ``("ok", weights id)`` or a status and a one-line reason."""
    spec: Any = ModelSpec.of(cls) if isinstance(host, ChildHost) else cls
    try:
        return host.request("load", (spec,), f"model {cls.name}: load()")
    except HostFailure as failure:
        return ("error", f"model {cls.name} failed to load: {failure}")
