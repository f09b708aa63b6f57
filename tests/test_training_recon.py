import pytorch_lightning as pl
import torch

from hicmae.losses import audio_target, video_target
from hicmae.masking import pretrain_masks
from hicmae.training import PretrainModule
from hicmae.training.callbacks import ReconstructionImages
from hicmae.training.recon import reconstruct_audio, reconstruct_video
from training_helpers import TINY, SyntheticClips, loader, tiny_config


def test_a_perfect_prediction_reconstructs_the_input_exactly():
    config = tiny_config()
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 3, config.num_frames, config.img_size, config.img_size, generator=g)
    audio = torch.randn(1, 1, *config.audio_size, generator=g)
    vm, am = pretrain_masks(config, batch=1, generator=g)
    v = reconstruct_video(video[0], vm[0], video_target(video, vm, config)[0], config)
    a = reconstruct_audio(audio[0], am[0], audio_target(audio, am, config)[0], config)
    assert torch.allclose(v["reconstruction"], v["target"], atol=1e-4)
    assert torch.allclose(a["reconstruction"], a["target"], atol=1e-4)
    assert torch.allclose(a["target"], audio[0, 0])
    assert not torch.allclose(v["masked"], v["target"])  # the masked view hides something
    wrong = reconstruct_video(video[0], vm[0], torch.zeros_like(video_target(video, vm, config)[0]), config)
    assert not torch.allclose(wrong["reconstruction"], wrong["target"], atol=1e-2)


def test_callback_writes_images_every_n_steps(tmp_path):
    module = PretrainModule("tiny", TINY, warmup_steps=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, default_root_dir=tmp_path, logger=pl.loggers.CSVLogger(tmp_path),
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[ReconstructionImages(every_n_steps=2)])
    trainer.fit(module, loader(SyntheticClips(8, tiny_config(), pretrain=True), batch_size=2))
    images = sorted(p.name for p in (tmp_path / "reconstructions").iterdir())
    assert images == ["step_00000002.png", "step_00000004.png"]
