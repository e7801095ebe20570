"""Where independent units of work run: in this process (`LocalExecutor`) or on a Ray cluster
(`RayExecutor`), and which of them a job-array shard takes (`Shard`).

A unit is one call ``fn(shared, unit)`` whose result depends only on its arguments: a benchmark cell
(defense setting and seed) or a chunk of shadow models. ``shared`` (the dataset) is sent to the
workers once. The executor hands each result back to the calling process as soon as it is ready
(``on_done(unit, result)``), which writes it to the cache atomically, so an interrupted run loses
only the units still in flight.

>>> LocalExecutor().map(lambda shared, unit: shared * unit, 10, [1, 2, 3])
[10, 20, 30]
>>> Shard.parse("1/3").select(["a", "b", "c", "d", "e"])
['b', 'e']
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tfmi.errors import TfmiError
from tfmi.validation import check_count

EXECUTOR_NAMES = ("local", "ray")
RAY_EXTRA_HINT = "install it with `pip install 'tfmi[ray]'` (the README's set-up does)"

Fn = Callable[[Any, Any], Any]
OnDone = Callable[[Any, Any], None]


@dataclass(frozen=True)
class ExecutorConfig:
    """How units run: ``name`` "local" or "ray"; for Ray, the cluster to join (``address``, None starts
    a private one on 127.0.0.1 with ``local_cpus`` CPUs, None for all) and each task's resources and
    retries. The CLI's ``--executor``, ``--ray-address``, ``--cpus-per-task``, ``--gpus-per-task`` and
    ``--max-retries`` options take their defaults from here.

    >>> ExecutorConfig("ray", cpus_per_task=2).cpus_per_task
    2.0
    """

    name: str = "local"
    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 3
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.name not in EXECUTOR_NAMES:
            raise TfmiError(f"unknown executor {self.name!r}: use one of {', '.join(EXECUTOR_NAMES)}")
        for field_name, low_inclusive in (("cpus_per_task", False), ("gpus_per_task", True)):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    value > 0 or (low_inclusive and value == 0)) or value != value:
                bound = ">= 0" if low_inclusive else "> 0"
                raise TfmiError(f"{field_name.replace('_', '-')} must be a number {bound}, got {value!r}")
            object.__setattr__(self, field_name, float(value))
        check_count(self.max_retries, "max-retries", 0)
        if self.local_cpus is not None:
            check_count(self.local_cpus, "the local Ray cluster's CPUs", 1)
        if self.name == "local" and self.address is not None:
            raise TfmiError("a Ray address was given with the local executor: add --executor ray")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, as Slurm's ``$SLURM_ARRAY_TASK_ID`` with
    ``--array=0-(count-1)``): it takes units ``index``, ``index + count``, ... of a fixed order."""

    index: int
    count: int

    def __post_init__(self) -> None:
        check_count(self.count, "a shard count", 1)
        index_ok = not isinstance(self.index, bool) and isinstance(self.index, int)
        if not index_ok or not 0 <= self.index < self.count:
            raise TfmiError(f"shard index {self.index!r} is not in 0..{self.count - 1}: shards of "
                            f"{self.count} are numbered 0/{self.count} to {self.count - 1}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` -> ``Shard(I, N)``, with one clear error for anything else."""
        parts = str(text).strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise TfmiError(f"--shard takes I/N (shard I of N, 0 <= I < N, e.g. 0/4), got {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    def select(self, units: Sequence[Any]) -> list[Any]:
        return list(units[self.index::self.count])

    def text(self) -> str:
        return f"{self.index}/{self.count}"


class LocalExecutor:
    """Runs the units one after another in this process, in order."""

    name = "local"

    def map(self, fn: Fn, shared: Any, units: Iterable[Any], on_done: OnDone | None = None,
            describe: Callable[[Any], str] = repr) -> list[Any]:
        """``fn(shared, unit)`` for every unit, in order (``describe`` is for the Ray executor's errors)."""
        results = []
        for unit in units:
            result = fn(shared, unit)
            if on_done is not None:
                on_done(unit, result)
            results.append(result)
        return results

    def close(self) -> None:
        pass


def check_ray_installed() -> None:
    """A `TfmiError` naming the fix when Ray cannot be imported (checked before any work starts)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise TfmiError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA_HINT}")


class RayExecutor:
    """Runs each unit as a Ray task: ``shared`` goes into the object store once, every task asks for
    ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs, and a task whose worker dies is retried up to
    ``max_retries`` times (an exception raised by ``fn`` itself is not retried: it would recur).
    Results come back in the order tasks finish; ``map`` returns them in the units' order.

    Joins the cluster at ``address`` (as ``ray.init(address=...)``; "auto" finds one started with
    ``ray start`` on this machine), or else starts a private one bound to 127.0.0.1, which it shuts
    down on `close`. Ray's usage reporting is off unless ``RAY_USAGE_STATS_ENABLED`` says otherwise.
    """

    name = "ray"

    def __init__(self, config: ExecutorConfig):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        check_ray_installed()
        import ray

        self._ray = ray
        self.config = config
        self._started = False
        if not ray.is_initialized():
            self._start(ray, config)
            self._started = True

    @staticmethod
    def _start(ray, config: ExecutorConfig) -> None:
        with warnings.catch_warnings():
            # Ray's notice of a future change for tasks without GPUs; until then it hides the GPUs
            # from them, which is what a CPU task wants
            warnings.filterwarnings("ignore", ".*accelerator visible devices.*", FutureWarning)
            try:
                if config.address is not None:
                    ray.init(address=config.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=config.local_cpus, include_dashboard=False,
                             _node_ip_address="127.0.0.1", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = config.address or "a local cluster on 127.0.0.1"
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise TfmiError(f"cannot start Ray on {where}: {first}") from None

    def map(self, fn: Fn, shared: Any, units: Iterable[Any], on_done: OnDone | None = None,
            describe: Callable[[Any], str] = repr) -> list[Any]:
        """``fn(shared, unit)`` for every unit, as Ray tasks; ``describe(unit)`` names a unit in errors."""
        ray = self._ray
        units = list(units)
        task = ray.remote(fn).options(num_cpus=self.config.cpus_per_task, num_gpus=self.config.gpus_per_task,
                                      max_retries=self.config.max_retries, retry_exceptions=False)
        shared_ref = ray.put(shared)
        pending = {task.remote(shared_ref, unit): i for i, unit in enumerate(units)}
        results: list[Any] = [None] * len(units)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    results[i] = ray.get(done[0])
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause if getattr(error, "cause", None) is not None else error
                    if isinstance(cause, TfmiError):
                        raise cause from None
                    raise TfmiError(f"a Ray task failed on {describe(units[i])}: "
                                    f"{type(cause).__name__}: {cause}") from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as error:
                    raise TfmiError(f"a Ray worker died {self.config.max_retries + 1} time(s) on "
                                    f"{describe(units[i])} ({type(error).__name__}); raise --max-retries or "
                                    "look at the workers' logs") from None
                if on_done is not None:
                    on_done(units[i], results[i])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(config: ExecutorConfig) -> LocalExecutor | RayExecutor:
    """The executor ``config`` names (Ray is imported only here, and only when asked for).

    >>> make_executor(ExecutorConfig()).name
    'local'
    """
    if not isinstance(config, ExecutorConfig):
        raise TfmiError(f"expected an ExecutorConfig, got {type(config).__name__}")
    return RayExecutor(config) if config.name == "ray" else LocalExecutor()
