"""Batch work on a Dask distributed cluster: ``convert`` and ``dataset build`` beyond one machine.

A command hands a list of independent tasks (a batch of files each) to :func:`ordered_map`; it
runs them on the cluster and yields their results **in submission order**, so the command
records them exactly as a single-process run would (same files, same summary). Progress is
reported as tasks finish. A worker keeps what is costly to load (the model) between tasks
(:func:`worker_cached`).

- ``--scheduler tcp://HOST:8786``: an existing cluster (``dask scheduler`` +
  ``dask worker``, dask-jobqueue on a batch system, dask-kubernetes; see docs/scaling.md).
  Workers must see the input and output folders at the same paths (a shared file system).
- ``--scheduler local`` or ``--workers N`` alone: a ``LocalCluster`` of N worker processes
  (one thread each) on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

LOCAL = "local"
_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()


def add_cluster_options(parser: Any, workers_help: str | None = None) -> None:
    """Add ``--scheduler`` (and, unless the command has its own, ``--workers``) to a parser."""
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="run on a Dask distributed cluster (tcp://HOST:8786), or 'local' for a "
        "LocalCluster of --workers processes",
    )  # fmt: skip
    if workers_help is not None:
        parser.add_argument("--workers", type=int, default=None, help=workers_help)


@contextlib.contextmanager
def cluster_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """Yield a ``dask.distributed.Client`` for ``scheduler`` or a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        A scheduler address; ``"local"`` or ``None`` starts a ``LocalCluster``.
    workers : int, optional
        Worker processes of the LocalCluster (default: the CPU count).
    """
    from distributed import Client, LocalCluster

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Scheduler and worker start-up lines are not this command's output; a worker slow to
        # exit (TensorFlow) after its last task is killed by its nanny, harmlessly.
        for name in ("distributed", "distributed.http.proxy", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    if scheduler and scheduler != LOCAL:
        with Client(scheduler) as client:
            yield client
        return
    count = max(1, workers or os.cpu_count() or 1)
    with (
        LocalCluster(
            n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def ordered_map(
    function: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Run ``function(*task)`` for every task on a cluster; yield the results in task order.

    Parameters
    ----------
    function : callable
        A module-level function (workers import it by name).
    tasks : sequence of tuple
        The arguments of each call.
    scheduler, workers
        See :func:`cluster_client`.
    on_done : callable, optional
        Called with the index of each task as it finishes (in completion order), e.g. to move
        a progress bar.

    Raises
    ------
    Exception
        The first task's error, as raised on the worker.
    """
    from distributed import as_completed

    with cluster_client(scheduler, workers) as client:
        futures = [client.submit(function, *task, pure=False) for task in tasks]
        index = {future.key: i for i, future in enumerate(futures)}
        results: dict[int, Any] = {}
        following = 0
        for future in as_completed(futures):
            i = index[future.key]
            results[i] = future.result()
            if on_done is not None:
                on_done(i)
            while following in results:
                yield results.pop(following)
                following += 1


def worker_cached(key: Any, factory: Callable[[], Any]) -> Any:
    """Return the value cached under ``key`` in this worker process, made by ``factory`` once."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Split ``items`` into consecutive chunks of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
