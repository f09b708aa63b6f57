"""`hicmae shard` and the streaming ShardDataset on real mp4/wav clips: what is stored, how a run resumes,
how an epoch is split, and that training samples from shards are the manifest's samples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hicmae.cli import main
from hicmae.data.datasets import PretrainDataset
from hicmae.data.manifest import read_manifest
from hicmae.data.media import load_audio, open_video
from hicmae.data.sampler import sample_seed
from hicmae.data.shards.dataset import ShardDataset, batches_done_by, reader_shards, worker_batches
from hicmae.data.shards.format import read_records
from hicmae.data.transforms import pil_resize, voxceleb2_crop
from hicmae.errors import ConfigError, DataError
from training_helpers import make_tiny_demo, tiny_config

KEYS = ("video", "audio", "video_mask", "audio_mask", "label")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_demo(tmp_path_factory.mktemp("demo"), num_clips=8)


def _shard(manifest, out, *options):
    assert main(["shard", str(manifest), str(out), "--workers", "1", *map(str, options)]) == 0
    return out


def _records(folder: Path) -> dict:
    out = {}
    for tar in sorted(folder.glob("shard-*.tar")):
        with open(tar, "rb") as f:
            out.update({r.row: r for r in read_records(f, tar.name)})
    return out


def test_png_shards_hold_exactly_the_decoded_frames_timestamps_and_audio(demo, tmp_path):
    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--encoding", "png", "--size", 0, "--clips-per-shard", 3)
    manifest = read_manifest(demo / "pretrain.csv")
    records = _records(out)
    assert sorted(records) == list(range(len(manifest)))
    for row, record in records.items():
        source = manifest.rows[row]
        with open_video(source.video) as clip:
            n = len(clip)
            assert np.array_equal(record.clip().frames(range(n)), clip.frames(range(n)))
            assert np.array_equal(record.clip().timestamps(range(n)), clip.timestamps(range(n)))
        wave = load_audio(source.audio)
        assert torch.equal(record.audio().read(0.0, None), wave)  # 16-bit wav: exact
    index = json.loads((out / "index.json").read_text())
    assert index["clips"] == len(manifest) and [s["clips"] for s in index["shards"]] == [3, 3, 2]
    sums = (out / "SHA256SUMS").read_text().split()
    assert sums[1::2] == [s["name"] for s in index["shards"]] and sums[0::2] == [s["sha256"] for s in index["shards"]]


def test_samples_from_shards_are_the_samples_of_the_manifest(demo, tmp_path):
    """Same clip, same key: the same frames, crops, gain and masks (PNG at the source size, so nothing differs)."""
    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--encoding", "png", "--size", 0, "--clips-per-shard", 3)
    config = tiny_config()
    reference = PretrainDataset(read_manifest(demo / "pretrain.csv"), config, sampling_rate=2, on_bad_sample="raise")
    shards = ShardDataset(out, lambda m: PretrainDataset(m, config, sampling_rate=2, on_bad_sample="raise"),
                          batch_size=2, shuffle_buffer=3)
    rows = []
    for sample in shards:
        row = int(Path(shards.maker.manifest.rows[sample["index"]].video).stem.split("_")[-1])
        expected = reference[(row, sample_seed(0, 0, 0, row))]
        for key in KEYS:
            assert torch.equal(sample[key], expected[key]), (row, key)
        rows.append(row)
    assert sorted(rows) == list(range(8)) and rows != sorted(rows)  # every clip once, shuffled


def test_jpeg_shards_are_smaller_and_close_to_the_source(demo, tmp_path):
    png = _shard(demo / "pretrain.csv", tmp_path / "png", "--encoding", "png", "--size", 0)
    jpeg = _shard(demo / "pretrain.csv", tmp_path / "jpeg", "--encoding", "jpeg", "--quality", 90, "--size", 0)
    size = lambda folder: sum(f.stat().st_size for f in folder.glob("*.tar"))  # noqa: E731
    assert size(jpeg) < size(png)
    for row, record in _records(jpeg).items():
        with open_video(record.meta["video"]) as clip:
            source = clip.frames(range(len(clip))).astype(np.float64)
        mse = np.mean((record.clip().frames(range(len(source))) - source) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 30, row  # PSNR in dB: lossy, but close


def test_jpeg_frames_decode_in_one_batch_to_exactly_what_pillow_decodes(demo, tmp_path):
    from hicmae.data.shards.format import decode_image

    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--encoding", "jpeg", "--size", 0)
    clip = _records(out)[0].clip()
    picked = [3, 0, 3, len(clip) - 1]
    expected = np.stack([decode_image(clip.encoded(i)) for i in picked])  # Pillow, frame by frame
    assert np.array_equal(clip.frames(picked), expected)


def test_the_voxceleb2_crop_and_the_resize_are_done_once_when_sharding(demo, tmp_path):
    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--encoding", "png", "--size", 16, "--voxceleb2-crop")
    record = _records(out)[0]
    with open_video(record.meta["video"]) as clip:
        expected = pil_resize(voxceleb2_crop(clip.frames(range(len(clip))), 16), 16)
    assert np.array_equal(record.clip().frames(range(len(expected))), expected)
    assert json.loads((out / "index.json").read_text())["settings"]["voxceleb2_crop"] is True


def test_an_interrupted_sharding_run_redoes_only_the_unfinished_shard(demo, tmp_path):
    out = tmp_path / "s"
    _shard(demo / "pretrain.csv", out, "--clips-per-shard", 2, "--part", "1/2")  # shards 0 and 2 of 4
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000002.tar"]
    assert not (out / "index.json").exists()  # incomplete: no index
    # A run killed while writing shard 2: its tar is cut short, the sidecar still describes the whole.
    damaged = out / "shard-000002.tar"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    kept = (out / "shard-000000.tar").stat()
    _shard(demo / "pretrain.csv", out, "--clips-per-shard", 2)
    again = (out / "shard-000000.tar").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)  # finished: never rewritten
    assert sorted(_records(out)) == list(range(8))  # the damaged one was written again, the others added
    assert json.loads((out / "index.json").read_text())["clips"] == 8
    assert not [p for p in os.listdir(out) if ".tmp" in p]
    with pytest.raises(ConfigError, match="other settings"):
        from hicmae.data.shards.writer import ShardSettings, shard_manifest

        shard_manifest(str(demo / "pretrain.csv"), out, ShardSettings(clips_per_shard=3))


def test_a_clip_that_cannot_be_read_is_logged_with_its_reason_and_the_rest_is_packed(demo, tmp_path):
    lines = (demo / "pretrain.csv").read_text().splitlines()
    (tmp_path / "broken.mp4").write_text("not a video")
    manifest = tmp_path / "m.csv"
    columns = lines[0].count(",")
    manifest.write_text("\n".join([*lines[:4], f"{tmp_path}/broken.mp4" + "," * columns]) + "\n")
    out = _shard(manifest, tmp_path / "s", "--root", demo)
    bad = (out / "bad_clips.csv").read_text().splitlines()
    assert len(bad) == 2 and "broken.mp4" in bad[1] and "not a video" in bad[1]
    assert json.loads((out / "index.json").read_text())["clips"] == 3


def test_two_processes_with_two_workers_each_read_disjoint_shards_that_cover_the_epoch():
    shards = [f"shard-{k:06d}.tar" for k in range(9)]
    for epoch in (0, 1):
        readers = [reader_shards(shards, 0, epoch, 2, rank, 2, worker)[0] for rank in (0, 1) for worker in (0, 1)]
        flat = [s for r in readers for s in r]
        assert sorted(flat) == shards and len(set(flat)) == len(flat)
    assert reader_shards(shards, 0, 0, 2, 0, 2, 0) != reader_shards(shards, 0, 1, 2, 0, 2, 0)  # a new order
    # Batches of a rank: worker w yields batch j when j % workers == w, and a resume knows who made which.
    assert [worker_batches(7, 3, w) for w in range(3)] == [3, 2, 2]
    assert [batches_done_by(w, 3, 4) for w in range(3)] == [2, 1, 1]


def test_shards_refuse_a_voxceleb2_crop_they_do_not_hold(demo, tmp_path):
    from training_helpers import tiny_datamodule

    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--size", 32)
    dm = tiny_datamodule(demo, task="pretrain", train_manifest=None, train_shards=str(out), voxceleb2_crop=True)
    with pytest.raises(ConfigError, match="--voxceleb2-crop"):
        dm.setup("fit")
    dm = tiny_datamodule(demo, task="pretrain", train_shards=str(out))
    with pytest.raises(ConfigError, match="not both"):
        dm.setup("fit")


def test_a_missing_or_unfinished_shard_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="run `hicmae shard` first"):
        ShardDataset(tmp_path, lambda m: None, batch_size=1)


def test_shards_can_be_read_through_a_pipe_command(demo, tmp_path):
    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--clips-per-shard", 4)
    config = tiny_config()
    local = ShardDataset(out, lambda m: PretrainDataset(m, config, sampling_rate=2), batch_size=2)
    piped = ShardDataset(f"pipe:cat {out}/{{name}}", lambda m: PretrainDataset(m, config, sampling_rate=2),
                         batch_size=2)
    for a, b in zip(local, piped, strict=True):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])


def test_device_augmentation_draws_what_the_cpu_path_draws_and_differs_by_interpolation_only(demo, tmp_path):
    """Deferred samples finished by DeviceAugment (here on the CPU): masks and labels equal the CPU path's, the
    audio to float rounding (one batched fbank); video pixels differ by at most about one grey level (bilinear
    on float vs PIL on uint8)."""
    from hicmae.data.device_augment import DeviceAugment, collate_deferred, defer_pretrain_sample

    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--size", 32, "--clips-per-shard", 8)
    config = tiny_config(img_size=16)  # a real crop and resize: 32 px shards, 16 px model input
    ds = ShardDataset(out, lambda m: PretrainDataset(m, config, sampling_rate=2, on_bad_sample="raise"),
                      batch_size=4)
    records = list(_records(out).values())
    deferred, expected = [], []
    for r in records:
        index = ds.position[("shard-000000.tar", r.key)]
        deferred.append(defer_pretrain_sample(ds.maker, index, r, seed=1000 + index))
        expected.append(ds.maker.make(index, r.clip(), 0, r.meta["frames"], r.audio(), 1000 + index))
    batch = DeviceAugment(config.img_size, config.num_frames, config.audio_size)(collate_deferred(deferred))
    for key in ("video_mask", "audio_mask", "label"):
        assert torch.equal(batch[key], torch.stack([e[key] for e in expected])), key
    # The batched fbank: the per-clip Kaldi fbank up to float rounding.
    torch.testing.assert_close(batch["audio"], torch.stack([e["audio"] for e in expected]), rtol=0, atol=1e-5)
    video = torch.stack([e["video"] for e in expected])
    assert batch["video"].shape == video.shape
    grey_level = 1 / 255 / min(0.229, 0.224, 0.225)  # one uint8 step in normalised units
    assert (batch["video"] - video).abs().max() <= 2 * grey_level
    assert (batch["video"] - video).abs().mean() <= 0.5 * grey_level



def test_the_batched_fbank_is_the_kaldi_fbank_of_every_clip_up_to_rounding():
    from hicmae.data.audio import batched_fbank, fbank

    g = torch.Generator().manual_seed(0)
    lengths = [40960, 41003, 2000, 300]  # a typical segment, an odd length, a short one, one under a window
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = 0.1 * torch.randn(n, generator=g)
    feats = batched_fbank(waves, lengths)
    for i, n in enumerate(lengths):
        own = fbank(waves[i, :n])
        torch.testing.assert_close(feats[i, :len(own)], own, rtol=0, atol=1e-5)
        assert not feats[i, len(own):].any()  # frames beyond its own are zeros, as pad_or_cut pads


def test_pretraining_on_jpeg_shards_with_device_augmentation_trains_through_the_data_module(demo, tmp_path):
    import pytorch_lightning as pl

    from hicmae.training import PretrainModule
    from training_helpers import TINY, tiny_datamodule

    out = _shard(demo / "pretrain.csv", tmp_path / "s", "--size", 32, "--clips-per-shard", 2)
    seen = []

    class Shapes(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((tuple(batch["video"].shape), tuple(batch["audio"].shape), "jpegs" in batch))

    dm = tiny_datamodule(demo, task="pretrain", train_manifest=None, train_shards=str(out), device_augment=True,
                         batch_size=2, num_workers=1, persistent_workers=False)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Shapes()],
                         default_root_dir=tmp_path)
    trainer.fit(PretrainModule("tiny", TINY, base_lr=0.1, warmup_steps=1, probe_num_classes=0), datamodule=dm)
    c = tiny_config()
    assert seen == [((2, 3, c.num_frames, c.img_size, c.img_size), (2, 1, *c.audio_size), False)] * 3
    assert dm.train_dataset.defer_decode


def test_fine_tuning_reads_shards_and_leaves_out_the_test_fold(demo, tmp_path):
    import pytorch_lightning as pl

    from hicmae.training import FinetuneModule
    from training_helpers import TINY, tiny_datamodule

    out = _shard(demo / "finetune.csv", tmp_path / "s", "--size", 32, "--clips-per-shard", 3)
    seen = []

    class Rows(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.extend(batch["index"].tolist())

    dm = tiny_datamodule(demo, task="classification", train_manifest=None, train_shards=str(out), fold=1,
                         batch_size=2, test_manifest=None)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Rows()],
                         default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(FinetuneModule("tiny", TINY, num_classes=3, base_lr=0.1, warmup_epochs=0), datamodule=dm)
    folds = [row.fold for row in dm.train_dataset.maker.manifest.rows]
    assert 1 not in folds and len(seen) == len(folds) // 2 * 2 and len(set(seen)) == len(seen)


def test_a_clip_that_fails_at_training_time_is_replaced_by_the_next_under_skip_and_stops_the_run_under_raise(
        demo, tmp_path):
    from hicmae.data.media_writer import tone, write_wav

    write_wav(tmp_path / "short.wav", tone(0.05))  # 800 samples: the original's short-audio rule rejects it
    lines = (demo / "pretrain.csv").read_text().splitlines()
    first = lines[1].split(",")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([lines[0], *lines[1:4], f"{first[0]},{tmp_path}/short.wav,{first[2]}"]) + "\n")
    out = _shard(manifest, tmp_path / "s", "--root", demo, "--size", 32, "--clips-per-shard", 5)
    config = tiny_config()
    skip = ShardDataset(out, lambda m: PretrainDataset(m, config, sampling_rate=2, on_bad_sample="skip",
                                                       max_bad_fraction=0.5), batch_size=2, shuffle_buffer=1)
    rows = [skip.maker.manifest.rows[s["index"]].audio for s in skip]
    assert len(rows) == 4 and not any(r.endswith("short.wav") for r in rows)
    assert skip.maker.policy.bad == 1
    strict = ShardDataset(out, lambda m: PretrainDataset(m, config, sampling_rate=2, on_bad_sample="raise"),
                          batch_size=2, shuffle_buffer=1)
    with pytest.raises(DataError, match="short.wav"):
        list(strict)
