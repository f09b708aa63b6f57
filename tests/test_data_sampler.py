"""ClipSampler: each process's share of an epoch, the random key of every sample, and starting part-way."""

from hicmae.data.sampler import ClipSampler, sample_seed


def _share(n: int, rank: int, epoch: int = 0, train: bool = True, world: int = 2) -> list[tuple[int, int]]:
    sampler = ClipSampler(range(n), train=train, seed=7, num_replicas=world, rank=rank)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_processes_share_an_epoch_and_a_padded_clip_gets_its_own_draw_on_each():
    rank0, rank1 = _share(11, 0), _share(11, 1)  # 11 clips on 2 processes: one clip is read twice (padding)
    assert len(rank0) == len(rank1) == 6
    indices0, indices1 = [i for i, _ in rank0], [i for i, _ in rank1]
    assert set(indices0) | set(indices1) == set(range(11))
    (twice,) = set(indices0) & set(indices1)
    seed0 = dict(rank0)[twice]
    assert seed0 != dict(rank1)[twice]  # the rank is part of the key
    assert seed0 == sample_seed(7, 0, 0, twice)  # (data seed, epoch, rank, index)


def test_the_order_and_the_draws_change_every_epoch_and_repeat_for_the_same_epoch():
    assert _share(16, 0, epoch=3) == _share(16, 0, epoch=3)
    e0, e1 = _share(16, 0, epoch=0), _share(16, 0, epoch=1)
    assert [i for i, _ in e0] != [i for i, _ in e1]
    assert not set(e0) & set(e1)  # no (index, seed) pair repeats: a clip read again gets new draws


def test_evaluation_keeps_the_order_and_keys_draws_on_the_clip_alone():
    rank0, rank1 = _share(6, 0, epoch=5, train=False), _share(6, 1, epoch=2, train=False)
    assert [i for i, _ in rank0] == [0, 2, 4] and [i for i, _ in rank1] == [1, 3, 5]
    one_process = dict(_share(6, 0, train=False, world=1))
    assert dict(rank0 + rank1) == one_process  # test scores do not depend on the number of processes


def test_starting_part_way_skips_the_trained_samples_but_keeps_the_epoch_length():
    sampler = ClipSampler(range(20), train=True, seed=1, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.start_at(epoch=4, position=6)
    assert list(sampler) == full[6:] and len(sampler) == 10
    sampler.set_epoch(5)  # the next epoch starts from its beginning again
    assert len(list(sampler)) == 10
