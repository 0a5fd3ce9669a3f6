"""The socket channel (privinf.mpc.channel) and the raw-share protocols (privinf.mpc.ring) in two processes.

Each party runs the same collectives and products twice: through CrypTen as it comes (gloo, its own
Beaver products) and through the channel and ring. The results must be equal (openings) or
equal to the plaintext (products, exactly: no truncation is involved), and CrypTen's counters must
read the same bytes and rounds both ways.
"""

import io
import os

import pytest
import torch
from conftest import run_two_parties

BIG = 3_000_000  # words: 24 MB each way, far above the socket buffers (a blocking send would deadlock)


def _tensors(rank: int) -> dict:
    g = torch.Generator().manual_seed(10 + rank)
    ring = lambda *shape: torch.randint(-2 ** 63, 2 ** 63 - 1, shape, generator=g)  # noqa: E731
    return {"small": ring(3, 5), "list": [ring(7), ring(2, 3, 4), ring(1)], "big": ring(BIG), "empty": ring(0)}


def _words(seed: int) -> torch.Tensor:
    return torch.randint(-2 ** 63, 2 ** 63 - 1, (5, 7), generator=torch.Generator().manual_seed(seed))


def _collectives(comm, t: dict, rank: int) -> dict:
    from torch.distributed import ReduceOp

    out = {"sum": comm.all_reduce(t["small"]), "xor": comm.all_reduce(t["small"], op=ReduceOp.BXOR),
           "batched": comm.all_reduce(t["list"], batched=True), "big": comm.all_reduce(t["big"]),
           "reduce": comm.reduce(t["small"], 0), "reduce_batched": comm.reduce(t["list"], 1, batched=True)}
    b = t["list"][1].clone()
    comm.broadcast(b, 1)
    out["broadcast"] = b
    out["input_unchanged"] = t["small"].clone()
    return out


def _flatten(v) -> list:
    if v is None:
        return [torch.tensor([-1])]
    return [x.clone() for x in v] if isinstance(v, list) else [v.clone()]


def _party(rank: int, rendezvous: str, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)
    from privinf.mpc import channel, ring
    from privinf.mpc.shim import import_crypten

    crypten = import_crypten()
    with crypten.cfg.temp_override({"communicator.verbose": True, "mpc.provider": "TFP"}):
        crypten.init()
        comm = crypten.communicator.get()
        t = _tensors(rank)
        report = {}

        def counted(fn):
            before = comm_now().get_communication_stats()
            value = fn()
            after = comm_now().get_communication_stats()
            return value, (after["bytes"] - before["bytes"], after["rounds"] - before["rounds"])

        comm_now = crypten.communicator.get
        gloo, gloo_cost = counted(lambda: _collectives(crypten.communicator.get(), t, rank))
        x = crypten.cryptensor(torch.randn(4, 6, generator=torch.Generator().manual_seed(5)), src=0)
        y = crypten.cryptensor(torch.randn(6, 3, generator=torch.Generator().manual_seed(6)), src=1)
        _, crypten_mul_cost = counted(lambda: x.matmul(y))
        _, crypten_square_cost = counted(lambda: x.square())

        channel.connect("127.0.0.1", 30)
        assert crypten.communicator.get() is not comm and hasattr(crypten.communicator.get(), "link")
        sock, sock_cost = counted(lambda: _collectives(crypten.communicator.get(), t, rank))
        X, Y = x._tensor.share, y._tensor.share
        prod, ring_mul_cost = counted(lambda: ring.beaver(X, Y, "matmul"))
        sq, ring_square_cost = counted(lambda: ring.square(X))
        ew = ring.beaver(X[:, :1], X)  # broadcasting product
        u, v = _words(0), _words(1)  # party 0's and party 1's private words
        anded = ring.bit_and(ring.bit_share(u if rank == 0 else None, u.shape, src=0),
                             ring.bit_share(v if rank == 1 else None, v.shape, src=1))
        opened = [ring.open_many([v])[0] for v in (X, Y, prod, sq, ew)] + ring.open_bits([anded])
        channel.close()
        assert crypten.communicator.get() is comm
        crypten.uninit()

    report["gloo"] = {k: _flatten(v) for k, v in gloo.items()}
    report["sock"] = {k: _flatten(v) for k, v in sock.items()}
    report["costs"] = {"collectives": (gloo_cost, sock_cost), "matmul": (crypten_mul_cost, ring_mul_cost),
                       "square": (crypten_square_cost, ring_square_cost)}
    report["opened"] = opened
    buf = io.BytesIO()
    torch.save(report, buf)  # by value: a tensor sent through the queue would live in this process's memory
    queue.put((rank, buf.getvalue()))


@pytest.fixture(scope="module")
def reports():
    return {rank: torch.load(io.BytesIO(data)) for rank, data in run_two_parties(_party, want=2)}


@pytest.mark.parametrize("rank", [0, 1])
def test_socket_collectives_equal_gloo(reports, rank):
    rep = reports[rank]
    assert rep["gloo"].keys() == rep["sock"].keys()
    for name in rep["gloo"]:
        for a, b in zip(rep["gloo"][name], rep["sock"][name], strict=True):
            assert a.shape == b.shape and torch.equal(a, b), name
    mine, theirs = _tensors(rank), _tensors(1 - rank)
    assert torch.equal(rep["sock"]["sum"][0], mine["small"] + theirs["small"])  # wraps mod 2**64, as gloo
    assert torch.equal(rep["sock"]["xor"][0], mine["small"] ^ theirs["small"])
    assert torch.equal(rep["sock"]["big"][0], mine["big"] + theirs["big"])
    assert torch.equal(rep["sock"]["broadcast"][0], _tensors(1)["list"][1])
    assert torch.equal(rep["sock"]["input_unchanged"][0], mine["small"])  # all_reduce returns a new tensor
    if rank == 0:  # reduce to party 0; the batched reduce went to party 1
        assert torch.equal(rep["sock"]["reduce"][0], mine["small"] + theirs["small"])
        assert torch.equal(rep["sock"]["reduce_batched"][0], torch.tensor([-1]))  # None
    else:
        assert torch.equal(rep["sock"]["reduce"][0], torch.tensor([-1]))
        assert torch.equal(rep["sock"]["reduce_batched"][1], mine["list"][1] + theirs["list"][1])


@pytest.mark.parametrize("rank", [0, 1])
def test_socket_and_ring_cost_what_crypten_counts(reports, rank):
    costs = reports[rank]["costs"]
    for name, (crypten_cost, ours) in costs.items():
        assert ours == crypten_cost, name  # (bytes, rounds) of this party


def test_ring_products_are_exact(reports):
    x, y, prod, sq, ew, anded = reports[0]["opened"]
    assert torch.equal(reports[1]["opened"][0], x)  # both parties opened the same values
    assert torch.equal(prod, x @ y)  # int64 ring products, wrapping as CrypTen's
    assert torch.equal(sq, x * x)
    assert torch.equal(ew, x[:, :1] * x)
    assert torch.equal(anded, _words(0) & _words(1))


def test_fast_temp_override_sets_and_restores_crypten_config():
    from privinf.mpc.shim import import_crypten

    crypten = import_crypten()
    cfg = crypten.cfg
    bits, iters = cfg.encoder.precision_bits, cfg.functions.exp_iterations
    with cfg.temp_override({"encoder.precision_bits": bits + 3, "functions.exp_iterations": iters + 1}):
        assert (cfg.encoder.precision_bits, cfg.functions.exp_iterations) == (bits + 3, iters + 1)
        assert cfg.config.encoder.precision_bits == bits + 3  # the OmegaConf tree too
        with cfg.temp_override({"encoder.precision_bits": 20}):
            assert crypten.encoder.FixedPointEncoder()._precision_bits == 20  # what CrypTen reads
        assert cfg.encoder.precision_bits == bits + 3
    assert (cfg.encoder.precision_bits, cfg.config.encoder.precision_bits) == (bits, bits)
    assert cfg.functions.exp_iterations == iters
    with pytest.raises(KeyError):
        with cfg.temp_override({"encoder.precision_bits": 9}):
            raise KeyError  # restored on the way out of an error too
    assert cfg.encoder.precision_bits == bits
    with cfg.temp_override({"privinf_test.key": 3}):  # not a leaf of the tree: CrypTen's own path
        assert cfg.privinf_test.key == 3
    assert "privinf_test" not in cfg.config
