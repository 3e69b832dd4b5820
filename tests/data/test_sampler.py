"""Group-balanced sampler: group frequencies, in-group proportions, determinism, ranks, exact resume."""

import itertools
from collections import Counter

import numpy as np
import pytest

from mome.data import GroupBalancedSampler

# Very unequal sizes: without balancing, 'general' would take 90 % of the draws.
SIZES = {("general", "caps"): 600, ("general", "vqa"): 300, ("rec", "refcoco"): 50, ("document", "docvqa"): 25,
         ("document", "chartqa"): 75}


def _records():
    recs = []
    for (group, dataset), n in SIZES.items():
        recs += [{"id": f"{dataset}-{i}", "group": group, "dataset": dataset} for i in range(n)]
    return recs


RECS = _records()


def _draw(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_groups_equal_and_datasets_proportional():
    n = 30000
    idx = _draw(GroupBalancedSampler(RECS, batch_size=8, seed=0), n)
    groups = Counter(RECS[i]["group"] for i in idx)
    assert set(groups) == {"general", "rec", "document"}  # 'reg' absent from the data: simply absent
    for g in groups:
        assert groups[g] / n == pytest.approx(1 / 3, abs=0.015)
    datasets = Counter(RECS[i]["dataset"] for i in idx)
    assert datasets["caps"] / groups["general"] == pytest.approx(600 / 900, abs=0.02)
    assert datasets["chartqa"] / groups["document"] == pytest.approx(75 / 100, abs=0.02)


def test_group_weights_override():
    idx = _draw(GroupBalancedSampler(RECS, seed=1, group_weights={"general": 3, "rec": 1}), 8000)
    groups = Counter(RECS[i]["group"] for i in idx)
    assert groups["document"] == 0
    assert groups["general"] / 8000 == pytest.approx(0.75, abs=0.02)
    with pytest.raises(ValueError, match="unknown groups"):
        GroupBalancedSampler(RECS, group_weights={"ocr": 1})


def test_each_record_once_per_group_epoch():
    # 'rec' has 50 records: its first 50 draws are a permutation of them, the next 50 another one.
    idx = _draw(GroupBalancedSampler(RECS, seed=3), 2000)
    rec_draws = [i for i in idx if RECS[i]["group"] == "rec"]
    assert len(rec_draws) >= 100
    assert sorted(rec_draws[:50]) == list(range(900, 950))
    assert sorted(rec_draws[50:100]) == list(range(900, 950))
    assert rec_draws[:50] != rec_draws[50:100]


def test_deterministic_for_seed_and_differs_across_seeds():
    a = _draw(GroupBalancedSampler(RECS, batch_size=4, seed=5), 500)
    b = _draw(GroupBalancedSampler(RECS, batch_size=4, seed=5), 500)
    c = _draw(GroupBalancedSampler(RECS, batch_size=4, seed=6), 500)
    assert a == b and a != c


def test_stream_independent_of_batch_size():
    a = _draw(GroupBalancedSampler(RECS, batch_size=1, seed=2), 5000)
    b = _draw(GroupBalancedSampler(RECS, batch_size=7, seed=2), 5000)
    assert a == b
    assert GroupBalancedSampler(RECS, seed=2).global_indices(4090, 4200) == a[4090:4200]  # crosses a block


@pytest.mark.parametrize("B,W", [(3, 2), (4, 3)])
def test_ranks_concatenate_to_single_process_batches(B, W):
    steps = 1500  # B*W*steps crosses several 4096-position blocks
    per_rank = [_draw(GroupBalancedSampler(RECS, batch_size=B, seed=9, rank=r, world_size=W), B * steps)
                for r in range(W)]
    single = _draw(GroupBalancedSampler(RECS, batch_size=B * W, seed=9), B * W * steps)
    for t in range(steps):
        glob = sum((per_rank[r][t * B:(t + 1) * B] for r in range(W)), [])
        assert glob == single[t * B * W:(t + 1) * B * W]
    assert per_rank[0] != per_rank[1]


@pytest.mark.parametrize("k,m", [(0, 10), (5, 17), (4096 * 2 + 3, 50)])
def test_resume_mid_stream_exact(k, m):
    s = GroupBalancedSampler(RECS, batch_size=4, seed=11, rank=1, world_size=2)
    it = iter(s)
    _ = list(itertools.islice(it, k))
    state = s.state_dict()
    expected = list(itertools.islice(it, m))
    fresh = GroupBalancedSampler(RECS, batch_size=4, seed=11, rank=1, world_size=2)
    fresh.load_state_dict(state)
    assert _draw(fresh, m) == expected


def test_load_state_rejects_other_stream():
    state = GroupBalancedSampler(RECS, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        GroupBalancedSampler(RECS, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        GroupBalancedSampler(RECS[:-1], seed=1).load_state_dict(state)


def test_fixed_length_and_bad_args():
    s = GroupBalancedSampler(RECS, batch_size=3, seed=0, num_samples=10)
    assert len(s) == 10 and len(list(s)) == 10 and list(s) == []  # exhausted, state kept
    with pytest.raises(TypeError, match="infinite"):
        len(GroupBalancedSampler(RECS))
    with pytest.raises(ValueError, match="rank"):
        GroupBalancedSampler(RECS, rank=2, world_size=2)
    with pytest.raises(ValueError, match="group 'ocr'"):
        GroupBalancedSampler([{"id": "x", "group": "ocr", "dataset": "d"}])
    with pytest.raises(ValueError, match="no records"):
        GroupBalancedSampler([])


def test_works_with_torch_dataloader():
    import torch.utils.data as tud
    s = GroupBalancedSampler(RECS, batch_size=4, seed=0, num_samples=12)
    loader = tud.DataLoader(np.arange(len(RECS)), batch_size=4, sampler=s)
    got = [b.tolist() for b in loader]
    assert sum(got, []) == GroupBalancedSampler(RECS, seed=0).global_indices(0, 12)


# -- batching="one_group": the release's batching (OFFICIAL.md) ------------------------------------------------------
# All four groups, very unequal sizes; 'reg' (7 records) wraps its group epoch inside a single global batch.
SIZES4 = {("general", "caps"): 120, ("general", "vqa"): 60, ("rec", "refcoco"): 40, ("reg", "refcoco"): 7,
          ("document", "docvqa"): 25, ("document", "chartqa"): 30}
RECS4 = [{"id": f"{g}-{d}-{i}", "group": g, "dataset": d} for (g, d), n in SIZES4.items() for i in range(n)]


def _one_group(B, W=1, G=None, seed=4, rank=0, records=RECS4, **kw):
    return GroupBalancedSampler(records, batch_size=B, seed=seed, rank=rank, world_size=W, batching="one_group",
                                global_batch_size=G, **kw)


def _global_batches(B, W, G, steps, seed=4, records=RECS4):
    """The global batches of `steps` optimizer steps as the ranks see them: per step, A = G / (B·W) micro-steps,
    each the ranks' micro-batches concatenated in rank order."""
    A = G // (B * W)
    per_rank = [_draw(_one_group(B, W, G, seed, r, records), B * A * steps) for r in range(W)]
    out = []
    for s in range(steps):
        batch = []
        for m in range(s * A, (s + 1) * A):
            for r in range(W):
                batch += per_rank[r][m * B:(m + 1) * B]
        out.append(batch)
    return out


@pytest.mark.parametrize("B,W,G", [(4, 1, 4), (2, 1, 8), (3, 2, 6), (2, 2, 12), (1, 3, 6)])
def test_one_group_every_global_batch_one_group_in_turn(B, W, G):
    batches = _global_batches(B, W, G, steps=13)
    groups = []
    for batch in batches:
        assert len(batch) == G
        in_batch = {RECS4[i]["group"] for i in batch}
        assert len(in_batch) == 1, in_batch  # every record of an optimizer step from one group
        groups.append(in_batch.pop())
    # Round-robin in their file order (General, REC, REG, Doc), starting with general.
    order = ["general", "rec", "reg", "document"]
    assert groups == [order[s % 4] for s in range(13)]


def test_one_group_skips_absent_groups_in_turn():
    batches = _global_batches(4, 1, 4, steps=7, records=RECS)  # RECS has no 'reg'
    assert [RECS[b[0]]["group"] for b in batches] == ["general", "rec", "document"] * 2 + ["general"]


def test_one_group_stream_depends_on_global_batch_only():
    # The same global batch of 12 split as 1 rank x 12, 1 rank x 6 x 2 accumulation, 2 ranks x 3 x 2, 3 ranks x 4.
    ref = _global_batches(12, 1, 12, steps=20)
    for B, W in [(6, 1), (3, 2), (4, 3), (2, 2)]:
        assert _global_batches(B, W, 12, steps=20) == ref, (B, W)
    assert GroupBalancedSampler(RECS4, batching="one_group", global_batch_size=12, seed=4).global_indices(0, 240) \
        == sum(ref, [])
    # Starting anywhere (a resume point) gives the same positions: 30 is mid-cycle, 150 in the third cycle.
    s = GroupBalancedSampler(RECS4, batching="one_group", global_batch_size=12, seed=4)
    assert s.global_indices(30, 100) == sum(ref, [])[30:100] and s.global_indices(150, 231) == sum(ref, [])[150:231]
    assert _global_batches(8, 1, 8, steps=30) != ref  # another global batch size gives other turns


def test_one_group_world_size_2_is_the_union_of_world_size_1():
    B, steps = 4, 50
    r0, r1 = (_draw(_one_group(B, 2, 8, rank=r), B * steps) for r in (0, 1))
    single = _draw(_one_group(2 * B, 1, 8), 2 * B * steps)
    for t in range(steps):
        assert r0[t * B:(t + 1) * B] + r1[t * B:(t + 1) * B] == single[t * 2 * B:(t + 1) * 2 * B]
    assert not set(r0[:B]) & set(r1[:B])  # the ranks share no record within a step (a group epoch)


def test_one_group_deterministic_and_seeded():
    a, b, c = (_draw(_one_group(4, G=8, seed=s), 400) for s in (7, 7, 8))
    assert a == b and a != c
    assert [RECS4[i]["group"] for i in a] == [RECS4[i]["group"] for i in c]  # the turns do not depend on the seed


def test_one_group_each_record_once_per_group_epoch_and_datasets_proportional():
    idx = _draw(_one_group(5, G=5), 5 * 4 * 60)  # 60 turns of each group
    by_group = {g: [i for i in idx if RECS4[i]["group"] == g] for g in ("general", "rec", "reg", "document")}
    assert all(len(v) == 300 for v in by_group.values())
    rec = by_group["rec"]  # 40 records: consecutive blocks of 40 draws are permutations
    first = min(i for i, r in enumerate(RECS4) if r["group"] == "rec")
    for e in range(7):
        assert sorted(rec[e * 40:(e + 1) * 40]) == list(range(first, first + 40))
    caps = sum(RECS4[i]["dataset"] == "caps" for i in by_group["general"][:180])  # one general epoch
    assert caps == 120


@pytest.mark.parametrize("k,m", [(0, 9), (3, 20), (8, 41), (57, 100)])
def test_one_group_resume_mid_batch_exact(k, m):
    # Rank 1 of 2, micro-batch 3, accumulation 2 (G = 12): k = 3 is mid global batch, 57 mid micro-batch.
    s = _one_group(3, 2, 12, rank=1)
    it = iter(s)
    _ = list(itertools.islice(it, k))
    state = s.state_dict()
    expected = list(itertools.islice(it, m))
    fresh = _one_group(3, 2, 12, rank=1)
    fresh.load_state_dict(state)
    assert _draw(fresh, m) == expected


def test_one_group_state_and_argument_checks():
    state = _one_group(3, 2, 12).state_dict()
    assert state["batching"] == "one_group" and state["global_batch_size"] == 12
    with pytest.raises(ValueError, match="global_batch_size"):
        _one_group(3, 2, 24).load_state_dict(state)
    with pytest.raises(ValueError, match="batching"):
        GroupBalancedSampler(RECS4, batch_size=3, world_size=2, seed=4).load_state_dict(state)
    old = GroupBalancedSampler(RECS4, seed=4).state_dict()
    del old["batching"], old["global_batch_size"]  # a state saved before the option: mixed
    GroupBalancedSampler(RECS4, seed=4).load_state_dict(old)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        _one_group(4, 2, 12)
    with pytest.raises(ValueError, match="group_weights"):
        _one_group(4, group_weights={"rec": 1})
    with pytest.raises(ValueError, match="batching must be one of"):
        GroupBalancedSampler(RECS4, batching="per_group")


def test_one_group_with_torch_dataloader():
    import torch.utils.data as tud
    s = _one_group(4, G=8, num_samples=64)
    loader = tud.DataLoader(np.arange(len(RECS4)), batch_size=4, sampler=s)
    batches = [b.tolist() for b in loader]
    assert len(batches) == 16
    for j in range(0, 16, 2):  # two micro-batches per optimizer step
        assert len({RECS4[i]["group"] for i in batches[j] + batches[j + 1]}) == 1
