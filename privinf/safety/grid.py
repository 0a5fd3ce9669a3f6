"""Safety grids on Ray: every configuration of a grid is a task on a pool of actors.

``--workers N`` starts a local Ray with N actors; ``--ray-address ADDR`` joins a running cluster
(``ray start --head`` on one host, ``ray start --address HOST:PORT`` on the others). Each actor
(:class:`Worker`) loads the model once for the weights its tasks name (one weights at a time,
merged LoRA included), runs with ``--threads`` torch threads (default 1: on a shared 2-core CPU two
processes with one thread each beat one process with two threads) and, where the cluster has GPUs,
holds one. Tasks are the same objects the serial path runs (``runner.EvalTask``,
``attacks.runner.AttackTask``): ``task.run(harness)``, so serial and pooled grids make the same
generations.

Results under faults: workers append their generations to the shared results store as they go
(a file lock around every append, see ``store.py``) and return the rows they stored, which the
driver merges into its own store (a no-op on one machine; on a cluster without a shared file
system it is what brings the rows home). A worker that dies is replaced and its configuration
rerun (it resumes from the stored rows); a killed driver loses at most the batches in flight, and
rerunning the command resumes. The driver shows one bar (prompts stored of the total, and
configurations done) and one line per finished configuration.

Ray is imported only here, and only when a pool starts.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections import Counter, deque
from typing import Callable

from privinf.errors import PrivinfError, RuntimeFault, UsageError

POLL_S = 1.0  # how often the driver re-reads the store for the progress bar
RETRIES = 2  # reruns of one configuration after its worker died
ENV_PREFIXES = ("PRIVINF_", "HF_", "TRANSFORMERS_")  # passed to workers on a cluster


class Recorder:
    """A results store that also keeps the rows it stored (returned to the driver with each result)."""

    def __init__(self, store):
        self.store, self.rows = store, []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def __contains__(self, key) -> bool:
        return key in self.store

    def __len__(self) -> int:
        return len(self.store)

    def append(self, rows: list[dict]) -> list[dict]:
        out = self.store.append(rows)
        self.rows += out
        return out

    def take(self) -> list[dict]:
        rows, self.rows = self.rows, []
        return rows


class Worker:
    """One Ray actor: a harness per weights (the last one used is kept), ``threads`` torch threads.

    ``factory(weights)`` builds the harness (``load_harness`` with the command's options)."""

    def __init__(self, factory: Callable, threads: int, cwd: str | None = None):
        import torch

        if cwd and os.path.isdir(cwd):  # relative paths (store, adapters, prompt files) as on the driver
            os.chdir(cwd)
        torch.set_num_threads(threads)
        self.factory, self.h, self.weights = factory, None, None

    def pid(self) -> int:
        return os.getpid()

    def run(self, task) -> tuple[dict, list[dict], float]:
        """(``task.run(harness)``, the rows this task stored, seconds)."""
        t0 = time.perf_counter()
        if self.h is None or task.weights != self.weights:
            self.h = None
            gc.collect()
            h = self.factory(task.weights)
            import ray

            if ray.get_gpu_ids():
                h.model.to("cuda")
            h.store = Recorder(h.store)
            self.h, self.weights = h, task.weights
        result = task.run(self.h)
        return result, self.h.store.take(), time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ starting Ray


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` (Ray finds it)."""
    if address == "auto":
        return None
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: give HOST:PORT of the Ray head (ray start --head prints it; "
                         "default port 6379), ray://HOST:10001, or auto")
    return host, int(port)


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address nothing answers on (``ray.init`` would wait for minutes): a TCP connect to
    HOST:PORT (``ray://HOST:PORT`` too) within ``timeout_s``. ``auto`` is left to Ray."""
    if (hp := parse_address(address)) is None:
        return
    host, port = hp
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: nothing answers there within {timeout_s:g} s ({exc}); "
                         "start the head with `ray start --head` or check the address") from None


def start_ray(address: str | None, workers: int | None, threads: int) -> tuple[int, float, bool]:
    """Start (or join) Ray; returns (actors to start, GPUs per actor, whether this call started
    Ray). Without ``address`` a local Ray gets exactly ``workers * threads`` CPUs; a Ray already
    initialised in this process (a test's) is used as it is."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to the network
    try:
        import ray
    except ImportError:
        raise UsageError("--workers/--ray-address need the ray package: pip install -c constraints.txt ray") from None
    import logging

    if address:
        check_address(address)
    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=workers * threads, object_store_memory=200 * 2**20, **kw)
        except ConnectionError as exc:
            raise UsageError(f"--ray-address {address}: {exc}; a cluster with token authentication (Ray's "
                             "default since 2.59) needs RAY_AUTH_MODE=token and its token here") from None
    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 0)), float(res.get("GPU", 0))
    n = workers or (int(gpus) if gpus >= 1 else max(1, cpus // threads))
    if n * threads > cpus:
        raise UsageError(f"--workers {n} x --threads {threads} needs {n * threads} CPUs; the Ray cluster"
                         f"{' at ' + address if address else ''} has {cpus}")
    return n, (min(1.0, gpus / n) if gpus else 0.0), started


# ------------------------------------------------------------------------------------------ the pool


class Pool:
    """``workers`` Ray actors that run grid tasks; ``run`` hands each idle actor the next task."""

    def __init__(self, factory: Callable, workers: int | None = None, threads: int = 1, address: str | None = None):
        import ray

        self.n, gpu, self._started = start_ray(address, workers, threads)
        opts = dict(num_cpus=threads, num_gpus=gpu, max_restarts=0)
        if address:
            opts["runtime_env"] = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}}
        self._cls = ray.remote(Worker).options(**opts)
        self._args = (factory, threads, os.getcwd())
        self.actors = [self._cls.remote(*self._args) for _ in range(self.n)]
        self.restarts = 0
        self.address, self.threads = address, threads

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()

    def run(self, h, tasks: list, on_result: Callable | None = None) -> dict:
        """{task.key(): result} for ``tasks`` (repeated keys run once). ``h``: the driver's harness
        (its store receives the workers' rows; its prompt sets size the progress bar).
        ``on_result(pool, actor_index, task, result)`` is called after each finished task."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError
        from tqdm.auto import tqdm

        queue = deque({t.key(): t for t in tasks}.values())
        keys = {t.key(): t.prompt_keys(h) for t in queue}
        counted, tries, results, running = Counter(), Counter(), {}, {}
        free, n_tasks = list(range(len(self.actors))), len(queue)
        bar = tqdm(total=sum(map(len, keys.values())), unit="prompt", disable=not h.progress,
                   desc=f"grid: {n_tasks} configurations on {len(self.actors)} workers")
        bar.set_postfix_str(f"configurations 0/{n_tasks}")
        while queue or running:
            while free and queue:
                i, t = free.pop(0), queue.popleft()
                running[self.actors[i].run.remote(t)] = (i, t, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                i, t, _t0 = running.pop(ref)
                try:
                    res, rows, secs = ray.get(ref)
                except RayActorError as exc:  # the worker died: a fresh one reruns the configuration
                    tries[t.key()] += 1
                    if tries[t.key()] > RETRIES:
                        bar.close()
                        raise RuntimeFault(f"{t.label()}: its worker died {tries[t.key()]} times "
                                           f"({type(exc).__name__}); see the Ray logs (out of memory?)") from None
                    self.actors[i] = self._cls.remote(*self._args)
                    self.restarts += 1
                    bar.write(f"worker {i} died during {t.label()} ({type(exc).__name__}): "
                              "started a new one, the configuration resumes from the store")
                    queue.appendleft(t)
                    free.append(i)
                    continue
                except RayTaskError as exc:
                    bar.close()
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, PrivinfError):
                        raise cause from None
                    raise exc.as_instanceof_cause() from None
                free.append(i)
                if rows:
                    h.store.append(rows)  # the driver merges (nothing new where the store is shared)
                results[t.key()] = res
                bar.update(len(keys[t.key()]) - counted[t.key()])
                counted[t.key()] = len(keys[t.key()])
                bar.set_postfix_str(f"configurations {len(results)}/{n_tasks}")
                bar.write(f"done {t.label()}: {t.summary(res)} ({secs:.0f} s, worker {i})")
                if on_result is not None:
                    on_result(self, i, t, res)
            if running and not bar.disable:  # prompts the workers stored meanwhile
                h.store.refresh()
                for _i, t, _t0 in running.values():
                    n = sum(k in h.store for k in keys[t.key()])
                    if n > counted[t.key()]:
                        bar.update(n - counted[t.key()])
                        counted[t.key()] = n
        bar.close()
        return results
