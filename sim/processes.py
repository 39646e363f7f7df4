"""Worker processes that do not outlive the process that started them.

A process pool's workers wait on a queue whose write end they hold themselves, so when the
parent is killed (``kill -9``, out of memory) nothing tells them to stop: they, and the
multiprocessing resource tracker that waits for them, would stay alive indefinitely. Every
pool of this package therefore starts its workers with :func:`exit_with_parent` as initializer.
It starts a daemon thread that polls the parent's pid and ends the worker at once when the
parent is gone (Linux and macOS re-parent an orphan, so ``os.getppid()`` changes). The resource
tracker then sees its last client go and exits by itself.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

PARENT_POLL_S = 0.5  # how often a worker checks that its parent is alive, seconds
ORPHAN_EXIT_STATUS = 70  # os.EX_SOFTWARE: the worker ended because its parent died


def exit_with_parent(parent_pid: int) -> None:
    """In a worker: end this process within `PARENT_POLL_S` seconds of `parent_pid` dying."""
    threading.Thread(
        target=_watch, args=(parent_pid,), name="exit-with-parent", daemon=True
    ).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(ORPHAN_EXIT_STATUS)  # no cleanup: the parent that would collect results is gone


def process_pool(workers: int, context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A process pool of `workers` whose workers exit when this process dies."""
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    )
