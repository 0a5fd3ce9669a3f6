"""``privinf demo --backend tenseal``: client and server as two OS processes over a local socket.

The client process (this one) holds the hidden states and the CKKS secret key; the server
process loads the block's weights from a safetensors file and receives only the client's public
bundle (no secret key) and ciphertexts. Each message is length-prefixed bytes on a TCP loopback
socket; the table's MB columns are the bytes that crossed it.
"""

from __future__ import annotations

import json
import socket
import struct
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_CARDS = ("exact", "nexus-core")  # full "nexus" needs N=32768: ~7 min and 4.5 GB for 64 tokens


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 22))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> bytes:
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
    return _recv_exact(sock, n)


class SocketLink:
    """The client's end: one request, one reply, each a list of frames."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def request(self, frames: list[bytes]) -> list[bytes]:
        from privinf.backends.tenseal_ckks import pack_frames, unpack_frames

        _send(self.sock, pack_frames(frames))
        reply = unpack_frames(_recv(self.sock))
        info = json.loads(reply[0])
        if "error" in info:
            raise RuntimeError(f"tenseal server process failed: {info['error']}")
        return reply


def serve(block_path: str, port_pipe) -> None:
    """The server process: load the weights, accept one client, answer until it says bye."""
    from privinf.backends.tenseal_ckks import ServerSession, pack_frames, unpack_frames
    from privinf.blocks import MLPBlock

    torch.set_num_threads(1)
    session = ServerSession(MLPBlock.load(block_path))
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port_pipe.send(srv.getsockname()[1])
        conn, _ = srv.accept()
        with conn:
            while True:
                frames = unpack_frames(_recv(conn))
                if json.loads(frames[0])["op"] == "bye":
                    return
                try:
                    reply = session.handle(frames)
                except Exception as exc:  # report to the client instead of dying silently
                    reply = [json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()]
                _send(conn, pack_frames(reply))


def run_tenseal_demo(model_name: str, layer: int, card_names: list[str], prompt: str, tokens: int,
                     timeout_s: float = 60.0) -> str:
    """The block under each card with CKKS between two processes; a table of error and cost."""
    import multiprocessing as mp

    from privinf.approx.ops import CardOps
    from privinf.backends.base import get_backend
    from privinf.backends.tenseal_ckks import pack_frames, run_client
    from privinf.cards import protocol_card
    from privinf.emulator.measure import block_and_input
    from privinf.models import load_model
    from privinf.report import table

    block, x = block_and_input(*load_model(model_name), prompt, layer, tokens)  # x: (T, C)
    cards = [protocol_card(n) for n in (card_names or DEFAULT_CARDS)]
    backend = get_backend("tenseal")
    for card in cards:
        backend.check(card)
    exact = block(x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "block.safetensors")
        block.save(path)  # the server's weights
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(path, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(timeout_s):
                raise TimeoutError(f"the tenseal server process did not open a port within {timeout_s:.0f} s")
            port = parent.recv()
            with socket.create_connection(("127.0.0.1", port), timeout=None) as sock:
                link = SocketLink(sock)
                for card in cards:
                    ops = CardOps(card, block.activation)
                    emul = block.forward(x, None if ops.exact else ops)
                    start = time.perf_counter()
                    out, tr, params, _ = run_client(block, x, card, link, ops)
                    wall = time.perf_counter() - start
                    rows.append([card.name, float((out.down - exact.down).abs().max()),
                                 float((out.out - exact.out).abs().max()), float((out.out - exact.out).abs().mean()),
                                 float((out.out - emul.out).abs().max()), float((out.out - emul.out).abs().mean()),
                                 wall, tr.to_server / 1e6, tr.to_client / 1e6, params.depth,
                                 params.poly_modulus_degree])
                _send(sock, pack_frames([json.dumps({"op": "bye"}).encode()]))
        finally:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    head = (f"model {model_name}, layer {layer} MLP block (hidden {block.hidden_size}, MLP {block.intermediate_size}, "
            f"{block.activation}), {x.shape[0]} tokens; TenSEAL CKKS, client and server in two processes "
            f"(loopback socket); errors vs the exact block and vs the card's plaintext emulation\n")
    return head + table(["card", "max err down", "max err out", "mean err out", "max err vs emul",
                         "mean err vs emul", "wall s", "MB client->server", "MB server->client", "depth", "N"], rows)
