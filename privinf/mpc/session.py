"""Run private generation as two OS processes on loopback and collect what party 0 learned.

:func:`generate_2pc` writes the client's token ids, starts both parties (``privinf.mpc.genparty``),
reports progress from party 0's ``progress`` file, and returns a :class:`GenerationResult`. A failed
party raises :class:`~privinf.backends.crypten_mpc.MPCRunError` with one line per rank.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class GenerationResult:
    tokens: list[int]  # the new tokens, as party 0 chose them (greedy on the revealed logits)
    offline: dict  # {"wall_s", "bytes", "rounds"} of the offline phase (max / sum-halved over parties)
    steps: list[dict]  # per forward: prefill first, then one per new token
    prompt_tokens: int
    fraction_bits: int
    logits: torch.Tensor | None = None  # (steps, V): what party 0 learned, the last position of each forward
    check: dict[str, torch.Tensor] = field(default_factory=dict)  # with check=True (see genparty)
    phases: dict = field(default_factory=dict)
    block: dict = field(default_factory=dict)  # with block > 0: layer 0's MLP block today vs split (genparty)


def party_commands(peer: str, card: str, model: str, ids_path: Path, work: Path, max_new_tokens: int, timeout_s: float,
                   protocol_timeout_s: float, threads: int, check: bool, weights: str | None = None,
                   block: int = 0, sites: bool = False) -> list[list[str]]:
    common = ["--peer", peer, "--card", card, "--max-new-tokens", str(max_new_tokens), "--timeout", str(timeout_s),
              "--block", str(block), "--protocol-timeout", str(protocol_timeout_s), "--threads", str(threads)]
    common += (["--check"] if check else []) + (["--sites"] if sites else [])
    base = [sys.executable, "-m", "privinf.mpc.genparty"]
    cpus = party_cpus(threads)
    pin = [["--cpu", str(c)] for c in cpus] if cpus else [[], []]
    return [base + ["--rank", "0", "--input", str(ids_path), "--out", str(work / "p0")] + common + pin[0],
            base + ["--rank", "1", "--model", str(model), "--out", str(work / "p1")] + common + pin[1]
            + (["--weights", str(weights)] if weights else [])]


def party_cpus(threads: int) -> list[int] | None:
    """One CPU for each party when the two single-threaded parties fill a host of exactly two CPUs.

    A round is a few hundred microseconds of work on each side and one exchange; left to the
    scheduler, the woken party often lands on the core the other party is running on (and other
    jobs on the free one). Pinned, the 2-layer bench (``bench/mpc_rounds.py``) ran 0.14-0.20 s per
    token against 0.30-0.34 s unpinned on a 2-core machine with a background job. With more CPUs
    the scheduler has room (and concurrent sessions must not pile onto the same two)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cpus if threads == 1 and len(cpus) == 2 else None


def _merge(a: dict, b: dict) -> dict:
    """Both parties' counters -> wall = max, bytes = sent by both (CrypTen counts sent + received), rounds = max."""
    out = {"wall_s": max(a["wall_s"], b["wall_s"]), "bytes": (a["bytes"] + b["bytes"]) // 2,
           "rounds": max(a["rounds"], b["rounds"]), "comm_s": max(a.get("comm_s", 0.0), b.get("comm_s", 0.0))}
    if "phases" in a:  # party 0's per-phase view (Meter)
        out["phases"] = a["phases"]
    return out


def score_2pc(model: str, sequences: list[list[int]], card: str, **kw) -> tuple[list[torch.Tensor], GenerationResult]:
    """Teacher-forced: the logits (len, V) of every position of each sequence (one connection, one offline).

    With ``sites=True`` the result's ``check`` also holds ``seq{i}.L{layer}.{up,down}``: both MLP sites
    of every layer, revealed to party 0 (evaluation only)."""
    res = generate_2pc(model, sequences, card, 1, **kw)
    return [res.check[f"seq{i}"] for i in range(len(sequences))], res


def generate_2pc(model: str, ids: list[int] | list[list[int]], card: str, max_new_tokens: int, *, port: int | None = None,
                 timeout_s: float = 60.0, protocol_timeout_s: float = 1800.0, threads: int = 1, check: bool = False,
                 progress=None, workdir: str | Path | None = None, weights: str | None = None,
                 block: int = 0, sites: bool = False) -> GenerationResult:
    """Generate ``max_new_tokens`` tokens after ``ids`` with ``model`` under ``card`` as a real 2PC.

    ``progress(step, of, record)`` is called from this thread as party 0 finishes each forward.
    """
    from privinf.backends.crypten_mpc import free_port, launch

    with tempfile.TemporaryDirectory(prefix="privinf-gen-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ids_path = work / "ids.json"
        score = bool(ids) and isinstance(ids[0], list)
        ids_path.write_text(json.dumps({"sequences": [[int(i) for i in s] for s in ids]} if score
                                       else {"ids": [int(i) for i in ids]}))
        peer = f"127.0.0.1:{port or free_port()}"
        cmds = party_commands(peer, card, model, ids_path, work, max_new_tokens, timeout_s, protocol_timeout_s,
                              threads, check, weights, block, sites)
        if os.environ.get("PRIVINF_FAULT_SKIP_RANK") == "1":  # tests: the server never starts (missing peer)
            cmds = cmds[:1]
        failure: list[BaseException] = []

        def body():
            try:
                launch(cmds, timeout_s + protocol_timeout_s + 60, work)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        runner = threading.Thread(target=body, daemon=True)
        runner.start()
        seen = 0
        prog = work / "p0" / "progress"
        while runner.is_alive():
            runner.join(0.2)
            if progress is not None and prog.exists():
                try:
                    rec = json.loads(prog.read_text())
                except ValueError:  # being written
                    continue
                while rec["step"] > seen:  # several steps may finish between two polls
                    seen += 1
                    progress(seen, rec["of"], rec)
        if failure:
            raise failure[0]
        r0, r1 = (json.loads((work / f"p{r}" / f"result-rank{r}.json").read_text()) for r in (0, 1))
        from safetensors.torch import load_file
        saved = load_file(str(work / "p0" / "logits.safetensors"))
        logits = saved.get("steps")
        check_t = {k: v for k, v in saved.items() if k != "steps"}
        if (work / "p0" / "check.safetensors").exists():
            check_t.update(load_file(str(work / "p0" / "check.safetensors")))
        return GenerationResult(tokens=r0["tokens"], logits=logits, offline=_merge(r0["offline"], r1["offline"]),
                                steps=[_merge(a, b) for a, b in zip(r0["steps"], r1["steps"])],
                                prompt_tokens=r0["prompt_tokens"], fraction_bits=r0["fraction_bits"], check=check_t,
                                phases=r0["phases"],
                                block={k: _merge(v, r1["block"][k]) for k, v in r0.get("block", {}).items()})
