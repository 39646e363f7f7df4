"""Where a study's runs execute: in process, a local process pool, or a Dask cluster.

Every executor takes picklable tasks and yields each task's outcome as soon as it is done (in
completion order). A task that dies with its worker comes back as an outcome carrying the error,
so the study records it and goes on; a rerun of the study redoes it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, as_completed
from contextlib import contextmanager
from typing import Protocol

from sim.errors import UserError
from sim.processes import process_pool
from sim.study.runner import RunOutcome, RunTask

Work = Callable[[RunTask], RunOutcome]


class Executor(Protocol):
    """Runs tasks and yields their outcomes in completion order."""

    description: str

    def outcomes(self, work: Work, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]: ...

    def close(self) -> None: ...


def _lost(task: RunTask, exc: BaseException) -> RunOutcome:
    return RunOutcome(task, None, f"the worker running this task failed: {exc!r}")


class InProcess:
    """One run after another in this process (``--workers 1``; simplest to debug)."""

    description = "in process"

    def outcomes(self, work: Work, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]:
        for task in tasks:
            yield work(task)

    def close(self) -> None:
        """Nothing to release."""


class ProcessPool:
    """A local pool of `workers` processes (started fresh with ``spawn``: no inherited state),
    which exit when this process dies (:mod:`sim.processes`)."""

    def __init__(self, workers: int) -> None:
        self.description = f"{workers} local processes"
        self._pool = process_pool(workers, multiprocessing.get_context("spawn"))

    def outcomes(self, work: Work, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]:
        futures: dict[Future, RunTask] = {self._pool.submit(work, t): t for t in tasks}
        try:
            for future in as_completed(futures):
                exc = future.exception()
                yield _lost(futures[future], exc) if exc else future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskCluster:
    """Runs on a Dask distributed scheduler at `address`, or on a LocalCluster ("local").

    Workers of a remote cluster must import this package and see the study's output folder at
    the same path (a shared filesystem).
    """

    def __init__(self, address: str, workers: int) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError(
                "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
            ) from None
        self._cluster = None
        if address == "local":
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            self.description = f"a Dask LocalCluster of {workers} worker processes"
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(address, timeout="10s")
            except OSError as exc:
                raise UserError(
                    f"--scheduler {address}: cannot reach a Dask scheduler: {exc}"
                ) from None
            self.description = f"the Dask scheduler at {address}"

    def outcomes(self, work: Work, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]:
        from distributed import as_completed as dask_completed

        futures = {self._client.submit(work, t, pure=False): t for t in tasks}
        try:
            for future in dask_completed(list(futures)):
                if future.status == "finished":
                    yield future.result()
                else:
                    yield _lost(futures[future], future.exception())
        finally:
            self._client.cancel(list(futures))

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


@contextmanager
def open_executor(workers: int | None = None, scheduler: str | None = None) -> Iterator[Executor]:
    """The executor for `workers` and `scheduler`, closed on leaving the ``with`` block.

    workers: processes of the local pool or LocalCluster (default: the CPU count); 1 without a
    scheduler runs in this process. scheduler: a Dask scheduler address, or "local".
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    n = workers or os.cpu_count() or 1
    if scheduler:
        ex: Executor = DaskCluster(scheduler, n)
    elif n == 1:
        ex = InProcess()
    else:
        ex = ProcessPool(n)
    try:
        yield ex
    finally:
        ex.close()
