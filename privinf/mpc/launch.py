"""Launching the parties of a two-party run as OS processes (``privinf party``) and collecting
their failures into one message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from privinf.errors import RuntimeFault


class MPCRunError(RuntimeFault):
    """A party process failed; the message carries each party's own error."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def party_command(rank: int, peer: str, cards, out_dir, *, input_path=None, weights_path=None, provider="tfp",
                  timeout_s=60.0, protocol_timeout_s=600.0, threads=1, repeat=1) -> list[str]:
    cmd = [sys.executable, "-m", "privinf.cli", "party", "--rank", str(rank), "--peer", peer, "--out", str(out_dir),
           "--provider", provider, "--timeout", str(timeout_s), "--protocol-timeout", str(protocol_timeout_s),
           "--threads", str(threads), "--repeat", str(repeat)]
    for c in cards:
        cmd += ["--card", c]
    if input_path:
        cmd += ["--input", str(input_path)]
    if weights_path:
        cmd += ["--weights", str(weights_path)]
    return cmd


def launch(commands: list[list[str]], deadline_s: float, workdir: Path) -> None:
    """Start every party, wait for all; on a failure give the rest 10 s, then stop them and raise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs, logs = [], []
    for i, cmd in enumerate(commands):
        log = open(workdir / f"rank{i}.log", "w+")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    end = time.monotonic() + deadline_s
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = time.monotonic()
            if time.monotonic() > end or (failed_at is not None and time.monotonic() > failed_at + 10):
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = []
        for i, code in enumerate(codes):
            text = (workdir / f"rank{i}.log").read_text().strip().splitlines()
            msg = next((line for line in reversed(text) if line.startswith("privinf party:")), None)
            msg = msg or (text[-1] if text else "(no output)")
            tails.append(f"rank {i} exit {code}: {msg}")
        raise MPCRunError("two-party run failed: " + "; ".join(tails))
