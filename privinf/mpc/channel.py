"""CrypTen's two-party openings over one plain TCP socket instead of gloo.

A round of the protocol is one opening: each party sends its share and adds (or xors) the peer's
(``all_reduce``), or one party sends and the other receives (``reduce``, ``broadcast``). Through
torch.distributed's gloo such a call hands the data to gloo's own I/O thread and waits on a
condition variable, and for two parties its all-reduce takes two message exchanges: on this
2-core machine, shared by both parties and a background job, a CrypTen all-reduce of one word took
0.27 ms through gloo and 0.085 ms through the socket (1000 words: 0.53 and 0.086 ms;
``bench/mpc_channel.py``), and gloo's threads took 20-40% of each party's CPU during generation.
The socket channel (``socket_communicator``) keeps CrypTen's ``DistributedCommunicator`` (rendezvous,
gloo for everything else: object exchange, gather, barrier, shutdown) and routes the three calls
above through a TCP socket between the two parties: each party sends while it receives
(non-blocking, so large openings cannot deadlock on full buffers), and a batched call's tensors
travel as one message.

Nothing else changes: the same bytes go to the same peer (as with gloo, unencrypted TCP on the
parties' link), and CrypTen's own ``_logging`` wrapper counts bytes and rounds for each call, as
it does for gloo's. Two parties only (the TFP dealer; the TTP provider's third process keeps gloo).
"""

from __future__ import annotations

import functools
import select
import socket

import torch

from privinf.mpc.shim import import_crypten

BUFFER_BYTES = 4 << 20  # socket send/receive buffers: a 4 MB opening in one go
SUM, BXOR = "sum", "bxor"


def _view(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(t.numpy()).cast("B") if t.numel() else memoryview(b"")


class Link:
    """One connected TCP socket; :meth:`exchange` sends and receives at the same time."""

    def __init__(self, sock: socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        sock.setblocking(False)
        self.sock = sock

    def exchange(self, out: memoryview, inp: memoryview) -> None:
        """Send all of ``out`` while receiving exactly len(inp) bytes into ``inp``; a broken
        connection raises RuntimeError, as torch.distributed's calls do."""
        try:
            self._exchange(out, inp)
        except OSError as exc:
            raise RuntimeError(f"the peer closed the connection ({exc})") from None

    def _exchange(self, out: memoryview, inp: memoryview) -> None:
        sock, sent, got = self.sock, 0, 0
        n_out, n_in = len(out), len(inp)
        while sent < n_out or got < n_in:
            moved = False
            if sent < n_out:
                try:
                    sent += sock.send(out[sent:])
                    moved = True
                except BlockingIOError:
                    pass
            if got < n_in:
                try:
                    k = sock.recv_into(inp[got:])
                except BlockingIOError:
                    k = -1
                if k == 0:
                    raise RuntimeError("the peer closed the connection")
                if k > 0:
                    got += k
                    moved = True
            if not moved:
                select.select([sock] if got < n_in else [], [sock] if sent < n_out else [], [])

    def close(self) -> None:
        self.sock.close()


def _flat(tensors: list[torch.Tensor], fresh: bool = False) -> torch.Tensor:
    """The tensors' elements in one contiguous 1-d tensor (a new one when ``fresh``)."""
    if len(tensors) > 1:
        return torch.cat([t.reshape(-1) for t in tensors])
    flat = tensors[0].reshape(-1)
    return flat.clone() if fresh else flat.contiguous()


def _split(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in like]), like)]


def _op_name(op) -> str | None:
    from torch.distributed import ReduceOp

    return {ReduceOp.SUM: SUM, ReduceOp.BXOR: BXOR}.get(op)


def _combine(mine: torch.Tensor, theirs: torch.Tensor, op: str) -> torch.Tensor:
    return mine.add_(theirs) if op == SUM else mine.bitwise_xor_(theirs)


def socket_communicator(base):
    """CrypTen's communicator ``base`` (its state, counters included) with the three calls on a
    socket; the caller sets ``link``."""
    comm = _socket_class(type(base)).__new__(_socket_class(type(base)))
    comm.__dict__.update(base.__dict__)
    return comm


@functools.lru_cache(maxsize=None)
def _socket_class(distributed: type) -> type:
    """A subclass of CrypTen's ``DistributedCommunicator`` (made once, when crypten is imported)."""
    from crypten.communicator.communicator import _logging
    from torch.distributed import ReduceOp

    class SocketCommunicator(distributed):
        """CrypTen's communicator with all_reduce, reduce and broadcast of the two parties on ``link``."""

        link: Link

        def get_rank(self):  # fixed for the connection; gloo's lookup costs microseconds per call
            return self.rank

        def get_world_size(self):
            return self.world_size

        def _same_dtype(self, tensors) -> bool:
            return all(t.dtype == tensors[0].dtype for t in tensors)

        @_logging
        def all_reduce(self, input, op=ReduceOp.SUM, batched=False):
            name, tensors = _op_name(op), (input if batched else [input])
            if name is None or not tensors or not self._same_dtype(tensors):
                return super().all_reduce.__wrapped__(self, input, op=op, batched=batched)
            mine = _flat(tensors, fresh=True)
            theirs = torch.empty_like(mine)
            self.link.exchange(_view(mine), _view(theirs))
            out = _split(_combine(mine, theirs, name), tensors)
            return out if batched else out[0]

        @_logging
        def reduce(self, input, dst, op=ReduceOp.SUM, batched=False):
            name, tensors = _op_name(op), (input if batched else [input])
            if name is None or not tensors or not self._same_dtype(tensors):
                return super().reduce.__wrapped__(self, input, dst, op=op, batched=batched)
            if self.rank != dst:
                self.link.exchange(_view(_flat(tensors)), memoryview(b""))
                return None
            mine = _flat(tensors, fresh=True)
            theirs = torch.empty_like(mine)
            self.link.exchange(memoryview(b""), _view(theirs))
            out = _split(_combine(mine, theirs, name), tensors)
            return out if batched else out[0]

        @_logging
        def broadcast(self, input, src, group=None, batched=False):
            tensors = input if batched else [input]
            if (group is not None and group is not self.main_group) or not tensors or not self._same_dtype(tensors):
                return super().broadcast.__wrapped__(self, input, src, group=group, batched=batched)
            if self.rank == src:
                self.link.exchange(_view(_flat(tensors)), memoryview(b""))
                return input
            got = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype)
            self.link.exchange(memoryview(b""), _view(got))
            for t, part in zip(tensors, _split(got, tensors)):
                t.copy_(part)
            return input

    return SocketCommunicator


def connect(host: str, timeout_s: float) -> None:
    """After ``crypten.init()`` of two parties: open the socket and make it CrypTen's communicator.

    Party 0 listens on an ephemeral port of ``host`` (its address in ``--peer``) and sends the port
    over gloo; party 1 connects. Idempotent per connection; undone by :func:`close`.
    """
    import torch.distributed as dist

    crypten = import_crypten()
    Distributed = crypten.communicator.DistributedCommunicator
    base = crypten.communicator.get()
    if hasattr(base, "link"):
        return
    if base.get_world_size() != 2:
        raise ValueError("the socket channel joins exactly two parties")
    rank = base.get_rank()
    listener = None
    port = torch.zeros(1, dtype=torch.long)
    if rank == 0:
        listener = socket.create_server((host, 0))
        listener.settimeout(timeout_s)
        port[0] = listener.getsockname()[1]
    dist.broadcast(port, 0, group=base.main_group)  # setup: not counted as protocol traffic
    try:
        if rank == 0:
            sock, _ = listener.accept()
        else:
            sock = socket.create_connection((host, int(port[0])), timeout=timeout_s)
    finally:
        if listener is not None:
            listener.close()
    comm = socket_communicator(base)
    comm.link, comm.base = Link(sock), base
    Distributed.instance = comm


def close() -> None:
    """Close the socket and give CrypTen back its gloo communicator (before ``crypten.uninit()``)."""
    crypten = import_crypten()
    Distributed = crypten.communicator.DistributedCommunicator
    comm = Distributed.instance
    if comm is None or not hasattr(comm, "link"):
        return
    comm.link.close()
    base = comm.base  # CrypTen's own, with the counters carried on
    base.__dict__.update({k: v for k, v in comm.__dict__.items() if k not in ("link", "base")})
    Distributed.instance = base

