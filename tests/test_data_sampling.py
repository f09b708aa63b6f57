"""Frame and audio-sample selection against the original's loaders (REFERENCE 9.3, 9.4)."""

import numpy as np
import pytest

from hicmae.data import sampling as S


def original_tsn_frames(start: int, n: int, new_length: int, new_step: int) -> list[int]:
    """VideoMAE's ``_video_TSN_decord_batch_loader`` for one segment without temporal jitter, written
    out step by step: a 1-based offset, one frame per step, and a move by ``new_step`` only while
    offset + step stays below the frame count."""
    frames = []
    offset = start + 1  # _sample_train_indices returns 1-based offsets
    for _ in range(new_length):
        if offset <= n:
            frames.append(offset - 1)
        else:
            frames.append(offset - 1)
        if offset + new_step < n:
            offset = offset + new_step
    return frames


def original_start_range(n: int, new_length: int, new_step: int) -> range:
    """Starts the original's ``_sample_train_indices`` can draw (one segment)."""
    skip = new_length * new_step
    if n - skip + 1 > 0:
        return range(0, n - skip + 1)
    return range(0, 1)


@pytest.mark.parametrize("clip_len,stride", [(16, 4), (16, 3), (8, 2), (4, 1), (1, 5)])
def test_pretrain_indices_match_the_original_loop_for_every_length_and_start(clip_len, stride):
    for n in range(1, 201):
        for start in original_start_range(n, clip_len, stride):
            expected = original_tsn_frames(start, n, clip_len, stride)
            got = S.pretrain_indices_from(start, n, clip_len, stride)
            assert got.tolist() == expected, (n, start)
            assert got.dtype == np.int64


def test_pretrain_indices_known_cases():
    # Hand-checked: 9 frames, stride 4: 1-based offsets 1 -> 5, then 5 + 4 = 9 is not < 9, so it stays.
    assert S.pretrain_indices(9, 4, 4).tolist() == [0, 4, 4, 4]
    assert S.pretrain_indices(10, 4, 4).tolist() == [0, 4, 8, 8]
    assert S.pretrain_indices(1, 3, 4).tolist() == [0, 0, 0]
    # A clip exactly clip_len long at stride 1 repeats its second-to-last frame, as the original does.
    assert S.pretrain_indices(4, 4, 1).tolist() == [0, 1, 2, 2]


def test_pretrain_start_is_uniform_over_its_whole_range():
    rng = np.random.default_rng(0)
    n, clip_len, stride = 71, 16, 4  # starts 0..7
    starts = np.array([S.pretrain_indices(n, clip_len, stride, rng)[0] for _ in range(4000)])
    counts = np.bincount(starts, minlength=9)
    assert counts[8] == 0 and counts[:8].min() > 0
    assert np.abs(counts[:8] / 4000 - 1 / 8).max() < 0.025
    # Shorter than clip_len * stride: always from frame 0.
    assert {int(S.pretrain_indices(63, clip_len, stride, rng)[0]) for _ in range(50)} == {0}
    # Seeded: the same rng seed gives the same clip.
    a = S.pretrain_indices(200, 16, 4, np.random.default_rng(5))
    b = S.pretrain_indices(200, 16, 4, np.random.default_rng(5))
    assert a.tolist() == b.tolist()


def test_relative_audio_range_hand_computed():
    # 101 frames, first 10, span 64: end frame 74; 10/100 and 74/100 of 48000 samples.
    assert S.relative_audio_range(10, 101, 48000, 64) == (4800, 35520)
    # The end frame is clamped to n - 1: frames 50..100 of 101 -> 0.5 .. 1.0 of the audio.
    assert S.relative_audio_range(50, 101, 48000, 64) == (24000, 48000)
    # int() truncates both ends: 1/3 and 2/3 of 10000 samples.
    assert S.relative_audio_range(1, 4, 10000, 1) == (3333, 6666)


def test_relative_audio_range_one_frame_clip_uses_the_whole_short_audio():
    # n == 1: both timestamps are 0, the empty segment is replaced by the whole (short) audio.
    assert S.relative_audio_range(0, 1, 20000, 64) == (0, 20000)


def test_relative_audio_range_short_segment_uses_the_whole_audio_below_target_length():
    # 200 frames, frames 198..199: int(198/199 * 40000) = 39798 .. 40000 = 202 samples -> too short;
    # 40000 < 2.56 s * 16000 = 40960, so the whole audio is used.
    assert S.relative_audio_range(198, 200, 40000, 64) == (0, 40000)
    # The threshold is target_length / 100 seconds, not the video span: 40000 samples is 2.5 s.
    with pytest.raises(ValueError, match="202 samples"):
        S.relative_audio_range(198, 200, 40000, 64, target_seconds=2.5)


def test_relative_audio_range_raises_for_a_short_segment_of_long_audio():
    # int(198/199 * 41000) = 40793 .. 41000 = 207 samples; 41000 >= 40960: too long to stand in, the original raises.
    with pytest.raises(ValueError, match="only 207 samples") as info:
        S.relative_audio_range(198, 200, 41000, 64)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("num_samples", [0, 500, 1024])
def test_relative_audio_range_raises_for_audio_of_at_most_1024_samples(num_samples):
    with pytest.raises(ValueError, match=f"only {num_samples} samples"):
        S.relative_audio_range(0, 50, num_samples, 64)
    assert S.relative_audio_range(0, 50, 1025, 64) == (0, 1025)
