"""Datasets and the loader (gmsop_np.data).

The file-based loaders are tested on small files written here in the exact
formats of the real downloads (downsampled-ImageNet .npz and pickled batch
files, Places365 file lists over a folder of JPEGs), including malformed ones:
every problem must raise an error that names the file and the problem.
"""

import os
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
from gmsop_np.data import (
    TEXTURE_CLASS_AXES,
    ArrayDataset,
    DataFormatError,
    DataLoader,
    Places365,
    augment_batch,
    get_dataset,
    load_imagenet64,
    make_loader,
    make_textures,
)
from gmsop_np.testing import device_sim


# ----- textures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def textures():
    return make_textures(800, image_size=32, seed=3)


def test_textures_deterministic_and_well_formed(textures):
    images, labels = textures
    again, labels_again = make_textures(800, image_size=32, seed=3)
    assert images.dtype == np.uint8 and images.shape == (800, 3, 32, 32)
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.bincount(labels).tolist() == [200] * 4  # balanced
    np.testing.assert_array_equal(images, again)  # a pure function of the seed
    np.testing.assert_array_equal(labels, labels_again)
    other, _ = make_textures(800, image_size=32, seed=4)
    assert np.mean(other != images) > 0.5


def _per_image_stats(images):
    x = images.astype(np.float64).reshape(len(images), 3, -1)
    mean = x.mean(axis=2)  # (n, 3) channel means per image
    xc = x - mean[:, :, None]
    cov = np.einsum("ncl,ndl->ncd", xc, xc) / x.shape[2]  # (n, 3, 3) per-image covariance
    return mean, cov


def test_textures_first_order_statistics_do_not_depend_on_the_class(textures):
    images, labels = textures
    mean, cov = _per_image_stats(images)
    var = np.diagonal(cov, axis1=1, axis2=2)
    for c in range(4):
        # per-channel mean and variance of every class agree with the overall ones (within sampling noise)
        np.testing.assert_allclose(mean[labels == c].mean(axis=0), mean.mean(axis=0), atol=4.0)
        np.testing.assert_allclose(var[labels == c].mean(axis=0), var.mean(axis=0), rtol=0.12)
    # Even a quadratic classifier (Gaussian per class, own mean and covariance) on the channel means
    # is at chance (0.25), while the same classifier on the per-image covariances is near perfect.
    train, test = slice(0, 600), slice(600, None)
    assert _qda_accuracy(mean, labels, train, test) < 0.40
    iu = np.triu_indices(3)
    assert _qda_accuracy(cov[:, iu[0], iu[1]], labels, train, test) > 0.95


def _qda_accuracy(features, labels, train, test):
    """Quadratic discriminant analysis written out: fit on ``train``, accuracy on ``test``."""
    scores = []
    for c in range(4):
        fc = features[train][labels[train] == c]
        mu, cov = fc.mean(axis=0), np.cov(fc.T)
        d = features[test] - mu
        maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        scores.append(-0.5 * maha - 0.5 * np.linalg.slogdet(cov)[1])
    return np.mean(np.argmax(scores, axis=0) == labels[test])


def test_textures_classes_differ_in_channel_correlation(textures):
    images, labels = textures
    _, cov = _per_image_stats(images)
    # The average covariance of class c is sigma^2 I + E[pi(1-pi)] delta^2 v v^T: its off-diagonal
    # signs are those of v_c v_c^T.
    for c, axis in enumerate(TEXTURE_CLASS_AXES):
        off = cov[labels == c].mean(axis=0)[np.triu_indices(3, 1)]
        expected = np.outer(axis, axis)[np.triu_indices(3, 1)]
        assert np.all(np.sign(off) == np.sign(expected)), (c, off)
    # Nearest class-mean covariance classifies (almost) every image.
    iu = np.triu_indices(3, 1)
    centroids = np.stack([cov[labels == c][:, iu[0], iu[1]].mean(0) for c in range(4)])
    dist = ((cov[:, iu[0], iu[1]][:, None, :] - centroids[None]) ** 2).sum(-1)
    assert np.mean(dist.argmin(1) == labels) > 0.9


def test_textures_dataset_splits_differ():
    train, val = get_dataset("textures", "train", n=40), get_dataset("textures", "val", n=40)
    assert train.num_classes == 4 and len(train) == 40 and train.image_shape == (3, 32, 32)
    assert not np.array_equal(train.images, val.images)
    with pytest.raises(ValueError, match="splits"):
        get_dataset("textures", "test")
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("cifar", "train")


# ----- augmentation and the loader -----------------------------------------------------------------
@given(
    n=st.integers(1, 3),
    size=st.integers(3, 6),
    crop=st.integers(1, 3),
    pad=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_augment_batch_matches_a_loop_oracle(n, size, crop, pad, seed):
    images = np.arange(n * 2 * size * size, dtype=np.float64).reshape(n, 2, size, size)
    out = augment_batch(images, np.random.default_rng(seed), flip=True, pad=pad, crop=crop, train=True)
    assert out.shape == (n, 2, crop, crop)
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for i in range(n):
        # every output image is a window of the padded image, possibly mirrored
        windows = [padded[i, :, t : t + size, s : s + size] for t in range(2 * pad + 1) for s in range(2 * pad + 1)]
        found = any(
            np.array_equal(o, w[:, a : a + crop, b : b + crop])
            or np.array_equal(o, w[:, a : a + crop, b : b + crop][..., ::-1])
            for w in windows
            for a in range(size - crop + 1)
            for b in range(size - crop + 1)
            for o in [out[i]]
        )
        assert found
    centre = augment_batch(images, np.random.default_rng(seed), crop=crop, train=False)
    top = (size - crop) // 2
    np.testing.assert_array_equal(centre, images[:, :, top : top + crop, top : top + crop])


def _small_dataset(n=10):
    # image i holds the values 100 i + 0..47, so a served batch tells which images it holds
    images = (100.0 * np.arange(n)[:, None] + np.arange(48)[None, :]).reshape(n, 3, 4, 4)
    return ArrayDataset(images, np.arange(n) % 3, num_classes=3, mean=[1.0, 2.0, 3.0], std=[2.0, 4.0, 8.0])


def test_loader_covers_every_image_once_per_epoch_and_normalises():
    ds = _small_dataset(10)
    loader = DataLoader(ds, 4, shuffle=True, seed=1)
    assert len(loader) == 3
    seen = []
    for x, y in loader:
        assert x.dtype == np.float32 and y.dtype == np.int64
        # undo the normalisation and find the image: identifies which indices were served
        raw = x * np.array([2.0, 4.0, 8.0])[None, :, None, None] + np.array([1.0, 2.0, 3.0])[None, :, None, None]
        idx = np.rint(raw[:, 0, 0, 0] / 100).astype(int)
        np.testing.assert_allclose(raw, ds.images[idx], atol=1e-4)
        np.testing.assert_array_equal(y, ds.labels[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(10))
    assert loader.epoch == 1
    np.testing.assert_array_equal(seen, loader.order(0))
    assert not np.array_equal(loader.order(0), loader.order(1))  # a new order every epoch
    np.testing.assert_array_equal(loader.order(0), DataLoader(ds, 4, shuffle=True, seed=1).order(0))


def test_loader_thread_and_resume_give_identical_batches():
    ds = _small_dataset(11)
    opts = dict(shuffle=True, train=True, flip=True, pad=1, seed=5)
    plain = [(x.copy(), y.copy()) for x, y in DataLoader(ds, 3, prefetch=0, **opts)]
    threaded = [(x.copy(), y.copy()) for x, y in DataLoader(ds, 3, prefetch=2, **opts)]
    assert len(plain) == 4
    for (a, b), (c, d) in zip(plain, threaded):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # stop after two batches, save the state, continue in a fresh loader
    loader = DataLoader(ds, 3, **opts)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    state = loader.state_dict()
    assert state == {"epoch": 0, "batch": 2, "seed": 5}
    resumed = DataLoader(ds, 3, **opts)
    resumed.load_state_dict(state)
    rest = [(x.copy(), y.copy()) for x, y in resumed]
    assert len(rest) == 2
    for (a, b), (c, d) in zip(plain[2:], rest):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert resumed.state_dict()["epoch"] == 1


def test_loader_reraises_errors_from_the_background_thread():
    class Broken(ArrayDataset):
        def load(self, indices):
            raise DataFormatError("broken.bin: bad bytes")

    ds = _small_dataset(4)
    broken = Broken(ds.images, ds.labels, 3, mean=ds.mean, std=ds.std)
    with pytest.raises(DataFormatError, match="broken.bin"):
        list(DataLoader(broken, 2, prefetch=2))


def test_loader_yields_arrays_of_the_active_backend(xp):
    x, y = next(iter(DataLoader(_small_dataset(4), 2)))
    assert isinstance(x, xp.ndarray) and isinstance(y, xp.ndarray)


def test_make_loader_uses_the_dataset_recipe():
    ds = _small_dataset(10)
    train = make_loader("textures", ds, 4, train=True)
    val = make_loader("textures", ds, 4, train=False)
    assert train.shuffle and train.flip and train.drop_last and len(train) == 2
    assert not val.shuffle and not val.flip and len(val) == 3


# ----- digits ----------------------------------------------------------------------------------------
def test_digits_upsampled_three_channels():
    train, val = get_dataset("digits", "train", size=16), get_dataset("digits", "val", size=16)
    assert train.images.shape[1:] == (3, 16, 16) and train.images.dtype == np.uint8
    assert len(train) + len(val) == 1797 and train.num_classes == 10
    np.testing.assert_array_equal(train.images[:, 0], train.images[:, 2])  # grey in every channel


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'gmsop_np\[data\]'"):
        get_dataset("digits", "train")


# ----- downsampled ImageNet ----------------------------------------------------------------------------
def _imagenet_rows(rng, n, size=64):
    return rng.integers(0, 256, size=(n, 3 * size * size), dtype=np.uint8)


@pytest.fixture
def imagenet_dir(tmp_path):
    """Two training files (one .npz, one pickle with a 'mean' entry) and a .npz val file."""
    rng = np.random.default_rng(0)
    data1, data2, val = _imagenet_rows(rng, 5), _imagenet_rows(rng, 4), _imagenet_rows(rng, 3)
    labels1, labels2, val_labels = [1, 1000, 7, 3, 500], [2, 4, 6, 8], [10, 20, 30]
    np.savez(tmp_path / "train_data_batch_1.npz", data=data1, labels=np.array(labels1))
    with open(tmp_path / "train_data_batch_2", "wb") as handle:
        pickle.dump({"data": data2, "labels": labels2, "mean": data2.mean(0)}, handle)
    np.savez(tmp_path / "val_data.npz", data=val, labels=np.array(val_labels))
    return tmp_path, np.concatenate([data1, data2]), np.array(labels1 + labels2) - 1


def test_imagenet64_reads_both_formats_channel_planar(imagenet_dir):
    root, data, labels = imagenet_dir
    ds = load_imagenet64(str(root), "train", train_files=2)
    assert len(ds) == 9 and ds.num_classes == 1000
    images, got = ds.load(np.arange(9))
    assert images.shape == (9, 3, 64, 64) and images.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)  # 1..1000 -> 0..999
    np.testing.assert_array_equal(images[:, 0].reshape(9, -1), data[:, :4096])  # red plane first
    np.testing.assert_array_equal(images[:, 2, 63, 63], data[:, -1])  # last value: blue, bottom right
    # a shuffled epoch visits one file at a time
    order = ds.epoch_order(np.random.default_rng(1))
    assert sorted(order) == list(range(9))
    in_first = order < 5
    assert np.sum(in_first[1:] != in_first[:-1]) == 1
    val = load_imagenet64(str(root), "val")
    assert len(val) == 3 and val.load([2])[1][0] == 29


def test_imagenet64_memmap_cache_matches(imagenet_dir, tmp_path):
    root, data, labels = imagenet_dir
    direct = load_imagenet64(str(root), "train", train_files=2)
    cached = load_imagenet64(str(root), "train", train_files=2, cache_dir=str(tmp_path / "cache"))
    idx = np.array([8, 0, 5, 3])
    np.testing.assert_array_equal(cached.load(idx)[0], direct.load(idx)[0])
    assert isinstance(cached._memmap, np.memmap)
    again = load_imagenet64(str(root), "train", train_files=2, cache_dir=str(tmp_path / "cache"))  # reuses the cache
    np.testing.assert_array_equal(again.load(idx)[0], direct.load(idx)[0])


@pytest.mark.parametrize(
    "problem",
    [
        "row_length",
        "label_zero",
        "label_1001",
        "count",
        "truncated_npz",
        "truncated_pickle",
        "missing_key",
        "not_a_dict",
    ],
)
def test_imagenet64_malformed_files_name_file_and_problem(tmp_path, problem):
    rng = np.random.default_rng(0)
    name, data, labels = "val_data.npz", _imagenet_rows(rng, 3), np.array([1, 2, 3])
    if problem == "row_length":
        data = data[:, :-1]
    elif problem == "label_zero":
        labels = np.array([0, 2, 3])
    elif problem == "label_1001":
        labels = np.array([1, 1001, 3])
    elif problem == "count":
        labels = np.array([1, 2])
    path = tmp_path / name
    if problem == "missing_key":
        np.savez(path, images=data, labels=labels)
    elif problem in ("truncated_pickle", "not_a_dict"):
        path = tmp_path / "val_data"
        content = [data, labels] if problem == "not_a_dict" else {"data": data, "labels": labels.tolist()}
        raw = pickle.dumps(content)
        path.write_bytes(raw[: len(raw) // 2] if problem == "truncated_pickle" else raw)
    else:
        np.savez(path, data=data, labels=labels)
        if problem == "truncated_npz":
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
    expected = {
        "row_length": "12288",
        "label_zero": "1..1000",
        "label_1001": "1..1000",
        "count": "labels",
        "truncated_npz": "truncated or corrupt",
        "truncated_pickle": "truncated or corrupt",
        "missing_key": "'data'",
        "not_a_dict": "pickled dict",
    }[problem]
    with pytest.raises(DataFormatError) as info:
        ds = load_imagenet64(str(tmp_path), "val")
        ds.load(np.arange(len(ds)))
    assert str(path) in str(info.value) and expected in str(info.value)


def test_imagenet64_missing_file_and_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_data_batch_1"):
        load_imagenet64(str(tmp_path), "train")
    with pytest.raises(ValueError, match="--data-dir"):
        get_dataset("imagenet64", "train")


# ----- Places365 -----------------------------------------------------------------------------------------
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture
def places_dir(tmp_path):
    """A Places365-Standard layout: file lists with the real line formats over JPEG folders."""
    from PIL import Image

    lines_train, lines_val = [], []
    for i, colour in enumerate(COLOURS):
        rel = f"a/abbey/{i:08d}.jpg"
        os.makedirs(tmp_path / "data_256" / "a" / "abbey", exist_ok=True)
        Image.new("RGB", (40 + 10 * i, 30), colour).save(tmp_path / "data_256" / rel)
        lines_train.append(f"/{rel} {i * 100}")
        val_name = f"Places365_val_{i + 1:08d}.jpg"
        os.makedirs(tmp_path / "val_256", exist_ok=True)
        Image.new("RGB", (25, 25), colour).save(tmp_path / "val_256" / val_name)
        lines_val.append(f"{val_name} {364 - i}")
    (tmp_path / "places365_train_standard.txt").write_text("\n".join(lines_train) + "\n")
    (tmp_path / "places365_val.txt").write_text("\n".join(lines_val) + "\n")
    return tmp_path


def test_places365_reads_resizes_and_crops(places_dir):
    train = Places365(str(places_dir), "train")
    images, labels = train.load([0, 1, 2])
    assert images.shape == (3, 3, 100, 100) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 100, 200])
    np.testing.assert_allclose(images.reshape(3, 3, -1).mean(-1), COLOURS, atol=6)  # JPEG: near the colour
    val = Places365(str(places_dir), "val")
    np.testing.assert_array_equal(val.labels, [364, 363, 362])
    x, _ = next(iter(make_loader("places365", train, 2, train=True)))
    assert x.shape == (2, 3, 96, 96)
    x, _ = next(iter(make_loader("places365", val, 3, train=False)))
    assert x.shape == (3, 3, 96, 96)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("/a/abbey/00000000.jpg", "expected '<image path> <label>'"),
        ("/a/abbey/00000000.jpg zero", "not an integer"),
        ("/a/abbey/00000000.jpg 365", "outside 0..364"),
        ("/a/abbey/99999999.jpg 3", "do not exist"),
    ],
)
def test_places365_bad_file_list_names_file_and_line(places_dir, line, expected):
    path = places_dir / "places365_train_standard.txt"
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as info:
        Places365(str(places_dir), "train")
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "line 2" in str(info.value)


def test_places365_corrupt_image_names_the_file(places_dir):
    bad = places_dir / "val_256" / "Places365_val_00000002.jpg"
    bad.write_bytes(b"not a jpeg at all")
    ds = Places365(str(places_dir), "val")
    with pytest.raises(DataFormatError, match="Places365_val_00000002.jpg.*line 2"):
        ds.load([0, 1])


def test_uint8_images_travel_as_uint8_and_are_normalised_on_the_backend(xp):
    """A quarter of the bytes of float32 cross to the device; the loader normalises there, in its dtype,
    with constants copied once (not per batch)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 3, 4, 4), dtype=np.uint8)
    ds = ArrayDataset(images, np.arange(6) % 3, num_classes=3, mean=[100.0, 120.0, 140.0], std=[50.0, 60.0, 70.0])
    loader = DataLoader(ds, 3, prefetch=0)
    host, _ = loader.make_batch(np.arange(3), 0, 0)
    assert host.dtype == np.uint8, "the host batch is not converted to float"
    expected = (images - ds.mean[None, :, None, None]) / ds.std[None, :, None, None]
    batches = []
    with device_sim.counting() as counts:
        for x, y in loader:
            assert isinstance(x, xp.ndarray) and x.dtype == np.float32 and y.dtype == np.int64
            batches.append(gs.to_cpu(x))
    np.testing.assert_allclose(np.concatenate(batches), expected, rtol=1e-6, atol=1e-6)
    if xp is device_sim:  # images and labels per batch, plus the two constants once
        assert counts.copies_to_device == 2 * len(loader) + 2, counts.summary()
        assert [name for name, _ in counts.operations("launch")] == ["multiply", "subtract"]
    float64 = next(iter(DataLoader(ds, 3, dtype=np.float64, prefetch=0)))[0]
    assert float64.dtype == np.float64
    np.testing.assert_allclose(gs.to_cpu(float64), expected[:3], rtol=1e-12)
