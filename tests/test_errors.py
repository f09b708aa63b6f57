import pickle

import pytest

from hicmae.errors import CheckpointError, DataError


@pytest.mark.parametrize("cls", [DataError, CheckpointError])
def test_path_errors_survive_pickling_as_in_dataloader_workers(cls):
    err = pickle.loads(pickle.dumps(cls("/data/a.mp4", "truncated file")))
    assert type(err) is cls and err.path == "/data/a.mp4" and err.reason == "truncated file"
    assert str(err) == "/data/a.mp4: truncated file"
