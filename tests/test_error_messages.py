"""Errors a user meets in the first hour name the setting or file at fault, in one line."""

import os

import pytest

from conftest import write_csv
from hicmae.data import HiCMAEDataModule
from hicmae.data.manifest import read_manifest
from hicmae.errors import DataError

SIZES = dict(img_size=32, num_frames=4, audio_frames=64, mel_bins=32, patch_size=16, tubelet_size=2)


@pytest.mark.parametrize("option", ["train_manifest", "val_manifest", "test_manifest"])
def test_a_missing_manifest_names_the_data_option_it_came_from(media, tmp_path, option):
    good = write_csv(tmp_path / "good.csv", ["video", "audio", "label"], [(media.video, media.wav, "a")])
    manifests = dict(train_manifest=good, val_manifest=good, test_manifest=good)
    manifests[option] = str(tmp_path / "typo.csv")
    dm = HiCMAEDataModule(**manifests, task="classification", num_workers=0, **SIZES)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert str(info.value) == f"data.{option}: {tmp_path / 'typo.csv'} does not exist"
    assert info.value.path == str(tmp_path / "typo.csv")


def test_a_relative_or_folder_manifest_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = HiCMAEDataModule(val_manifest="splits/val.csv", task="classification", num_workers=0, **SIZES)
    with pytest.raises(DataError) as info:
        dm.setup("validate")
    assert str(info.value) == f"data.val_manifest: splits/val.csv does not exist (relative to {os.getcwd()})"
    dm = HiCMAEDataModule(test_manifest=str(tmp_path), task="classification", num_workers=0, **SIZES)
    with pytest.raises(DataError, match=r"^data\.test_manifest: .* is a folder, not a manifest file$"):
        dm.setup("test")


def test_read_manifest_alone_still_names_the_file(tmp_path):
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path / "nope.csv")
    assert str(info.value) == f"{tmp_path / 'nope.csv'}: manifest does not exist"
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{tmp_path}: expected a manifest file, found a folder"
