"""TrainBatchSampler: deterministic, resumable, aspect-grouped, sharded; loaders end to end."""

from __future__ import annotations

import itertools

import pytest
import torch

from detector.config.loader import load_config
from detector.data import TrainBatchSampler, build_dataset, build_train_loader


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


ARS = [1.5 if i % 3 else 0.6 for i in range(23)]


def test_deterministic_and_epochs_differ():
    s = TrainBatchSampler(ARS, 4, seed=7)
    assert s.batches_per_epoch == 5
    a, b = _take(s, 15), _take(TrainBatchSampler(ARS, 4, seed=7), 15)
    assert a == b
    assert a[:5] != a[5:10]  # a new permutation each epoch
    assert _take(TrainBatchSampler(ARS, 4, seed=8), 5) != a[:5]
    assert all(len(batch) == 4 for batch in a)
    seeds = [s for batch in a for _, s in batch]
    assert len(set(seeds)) == len(seeds)  # every sample of every epoch has its own seed


@pytest.mark.parametrize("start", [0, 3, 5, 12, 1001])
def test_resume_skips_exactly(start):
    full = _take(TrainBatchSampler(ARS, 4, seed=1), start + 6)
    resumed = _take(TrainBatchSampler(ARS, 4, seed=1, start_batch=start), 6)
    assert resumed == full[start:]


def test_aspect_grouping():
    s = TrainBatchSampler(ARS, 4, seed=0)
    for e in range(3):
        batches = s.epoch_batches(e)
        mixed = [b for b in batches if len({ARS[i] >= 1 for i, _ in b}) > 1]
        assert len(mixed) <= 1  # only the leftovers at the end of an epoch may mix
        used = [i for b in batches for i, _ in b]
        assert len(set(used)) == len(used) == 20
    ungrouped = TrainBatchSampler(ARS, 4, seed=0, group_by_aspect=False).epoch_batches(0)
    assert len(ungrouped) == 5


def test_ranks_get_disjoint_equal_shards():
    ranks = [TrainBatchSampler(ARS, 3, seed=2, rank=r, world_size=3) for r in range(3)]
    assert {r.batches_per_epoch for r in ranks} == {2}
    for e in range(2):
        parts = [[i for b in r.epoch_batches(e) for i, _ in b] for r in ranks]
        flat = [i for p in parts for i in p]
        assert len(set(flat)) == len(flat)  # disjoint within an epoch
        assert all(len(p) == 6 for p in parts)


def test_tiny_dataset_and_bad_arguments():
    s = TrainBatchSampler([1.0, 1.0], 4, seed=0)
    assert s.batches_per_epoch == 1 and len(_take(s, 2)[1]) == 4
    with pytest.raises(ValueError, match="rank 2 is not in"):
        TrainBatchSampler(ARS, 2, rank=2, world_size=2)


def test_train_loader_same_batches_with_workers_and_resume(tmp_path):
    cfg = load_config(
        None,
        [
            f"data.builtin.cache_dir={tmp_path}",
            "data.builtin.num_train=8",
            "data.builtin.num_val=1",
            "data.builtin.image_size=64",
            "data.transforms.crop_size=48",
            "data.transforms.scale_jitter=[0.8,1.25]",
            "solver.ims_per_batch=2",
            "data.num_workers=0",
        ],
    )
    ds = build_dataset(cfg, "train")

    def batches(workers, start, n):
        cfg.data.num_workers = workers
        it = iter(build_train_loader(cfg, ds, start_batch=start))
        out = [next(it) for _ in range(n)]
        del it
        return out

    ref = batches(0, 0, 6)
    assert all(len(images) == 2 for images, _ in ref)
    for images, targets in ref:
        for img, t in zip(images, targets):
            assert img.shape[-2:] == t["size"] == (48, 48)
            assert t["orig_size"] == (64, 64)
    other = batches(1, 4, 2)  # one worker process, resumed at batch 4
    for (ia, ta), (ib, tb) in zip(ref[4:], other):
        assert all(torch.equal(x, y) for x, y in zip(ia, ib))
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))
    with pytest.raises(ValueError, match="ims_per_batch=2 must be a positive multiple"):
        build_train_loader(cfg, ds, world_size=4)


def test_train_loader_batch_size_overrides_the_config(tmp_path):
    """The trainer passes its micro-batch instead of rewriting solver.ims_per_batch."""
    cfg = load_config(
        None,
        [
            f"data.builtin.cache_dir={tmp_path}",
            "data.builtin.num_train=8",
            "data.builtin.num_val=1",
            "data.builtin.image_size=32",
            "solver.ims_per_batch=2",
            "data.num_workers=0",
        ],
    )
    ds = build_dataset(cfg, "train")
    assert build_train_loader(cfg, ds).batch_sampler.batch_size == 2
    # 3 per rank with 4 ranks: ims_per_batch=2 alone would be refused
    loader = build_train_loader(cfg, ds, batch_size=3, rank=1, world_size=4)
    assert loader.batch_sampler.batch_size == 3 and loader.batch_sampler.world_size == 4
    images, _ = next(iter(loader))
    assert len(images) == 3
    assert cfg.solver.ims_per_batch == 2  # the config is not touched
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            build_train_loader(cfg, ds, batch_size=bad)


def _tiny_loader_overrides(tmp_path) -> list[str]:
    return [
        f"data.builtin.cache_dir={tmp_path}",
        "data.builtin.num_train=6",
        "data.builtin.num_val=1",
        "data.builtin.image_size=64",
        "data.transforms.crop_size=48",
        "solver.ims_per_batch=2",
        "data.num_workers=1",
    ]


def test_loader_workers_ignore_ctrl_c(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: it must stop only the main
    process (whose trainer then checkpoints); the worker ignores it and goes on serving."""
    import os
    import signal
    import time

    cfg = load_config(None, _tiny_loader_overrides(tmp_path))
    it = iter(build_train_loader(cfg, build_dataset(cfg, "train")))
    next(it)
    (worker,) = it._workers  # the one worker process
    os.kill(worker.pid, signal.SIGINT)
    time.sleep(0.5)
    assert worker.is_alive()
    images, _ = next(it)  # still served
    assert len(images) == 2
    del it


def test_a_process_that_fails_with_live_workers_still_exits(tmp_path):
    """A run that stops on an exception while its persistent workers are alive must exit:
    multiprocessing ends them with SIGTERM at exit, so they must not ignore it."""
    import subprocess
    import sys

    cfg_args = _tiny_loader_overrides(tmp_path)
    code = (
        "import sys\n"
        "from detector.config.loader import load_config\n"
        "from detector.data import build_dataset, build_train_loader\n"
        f"cfg = load_config(None, {cfg_args!r})\n"
        "it = iter(build_train_loader(cfg, build_dataset(cfg, 'train')))\n"
        "next(it)\n"
        "raise RuntimeError('boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "RuntimeError: boom" in proc.stderr
