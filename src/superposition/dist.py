"""Training on several processes with PyTorch's own engine (`torch.distributed`, started by
`torchrun`): gloo on CPU, NCCL on CUDA, the same code for both.

`Comm` is everything the rest of the package asks of the process group: which rank this is, how
many there are, and four collectives (gather rows of different counts, sum, max, "does any rank
want to stop"). `Comm.single()` is the one-process stand-in, so single-process code calls the same
methods and pays nothing. A collective that fails (another rank died or timed out) becomes a
one-line `SuperpositionError`, so no rank prints a traceback or hangs past `dist_timeout`.

    torchrun --nproc_per_node 2 -m superposition train-sae ...      # what `--nproc 2` runs
    torchrun --nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT --nproc_per_node G ...
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import Tensor

from superposition.errors import SuperpositionError

# set by torchrun for every worker; a process with some of them but not the rest was not started by it
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True inside a torchrun worker; a one-line error when the variables are half there (a
    process started by hand with RANK or WORLD_SIZE set, which would otherwise wait forever)."""
    present = [v for v in TORCHRUN_VARS if v in os.environ]
    if not present:
        return False
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise SuperpositionError(
            f"torchrun: {', '.join(present)} set but not {', '.join(missing)}; start several processes "
            "with torchrun (or --nproc N), or unset them for one process"
        )
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise SuperpositionError("torchrun: RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise SuperpositionError(f"torchrun: RANK {rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {world})")
    return True


@dataclass
class Comm:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live (cuda:LOCAL_RANK under NCCL)

    @classmethod
    def single(cls) -> Comm:
        return cls()

    @classmethod
    def from_env(cls, device: str, timeout_s: float) -> Comm:
        """The process group of a torchrun worker (one process: `single()`). CUDA devices become
        cuda:LOCAL_RANK with NCCL; anything else uses gloo."""
        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
            return cls.single()
        import torch.distributed as dist

        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        _stop_on_sigterm(rank)
        cuda = device.startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise SuperpositionError(f"device {device}: CUDA is not available on rank {rank}")
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            try:
                dist.init_process_group(
                    "nccl" if cuda else "gloo",
                    timeout=timedelta(seconds=timeout_s),
                    **({"device_id": torch.device(device)} if cuda else {}),
                )
            except Exception as err:  # rendezvous failures come as several exception types
                raise SuperpositionError(
                    f"torchrun: rank {rank} could not join the group ({_first(err)})"
                ) from None
        return cls(rank, world, local, device)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def _run(self, fn, what: str):
        try:
            return fn()
        except Exception as err:  # RuntimeError / DistBackendError / DistNetworkError, by backend
            raise SuperpositionError(
                f"rank {self.rank}: {what} failed, another rank stopped or timed out ({_first(err)})"
            ) from None

    def gather_rows(self, x: Tensor) -> Tensor:
        """Every rank's rows, concatenated in rank order, on every rank; row counts may differ."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        dev = x.device
        local = x.to(self.device)
        n = torch.tensor([local.shape[0]], device=self.device)
        counts = [torch.zeros_like(n) for _ in range(self.world)]
        self._run(lambda: dist.all_gather(counts, n), "gathering row counts")
        counts = [int(c) for c in counts]
        top = max(counts)
        padded = local.new_zeros((top, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._run(lambda: dist.all_gather(parts, padded), "gathering activations")
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(dev)

    def sum_(self, x: Tensor) -> Tensor:
        """x summed over ranks, in place (and returned)."""
        return self._reduce(x, "SUM")

    def max_(self, x: Tensor) -> Tensor:
        return self._reduce(x, "MAX")

    def _reduce(self, x: Tensor, op: str) -> Tensor:
        if not self.distributed:
            return x
        import torch.distributed as dist

        buf = x.to(self.device)
        self._run(lambda: dist.all_reduce(buf, op=getattr(dist.ReduceOp, op)), f"all-reduce ({op})")
        if buf is not x:
            x.copy_(buf)
        return x

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any."""
        if not self.distributed:
            return flag
        return bool(self.max_(torch.tensor([float(flag)], device=self.device)).item())

    def first(self, fn) -> None:
        """fn() on rank 0 alone (a check of shared state, say); its one-line error, if any, is
        raised on every rank, so all stop with the same message and none waits for the others."""
        message = None
        if self.main:
            try:
                fn()
            except SuperpositionError as err:
                message = str(err)
        if self.distributed:
            import torch.distributed as dist

            box = [message]
            self._run(lambda: dist.broadcast_object_list(box, src=0), "waiting for rank 0")
            message = box[0]
        if message is not None:
            raise SuperpositionError(message)

    def barrier(self, what: str = "waiting for the other ranks") -> None:
        if self.distributed:
            import torch.distributed as dist

            self._run(lambda: dist.barrier(), what)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _stop_on_sigterm(rank: int) -> None:
    """When a rank fails, torchrun's agent stops the others with SIGTERM, often before their own
    collective has failed: each stops with one line of its own instead of dying silently."""
    import signal

    def stopped(signum, frame):
        raise SuperpositionError(f"rank {rank}: stopped, another rank stopped or timed out (SIGTERM)")

    signal.signal(signal.SIGTERM, stopped)


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def shard(n: int, comm: Comm) -> slice:
    """This rank's contiguous share of n items (shares differ by at most one; rank order)."""
    base, extra = divmod(n, comm.world)
    start = comm.rank * base + min(comm.rank, extra)
    return slice(start, start + base + (comm.rank < extra))


def launch(nproc: int, argv: list[str]) -> int:
    """`--nproc N`: run `python -m superposition <argv>` on N local processes through torchrun's
    own launcher (elastic_launch, standalone rendezvous on a free port). Each worker prints its
    own one-line error; a worker that dies otherwise is named here in one line."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise SuperpositionError(f"nproc: {nproc}; give 1 or more processes")
    if launched_by_torchrun():
        raise SuperpositionError("nproc: already running under torchrun; drop `nproc`")
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # as torchrun does: do not let N processes each start a thread per core
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    import sys

    try:
        elastic_launch(config, sys.executable)("-m", "superposition", *argv)
    except ChildFailedError as err:
        codes = {int(r): f.exitcode for r, f in err.failures.items()}
        # a rank killed by a signal (not the agent's SIGTERM to the others) printed nothing: name it,
        # whatever the ranks that lost it said ("another rank stopped")
        killed = sorted((r, -c) for r, c in codes.items() if c is not None and c < 0 and -c != signal.SIGTERM)
        if killed:
            r, sig = killed[0]
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            message = f"nproc: rank {r} was killed ({name}); the other ranks stopped"
            raise SuperpositionError(message) from None
        if any(c == 2 for c in codes.values()):
            return 2  # the rank that failed printed its one-line error; the agent stopped the others
        first = min(err.failures.items(), key=lambda rf: (rf[1].timestamp, int(rf[0])))  # the first to fail
        raise SuperpositionError(
            f"nproc: rank {first[0]} stopped with exit code {first[1].exitcode}"
        ) from None
    return 0
