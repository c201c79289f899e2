"""Data files are found in the documented order, verified by sha256, and fail with clear messages."""

import shutil

import pytest
from helpers import data_available

from metalab.data import files
from metalab.errors import DataError

needs_val_split = pytest.mark.skipif(
    not data_available("omniglot/splits/vinyals/val.txt"),
    reason="shared/data/omniglot/splits not found (the real file is copied)",
)


def test_missing_file_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(files.ENV_VAR, str(tmp_path / "env_dir"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "_REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataError) as info:
        files.locate("mnist/mnist.npz", data_dir=None)
    message = str(info.value)
    assert "mnist/mnist.npz" in message
    for d in files.candidate_dirs():
        assert str(d.resolve()) in message


def test_explicit_data_dir_is_the_only_place(tmp_path):
    assert files.candidate_dirs(tmp_path) == [tmp_path]
    with pytest.raises(DataError, match=str(tmp_path)):
        files.locate("omniglot/omniglot.npz", data_dir=tmp_path)


def test_env_var_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv(files.ENV_VAR, str(tmp_path))
    assert files.candidate_dirs()[0] == tmp_path


@needs_val_split
def test_corrupt_file_is_refused(tmp_path):
    real = files.locate("omniglot/splits/vinyals/val.txt")
    bad = tmp_path / "omniglot/splits/vinyals/val.txt"
    bad.parent.mkdir(parents=True)
    shutil.copy(real, bad)
    with open(bad, "r+b") as f:  # flip one byte
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    with pytest.raises(DataError, match="corrupt"):
        files.locate("omniglot/splits/vinyals/val.txt", data_dir=tmp_path)


@needs_val_split
def test_good_copy_elsewhere_is_accepted(tmp_path):
    real = files.locate("omniglot/splits/vinyals/val.txt")
    good = tmp_path / "omniglot/splits/vinyals/val.txt"
    good.parent.mkdir(parents=True)
    shutil.copy(real, good)
    assert files.locate("omniglot/splits/vinyals/val.txt", data_dir=tmp_path) == good
