"""Datasets: logic gates, the linear teacher, MNIST from IDX files, and what a missing or broken MNIST file says."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dfa_lib import MNISTNotFoundError, linear_teacher, load_mnist, logic_gate, seed_everything
from dfa_lib.data import MNIST_ENV_VAR

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def test_logic_gates():
    x, y = logic_gate("xor", "01")
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.ravel().tolist() == [0, 1, 1, 0]
    x, y = logic_gate("and", "pm1")
    assert x.min() == -1 and y.ravel().tolist() == [-1, -1, -1, 1]
    with pytest.raises(ValueError, match="unknown logic gate"):
        logic_gate("nand")


def test_linear_teacher_is_exactly_linear_and_seeded():
    data, T = linear_teacher(seed=3)
    assert data.x_train.shape == (75, 30) and data.x_test.shape == (25, 30) and T.shape == (10, 30)
    torch.testing.assert_close(data.y_test, data.x_test @ T.T)
    again, _ = linear_teacher(seed=3)
    assert torch.equal(again.x_train, data.x_train)
    assert T.abs().max() <= 1


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Writes ``array`` as an IDX file of unsigned bytes, MNIST's format; ``gz``: gzipped.

    ``path`` is the file's full name (``train-images-idx3-ubyte.gz`` or without ``.gz``)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return path


def fake_mnist(folder: Path, n_train=6, n_train_labels=6, n_test=4) -> Path:
    """A folder of the four gzipped MNIST IDX files with random images and labels."""
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train_labels))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return folder


@pytest.mark.parametrize("gz,layout", [(True, ""), (False, "MNIST/raw")])
def test_mnist_from_a_folder_of_idx_files(tmp_path, gz, layout, monkeypatch):
    folder = tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28))
    labels = np.array([3, 1, 4, 1, 5])
    for stem, arr in [("train-images-idx3-ubyte", imgs), ("train-labels-idx1-ubyte", labels),
                      ("t10k-images-idx3-ubyte", imgs[:2]), ("t10k-labels-idx1-ubyte", labels[:2])]:
        write_idx(folder / (stem + ".gz" if gz else stem), arr, gz)
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path))
    data = load_mnist()
    assert data.x_train.shape == (5, 784) and data.x_train.dtype == torch.float32
    assert data.y_train.tolist() == [3, 1, 4, 1, 5] and data.y_train.dtype == torch.int64
    assert torch.allclose(data.x_train[0] * 255, torch.tensor(imgs[0].ravel(), dtype=torch.float32))
    centered = load_mnist(scale="centered")
    assert centered.x_train.min() >= -1 and centered.x_train.max() <= 1


def test_mnist_labels_and_images_must_have_the_same_count(tmp_path):
    data = load_mnist(root=fake_mnist(tmp_path))
    assert data.x_train.shape == (6, 784) and data.y_test.shape == (4,)
    (tmp_path / "bad").mkdir()
    bad = fake_mnist(tmp_path / "bad", n_train_labels=4)  # e.g. the test set's 10 000 labels beside the 60 000 training images
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz and .*train-labels-idx1-ubyte.gz disagree: "
                                         r"6 images but 4 labels"):
        load_mnist(root=bad)


def test_truncated_gz_names_the_file_and_says_to_download_again(tmp_path):
    folder = fake_mnist(tmp_path)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-40])  # gzip alone raises a bare EOFError
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is truncated or corrupt.*download it again"):
        load_mnist(root=folder)


def test_truncated_uncompressed_idx_file_too(tmp_path):
    folder = fake_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    labels = folder / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.arange(4), gz=False)
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is truncated.*download it again"):
        load_mnist(root=folder)


def test_missing_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path))
    with pytest.raises(MNISTNotFoundError, match="no MNIST IDX files"):
        load_mnist()
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(MNISTNotFoundError, match="does not exist"):
        load_mnist()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path))
    with pytest.raises(MNISTNotFoundError, match="lacks"):
        load_mnist()


def test_offline_without_folder_explains_both_ways(monkeypatch):
    monkeypatch.delenv(MNIST_ENV_VAR, raising=False)
    import dfa_lib.data as data_mod

    def offline(root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data_mod, "_mnist_from_torchvision", offline)
    with pytest.raises(MNISTNotFoundError, match=f"(?s)pip install torchvision.*{MNIST_ENV_VAR}"):
        load_mnist()


@pytest.mark.skipif(not SHARED_MNIST.is_dir() and not os.environ.get(MNIST_ENV_VAR), reason="no MNIST folder here")
def test_real_mnist_shapes_and_statistics():
    data = load_mnist(root=os.environ.get(MNIST_ENV_VAR) or SHARED_MNIST)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert torch.bincount(data.y_test).tolist()[:2] == [980, 1135]
    assert abs(data.x_train.mean().item() - 0.1307) < 1e-3


def test_seed_everything_repeats_draws():
    seed_everything(5)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(TypeError):
        seed_everything(1.5)
