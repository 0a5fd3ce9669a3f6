"""Bytes between the CKKS client and server: length-prefixed frames, in one process or over a
socket between two. Every message crosses as bytes, so the byte counts a run reports are real.
"""

from __future__ import annotations

import json
import socket
import struct


def pack_frames(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack("<Q", len(f)) + f for f in frames)


def unpack_frames(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<Q", data, i)
        out.append(data[i + 8:i + 8 + n])
        i += 8 + n
    return out


def send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 22))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> bytes:
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
    return _recv_exact(sock, n)


class SocketLink:
    """The client's end: one request, one reply, each a list of frames."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def request(self, frames: list[bytes]) -> list[bytes]:
        send(self.sock, pack_frames(frames))
        reply = unpack_frames(recv(self.sock))
        info = json.loads(reply[0])
        if "error" in info:
            raise RuntimeError(f"tenseal server process failed: {info['error']}")
        return reply
