"""Where design points run: serially, in local worker processes, or on a Dask cluster.

Every executor takes an iterator of small task dicts (a point's resolved config as plain JSON
data, never simulator objects) and yields ``(task, outcome)`` as points finish, in any order.
``outcome`` is what the worker function returned, or a :class:`WorkerDied` when the process
running the point died. At most ``window`` tasks are in flight, so the parent holds a bounded
number of tasks and results whatever the sweep's size. Workers are long-lived (a process pool
with no task limit, Dask workers), so the simulator's caches stay warm across points.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

__all__ = ["WorkerDied", "serial", "processes", "dask", "EXECUTORS", "default_workers"]


class WorkerDied:
    def __init__(self, why: str):
        self.why = why

    def __repr__(self):
        return f"WorkerDied({self.why!r})"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def serial(fn: Callable, tasks: Iterable[dict], workers: int = 1, **_) -> Iterator[tuple]:
    for t in tasks:
        yield t, fn(t)


def _warm():
    import sim.api  # noqa: F401  (import once per worker, not per point)


def processes(fn: Callable, tasks: Iterable[dict], workers: int | None = None,
              window: int | None = None, **_) -> Iterator[tuple]:
    """A ProcessPoolExecutor whose workers live for the whole sweep. If a worker dies, the
    pool is rebuilt and the points that were in flight are rerun one at a time, so the point
    that kills its worker is found and reported while the others complete."""
    workers = workers or default_workers()
    window = window or 4 * workers
    it = iter(tasks)
    suspects: deque = deque()
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_warm)
    live: dict = {}
    try:
        while True:
            # one suspect alone in flight; otherwise fill the window
            if suspects:
                if not live:
                    t = suspects.popleft()
                    live[pool.submit(fn, t)] = t
            else:
                while len(live) < window:
                    t = next(it, None)
                    if t is None:
                        break
                    live[pool.submit(fn, t)] = t
            if not live:
                return
            done, _ = wait(live, return_when=FIRST_COMPLETED)
            broken = False
            for f in done:
                t = live.pop(f)
                try:
                    yield t, f.result()
                except BrokenProcessPool as e:
                    broken = True
                    if t.get("_suspect"):
                        yield t, WorkerDied(f"the worker process died ({e})")
                    else:
                        suspects.append({**t, "_suspect": True})
            if broken:
                for f, t in live.items():       # every other point of the broken pool
                    suspects.append({**t, "_suspect": True} if not t.get("_suspect") else t)
                live.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, initializer=_warm)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def dask(fn: Callable, tasks: Iterable[dict], workers: int | None = None,
         window: int | None = None, scheduler: str | None = None, processes: bool = True,
         **_) -> Iterator[tuple]:
    """Dask distributed: a scheduler address (a real cluster) or a LocalCluster of
    ``workers`` single-threaded workers. A point whose worker dies repeatedly ends with
    KilledWorker, reported as the point's error."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        from ..config import ConfigError

        raise ConfigError("dask.distributed installed (pip install 'strata-sim[dask]')",
                          key="--executor", got="dask") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
        workers = workers or max(1, sum(client.nthreads().values()))
    else:
        workers = workers or default_workers()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None)
        client = Client(cluster)
    window = window or 4 * workers
    it = iter(tasks)
    try:
        ac = as_completed()
        live = {}
        for t in it:
            f = client.submit(fn, t, key=f"point-{t['hash']}", pure=False)
            live[f.key] = t
            ac.add(f)
            if len(live) >= window:
                break
        for f in ac:
            t = live.pop(f.key)
            try:
                out = f.result()
            except Exception as e:          # KilledWorker and the like
                out = WorkerDied(f"{type(e).__name__}: {e}")
            f.release()
            yield t, out
            t = next(it, None)
            if t is not None:
                f = client.submit(fn, t, key=f"point-{t['hash']}", pure=False)
                live[f.key] = t
                ac.add(f)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


EXECUTORS = {"serial": serial, "process": processes, "dask": dask}
