import pickle
import zipfile

import numpy as np
import pytest
import torch

from hicmae.data.media_writer import tone, write_wav
from hicmae.errors import CheckpointError, DataError, describe_content


@pytest.mark.parametrize("cls", [DataError, CheckpointError])
def test_path_errors_survive_pickling_as_in_dataloader_workers(cls):
    err = pickle.loads(pickle.dumps(cls("/data/a.mp4", "truncated file")))
    assert type(err) is cls and err.path == "/data/a.mp4" and err.reason == "truncated file"
    assert str(err) == "/data/a.mp4: truncated file"


def test_an_error_about_a_setting_names_the_setting_first_and_survives_pickling():
    err = pickle.loads(pickle.dumps(DataError("/x/val.csv", "does not exist", option="data.val_manifest")))
    assert str(err) == "data.val_manifest: /x/val.csv does not exist"
    assert err.path == "/x/val.csv" and err.option == "data.val_manifest"


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello")


def _png(path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")


def _safetensors(path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(path))


@pytest.mark.parametrize("write,expected", [
    (lambda p: p.write_text("a,b\n1,2\n"), "text"),
    (lambda p: p.write_text("caf\u00e9 " * 300), "text"),  # a multi-byte character cut by the 1 KB window
    (lambda p: p.write_text("<!doctype html><html></html>"), "an HTML page (a download that returned a web page?)"),
    (lambda p: p.write_bytes(b""), "an empty file (0 bytes)"),
    (_zip, "a zip archive"),
    (lambda p: torch.save({"w": torch.zeros(2)}, p), "a zip archive"),  # what torch.save writes
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "a Python pickle"),
    (_safetensors, "a safetensors file"),
    (_png, "a PNG image"),
    (lambda p: write_wav(p.with_suffix(".wav"), tone(0.1)).rename(p), "a WAV audio file"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), None),  # nothing recognisable
])
def test_describe_content_says_what_a_file_looks_like(tmp_path, write, expected):
    path = tmp_path / "file.bin"
    write(path)
    assert describe_content(path) == expected


def test_describe_content_recognises_a_real_video(media):
    assert describe_content(media.video) == "an MP4/MOV file"
    assert describe_content(media.missing) is None
