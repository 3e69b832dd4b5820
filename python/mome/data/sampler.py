"""Group-balanced sampling: the four task groups equally often, the datasets of a group concatenated, i.e. sampled
in proportion to their size. Two ways to assign groups to the positions of the stream (``batching``):

* ``"one_group"`` (the authors' release, OFFICIAL.md): every **global batch** (the G = `global_batch_size` samples of
  one optimizer step, over all ranks and accumulation micro-batches) comes from one group, the groups present taking
  the steps in turn: global batch s is from group ``groups[s mod n]`` in the order general, rec, reg, document. Their
  trainer keeps one shuffled loader per file and steps the loaders round-robin.
* ``"mixed"`` (paper App. B as we read it): each position's group is drawn i.i.d. with the group weights (equal by
  default) from a counter-based generator (blocks of `_BLOCK` positions, each seeded by ``(seed, block)``).

The sampler defines one **global stream** of record indices, a pure function of (seed, the records' groups and
datasets, the batching mode, group weights in "mixed", G in "one_group") and independent of how a global batch is
split into ranks and micro-batches:

* position p of the stream belongs to group ``g_p`` as above;
* the k-th position that belongs to group g takes member ``perm_{g,e}[k mod n_g]`` of that group, where
  ``e = k // n_g`` and ``perm_{g,e}`` is a permutation of the group's n_g records seeded by ``(seed, g, e)``.
  So inside a group every record is visited once per group epoch (no repeats before all are seen), and each
  dataset of the group takes exactly its share of the group's draws per epoch.

Distributed: with per-rank batch size B and world size W, micro-step t is positions ``[t·B·W, (t+1)·B·W)``;
rank r yields positions ``t·B·W + r·B + [0, B)``. Hence, for every micro-step t, the concatenation of the W ranks'
t-th batches (rank order) equals the t-th batch of a single process with batch size B·W and the same seed; the ranks
never share a stream position, so within a group epoch they never share a record. With A accumulation micro-batches
per optimizer step, G = A·B·W and global batch s is micro-steps ``[s·A, (s+1)·A)``, i.e. positions ``[s·G, (s+1)·G)``.
Unlike the release, a batch that reaches the end of a group epoch is completed from the next epoch (never short).

Resume: the state is the number of indices this rank has yielded (plus what makes the stream, checked on load);
`load_state_dict` restores the exact position, also mid-batch.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np

from mome.data.records import GROUPS

__all__ = ["GroupBalancedSampler", "BATCHING"]

BATCHING = ("one_group", "mixed")

_BLOCK = 4096  # group draws generated per counter-based block
_TAG_GROUPS, _TAG_PERM = 0x6772, 0x7065  # separate the two random streams of one seed


class GroupBalancedSampler:
    """Infinite (or fixed-length) stream of record indices, balanced over groups; see the module docstring.

    Args:
        records: the records (only ``group`` and ``dataset`` are read), e.g. ``dataset.records``.
        batch_size: per-rank batch size B (positions are dealt to ranks in blocks of B). Default 1.
        seed: the stream's seed.
        rank, world_size: this process's rank r and the world size W.
        num_samples: if given, iteration stops after this many indices per rank (and ``len()`` is defined);
            otherwise the stream is infinite.
        group_weights: "mixed" only: optional ``{group: weight}`` replacing the equal group probabilities (groups
            absent from the records are ignored; groups present but not named get weight 0).
        batching: ``"mixed"`` (default) or ``"one_group"``; see the module docstring.
        global_batch_size: G, the samples of one optimizer step over all ranks; a multiple of
            ``batch_size · world_size`` (default: exactly that, no accumulation). Sets the group turns in "one_group".
    """

    def __init__(self, records: Sequence[dict], batch_size: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_samples: int | None = None,
                 group_weights: dict[str, float] | None = None, batching: str = "mixed",
                 global_batch_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        global_batch_size = batch_size * world_size if global_batch_size is None else int(global_batch_size)
        if global_batch_size < 1 or global_batch_size % (batch_size * world_size):
            raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of batch_size × "
                             f"world_size ({batch_size} × {world_size})")
        if batching == "one_group" and group_weights is not None:
            raise ValueError("group_weights apply to batching='mixed' only; 'one_group' gives the groups the steps in "
                             "turn")
        members: dict[str, list[int]] = OrderedDict((g, []) for g in GROUPS)
        for i, rec in enumerate(records):
            g = rec.get("group")
            if g not in members:
                raise ValueError(f"record {rec.get('id', i)!r} has group {g!r}, not one of {GROUPS}")
            members[g].append(i)
        # Records of a group are ordered by dataset, so the group is literally the datasets' concatenation.
        self.groups = [g for g in GROUPS if members[g]]
        if not self.groups:
            raise ValueError("GroupBalancedSampler: no records")
        self._members = [np.array(sorted(members[g], key=lambda i: (records[i].get("dataset", ""), i)), dtype=np.int64)
                         for g in self.groups]
        if group_weights is None:
            weights = np.ones(len(self.groups))
        else:
            unknown = set(group_weights) - set(GROUPS)
            if unknown:
                raise ValueError(f"group_weights has unknown groups {sorted(unknown)}; groups are {GROUPS}")
            weights = np.array([float(group_weights.get(g, 0.0)) for g in self.groups])
            if (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"group_weights must be >= 0 with a positive sum over the present groups, "
                                 f"got {group_weights}")
        self.group_probs = weights / weights.sum()
        self.seed, self.batch_size, self.rank, self.world_size = int(seed), batch_size, rank, world_size
        self.batching, self.global_batch_size = batching, global_batch_size
        self.num_samples = num_samples
        self._fingerprint = [len(m) for m in self._members] + [int(m.sum() % (1 << 31)) for m in self._members]
        self._yielded = 0
        self._block_cache: dict[int, np.ndarray] = {}
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._prefix = [np.zeros(len(self.groups), dtype=np.int64)]

    # -- the global stream ------------------------------------------------------------------------------------
    def _block(self, b: int) -> np.ndarray:
        """Group ids of positions ``[b·_BLOCK, (b+1)·_BLOCK)``."""
        if b not in self._block_cache:
            if len(self._block_cache) > 4:
                self._block_cache.clear()
            rng = np.random.default_rng([self.seed, _TAG_GROUPS, b])
            self._block_cache[b] = rng.choice(len(self.groups), size=_BLOCK, p=self.group_probs).astype(np.int64)
        return self._block_cache[b]

    def _groups(self, start: int, stop: int) -> np.ndarray:
        """Group ids of global positions ``[start, stop)``."""
        if self.batching == "one_group":
            return (np.arange(start, max(start, stop), dtype=np.int64) // self.global_batch_size) % len(self.groups)
        out = [self._block(b) for b in range(start // _BLOCK, (stop - 1) // _BLOCK + 1)] if stop > start else []
        if not out:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(out)[start - (start // _BLOCK) * _BLOCK:stop - (start // _BLOCK) * _BLOCK]

    def _counts_before(self, p: int) -> np.ndarray:
        """How many of the positions ``[0, p)`` belong to each group."""
        if self.batching == "one_group":
            G, n = self.global_batch_size, len(self.groups)
            cycles, rest = divmod(p, G * n)  # each full cycle gives every group G positions
            return np.array([cycles * G + min(max(rest - g * G, 0), G) for g in range(n)], dtype=np.int64)
        full = p // _BLOCK
        while len(self._prefix) <= full:  # prefix[b] = counts over blocks [0, b); extended lazily, kept
            g = self._block(len(self._prefix) - 1)
            self._prefix.append(self._prefix[-1] + np.bincount(g, minlength=len(self.groups)))
        counts = self._prefix[full].copy()
        counts += np.bincount(self._groups(full * _BLOCK, p), minlength=len(self.groups))
        return counts

    def _member(self, g: int, k: int) -> int:
        """Record index of the k-th draw of group g."""
        n = len(self._members[g])
        e = k // n
        key = (g, e)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 2 * len(self.groups):
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng([self.seed, _TAG_PERM, g, e]).permutation(n)
        return int(self._members[g][self._perm_cache[key][k % n]])

    def global_indices(self, start: int, stop: int) -> list[int]:
        """Record indices at global stream positions ``[start, stop)`` (what a single process with any batch
        size would draw there, for the same global batch size in "one_group")."""
        groups = self._groups(start, stop)
        counts = self._counts_before(start)
        out = []
        for g in groups:
            out.append(self._member(int(g), int(counts[g])))
            counts[g] += 1
        return out

    # -- this rank's view ---------------------------------------------------------------------------------------
    def _position(self, j: int) -> int:
        """Global stream position of this rank's j-th index."""
        step, off = divmod(j, self.batch_size)
        return step * self.batch_size * self.world_size + self.rank * self.batch_size + off

    def __iter__(self) -> Iterator[int]:
        """Yield this rank's indices from the current state on; the state advances as indices are yielded."""
        B, W = self.batch_size, self.world_size
        while self.num_samples is None or self._yielded < self.num_samples:
            step, off = divmod(self._yielded, B)
            g_start = step * B * W
            counts = self._counts_before(g_start + self.rank * B + off)
            groups = self._groups(g_start + self.rank * B + off, g_start + (self.rank + 1) * B)
            for g in groups:
                idx = self._member(int(g), int(counts[g]))
                counts[g] += 1
                self._yielded += 1
                yield idx
                if self.num_samples is not None and self._yielded >= self.num_samples:
                    return

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("GroupBalancedSampler is infinite (num_samples=None) and has no len()")
        return self.num_samples

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: this rank's count of yielded indices and the stream's identity."""
        return {"yielded": self._yielded, "seed": self.seed, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size, "batching": self.batching,
                "global_batch_size": self.global_batch_size, "groups": list(self.groups),
                "group_probs": [float(p) for p in self.group_probs], "fingerprint": list(self._fingerprint)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; raises if it was saved for a different stream (seed, records, layout)."""
        keys = ["seed", "batch_size", "rank", "world_size", "batching", "groups", "fingerprint"]
        if self.batching == "one_group":  # the group turns depend on G
            keys.append("global_batch_size")
        for key in keys:
            mine = self.state_dict()[key]
            if state.get(key, "mixed" if key == "batching" else None) != mine:  # states saved before `batching`
                raise ValueError(f"load_state_dict: saved {key}={state.get(key)!r} differs from this sampler's "
                                 f"{mine!r}")
        if not np.allclose(state["group_probs"], self.group_probs):
            raise ValueError(f"load_state_dict: saved group_probs {state['group_probs']} differ from "
                             f"{self.group_probs.tolist()}")
        self._yielded = int(state["yielded"])
