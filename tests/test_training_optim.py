import math

import pytest
import torch

from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig
from hicmae.training.optim import (WarmupCosine, build_optimizer, finetune_param_groups, layer_id,
                                   pretrain_param_groups, scale_lr, warmup_cosine)
from training_helpers import tiny_config


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_pretrain_weight_decay_exclusions_follow_the_original():
    model = HiCMAEPretrain(tiny_config())
    decay, no_decay = pretrain_param_groups(model, 0.05)
    nd = _names(model, no_decay)
    assert "video_branch.mask_token" in nd
    assert "audio_branch.mask_token" in _names(model, decay)  # quirk 13: the audio mask token is decayed
    assert all(n.endswith(".bias") or p.ndim <= 1 or n == "video_branch.mask_token"
               for n, p in model.named_parameters() if n in nd)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_layer_ids_and_scales_match_reference_11_2_for_the_base_model():
    model = HiCMAEClassifier(ModelConfig.preset("base"), num_classes=6)
    assert layer_id("video_encoder.patch_embed.proj.weight", 10, 2) == 0
    assert layer_id("audio_encoder.blocks.0.attn.qkv.weight", 10, 2) == 1
    assert layer_id("video_encoder.blocks.9.mlp.fc1.weight", 10, 2) == 10
    assert layer_id("fusion.audio_blocks.1.attn.q.weight", 10, 2) == 12
    assert layer_id("video_layer_weights", 10, 2) == 13
    assert layer_id("head.weight", 10, 2) == 13
    groups = finetune_param_groups(model, 0.05, 0.75, 10, 2)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert scale["video_encoder.patch_embed.proj.weight"] == pytest.approx(0.0238, abs=1e-4)
    assert scale["audio_encoder.blocks.0.norm1.weight"] == pytest.approx(0.0317, abs=1e-4)
    assert scale["video_encoder.blocks.9.attn.proj.weight"] == pytest.approx(0.4219, abs=1e-4)
    assert scale["fusion.video_blocks.0.mlp.fc2.weight"] == pytest.approx(0.5625)
    assert scale["fusion.audio_blocks.1.mlp.fc2.weight"] == pytest.approx(0.75)
    assert scale["head.weight"] == scale["fc_norm.weight"] == scale["video_encoder.norm.weight"] == 1.0
    assert wd["video_layer_weights"] == wd["head.bias"] == wd["fc_norm.weight"] == 0.0
    assert wd["head.weight"] == wd["video_encoder.blocks.3.attn.qkv.weight"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_schedule_warms_up_from_zero_then_cosine_to_min():
    assert scale_lr(1e-3, 56) == pytest.approx(2.1875e-4)
    assert scale_lr(3e-4, 160) == pytest.approx(1.875e-4)
    total, warm, peak, floor = 100, 10, 1.0, 0.1
    lrs = [warmup_cosine(s, total, warm, peak, floor) for s in range(total)]
    assert lrs[0] == 0.0 and lrs[9] == pytest.approx(peak)  # linspace(0, peak, warm)
    assert lrs[10] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(total, total, warm, peak, floor) == pytest.approx(floor)


def test_scheduler_applies_layer_scale_and_fixed_lr_groups():
    a, b, c = (torch.nn.Parameter(torch.zeros(2, 2)) for _ in range(3))
    groups = [{"params": [a], "weight_decay": 0.0, "lr_scale": 1.0}, {"params": [b], "weight_decay": 0.0, "lr_scale": 0.5},
              {"params": [c], "weight_decay": 0.0, "lr_scale": 1.0, "fixed_lr": 0.01}]
    opt = build_optimizer(groups, 1.0, (0.9, 0.999))
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=5, peak_lr=1.0, min_lr=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.01]
    for _ in range(4):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.5, 0.01])
