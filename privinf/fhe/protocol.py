"""The CKKS protocol for one MLP block on TenSEAL, NEXUS-style; the client keeps the key.

Client: normalises its hidden states (RMSNorm in the clear, see below), packs T tokens per
ciphertext (:class:`~privinf.fhe.circuit.Layout`), encrypts, and sends the server
a context serialised *without* the secret key plus two rotation keys. Server: gate/up
projections, the card's polynomial activation times up, the down projection, all on
ciphertexts with its plaintext weights; returns ciphertexts. Client: decrypts, adds the
residual. Every message crosses as bytes, so the CostReport's byte counts are real.

Why the norm runs on the client: in this single-block simulation the client owns the block
input; NEXUS's Newton inverse square root would add ~10 levels (initial guess + 3 iterations)
and push even the reduced circuits past N=16384. A multi-layer deployment would need it (or a
client round trip per layer); the card's ``rsqrt`` method is still applied, in plaintext.

The ``exact`` card runs client-aided: linear layers under CKKS, the exact activation on the
client between two rounds (error = CKKS noise only).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from privinf.approx.ops import CardOps
from privinf.blocks import BlockOutput, MLPBlock
from privinf.cards import ActivationSpec, ProtocolCard
from privinf.fhe.circuit import Evaluator, Layout, activation_times, input_scale
from privinf.fhe.params import CKKSParams, block_depth, choose_params
from privinf.fhe.wire import pack_frames, recv, send, unpack_frames

def _tmp_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _save(obj) -> bytes:
    """SEAL objects serialise to files only (in TenSEAL's sealapi); go through a RAM-backed temp file."""
    fd, path = tempfile.mkstemp(dir=_tmp_dir())
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def _load(obj, context, data: bytes):
    fd, path = tempfile.mkstemp(dir=_tmp_dir())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        obj.load(context, path)
        return obj
    finally:
        os.unlink(path)


def dump(ciphertexts) -> bytes:
    """Serialise a list of SEAL ciphertexts as frames."""
    return pack_frames([_save(c) for c in ciphertexts])


def galois_element(step: int, n: int) -> int:
    """SEAL's Galois element for rotating CKKS slots left by ``step``: 3^step mod 2N."""
    return pow(3, step, 2 * n)


# --------------------------------------------------------------------------------------------
# the two parties


class Client:
    """Holds the secret key. Encrypts packed activations, decrypts results."""

    def __init__(self, params: CKKSParams, layout: Layout):
        import tenseal as ts
        import tenseal.sealapi as seal

        self.params, self.layout, self.scale = params, layout, 2.0 ** params.scale_bits
        self.context = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                                  coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        self.context.global_scale = self.scale
        self.seal_context = self.context.seal_context().data
        secret = self.context.secret_key().data
        self.galois_keys = seal.GaloisKeys()
        elts = [galois_element(s, params.poly_modulus_degree) for s in layout.rotation_steps()]
        if elts:
            seal.KeyGenerator(self.seal_context, secret).create_galois_keys(elts, self.galois_keys)
        self.encoder = seal.CKKSEncoder(self.seal_context)
        self.encryptor = seal.Encryptor(self.seal_context, secret)  # symmetric: seeded, half-size
        self.decryptor = seal.Decryptor(self.seal_context, secret)

    def public_bundle(self) -> bytes:
        """What the server gets: parameters, relinearisation and rotation keys; never the secret key."""
        ctx = self.context.serialize(save_public_key=False, save_secret_key=False,
                                     save_galois_keys=False, save_relin_keys=True)
        meta = json.dumps({"scale": self.scale, "slots": self.layout.slots, "block": self.layout.block,
                           "t_pad": self.layout.t_pad}).encode()
        return pack_frames([meta, ctx, _save(self.galois_keys) if self.layout.rotation_steps() else b""])

    def encrypt(self, x: torch.Tensor) -> bytes:
        """(T, F) -> serialised ciphertexts, one per feature block."""
        import tenseal.sealapi as seal

        frames = []
        for vec in self.layout.pack(x.double()):
            pt = seal.Plaintext()
            self.encoder.encode(vec, self.scale, pt)
            frames.append(_save(self.encryptor.encrypt_symmetric(pt)))
        return pack_frames(frames)

    def decrypt(self, data: bytes, tokens: int, features: int) -> torch.Tensor:
        import tenseal.sealapi as seal

        vecs = []
        for frame in unpack_frames(data):
            ct = _load(seal.Ciphertext(), self.seal_context, frame)
            pt = seal.Plaintext()
            self.decryptor.decrypt(ct, pt)
            vecs.append(self.encoder.decode_double(pt))
        return self.layout.unpack(vecs, tokens, features)


class Server:
    """Built from the client's public bundle only: it can compute on ciphertexts, not decrypt."""

    def __init__(self, bundle: bytes):
        import tenseal as ts
        import tenseal.sealapi as seal

        meta, ctx, galois = unpack_frames(bundle)
        meta = json.loads(meta)
        self.context = ts.context_from(ctx)
        self.layout = Layout(meta["slots"], meta["block"], meta["t_pad"])
        self.seal_context = self.context.seal_context().data
        keys = _load(seal.GaloisKeys(), self.seal_context, galois) if galois else None
        self.ev = Evaluator(self.seal_context, self.context.relin_keys().data, keys, meta["scale"])

    def load(self, data: bytes) -> list:
        """Ciphertexts from the client's serialised frames."""
        import tenseal.sealapi as seal

        return [_load(seal.Ciphertext(), self.seal_context, f) for f in unpack_frames(data)]

    def project_in(self, block: MLPBlock, xs: list, spec: ActivationSpec | None):
        """gate (divided by the activation's input scale r) and up projections; one level."""
        r = input_scale(spec) if spec is not None else 1.0
        babies = self.ev.baby_steps(xs, self.layout)
        if block.gated:
            up = self.ev.matmul(xs, block.w_up, self.layout, block.b_up, babies=babies)
            return self.ev.matmul(xs, block.w_gate / r, self.layout, babies=babies), up
        b_up = None if block.b_up is None else block.b_up / r
        return self.ev.matmul(xs, block.w_up / r, self.layout, b_up, babies=babies), None

    def mlp(self, block: MLPBlock, spec: ActivationSpec, data: bytes) -> tuple[bytes, bytes, int]:
        """The whole block on ciphertexts. Returns (y = W_down h, h, levels consumed)."""
        xs = self.load(data)
        start = self.ev.level(xs[0])
        z, up = self.project_in(block, xs, spec)
        h = [activation_times(self.ev, zi, spec, ui) for zi, ui in zip(z, up or [None] * len(z))]
        y = self.ev.matmul(h, block.w_down, self.layout)
        return dump(y), dump(h), start - self.ev.level(y[0])

    def gate_up(self, block: MLPBlock, data: bytes) -> tuple[bytes, bytes | None]:
        """Round 1 of the client-aided (exact) path: the two projections, sent back."""
        gate, up = self.project_in(block, self.load(data), None)
        return dump(gate), (dump(up) if up else None)

    def down(self, block: MLPBlock, data: bytes) -> bytes:
        """Round 2 of the client-aided path."""
        return dump(self.ev.matmul(self.load(data), block.w_down, self.layout))


# --------------------------------------------------------------------------------------------
# one block, client side


@dataclass
class Transcript:
    """Bytes and seconds per party for one block, as the CostReport reports them."""

    to_server: int = 0
    to_client: int = 0
    measurement: int = 0  # the h ciphertexts sent back only to measure the error site
    client_s: float = 0.0
    server_s: float = 0.0
    rounds: int = 0
    levels: int = 0
    counters: dict | None = None


class ServerSession:
    """The server's message handler: owns the block's weights, sees only the client's public bundle."""

    def __init__(self, block: MLPBlock):
        self.block, self.server = block, None

    def handle(self, frames: list[bytes]) -> list[bytes]:
        from privinf.cards import protocol_card

        header = json.loads(frames[0])
        start = time.perf_counter()
        op, out, info = header["op"], [], {}
        if op == "keys":
            self.server = Server(frames[1])
        elif op == "mlp":
            spec = protocol_card(header["card"]).activation(self.block.activation)
            y, h, info["levels"] = self.server.mlp(self.block, spec, frames[1])
            out = [y, h]
        elif op == "gate_up":
            g, u = self.server.gate_up(self.block, frames[1])
            out = [g, u or b""]
        elif op == "down":
            out = [self.server.down(self.block, frames[1])]
        else:
            raise ValueError(f"unknown request {op!r}")
        info["server_s"] = time.perf_counter() - start
        if self.server is not None:
            info["counters"] = asdict(self.server.ev.counters)
        return [json.dumps(info).encode()] + out


class LocalLink:
    """Client-to-server messages within one process, still as bytes (the byte counts are real)."""

    def __init__(self, session: ServerSession):
        self.session = session

    def request(self, frames: list[bytes]) -> list[bytes]:
        return unpack_frames(pack_frames(self.session.handle(unpack_frames(pack_frames(frames)))))


def plan(block: MLPBlock, card: ProtocolCard, tokens: int, min_degree: int = 8192) -> tuple[CKKSParams, Layout]:
    """CKKS parameters and packing for ``block`` under ``card`` on ``tokens`` tokens."""
    spec = card.activation(block.activation)
    depth = 1 if spec.method == "exact" else block_depth(spec, gated=block.gated)
    params = choose_params(depth, card.ckks_scale_bits or 40, min_degree=min_degree)
    dims = (block.hidden_size, block.intermediate_size)
    return params, Layout.choose(params.slots, tokens, dims)


def _exchange(link, tr: Transcript, header: dict, *payload: bytes) -> list[bytes]:
    frames = [json.dumps(header).encode(), *payload]
    tr.to_server += sum(len(f) for f in frames)
    reply = link.request(frames)
    info = json.loads(reply[0])
    tr.server_s += info["server_s"]
    tr.levels = info.get("levels", tr.levels)
    tr.counters = info.get("counters", tr.counters)
    tr.to_client += len(reply[0])
    return reply[1:]


def run_client(block: MLPBlock, x: torch.Tensor, card: ProtocolCard, link, ops: CardOps | None = None,
               min_degree: int = 8192) -> tuple[BlockOutput, Transcript, CKKSParams, Layout]:
    """The client's side of one block: norm, encrypt, request, decrypt, residual."""
    spec = card.activation(block.activation)
    x = x.float()
    tr = Transcript()
    c0 = time.perf_counter()
    params, layout = plan(block, card, x.shape[0], min_degree)
    client = Client(params, layout)
    ops = ops or CardOps(card, block.activation)
    with torch.no_grad():
        n = block.norm(x, None if ops.exact else ops)  # (T, C) on the client, in the clear
    bundle, enc = client.public_bundle(), client.encrypt(n)
    tr.client_s += time.perf_counter() - c0
    _exchange(link, tr, {"op": "keys"}, bundle)
    T, inter = x.shape[0], block.intermediate_size
    if spec.method == "exact":  # client-aided: activation on the client between two rounds
        g_bytes, u_bytes = _exchange(link, tr, {"op": "gate_up", "card": card.name}, enc)
        tr.to_client += len(g_bytes) + len(u_bytes)
        c0 = time.perf_counter()
        h = ops.act(client.decrypt(g_bytes, T, inter))  # (T, I)
        if u_bytes:
            h = h * client.decrypt(u_bytes, T, inter)
        enc_h = client.encrypt(h)
        tr.client_s += time.perf_counter() - c0
        (y_bytes,) = _exchange(link, tr, {"op": "down", "card": card.name}, enc_h)
        tr.rounds, tr.levels = 2, 1
    else:
        y_bytes, h_bytes = _exchange(link, tr, {"op": "mlp", "card": card.name}, enc)
        tr.measurement, tr.rounds = len(h_bytes), 1
        h = client.decrypt(h_bytes, T, inter)
    tr.to_client += len(y_bytes)
    c0 = time.perf_counter()
    y = client.decrypt(y_bytes, T, block.hidden_size)  # (T, C)
    if block.b_down is not None:
        y = y + block.b_down
    tr.client_s += time.perf_counter() - c0
    return BlockOutput(out=x + y, up=n, down=h), tr, params, layout


def serve(block_path: str, port_pipe) -> None:
    """The server process: load the weights, accept one client, answer until it says bye."""
    torch.set_num_threads(1)
    session = ServerSession(MLPBlock.load(block_path))
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port_pipe.send(srv.getsockname()[1])
        conn, _ = srv.accept()
        with conn:
            while True:
                frames = unpack_frames(recv(conn))
                if json.loads(frames[0])["op"] == "bye":
                    return
                try:
                    reply = session.handle(frames)
                except Exception as exc:  # report to the client instead of dying silently
                    reply = [json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()]
                send(conn, pack_frames(reply))
