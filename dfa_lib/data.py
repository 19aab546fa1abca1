"""Datasets as tensors: the logic gates, Lillicrap's linear teacher, and MNIST.

Everything is returned as plain tensors already on the chosen device, so a training
loop draws mini-batches by indexing instead of iterating a DataLoader.

- ``logic_gate``      AND / XOR truth tables (chapters 2 and 8)
- ``linear_teacher``  the random linear map of Lillicrap et al. 2016 (chapter 1)
- ``load_mnist``      MNIST from an IDX folder (offline) or torchvision (online) (chapters 3-7)
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

MNIST_ENV_VAR = "DFA_MNIST_DIR"
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class Data:
    """A train/test split held as tensors: ``x_train, y_train, x_test, y_test``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self):
        for f in fields(self):  # numpy arrays become tensors (a copy); tensors are kept as they are
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                setattr(self, f.name, torch.from_numpy(np.array(value, copy=True)))
            elif not torch.is_tensor(value):
                raise TypeError(f"Data.{f.name} must be a torch.Tensor or a numpy array, got {type(value).__name__}")

    def to(self, device) -> "Data":
        return Data(*(getattr(self, f.name).to(device) for f in fields(self)))

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Data":
        """The first ``n_train`` training and ``n_test`` test examples (all where None)."""
        return Data(self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test], self.y_test[:n_test])

    def __repr__(self) -> str:
        parts = [f"{f.name}={tuple(getattr(self, f.name).shape)}" for f in fields(self)]
        return f"Data({', '.join(parts)}, device={self.x_train.device})"


# --------------------------------------------------------------------------- logic gates
def logic_gate(name: str = "xor", coding: str = "01", dtype=torch.float32, device=None):
    """The four patterns of a two-input Boolean function.

    Args:
        name: ``"xor"``, ``"and"`` or ``"or"``.
        coding: ``"01"`` for inputs and targets in {0, 1}; ``"pm1"`` for {-1, +1}
            (the coding seed 004's Hebbian networks use).

    Returns:
        ``(x, y)`` with ``x`` of shape (4, 2) and ``y`` of shape (4, 1).

    Introduced in chapter 2 (``book/02_xor_dfa.ipynb``).
    """
    table = {"xor": [0, 1, 1, 0], "and": [0, 0, 0, 1], "or": [0, 1, 1, 1]}
    if name.lower() not in table:
        raise ValueError(f"unknown logic gate {name!r}; choose one of {sorted(table)}")
    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype, device=device)
    y = torch.tensor(table[name.lower()], dtype=dtype, device=device).unsqueeze(1)
    if coding == "pm1":
        x, y = 2 * x - 1, 2 * y - 1
    elif coding != "01":
        raise ValueError(f"coding must be '01' or 'pm1', got {coding!r}")
    return x, y


# --------------------------------------------------------------------------- linear teacher
def linear_teacher(
    n_in: int = 30,
    n_out: int = 10,
    n_samples: int = 100,
    test_fraction: float = 0.25,
    teacher_range: float = 1.0,
    seed: int = 0,
    dtype=torch.float64,
    device=None,
) -> tuple[Data, torch.Tensor]:
    """Lillicrap et al.'s task: learn a fixed random linear map ``y* = T x``.

    ``T`` has entries U[-teacher_range, teacher_range], inputs are x ~ N(0, I); seed 002
    uses 100 samples split 75 / 25.  Float64 by default so that the error can fall
    towards 1e-15 as in the seed instead of stalling at float32's resolution.

    Returns ``(data, T)``.  Introduced in chapter 1 (``book/01_linear_fa.ipynb``).
    """
    gen = torch.Generator().manual_seed(seed)
    T = (torch.rand(n_out, n_in, generator=gen, dtype=dtype) * 2 - 1) * teacher_range
    x = torch.randn(n_samples, n_in, generator=gen, dtype=dtype)
    y = x @ T.T
    n_test = int(round(n_samples * test_fraction))
    perm = torch.randperm(n_samples, generator=gen)
    train_idx, test_idx = perm[n_test:], perm[:n_test]
    data = Data(x[train_idx], y[train_idx], x[test_idx], y[test_idx])
    return data.to(device) if device is not None else data, T.to(device) if device is not None else T


# --------------------------------------------------------------------------- MNIST
class MNISTNotFoundError(FileNotFoundError):
    """MNIST is neither in the folder named by ``DFA_MNIST_DIR`` nor downloadable."""


_REDOWNLOAD = "delete it and download it again (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/)"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, OSError, zlib.error) as exc:  # a cut-off download, or not gzip at all
        raise ValueError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); {_REDOWNLOAD}") from exc
    magic = int.from_bytes(raw[0:4], "big")
    if len(raw) < 4 or magic >> 8 != 0x08:  # 0x08 = unsigned byte data
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic number {magic:#x}); {_REDOWNLOAD}")
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header is cut off; {_REDOWNLOAD}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values; {_REDOWNLOAD}")
    return data.reshape(shape)


def _check_mnist_counts(arrays: dict, paths: dict | None = None) -> None:
    """Each split needs as many labels as images (60 000 and 10 000 in MNIST)."""
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            names = (
                f"{paths[f'{split}_images']} and {paths[f'{split}_labels']}"
                if paths
                else f"the {split} images and labels"
            )
            raise ValueError(
                f"{names} disagree: {n_images} images but {n_labels} labels. The files do not belong together "
                f"(a test file in place of a training file?) or one is incomplete; {_REDOWNLOAD}"
            )


def _find_idx(folder: Path, stem: str) -> Path | None:
    for sub in (folder, folder / "MNIST" / "raw", folder / "raw"):
        for name in (stem, stem + ".gz"):
            if (sub / name).is_file():
                return sub / name
    return None


def _mnist_from_folder(folder: Path) -> dict[str, np.ndarray] | None:
    paths = {key: _find_idx(folder, stem) for key, stem in _MNIST_FILES.items()}
    if all(p is None for p in paths.values()):
        return None
    missing = [_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise MNISTNotFoundError(f"MNIST folder {folder} lacks {', '.join(missing)} (.gz or not)")
    arrays = {key: _read_idx(p) for key, p in paths.items()}
    _check_mnist_counts(arrays, paths)
    return arrays


def _mnist_from_torchvision(root: Path) -> dict[str, np.ndarray]:
    from torchvision import datasets  # imported lazily: torchvision is only needed online

    train = datasets.MNIST(str(root), train=True, download=True)
    test = datasets.MNIST(str(root), train=False, download=True)
    return {
        "train_images": train.data.numpy(),
        "train_labels": train.targets.numpy(),
        "test_images": test.data.numpy(),
        "test_labels": test.targets.numpy(),
    }


def load_mnist(
    device=None,
    root: str | os.PathLike | None = None,
    scale: str = "unit",
    flatten: bool = True,
    dtype=torch.float32,
) -> Data:
    """MNIST as tensors on ``device``: images (N, 784) and labels (N,) as class indices.

    Where the files come from, in order:

    1. ``root`` if given, else the folder in the environment variable ``DFA_MNIST_DIR``:
       the four IDX files, gzipped or not, directly inside it or in ``MNIST/raw``;
    2. otherwise torchvision downloads them into ``~/.cache/dfa_lib``.

    If neither works, :class:`MNISTNotFoundError` says how to get the data.

    Args:
        device: where the tensors go (default: the CPU).
        root: the folder holding the IDX files (default: ``DFA_MNIST_DIR``, else a download).
        flatten: images as rows of 784 (True) or as (N, 1, 28, 28) for conv nets (False).
        dtype: the images' dtype (labels are int64 class indices).
        scale: ``"unit"`` for pixels in [0, 1] (seed 001), ``"centered"`` for [-1, 1]
            (seed 003's ``Normalize((0.5,), (0.5,))``), ``"standard"`` for zero mean, unit std.

    Introduced in chapter 3 (``book/03_mnist_dfa.ipynb``).
    """
    folder = root if root is not None else os.environ.get(MNIST_ENV_VAR)
    arrays = None
    if folder:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise MNISTNotFoundError(
                f"MNIST folder {folder} (from {'root' if root is not None else MNIST_ENV_VAR}) does not exist"
            )
        arrays = _mnist_from_folder(folder)
        if arrays is None:
            raise MNISTNotFoundError(
                f"no MNIST IDX files in {folder}: expected {', '.join(_MNIST_FILES.values())} (optionally .gz)"
            )
    else:
        cache = Path("~/.cache/dfa_lib").expanduser()
        try:
            arrays = _mnist_from_torchvision(cache)
        except Exception as exc:  # offline, or torchvision missing
            raise MNISTNotFoundError(
                "MNIST could not be loaded: no folder was given and the torchvision download failed "
                f"({type(exc).__name__}: {exc}).\nGet the data one of two ways:\n"
                "  * online: `pip install torchvision` and call load_mnist() again, or\n"
                "  * offline: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in a folder and set "
                f"{MNIST_ENV_VAR}=/that/folder (or pass root=...)."
            ) from exc

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.astype(np.float32) / 255.0).to(dtype)
        return x.reshape(len(x), -1) if flatten else x.unsqueeze(1)

    x_train, x_test = images(arrays["train_images"]), images(arrays["test_images"])
    if scale == "centered":
        x_train, x_test = 2 * x_train - 1, 2 * x_test - 1
    elif scale == "standard":
        mean, std = x_train.mean(), x_train.std()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    elif scale != "unit":
        raise ValueError(f"scale must be 'unit', 'centered' or 'standard', got {scale!r}")
    y_train = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    y_test = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    data = Data(x_train, y_train, x_test, y_test)
    return data.to(device) if device is not None else data
