"""What one opening costs: CrypTen's all_reduce through gloo against privinf's socket channel.

Two processes on loopback (one CPU each where the host has exactly two, as ``privinf generate``
runs them), one crypten.init(); each size is opened ``--reps`` times through gloo, then through
:mod:`privinf.mpc.channel`. Prints the median milliseconds per opening (party 0's clock).

    .venv/bin/python bench/mpc_channel.py --reps 500
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

import torch

SIZES = (1, 1000, 100_000)  # words: a norm's scalar, a decoding step's activations, a prefill's


def _time(comm, words: int, reps: int) -> float:
    x = torch.randint(-2 ** 62, 2 ** 62, (words,))
    for _ in range(20):
        comm.all_reduce(x)
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        comm.all_reduce(x)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3


def _party(rank: int, rendezvous: str, reps: int, cpus, queue) -> None:
    if cpus:
        os.sched_setaffinity(0, {cpus[rank]})
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)
    from privinf.mpc import channel
    from privinf.mpc.shim import import_crypten

    crypten = import_crypten()
    crypten.init()
    gloo = {n: _time(crypten.communicator.get(), n, reps) for n in SIZES}
    channel.connect("127.0.0.1", 30)
    sock = {n: _time(crypten.communicator.get(), n, reps) for n in SIZES}
    channel.close()
    crypten.uninit()
    if rank == 0:
        queue.put((gloo, sock))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=500)
    a = p.parse_args()
    from privinf.mpc.session import party_cpus

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    rendezvous = "file://" + tempfile.mktemp(prefix="privinf-rdv-")
    procs = [ctx.Process(target=_party, args=(r, rendezvous, a.reps, party_cpus(1), queue)) for r in (0, 1)]
    for proc in procs:
        proc.start()
    gloo, sock = queue.get(timeout=600)
    for proc in procs:
        proc.join()
    from privinf.report import table

    print(f"load average {os.getloadavg()[0]:.2f}; median ms per all_reduce over {a.reps} openings")
    print(table(["words", "gloo ms", "socket ms", "ratio"], [[n, gloo[n], sock[n], gloo[n] / sock[n]] for n in SIZES]))


if __name__ == "__main__":
    main()
