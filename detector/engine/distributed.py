"""Process-group set-up from torchrun's environment, rank helpers, seeding and RNG state.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
starts NCCL when the run uses CUDA and gloo otherwise. Without those variables everything runs
as a single process and every helper here degrades to a no-op.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from detector.utils.errors import SmalldetError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


class DeviceError(SmalldetError, RuntimeError):
    """The ``device`` setting names a device this machine does not have."""


def _cuda_found() -> str:
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    return (
        f"torch.cuda.is_available()={available}, {count} CUDA device(s), torch {torch.__version__}"
    )


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``.

    Checked here, before any data or model is built, so a wrong ``device`` costs nothing.
    """
    fix = "Fix: set device=cpu, or device=auto (CUDA when there is one, else the CPU)"
    if not isinstance(pref, str) or not pref.strip():
        raise DeviceError(f"device={pref!r} is not a device name. {fix}, cuda or cuda:N.")
    pref = asked = pref.strip()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        pref = f"cuda:{local_rank}"
    try:
        device = torch.device(pref)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device={pref!r} is not a device name. {fix}, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device={pref!r} needs CUDA, but this machine has none ({_cuda_found()}). {fix}."
            )
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            rank = f" (from device={asked}, LOCAL_RANK={local_rank})" if asked != pref else ""
            raise DeviceError(
                f"device={pref!r}{rank} asks for CUDA device {index}, but this machine has "
                f"{count} ({_cuda_found()}). {fix}, or cuda:N with N < {count}, and start at "
                f"most {count} processes per node."
            )
    return device


def init_distributed(
    device_pref: str = "auto", timeout_s: int = 1800
) -> tuple[int, int, torch.device]:
    """Start the process group when launched by torchrun; return ``(rank, world, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_pref, local_rank)
    if local_world > 1 and device.type == "cuda" and str(device_pref).strip().startswith("cuda:"):
        # every rank of this node on one GPU: NCCL fails later with a "duplicate GPU" error
        raise DeviceError(
            f"device={device_pref!r} with {local_world} processes on this node puts every rank "
            "on the same GPU. Fix: set device=cuda or device=auto (rank r uses cuda:LOCAL_RANK)."
        )
    if world > 1 and not is_dist():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return get_rank(), get_world_size(), device


def cleanup_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum across ranks (a no-op for one process)."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ----------------------------------------------------------------------------------- seeding


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict:
    """All global RNG states, as ``weights_only``-safe types (tensors, lists, ints)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [int(version), list(internal), gauss],
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
