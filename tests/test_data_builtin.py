"""The generated data sets ``multimodal`` and ``hues`` (``textures`` is tested in test_data.py).

Each generator is checked for what every data set needs (determinism, shapes,
dtypes, balanced classes, disjoint splits) and for the statistical property it
is designed around, measured here with classifiers written out in the test:

* ``multimodal``: per-channel means and variances do not depend on the class;
  each class is a mixture of two rank-one covariance patterns, so one
  covariance per class (nearest class average) classifies far worse than one
  per pattern (nearest pattern average).
* ``hues``: the class-average colour is the same grey for every class, so no
  linear function of an image's mean colour beats chance by much, while the
  nearest of the 12 hues classifies most images.
"""

import numpy as np
import pytest

from gmsop_np.data import MULTIMODAL_CLASS_AXES, get_dataset, make_hues, make_multimodal

GENERATORS = {"multimodal": make_multimodal, "hues": make_hues}
DIAGONAL_ALL_UP = np.ones(3) / np.sqrt(3.0)


def _per_image_stats(images):
    x = images.astype(np.float64).reshape(len(images), 3, -1)
    mean = x.mean(axis=2)  # (n, 3) channel means per image
    xc = x - mean[:, :, None]
    cov = np.einsum("ncl,ndl->ncd", xc, xc) / x.shape[2]  # (n, 3, 3) per-image covariance
    return mean, cov


def _lda_accuracy(features, labels, train, test):
    """Linear discriminant analysis (one covariance shared by the classes), fitted on ``train``."""
    classes = np.unique(labels)
    means = np.stack([features[train][labels[train] == c].mean(axis=0) for c in classes])
    shared = sum(np.cov(features[train][labels[train] == c].T) for c in classes) / len(classes)
    precision = np.linalg.inv(shared)
    scores = features[test] @ precision @ means.T - 0.5 * np.einsum("ci,ij,cj->c", means, precision, means)
    return np.mean(classes[np.argmax(scores, axis=1)] == labels[test])


# ----- what every generated set needs ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_is_deterministic_balanced_and_well_formed(name):
    make = GENERATORS[name]
    images, labels, modes = make(203, image_size=16, seed=3)
    again, labels_again, modes_again = make(203, image_size=16, seed=3)
    assert images.dtype == np.uint8 and images.shape == (203, 3, 16, 16)
    assert labels.dtype == np.int64 and modes.dtype == np.int64
    assert np.bincount(labels).tolist() == [51, 51, 51, 50]  # balanced: n // 4 or n // 4 + 1 each
    np.testing.assert_array_equal(images, again)  # a pure function of the seed
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_array_equal(modes, modes_again)
    other, _, _ = make(203, image_size=16, seed=4)
    assert np.mean(other != images) > 0.5


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_rejects_bad_sizes(name):
    with pytest.raises(ValueError, match="n"):
        GENERATORS[name](0)
    with pytest.raises(ValueError, match="image_size"):
        GENERATORS[name](4, image_size=4)
    with pytest.raises(TypeError, match="image_size"):
        GENERATORS[name](4, image_size=16.0)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_registered_splits_differ_and_are_normalised_sensibly(name):
    train = get_dataset(name, "train", n=400, seed=2)
    val = get_dataset(name, "val", n=40, seed=2)
    assert train.num_classes == 4 and len(train) == 400 and len(val) == 40
    assert train.image_shape == (3, 32, 32) and train.name == f"{name}/train"
    assert len(train.class_names) == 4 and len(set(train.class_names)) == 4
    assert not np.array_equal(train.images[:40], val.images)
    assert get_dataset(name, "train", n=8, size=16).image_shape == (3, 16, 16)
    # the fixed normalisation is close to the real pixel statistics (within 10 %)
    np.testing.assert_allclose(train.images.mean(axis=(0, 2, 3)), train.mean, rtol=0.02)
    np.testing.assert_allclose(train.images.std(axis=(0, 2, 3)), train.std, rtol=0.10)
    np.testing.assert_array_equal(val.mean, train.mean)  # the same for both splits: nothing leaks
    with pytest.raises(ValueError, match="splits"):
        get_dataset(name, "test")


# ----- multimodal ----------------------------------------------------------------------------------------
def test_multimodal_class_axes_follow_the_documented_geometry():
    axes = MULTIMODAL_CLASS_AXES  # (4 classes, 2 modes, 3 channels)
    np.testing.assert_allclose(np.linalg.norm(axes, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ci,ci->c", axes[:, 0], axes[:, 1]), 0.0, atol=1e-12)  # orthogonal pairs
    quarter_turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about blue
    for c in range(4):
        turn = np.linalg.matrix_power(quarter_turn, c)
        diagonal = turn @ DIAGONAL_ALL_UP
        np.testing.assert_allclose(np.abs(diagonal), 1 / np.sqrt(3.0), atol=1e-12)  # a cube diagonal
        np.testing.assert_allclose(axes[c] @ diagonal, 0.0, atol=1e-12)  # both axes orthogonal to it
        np.testing.assert_allclose(axes[c], axes[0] @ turn.T, atol=1e-12)  # class c = class 0 turned c times
    lines = axes.reshape(8, 3)
    cosines = np.abs(lines @ lines.T)[~np.eye(8, dtype=bool)]
    assert np.degrees(np.arccos(cosines.max())) > 35.0  # every pattern far from every other


@pytest.fixture(scope="module")
def multimodal():
    return make_multimodal(1600, image_size=16, seed=5)


def test_multimodal_channel_means_and_variances_do_not_depend_on_the_class(multimodal):
    images, labels, _ = multimodal
    mean, cov = _per_image_stats(images)
    var = np.diagonal(cov, axis1=1, axis2=2)
    for c in range(4):
        np.testing.assert_allclose(mean[labels == c].mean(axis=0), mean.mean(axis=0), atol=6.0)  # pixel units
        np.testing.assert_allclose(var[labels == c].mean(axis=0), var.mean(axis=0), rtol=0.08)
    train, test = slice(0, 1200), slice(1200, None)
    assert _lda_accuracy(mean, labels, train, test) < 0.40  # first-order statistics: chance is 0.25


def test_multimodal_classes_are_two_mode_mixtures_of_covariance_patterns(multimodal):
    images, labels, modes = multimodal
    _, cov = _per_image_stats(images)
    # the leading eigenvector of an image's covariance is the colour axis of its mode
    _, vectors = np.linalg.eigh(cov)
    leading = vectors[:, :, -1]
    own_axis = MULTIMODAL_CLASS_AXES[labels, modes]
    assert np.median(np.abs(np.einsum("ni,ni->n", leading, own_axis))) > np.cos(np.radians(15))
    for c in range(4):
        assert 0.4 < np.mean(modes[labels == c]) < 0.6  # both modes of every class occur, about equally
    # One covariance per class (the unimodal summary) versus one per pattern: nearest average of
    # the trace-normalised covariances, fitted on the first 1,200 images.
    flat = (cov / np.trace(cov, axis1=1, axis2=2)[:, None, None]).reshape(len(cov), 9)
    train, test = slice(0, 1200), slice(1200, None)

    def nearest_average(groups):
        centres = np.stack([flat[train][groups[train] == g].mean(axis=0) for g in np.unique(groups)])
        nearest = np.argmin(((flat[test][:, None, :] - centres[None]) ** 2).sum(axis=-1), axis=1)
        return np.mean(nearest % 4 == labels[test])

    per_class, per_pattern = nearest_average(labels), nearest_average(labels + 4 * modes)
    # Nearest class average: 0.67-0.85 over seeds 0-7 (its margins are thin, so the fitted averages matter).
    assert per_class < 0.88 and per_pattern > 0.97 and per_pattern - per_class > 0.1, (per_class, per_pattern)


# ----- hues ------------------------------------------------------------------------------------------------
def test_hues_class_average_is_grey_and_only_the_hue_mode_tells_the_class():
    images, labels, prototypes = make_hues(1600, image_size=32, seed=5)
    np.testing.assert_array_equal(prototypes % 4, labels)  # class c owns the hues c, c + 4, c + 8
    for c in range(4):
        assert sorted(np.unique(prototypes[labels == c]).tolist()) == [c, c + 4, c + 8]
    mean = images.astype(np.float64).mean(axis=(2, 3))  # (n, 3) mean colour per image
    variance = images.astype(np.float64).var(axis=(2, 3))
    for c in range(4):
        np.testing.assert_allclose(mean[labels == c].mean(axis=0), 128.0, atol=1.5)  # the same grey
        np.testing.assert_allclose(variance[labels == c].mean(axis=0), variance.mean(axis=0), rtol=0.08)
    train, test = slice(0, 1200), slice(1200, None)
    assert _lda_accuracy(mean, labels, train, test) < 0.35  # linear in the mean colour: chance is 0.25
    # The hue of the mean colour (its angle in the plane orthogonal to grey), rounded to the
    # nearest of the 12 prototype hues, 30 degrees apart, names the class of most images.
    chroma_basis = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.array([[np.sqrt(2.0)], [np.sqrt(6.0)]])
    chroma = (mean - 128.0) @ chroma_basis.T
    angle = np.arctan2(chroma[:, 1], chroma[:, 0])
    nearest_hue = np.rint(angle / (2 * np.pi / 12)).astype(int) % 12
    assert np.mean(nearest_hue % 4 == labels) > 0.6
