"""The CIFAR-10 loader on small batch files made here, including pickles that must be refused."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from efflab.data.cifar10 import (
    MEAN,
    STD,
    TEST_FILE,
    TRAIN_FILES,
    CifarError,
    cifar10_available,
    load_cifar10,
    read_batch,
)


def write_batch(path, data, labels, protocol=2, numpy1_names=False):
    blob = pickle.dumps({b"batch_label": b"test", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * len(labels)}, protocol=protocol)
    if numpy1_names:  # as the real files (pickled under numpy 1) name the array constructor
        assert b"numpy._core.multiarray" in blob
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(blob)


def make_folder(root, per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        write_batch(folder / name, data, labels, numpy1_names=(name == TEST_FILE))
        arrays[name] = (data, labels)
    return folder, arrays


def test_loads_generated_folder(tmp_path):
    folder, arrays = make_folder(tmp_path)
    assert cifar10_available(tmp_path) and cifar10_available(folder)
    raw = load_cifar10(tmp_path, standardize=False)
    assert raw.x_train.shape == (15, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    expected = np.concatenate([arrays[f][0] for f in TRAIN_FILES]).reshape(15, 3, 32, 32)
    assert np.array_equal(raw.x_train.numpy(), expected)
    assert raw.y_train.tolist() == sum((arrays[f][1] for f in TRAIN_FILES), [])
    assert np.array_equal(raw.x_test.numpy(), arrays[TEST_FILE][0].reshape(3, 3, 32, 32))
    assert raw.y_test.dtype == torch.int64
    # channel 1 of image 0, standardized by hand
    std = load_cifar10(folder, max_train=4)
    assert std.x_train.shape == (4, 3, 32, 32) and std.x_train.dtype == torch.float32
    hand = (expected[0, 1].astype(np.float64) / 255 - MEAN[1]) / STD[1]
    np.testing.assert_allclose(std.x_train[0, 1].numpy(), hand, rtol=1e-5, atol=1e-5)


def test_reads_both_numpy_name_spellings(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for numpy1 in (False, True):
        path = tmp_path / f"b{numpy1}"
        write_batch(path, data, [3, 9], numpy1_names=numpy1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            images, labels = read_batch(path)
        assert np.array_equal(images.reshape(2, 3072), data) and labels.tolist() == [3, 9]


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("func", [os.system, eval])
def test_malicious_pickle_is_refused(tmp_path, protocol, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Payload(func, arg), b"labels": [0]},
                                  protocol=protocol))
    with pytest.raises(CifarError, match=r"refusing CIFAR-10 file .*data_batch_1: global "
                                         r"\S+ is not allowed"):
        read_batch(path)
    assert not marker.exists()


def test_corrupt_and_wrong_files(tmp_path):
    folder, arrays = make_folder(tmp_path)
    good = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(good[: len(good) // 2])
    with pytest.raises(CifarError, match=r"data_batch_2 is corrupt"):
        load_cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"garbage that is no pickle")
    with pytest.raises(CifarError, match=r"data_batch_2 is corrupt"):
        read_batch(folder / "data_batch_2")

    bad = tmp_path / "bad"
    write_batch(bad, np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(CifarError, match=r"must be a uint8 array of shape \(n, 3072\), got "
                                         r"uint8 array of shape \(2, 100\)"):
        read_batch(bad)
    write_batch(bad, np.zeros((2, 3072), np.uint8), [0, 10])
    with pytest.raises(CifarError, match=r"labels must be in \[0, 9\], got \[0, 10\]"):
        read_batch(bad)
    write_batch(bad, np.zeros((2, 3072), np.uint8), [0])
    with pytest.raises(CifarError, match="2 images but labels of shape"):
        read_batch(bad)
    bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CifarError, match="holds a list, expected a dict"):
        read_batch(bad)
    bad.write_bytes(pickle.dumps({b"data": 1}))
    with pytest.raises(CifarError, match="lacks 'data' or 'labels'"):
        read_batch(bad)


def test_missing_folder_or_files(tmp_path):
    with pytest.raises(CifarError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    folder, _ = make_folder(tmp_path)
    (folder / "data_batch_4").unlink()
    assert not cifar10_available(tmp_path)
    with pytest.raises(CifarError, match="lacks data_batch_4"):
        load_cifar10(tmp_path)
