"""fastnn.nn.preprocessing (scalers, whitening, one-hot, split) and fastnn.nn.initializers."""
import math

import numpy as np
import pytest

from fastnn.nn import initializers, preprocessing as pp
from fastnn.nn.initializers import compute_fans


@pytest.fixture
def correlated(rng):
    """Features with different means, scales and strong correlations."""
    z = rng.standard_normal((2000, 4))
    mix = np.array([[3.0, 0, 0, 0], [2.0, 0.5, 0, 0], [0, 1.0, 0.1, 0], [1.0, 0, 0, 5.0]])
    return (z @ mix.T + np.array([10.0, -3.0, 0.5, 100.0])).astype(np.float64)


def test_mean_subtraction(correlated):
    scaler = pp.MeanSubtraction().fit(correlated)
    out = scaler.transform(correlated)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), correlated.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(out), correlated, rtol=1e-12)


def test_standard_scaler_uses_training_statistics(correlated, rng):
    train, test = correlated[:1500], correlated[1500:]
    scaler = pp.StandardScaler().fit(train)
    out = scaler.transform(train)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-10)
    np.testing.assert_allclose(scaler.transform(test), (test - train.mean(0)) / train.std(0), rtol=1e-10)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(test)), test, rtol=1e-10)
    constant = np.column_stack([np.ones(5), np.arange(5.0)])
    np.testing.assert_allclose(pp.StandardScaler().fit_transform(constant)[:, 0], 0)
    assert pp.StandardScaler().fit_transform(np.arange(10).reshape(5, 2)).dtype == np.float32
    with pytest.raises(RuntimeError, match="fit"):
        pp.StandardScaler().transform(train)
    with pytest.raises(ValueError, match="shape"):
        scaler.transform(train[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        pp.StandardScaler().fit(np.array([[np.nan, 1.0]]))


def test_standard_scaler_only_centres_constant_features_whose_mean_rounds():
    # The float64 mean of ten 0.1s is not 0.1, so their computed std is about 1e-17, not 0.
    x = np.column_stack([np.arange(10.0), np.full(10, 0.1), np.full(10, 1 / 3)])
    assert x.std(axis=0)[1] > 0
    scaler = pp.StandardScaler().fit(x)
    np.testing.assert_array_equal(scaler.scale_[1:], 1.0)
    out = scaler.transform([[0.0, 0.2, 1.0], [0.0, 0.1, 1 / 3]])
    np.testing.assert_allclose(out[:, 1:], [[0.1, 2 / 3], [0.0, 0.0]], atol=1e-15)
    # a feature of tiny but real spread is still scaled
    tiny = np.column_stack([1.0 + 1e-9 * np.arange(10.0), np.arange(10.0)])
    np.testing.assert_allclose(pp.StandardScaler().fit_transform(tiny).std(axis=0), 1, rtol=1e-6)


def test_per_channel_scaling_of_images(rng):
    x = rng.standard_normal((10, 3, 4, 5)) * np.array([1.0, 2.0, 3.0])[:, None, None] + 7
    out = pp.StandardScaler(per_channel=True).fit_transform(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-10)
    with pytest.raises(ValueError, match="NCHW"):
        pp.StandardScaler(per_channel=True).fit(x.reshape(10, -1))


def test_min_max_scaler(correlated):
    scaler = pp.MinMaxScaler((-1, 1)).fit(correlated)
    out = scaler.transform(correlated)
    np.testing.assert_allclose(out.min(axis=0), -1, atol=1e-12)
    np.testing.assert_allclose(out.max(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(out), correlated, rtol=1e-12)
    with pytest.raises(ValueError, match="low < high"):
        pp.MinMaxScaler((1, 0))


def test_pca_whitening_decorrelates_to_unit_variance(correlated):
    white = pp.PCAWhitening(epsilon=0.0).fit(correlated)
    out = white.transform(correlated)
    np.testing.assert_allclose(np.cov(out, rowvar=False, bias=True), np.eye(4), atol=1e-8)
    # the components are ordered by decreasing variance
    assert np.all(np.diff(white.explained_variance_) <= 0)
    reduced = pp.PCAWhitening(n_components=2).fit(correlated)
    assert reduced.transform(correlated).shape == (2000, 2)
    np.testing.assert_allclose(white.inverse_transform(out), correlated, rtol=1e-10)
    assert white.inverse_transform(out.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        reduced.inverse_transform(out)
    with pytest.raises(RuntimeError, match="fit"):
        pp.PCAWhitening().inverse_transform(out)
    with pytest.raises(ValueError, match="n_components"):
        pp.PCAWhitening(n_components=5).fit(correlated)


def test_zca_whitening_keeps_shape_and_stays_close(rng):
    z = rng.standard_normal((3000, 2, 2, 2))
    images = z + 0.8 * z[:, :1, :1, :1]  # correlated pixels
    zca = pp.ZCAWhitening(epsilon=0.0).fit(images)
    out = zca.transform(images)
    assert out.shape == images.shape
    flat = out.reshape(len(out), -1)
    np.testing.assert_allclose(np.cov(flat, rowvar=False, bias=True), np.eye(8), atol=1e-8)
    # ZCA is symmetric: W = U diag(1/sqrt(s)) U^T, the whitening closest to the identity
    centred = images.reshape(len(images), -1) - images.reshape(len(images), -1).mean(0)
    cov = centred.T @ centred / len(centred)
    s, u = np.linalg.eigh(cov)
    w = u @ np.diag(1 / np.sqrt(s)) @ u.T
    np.testing.assert_allclose(flat, centred @ w, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(zca.inverse_transform(out), images, rtol=1e-10, atol=1e-12)
    assert zca.inverse_transform(out.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        zca.inverse_transform(out[:, :1])
    with pytest.raises(RuntimeError, match="fit"):
        pp.ZCAWhitening().inverse_transform(out)


def test_one_hot():
    out = pp.one_hot([2, 0, 1, 2])
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert out.dtype == np.float32
    assert pp.one_hot(np.array([[1], [0]]), num_classes=4).shape == (2, 4)
    assert pp.to_categorical is pp.one_hot
    for bad in ([-1, 0], [0.5], [[0, 1]]):
        with pytest.raises((ValueError, TypeError)):
            pp.one_hot(bad)
    with pytest.raises(ValueError, match="num_classes"):
        pp.one_hot([3], num_classes=3)


def test_train_validation_split(rng):
    x = np.arange(100).reshape(50, 2)
    y = np.arange(50) % 5
    (xt, yt), (xv, yv) = pp.train_validation_split(x, y, 0.2, seed=0)
    assert len(xt) == 40 and len(xv) == 10
    assert sorted(np.concatenate([xt[:, 0], xv[:, 0]])) == list(range(0, 100, 2))
    np.testing.assert_array_equal(yt, (xt[:, 0] // 2) % 5)
    (xt2, _), _ = pp.train_validation_split(x, y, 0.2, seed=0)
    np.testing.assert_array_equal(xt, xt2)
    train, val = pp.train_validation_split(x, validation_fraction=0.1, shuffle=False)
    np.testing.assert_array_equal(val, x[45:])
    (_, yt), (_, yv) = pp.train_validation_split(x, y, 0.2, seed=1, stratify=True)
    assert np.all(np.bincount(yv) == 2) and np.all(np.bincount(yt) == 8)
    with pytest.raises(ValueError, match="validation_fraction"):
        pp.train_validation_split(x, y, 1.0)
    with pytest.raises(ValueError, match="samples"):
        pp.train_validation_split(x, y[:10])


# ----------------------------------------------------------------------------- initializers
def test_fans():
    assert compute_fans((784, 64)) == (784, 64)
    assert compute_fans((16, 8, 3, 5)) == (8 * 15, 16 * 15)


@pytest.mark.parametrize("name, shape, expected_var", [
    ("glorot_uniform", (300, 200), 2 / 500),
    ("xavier_normal", (300, 200), 2 / 500),
    ("he_uniform", (400, 100), 2 / 400),
    ("he_normal", (32, 16, 3, 3), 2 / (16 * 9)),
    ("glorot_normal", (32, 16, 3, 3), 2 / (16 * 9 + 32 * 9)),
])
def test_variance_scaling_initializers(name, shape, expected_var):
    w = initializers.get(name)(shape, dtype=np.float64, rng=np.random.default_rng(0))
    assert w.shape == shape and w.dtype == np.float64
    n = w.size
    # the sample variance of n draws has relative standard error sqrt(2/n) (normal) or less
    assert abs(w.var() / expected_var - 1) < 5 * math.sqrt(2 / n)
    assert abs(w.mean()) < 5 * math.sqrt(expected_var / n)
    if "uniform" in name:
        assert np.abs(w).max() <= math.sqrt(3 * expected_var)


def test_simple_initializers_and_seeds():
    rng = np.random.default_rng(0)
    assert np.all(initializers.get("zeros")((2, 3)) == 0)
    assert np.all(initializers.get("ones")((2,)) == 1)
    assert np.all(initializers.Constant(0.25)((3,)) == 0.25)
    u = initializers.RandomUniform(-0.5, 2.0)((10000,), rng=rng)
    assert u.min() >= -0.5 and u.max() < 2.0 and abs(u.mean() - 0.75) < 0.03
    n = initializers.RandomNormal(stddev=0.1)((10000,), rng=rng)
    assert abs(n.std() - 0.1) < 0.005 and n.dtype == np.float32
    seeded = initializers.HeNormal(seed=3)
    np.testing.assert_array_equal(seeded((4, 4)), seeded((4, 4)))
    assert not np.array_equal(initializers.HeNormal()((4, 4)), initializers.HeNormal()((4, 4)))
    config = initializers.serialize(initializers.RandomNormal(0.5, 0.2, seed=1))
    again = initializers.deserialize(config)
    np.testing.assert_array_equal(again((3,)), initializers.RandomNormal(0.5, 0.2, seed=1)((3,)))
    for bad in ("glorious", 3):
        with pytest.raises((ValueError, TypeError)):
            initializers.get(bad)
    with pytest.raises(ValueError, match="stddev"):
        initializers.RandomNormal(stddev=-1)
