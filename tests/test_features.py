"""`hicmae extract-features`: per-clip embeddings of real clips, deterministic, in Parquet or .npy."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from hicmae.checkpoint import load_state_dict_into
from hicmae.cli import main
from hicmae.features import FeatureExtractor, extract_features, read_features
from hicmae.hub import save_release_folder
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain
from training_helpers import make_tiny_demo, tiny_config

NUM_CLIPS = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    make_tiny_demo(root / "data", num_clips=NUM_CLIPS, num_classes=2)
    manifest = root / "data" / "finetune.csv"
    torch.manual_seed(0)
    classifier = HiCMAEClassifier(tiny_config(), 2).eval()
    with torch.no_grad():  # layer weights other than uniform, so the HFF weighting is exercised
        classifier.video_layer_weights.copy_(torch.tensor([0.2, 1.5]))
        classifier.audio_layer_weights.copy_(torch.tensor([-1.0, 0.3]))
    release = save_release_folder(classifier, root / "clf", task="classification", class_names=["a", "b"],
                                  sampling_rate=2)
    return {"root": root, "manifest": manifest, "classifier": classifier, "release": release}


def _views_by_hand(extractor, manifest):
    """Every evaluation view of every clip, straight from the dataset (no DataLoader, no batching)."""
    from hicmae.data.manifest import read_manifest

    views = extractor.dataset(read_manifest(manifest)).views
    per_clip = views.num_views
    return [[views[c * per_clip + v] for v in range(per_clip)] for c in range(len(views) // per_clip)]


def test_default_feature_is_what_the_classifier_head_sees_averaged_over_views(demo, tmp_path):
    out = tmp_path / "f.parquet"
    summary = extract_features(demo["release"], demo["manifest"], out, batch_size=3)
    assert summary.failed == [] and summary.shapes == {"fusion": (128,)} and summary.outputs == [out]
    features, ids = read_features(out)
    assert features.shape == (NUM_CLIPS, 128)
    assert [r["row"] for r in ids] == list(range(NUM_CLIPS)) and [r["line"] for r in ids] == [2, 3, 4, 5]
    assert ids[1]["video"].endswith("clips/clip_0001.mp4") and ids[1]["audio"].endswith("clip_0001.wav")
    model = demo["classifier"]
    extractor = FeatureExtractor(demo["release"])
    with torch.no_grad():
        for clip, views in enumerate(_views_by_hand(extractor, demo["manifest"])):
            assert len(views) == 2  # two temporal segments, one crop
            expected = model.forward_features(torch.stack([v["video"] for v in views]),
                                              torch.stack([v["audio"] for v in views])).mean(0)
            np.testing.assert_allclose(features[clip], expected.numpy(), atol=1e-5, rtol=1e-5)
    meta = json.loads(pq.read_schema(out).metadata[b"hicmae"])
    assert meta["features"] == {"fusion": [128]} and meta["views_per_clip"] == 2 and meta["kind"] == "classifier"
    assert meta["preprocessing"]["sampling_rate"] == 2


def test_per_modality_and_per_layer_features_fit_together(demo, tmp_path):
    names = ["fusion", "video_hff", "audio_hff", "fused_video", "fused_audio", "video_layers", "audio_layers"]
    summary = extract_features(demo["release"], demo["manifest"], tmp_path / "all.parquet", features=names)
    assert summary.shapes == {"fusion": (128,), "video_hff": (32,), "audio_hff": (32,), "fused_video": (32,),
                              "fused_audio": (32,), "video_layers": (2, 32), "audio_layers": (2, 32)}
    columns = pq.read_schema(tmp_path / "all.parquet").names
    assert {"video_layer_0", "video_layer_1", "audio_layer_0", "audio_layer_1"} <= set(columns)
    got = {n: read_features(tmp_path / "all.parquet", n)[0] for n in names}
    model = demo["classifier"]
    for m in ("video", "audio"):  # the HFF is the layers weighted by softmax(layer weights)
        w = getattr(model, f"{m}_layer_weights").detach().softmax(0).numpy()
        np.testing.assert_allclose(got[f"{m}_hff"], (got[f"{m}_layers"] * w[None, :, None]).sum(1), atol=1e-5)
    # fusion = fc_norm of the concatenation; the mean over views commutes with neither, so check per view
    extractor = FeatureExtractor(demo["release"])
    views = _views_by_hand(extractor, demo["manifest"])[0]
    parts = extractor.features(torch.stack([v["video"] for v in views]), torch.stack([v["audio"] for v in views]))
    cat = torch.cat([parts["video_hff"], parts["audio_hff"], parts["fused_video"], parts["fused_audio"]], -1)
    torch.testing.assert_close(parts["fusion"], model.fc_norm(cat))
    np.testing.assert_allclose(got["fused_audio"][0], parts["fused_audio"].mean(0).numpy(), atol=1e-5)


def test_npy_and_parquet_agree_and_batching_does_not_change_features(demo, tmp_path):
    extract_features(demo["release"], demo["manifest"], tmp_path / "p.parquet", features=["fusion", "audio_layers"],
                     batch_size=1)
    summary = extract_features(demo["release"], demo["manifest"], tmp_path / "n.npy",
                               features=["fusion", "audio_layers"], batch_size=5)
    assert [p.name for p in summary.outputs] == ["n.fusion.npy", "n.audio_layers.npy", "n.csv"]
    for name in ("fusion", "audio_layers"):
        a, ids_p = read_features(tmp_path / "p.parquet", name)
        b, ids_n = read_features(tmp_path / "n.npy", name)
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert [r["video"] for r in ids_p] == [r["video"] for r in ids_n]
    one = extract_features(demo["release"], demo["manifest"], tmp_path / "one.npy")
    assert [p.name for p in one.outputs] == ["one.npy", "one.csv"]
    np.testing.assert_array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "n.fusion.npy"))


def test_pretraining_release_gives_its_encoders_features(demo, tmp_path):
    torch.manual_seed(1)
    pretrain = HiCMAEPretrain(tiny_config()).eval()
    release = save_release_folder(pretrain, tmp_path / "pre", sampling_rate=2)
    extract_features(release, demo["manifest"], tmp_path / "pre.parquet", features=["fusion", "video_layers"])
    fusion, _ = read_features(tmp_path / "pre.parquet")
    layers, _ = read_features(tmp_path / "pre.parquet", "video_layers")
    # What fine-tuning would start from: the encoders and fusion loaded into a fresh classifier.
    reference = HiCMAEClassifier(tiny_config(), 0).eval()
    load_state_dict_into(reference, pretrain.state_dict())
    extractor = FeatureExtractor(release)
    with torch.no_grad():
        views = _views_by_hand(extractor, demo["manifest"])[2]
        video = torch.stack([v["video"] for v in views])
        expected = reference.forward_features(video, torch.stack([v["audio"] for v in views])).mean(0)
        _, own_layers = pretrain.video_encoder(video, return_layers=[0, 1])
    np.testing.assert_allclose(fusion[2], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(layers[2], torch.stack([x.mean(1) for x in own_layers], 1).mean(0).numpy(), atol=1e-5)


def test_a_bad_row_is_recorded_and_the_others_are_unaffected(demo, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo["manifest"].parent, data)
    lines = (data / "finetune.csv").read_text().splitlines()
    lines.insert(2, "clips/missing.mp4,clips/missing.wav,anger,0")
    (data / "finetune.csv").write_text("\n".join(lines) + "\n")
    code = main(["extract-features", str(demo["release"]), str(data / "finetune.csv"), str(tmp_path / "f.parquet"),
                 "--batch-size", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "failed: row 1 " in err and "missing.mp4" in err
    features, ids = read_features(tmp_path / "f.parquet")
    assert ids[1]["error"] and "missing.mp4" in ids[1]["error"] and np.isnan(features[1]).all()
    assert pq.read_table(tmp_path / "f.parquet").column("fusion").null_count == 1
    good, _ = read_features(extract_features(demo["release"], demo["manifest"], tmp_path / "ok.npy").outputs[0])
    np.testing.assert_allclose(np.delete(features, 1, axis=0), good, atol=1e-6)


def test_cli_writes_npy_with_a_progress_bar_and_refuses_bad_requests(demo, tmp_path, capsys):
    out = tmp_path / "f.npy"
    assert main(["extract-features", str(demo["release"]), str(demo["manifest"]), str(out), "--progress"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {NUM_CLIPS} of {NUM_CLIPS} clips (fusion 128)" in captured.out
    assert "features" in captured.err and f"{NUM_CLIPS}/{NUM_CLIPS}" in captured.err
    assert np.load(out).shape == (NUM_CLIPS, 128) and (tmp_path / "f.csv").exists()
    audio_only = save_release_folder(HiCMAEClassifier(tiny_config(), 2, modalities=("audio",)), tmp_path / "a")
    for argv, message in (
            ([str(demo["release"]), str(demo["manifest"]), str(tmp_path / "x.npy"), "--features", "faces"],
             "error: unknown features ['faces']: choose from fusion, video_hff"),
            ([str(audio_only), str(demo["manifest"]), str(tmp_path / "x.npy"), "--features", "fused_video"],
             "error: this model has no fused_video (modalities ['audio']): it has fusion, audio_hff, audio_layers"),
            ([str(demo["release"]), str(demo["manifest"]), str(tmp_path / "x.txt")],
             "the output must end in .parquet or .npy")):
        assert main(["extract-features", *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()
