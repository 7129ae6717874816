"""Where and how a run computes: device, precision, seeding, determinism, torch.distributed.

One :class:`Runtime` per process describes it; :func:`setup_runtime` builds it from the command's
settings and the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)::

    torchrun --nproc_per_node 4 -m distilled_shufflenet train ...   ->  rank 0..3, DDP, DistributedSampler
    dsn train ...                                                    ->  rank 0 of 1, no process group
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import signal
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ContextManager, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

from distilled_shufflenet.machine import bf16_support

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Runtime:
    """The device, precision and process-group facts of this process."""

    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    channels_last: bool = False
    # True when this runtime initialised the process group (and so must destroy it)
    owns_process_group: bool = False
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        # loss scaling guards fp16's narrow exponent; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    def autocast(self) -> ContextManager:
        """Mixed-precision context for the forward pass and loss (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def to_device(self, x: Tensor) -> Tensor:
        """Move a batch to the device, in the channels-last-3d layout when asked (5D clips only)."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x


# --------------------------------------------------------------------------- device and precision
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if name not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was asked for but no CUDA GPU is visible to PyTorch")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(cap: int = 4) -> int:
    """DataLoader worker processes by default: the CPUs this process may use, at most ``cap``, so a small
    machine is not asked for more workers than it has (PyTorch warns then, and they only compete)."""
    return max(1, min(cap, available_cpus()))


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), as :mod:`~distilled_shufflenet.machine`
    reads it."""
    return bf16_support()[0]


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ``ValueError`` naming ``precision`` unless the device can run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu":
        if precision == "fp16":
            raise ValueError("precision: fp16 autocast needs a CUDA device; on CPU use bf16 or fp32")
        if precision == "bf16" and not cpu_supports_bf16():
            raise ValueError(
                "precision: bf16 on CPU needs native bfloat16 support (AVX512-BF16 or AMX); this CPU "
                f"({torch.backends.cpu.get_cpu_capability()}) would emulate it slowly; use fp32"
            )
    elif device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision: bf16 needs a GPU with bfloat16 support (Ampere or newer); use fp16 or fp32")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last layout for every 5D (Conv3d) weight, and channels-last 2D for 4D ones."""
    for p in model.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


# --------------------------------------------------------------------------- seeding and determinism
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every GPU) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (or allow the fast non-deterministic ones again).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` to be deterministic; it is set here unless already set.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.are_deterministic_algorithms_enabled() != enabled:  # the call itself imports torch._inductor
        torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part, e.g. ``derive_seed(seed, epoch, index)``."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy from the seed torch gave this worker, and
    leave SIGINT / SIGTERM to the main process (which stops the run cleanly and ends its workers), so
    that Ctrl-C prints no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with Python, NumPy and torch (CPU) seeded from ``seed``, restoring their states after.

    Used around the loading of each sample, so that its random augmentation depends only on
    ``(run seed, epoch, sample index)``, whatever worker loads it and whenever.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def rng_state() -> dict[str, Any]:
    """The global generators' states, as plain containers and tensors (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------- resumable sampling
class EpochSampler(DistributedSampler):
    """A :class:`DistributedSampler` (also for a single process) that can start part-way into an epoch.

    The order of an epoch depends only on ``(seed, epoch)``; ``set_epoch(epoch, start)`` skips the first
    ``start`` indices of this rank's share, i.e. the batches a resumed run has already done.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class SeededSamples(Dataset):
    """A dataset whose sample ``i`` in epoch ``e`` is drawn with the global generators seeded from
    ``(seed, e, i)``, so that random augmentation does not depend on the worker or on the moment it
    is loaded (which is what makes a resumed run see the same clips).  The project's datasets draw from
    their own per-sample generator; they are told the epoch (``set_epoch``) too.  The epoch lives in
    shared memory, so persistent DataLoader workers see it change."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with seeded_rng(derive_seed(self.seed, self.epoch, index)):
            return self.dataset[index]

    @property
    def classes(self) -> Sequence[str]:
        return self.dataset.classes  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- torch.distributed
def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets; ``(0, 1, 0)`` without them."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK: expected integers in the environment ({e})") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK / WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def setup_runtime(
    device: str = "auto",
    precision: str = "fp32",
    *,
    channels_last: bool = False,
    timeout_s: float = 1800.0,
) -> Runtime:
    """Resolve the device and precision and, under torchrun, join the process group.

    The backend is ``nccl`` on GPUs and ``gloo`` on CPUs.  Each process uses GPU ``LOCAL_RANK``.
    """
    rank, world, local = dist_env()
    dev = resolve_device(device, local)
    check_precision(precision, dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        owns = True
    elif dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Runtime(dev, precision, rank, world, local, channels_last, owns)


def teardown_runtime(rt: Runtime) -> None:
    """Leave the process group if :func:`setup_runtime` joined it."""
    if rt.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()
        rt.owns_process_group = False


def all_reduce_sums(values: list[float], rt: Runtime) -> list[float]:
    """Element-wise sums over all ranks (unchanged in a single process).  Float64 keeps counts exact."""
    if not rt.distributed:
        return list(values)
    device = rt.device if rt.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(obj: Any, rt: Runtime) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not rt.distributed:
        return [obj]
    out: list[Any] = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, rt: Runtime) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them before each training forward, but each rank then updates them with its own
    batch; at an epoch end they are made equal again, so that all ranks validate the model that rank 0
    saves.
    """
    if rt.distributed:
        for buf in unwrap(model).buffers():
            dist.broadcast(buf, src=0)


def wrap_model(model: nn.Module, rt: Runtime, *, sync_bn: bool = False) -> nn.Module:
    """Move the model to the device (channels-last if asked) and, when distributed, wrap it in DDP.

    ``sync_bn`` turns every BatchNorm into SyncBatchNorm first, so that batch statistics are computed
    over the global batch; it only means something with several processes.
    """
    model = model.to(rt.device)
    if rt.channels_last:
        to_channels_last(model)
    if not rt.distributed:
        if sync_bn:
            warnings.warn("sync_bn: ignored in a single process", stacklevel=2)
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
