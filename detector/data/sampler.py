"""A deterministic, resumable, DDP-aware training batch sampler with aspect-ratio grouping.

Epoch ``e`` shuffles the dataset with a permutation drawn from ``(seed, e)`` alone, cuts it to
a multiple of ``world_size`` (like DistributedSampler with drop_last) and gives rank ``r`` the
slice ``perm[r::world_size]``, so ranks get disjoint shards of equal size. Within a rank's shard, images are streamed into two buckets
(landscape, width >= height, and portrait); a bucket emits a batch when it is full. What is
left in both buckets at the end of the epoch is batched in order (mixed aspect), and the last
incomplete batch is dropped, so every rank yields exactly ``len(shard) // batch_size``
batches per epoch.

Each sample carries a seed drawn from ``(seed, e)`` for its position in the epoch, so the random
transforms of a sample do not depend on worker processes or on resuming. ``start_batch`` skips
ahead exactly: only the epoch holding that batch is computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class TrainBatchSampler:
    """Infinite batch sampler yielding lists of ``(index, sample_seed)``."""

    def __init__(
        self,
        aspect_ratios: Sequence[float],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group_by_aspect: bool = True,
        start_batch: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if len(aspect_ratios) == 0:
            raise ValueError("cannot sample batches from an empty dataset")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.landscape = np.asarray(aspect_ratios, dtype=np.float64) >= 1.0
        self.num_samples = len(aspect_ratios)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.group_by_aspect = bool(group_by_aspect)
        self.start_batch = int(start_batch)
        # samples per rank per epoch: the permutation's tail that does not divide evenly is
        # left out (it changes every epoch), so shards are disjoint; a dataset too small for
        # one batch per rank is repeated cyclically instead
        per_rank = self.num_samples // self.world_size
        self.shard_size = max(per_rank, self.batch_size)
        self.batches_per_epoch = self.shard_size // self.batch_size

    def _epoch_rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x5EED]))

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """All of this rank's batches for ``epoch`` (deterministic)."""
        rng = self._epoch_rng(epoch)
        perm = rng.permutation(self.num_samples)
        total = self.shard_size * self.world_size
        seeds = rng.integers(0, 2**62, size=total, dtype=np.int64)
        perm = np.resize(perm, total)  # truncate, or pad cyclically for a tiny dataset
        mine = perm[self.rank :: self.world_size]
        my_seeds = seeds[self.rank :: self.world_size]
        samples = [(int(i), int(s)) for i, s in zip(mine, my_seeds)]
        bs = self.batch_size
        if not self.group_by_aspect:
            return [samples[k : k + bs] for k in range(0, self.batches_per_epoch * bs, bs)]
        buckets: dict[bool, list] = {True: [], False: []}
        batches = []
        for pos, s in enumerate(samples):
            b = buckets[bool(self.landscape[s[0]])]
            b.append((pos, s))
            if len(b) == bs:
                batches.append([x for _, x in b])
                b.clear()
        rest = [x for _, x in sorted(buckets[True] + buckets[False])]
        for k in range(0, len(rest) - bs + 1, bs):
            batches.append(rest[k : k + bs])
        assert len(batches) == self.batches_per_epoch
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            batches = self.epoch_batches(epoch)
            yield from batches[offset:]
            offset = 0
            epoch += 1
