"""CIFAR-10/100 and downsampled ImageNet 32x32, read from small files in the published formats.

The CIFAR "python version" files are Python 2 pickles (cPickle, protocol 2):
dict keys and strings are Python 2 ``str``, which Python 3 reads as ``bytes``
with ``encoding="bytes"``, and the ``data`` array is pickled the way NumPy did
under Python 2 (``_reconstruct`` + ``__setstate__`` with the raw bytes as a
``str``). ``_py2_pickle`` below writes exactly those opcodes, so these tests
read files of the real kind -- a plain ``pickle.load`` fails on them.
"""

import pickle
import struct

import numpy as np
import pytest

from gmsop_np.data import DataFormatError, get_dataset, load_cifar10, load_cifar100, load_imagenet32, make_loader


# ----- a Python 2 pickle writer (protocol 2), for the subset of types CIFAR uses ---------------------
def _py2_str(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING


def _py2(value) -> bytes:
    if isinstance(value, bytes):
        return _py2_str(value)
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"\x89" if not value else b"\x88"
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)  # BININT
    if isinstance(value, tuple):
        return b"(" + b"".join(_py2(v) for v in value) + b"t"
    if isinstance(value, list):
        return b"](" + b"".join(_py2(v) for v in value) + b"e"  # EMPTY_LIST, MARK, ..., APPENDS
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in value.items()) + b"u"  # SETITEMS
    if isinstance(value, np.ndarray):  # what NumPy wrote under Python 2
        assert value.dtype == np.uint8
        dtype = b"cnumpy\ndtype\n" + _py2((b"u1", 0, 1)) + b"R" + _py2((3, b"|", None, None, None, -1, -1, 0)) + b"b"
        state = b"(" + _py2(1) + _py2(tuple(value.shape)) + dtype + _py2(False) + _py2(value.tobytes()) + b"t"
        new = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + _py2((0,)) + _py2_str(b"b") + b"tR"
        return new + state + b"b"
    raise TypeError(type(value))


def _py2_pickle(obj) -> bytes:
    return b"\x80\x02" + _py2(obj) + b"."


def _rows(rng, n, size=32):
    return rng.integers(0, 256, size=(n, 3 * size * size), dtype=np.uint8)


def test_the_python2_pickle_writer_writes_what_the_cifar_page_describes(tmp_path):
    data = _rows(np.random.default_rng(0), 2)
    raw = _py2_pickle({b"data": data, b"labels": [3, 9], b"batch_label": b"training batch 1 of 5"})
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)  # a Python 3 default load fails on Python 2 pickles of arrays ...
    content = pickle.loads(raw, encoding="bytes")  # ... the documented way works, with bytes keys
    assert sorted(content) == [b"batch_label", b"data", b"labels"]
    np.testing.assert_array_equal(content[b"data"], data)


# ----- CIFAR-10 ---------------------------------------------------------------------------------------
CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _write(path, obj):
    path.write_bytes(_py2_pickle(obj))


@pytest.fixture
def cifar10_dir(tmp_path):
    """cifar-10-batches-py/ as it unpacks: five training batches of 3 images, a test batch of 2, the meta file."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _rows(rng, 3), [(3 * i + k) % 10 for k in range(3)]
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels, b"data": rows}
        batch[b"filenames"] = [f"img_{i}_{k}.png".encode() for k in range(3)]
        _write(folder / f"data_batch_{i}", batch)
        train_rows.append(rows)
        train_labels += labels
    test_rows = _rows(rng, 2)
    _write(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [0, 9], b"data": test_rows})
    _write(folder / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": 10000, b"num_vis": 3072})
    return tmp_path, np.concatenate(train_rows), np.array(train_labels), test_rows


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_cifar10_reads_the_published_layout_channel_planar(cifar10_dir, where):
    parent, rows, labels, test_rows = cifar10_dir
    root = parent / "cifar-10-batches-py" if where == "folder" else parent
    train = load_cifar10(str(root), "train")
    assert len(train) == 15 and train.num_classes == 10 and train.image_shape == (3, 32, 32)
    assert train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, labels)  # batches in order 1..5
    np.testing.assert_array_equal(train.images[:, 0].reshape(15, -1), rows[:, :1024])  # red plane first
    np.testing.assert_array_equal(train.images[:, 1, 0, :], rows[:, 1024:1056])  # green, first image row
    np.testing.assert_array_equal(train.images[:, 2, 31, 31], rows[:, -1])  # blue, bottom right
    assert train.class_names[0] == "airplane" and train.class_names[9] == "truck"
    val = load_cifar10(str(root), "val")  # the published test set
    np.testing.assert_array_equal(val.labels, [0, 9])
    np.testing.assert_array_equal(val.images.reshape(2, -1), test_rows)
    np.testing.assert_array_equal(val.mean, train.mean)  # training-set statistics for both splits


def test_cifar10_registry_and_augmentation(cifar10_dir):
    parent, *_ = cifar10_dir
    train = get_dataset("cifar10", "train", root=str(parent))
    loader = make_loader("cifar10", train, 4, train=True)
    assert loader.flip and loader.pad == 4 and loader.crop is None  # the standard CIFAR recipe
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    val_loader = make_loader("cifar10", get_dataset("cifar10", "val", root=str(parent)), 4, train=False)
    assert not val_loader.shuffle and not val_loader.flip
    with pytest.raises(ValueError, match="--data-dir"):
        get_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="splits"):
        load_cifar10(str(parent), "test")


def test_cifar10_without_meta_has_no_class_names(cifar10_dir):
    parent, *_ = cifar10_dir
    (parent / "cifar-10-batches-py" / "batches.meta").unlink()
    assert load_cifar10(str(parent), "val").class_names is None


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("row_length", "3072"),
        ("not_uint8", "uint8"),
        ("label_10", "0..9"),
        ("label_negative", "0..9"),
        ("count", "3 image rows but 2 labels"),
        ("truncated", "truncated or corrupt"),
        ("missing_key", "['labels'] missing"),
        ("not_a_dict", "pickled dict"),
    ],
)
def test_cifar10_malformed_batch_names_file_and_problem(cifar10_dir, problem, expected):
    parent, *_ = cifar10_dir
    path = parent / "cifar-10-batches-py" / "data_batch_3"
    rows, labels = _rows(np.random.default_rng(2), 3), [1, 2, 3]
    batch = {b"data": rows, b"labels": labels}
    if problem == "row_length":
        batch[b"data"] = rows[:, :-32]
    elif problem == "not_uint8":
        batch[b"data"] = rows.astype(np.int64)
    elif problem == "label_10":
        batch[b"labels"] = [1, 10, 3]
    elif problem == "label_negative":
        batch[b"labels"] = [1, -1, 3]
    elif problem == "count":
        batch[b"labels"] = [1, 2]
    elif problem == "missing_key":
        del batch[b"labels"]
    if problem == "not_uint8":
        path.write_bytes(pickle.dumps(batch, protocol=2))  # our Python 2 writer knows only uint8 arrays
    elif problem == "not_a_dict":
        _write(path, [rows, labels])
    else:
        _write(path, batch)
    if problem == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError) as info:
        load_cifar10(str(parent), "train")
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


def test_cifar10_missing_files_describe_the_layout(cifar10_dir, tmp_path_factory):
    parent, *_ = cifar10_dir
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(str(empty), "train")
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "test_batch" in message
    assert "cifar-10-python.tar.gz" in message
    (parent / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch.*is missing"):
        load_cifar10(str(parent), "val")


# ----- CIFAR-100 --------------------------------------------------------------------------------------
@pytest.fixture
def cifar100_dir(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(3)
    train_rows, test_rows = _rows(rng, 4), _rows(rng, 2)
    fine, coarse = [0, 99, 42, 7], [0, 19, 5, 3]
    train = {b"filenames": [b"a.png"] * 4, b"batch_label": b"training batch 1 of 1", b"fine_labels": fine}
    train.update({b"coarse_labels": coarse, b"data": train_rows})
    _write(folder / "train", train)
    _write(folder / "test", {b"fine_labels": [5, 6], b"coarse_labels": [1, 2], b"data": test_rows})
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    _write(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    return tmp_path, train_rows, np.array(fine), np.array(coarse)


def test_cifar100_fine_and_coarse_labels(cifar100_dir):
    parent, rows, fine, coarse = cifar100_dir
    train = load_cifar100(str(parent), "train")
    assert train.num_classes == 100 and len(train) == 4
    np.testing.assert_array_equal(train.labels, fine)
    np.testing.assert_array_equal(train.images.reshape(4, -1), rows)
    assert train.class_names[99] == "fine99"
    coarse_set = load_cifar100(str(parent / "cifar-100-python"), "train", labels="coarse")
    assert coarse_set.num_classes == 20 and coarse_set.class_names[19] == "coarse19"
    np.testing.assert_array_equal(coarse_set.labels, coarse)
    val = get_dataset("cifar100", "val", root=str(parent))
    np.testing.assert_array_equal(val.labels, [5, 6])
    with pytest.raises(ValueError, match="'fine'"):
        load_cifar100(str(parent), "train", labels="super")


@pytest.mark.parametrize("key, value, expected", [(b"fine_labels", 100, "0..99"), (b"coarse_labels", 20, "0..19")])
def test_cifar100_labels_out_of_range_name_file_and_key(cifar100_dir, key, value, expected):
    parent, rows, fine, coarse = cifar100_dir
    path = parent / "cifar-100-python" / "train"
    batch = {b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(), b"data": rows}
    batch[key] = [0, value, 1, 2]
    _write(path, batch)
    kind = key.decode().split("_")[0]
    with pytest.raises(DataFormatError) as info:
        load_cifar100(str(parent), "train", labels=kind)
    assert str(path) in str(info.value) and expected in str(info.value) and key.decode() in str(info.value)


# ----- downsampled ImageNet 32x32 ---------------------------------------------------------------------
@pytest.fixture
def imagenet32_dir(tmp_path):
    """The two image-net.org archives unpacked side by side: Imagenet32_train/ (pickles) and Imagenet32_val/ (npz)."""
    rng = np.random.default_rng(4)
    (tmp_path / "Imagenet32_train").mkdir()
    (tmp_path / "Imagenet32_val").mkdir()
    train1, train2, val = _rows(rng, 3), _rows(rng, 2), _rows(rng, 2)
    for i, (rows, labels) in enumerate([(train1, [1, 500, 1000]), (train2, [2, 3])], start=1):
        with open(tmp_path / "Imagenet32_train" / f"train_data_batch_{i}", "wb") as handle:
            pickle.dump({"data": rows, "labels": labels, "mean": rows.mean(axis=0)}, handle)
    np.savez(tmp_path / "Imagenet32_val" / "val_data.npz", data=val, labels=np.array([7, 8]))
    return tmp_path, np.concatenate([train1, train2]), val


def test_imagenet32_reads_the_unpacked_archives(imagenet32_dir):
    root, rows, val_rows = imagenet32_dir
    train = load_imagenet32(str(root), "train", train_files=2)
    assert len(train) == 5 and train.image_shape == (3, 32, 32) and train.name == "imagenet32/train"
    images, labels = train.load(np.arange(5))
    np.testing.assert_array_equal(labels, [0, 499, 999, 1, 2])  # 1..1000 -> 0..999
    np.testing.assert_array_equal(images.reshape(5, -1), rows)  # channel-planar rows of 3,072
    val = get_dataset("imagenet32", "val", root=str(root))
    np.testing.assert_array_equal(val.load([0, 1])[0].reshape(2, -1), val_rows)
    assert make_loader("imagenet32", val, 2, train=True).pad == 0  # flips only, as for 64x64


def test_imagenet32_wrong_row_length_and_missing_files(imagenet32_dir, tmp_path_factory):
    root, *_ = imagenet32_dir
    bad = root / "Imagenet32_val" / "val_data.npz"
    np.savez(bad, data=_rows(np.random.default_rng(5), 2, size=64), labels=np.array([1, 2]))  # 64x64 rows
    with pytest.raises(DataFormatError) as info:
        ds = load_imagenet32(str(root), "val")
        ds.load([0])
    assert str(bad) in str(info.value) and "3072" in str(info.value)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError) as info:
        load_imagenet32(str(empty), "train")
    assert "Imagenet32_train" in str(info.value) and "train_data_batch_1" in str(info.value)
