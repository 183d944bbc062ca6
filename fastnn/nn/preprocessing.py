"""Data preprocessing: mean subtraction, z-score and min-max scaling, PCA and ZCA
whitening, one-hot encoding and a train/validation split.

The scalers follow scikit-learn's ``fit`` / ``transform`` / ``fit_transform`` /
``inverse_transform``. Statistics are per feature: over the samples (axis 0) by default,
i.e. per pixel for images; ``per_channel=True`` on NCHW images pools height and width too
(one statistic per channel). Fit them on the training data only and apply the same
transform to validation and test data. Outputs are float32 unless the input is float64.
"""
import numpy as np

__all__ = ["MeanSubtraction", "StandardScaler", "MinMaxScaler", "PCAWhitening", "ZCAWhitening",
           "one_hot", "to_categorical", "train_validation_split"]


def _as_float(owner, x):
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{owner}: expected numeric data, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{owner}: expected data of shape (N, ...) with at least 2 dimensions, got {x.shape}")
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)


class _Scaler:
    def __init__(self, per_channel=False):
        self.per_channel = bool(per_channel)
        self.fitted_shape = None

    def _axes(self, x):
        if self.per_channel:
            if x.ndim != 4:
                raise ValueError(f"{type(self).__name__}: per_channel=True needs NCHW data, got shape {x.shape}")
            return (0, 2, 3)
        return (0,)

    def _check_fitted(self, x):
        if self.fitted_shape is None:
            raise RuntimeError(f"{type(self).__name__}: call fit first")
        if x.shape[1:] != self.fitted_shape:
            raise ValueError(f"{type(self).__name__}: fitted on samples of shape {self.fitted_shape}, "
                             f"got data of shape {x.shape}")

    def fit(self, x):
        x = _as_float(type(self).__name__, x)
        if len(x) == 0:
            raise ValueError(f"{type(self).__name__}: cannot fit on 0 samples")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{type(self).__name__}: the data contains NaN or Inf")
        self._fit(x.astype(np.float64), self._axes(x))
        self.fitted_shape = x.shape[1:]
        return self

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def transform(self, x):
        x = _as_float(type(self).__name__, x)
        self._check_fitted(x)
        return self._transform(x).astype(x.dtype, copy=False)

    def inverse_transform(self, x):
        x = _as_float(type(self).__name__, x)
        self._check_fitted(x)
        return self._inverse(x).astype(x.dtype, copy=False)


class MeanSubtraction(_Scaler):
    """x - mean (per feature, or per channel)."""

    def _fit(self, x, axes):
        self.mean_ = x.mean(axis=axes, keepdims=True)[0]

    def _transform(self, x):
        return x - self.mean_

    def _inverse(self, x):
        return x + self.mean_


class StandardScaler(_Scaler):
    """z-score: (x - mean) / std. Features of zero variance are only centred (std taken as 1)."""

    def __init__(self, with_mean=True, with_std=True, per_channel=False):
        super().__init__(per_channel)
        self.with_mean, self.with_std = bool(with_mean), bool(with_std)

    def _fit(self, x, axes):
        mean = x.mean(axis=axes, keepdims=True)[0]
        std = x.std(axis=axes, keepdims=True)[0] if self.with_std else np.ones_like(mean)
        self.mean_ = mean if self.with_mean else np.zeros_like(mean)
        # The mean of n equal values is off by up to about n * eps * |mean|, which leaves a
        # "std" of that size in a constant feature; dividing by it would blow the feature up.
        count = x.size // mean.size
        rounding = count * np.finfo(np.float64).eps * np.abs(mean)
        self.scale_ = np.where(std > rounding, std, 1.0)

    def _transform(self, x):
        return (x - self.mean_) / self.scale_

    def _inverse(self, x):
        return x * self.scale_ + self.mean_


class MinMaxScaler(_Scaler):
    """Maps [min, max] of the training data to ``feature_range`` (constant features go to its lower end)."""

    def __init__(self, feature_range=(0.0, 1.0), per_channel=False):
        super().__init__(per_channel)
        lo, hi = (float(v) for v in feature_range)
        if not lo < hi:
            raise ValueError(f"MinMaxScaler: feature_range must be (low, high) with low < high, got {feature_range}")
        self.feature_range = (lo, hi)

    def _fit(self, x, axes):
        self.data_min_ = x.min(axis=axes, keepdims=True)[0]
        self.data_max_ = x.max(axis=axes, keepdims=True)[0]
        span = self.data_max_ - self.data_min_
        lo, hi = self.feature_range
        self.scale_ = (hi - lo) / np.where(span > 0, span, 1.0)

    def _transform(self, x):
        return (x - self.data_min_) * self.scale_ + self.feature_range[0]

    def _inverse(self, x):
        return (x - self.feature_range[0]) / self.scale_ + self.data_min_


class PCAWhitening:
    """Project the centred data onto its principal axes and scale each to unit variance:
    ``(x - mean) @ U[:, :k] / sqrt(S[:k] + epsilon)``, x flattened to (N, D). The output has
    ``n_components`` (default D) decorrelated unit-variance features. ``epsilon`` regularises
    directions of tiny variance."""

    def __init__(self, n_components=None, epsilon=1e-5):
        if n_components is not None and (isinstance(n_components, bool) or not isinstance(n_components, int)
                                         or n_components < 1):
            raise ValueError(f"{type(self).__name__}: n_components must be a positive int or None, got {n_components!r}")
        if not epsilon >= 0:
            raise ValueError(f"{type(self).__name__}: epsilon must be >= 0, got {epsilon}")
        self.n_components = n_components
        self.epsilon = float(epsilon)
        self.mean_ = None

    def fit(self, x):
        x = _as_float(type(self).__name__, x)
        if len(x) < 2:
            raise ValueError(f"{type(self).__name__}: need at least 2 samples, got {len(x)}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{type(self).__name__}: the data contains NaN or Inf")
        self.sample_shape = x.shape[1:]
        flat = x.reshape(len(x), -1).astype(np.float64)
        d = flat.shape[1]
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise ValueError(f"{type(self).__name__}: n_components={k} exceeds the {d} features")
        self.mean_ = flat.mean(axis=0)
        centred = flat - self.mean_
        cov = centred.T @ centred / len(flat)
        variances, vectors = np.linalg.eigh(cov)
        order = np.argsort(variances)[::-1]
        self.explained_variance_ = np.maximum(variances[order], 0.0)
        self.components_ = vectors[:, order]
        self.k_ = k
        return self

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def _checked(self, x, inverse=False):
        if self.mean_ is None:
            raise RuntimeError(f"{type(self).__name__}: call fit first")
        x = _as_float(type(self).__name__, x)
        sample_shape = self._output_shape() if inverse else self.sample_shape
        if x.shape[1:] != sample_shape:
            raise ValueError(f"{type(self).__name__}: expected data of shape (N,) + {sample_shape}, got {x.shape}")
        return x

    def _output_shape(self):
        return (self.k_,)

    def _flat(self, x):
        x = self._checked(x)
        return x, x.reshape(len(x), -1).astype(np.float64) - self.mean_

    def transform(self, x):
        x, centred = self._flat(x)
        u = self.components_[:, :self.k_]
        return (centred @ u / np.sqrt(self.explained_variance_[:self.k_] + self.epsilon)).astype(x.dtype)

    def inverse_transform(self, z):
        z = self._checked(z, inverse=True)
        u = self.components_[:, :self.k_]
        flat = (z.astype(np.float64) * np.sqrt(self.explained_variance_[:self.k_] + self.epsilon)) @ u.T + self.mean_
        return flat.reshape((len(z),) + self.sample_shape).astype(z.dtype)


class ZCAWhitening(PCAWhitening):
    """PCA whitening rotated back to the input space, ``x_pca @ U.T``: decorrelated,
    unit-variance features that stay as close as possible to the original (same shape as
    the input, e.g. images stay images)."""

    def __init__(self, epsilon=1e-5):
        super().__init__(None, epsilon)

    def _output_shape(self):
        return self.sample_shape

    def transform(self, x):
        x, centred = self._flat(x)
        u = self.components_
        white = (centred @ u / np.sqrt(self.explained_variance_ + self.epsilon)) @ u.T
        return white.reshape(x.shape).astype(x.dtype)

    def inverse_transform(self, z):
        z = self._checked(z, inverse=True)
        u = self.components_
        flat = (z.reshape(len(z), -1).astype(np.float64) @ u
                * np.sqrt(self.explained_variance_ + self.epsilon)) @ u.T + self.mean_
        return flat.reshape(z.shape).astype(z.dtype)


def one_hot(labels, num_classes=None, dtype=np.float32):
    """Integer labels (N,) -> one-hot rows (N, num_classes) (default: max label + 1)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"one_hot: expected labels of shape (N,), got {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise ValueError("one_hot: labels must be integers")
    elif labels.dtype.kind not in "iub":
        raise TypeError(f"one_hot: expected integer labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"one_hot: labels must be >= 0, got {labels.min()}")
    top = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        num_classes = top
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < top:
        raise ValueError(f"one_hot: num_classes must be an int >= {top} (max label + 1), got {num_classes!r}")
    out = np.zeros((len(labels), int(num_classes)), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


to_categorical = one_hot


def train_validation_split(x, y=None, validation_fraction=0.2, shuffle=True, seed=None, stratify=False):
    """Split (x, y) into ``(x_train, y_train), (x_val, y_val)`` (``x_train, x_val`` without y).
    ``validation_fraction`` of the samples (rounded, at least one of each part) go to
    validation; ``shuffle`` draws them at random (``seed``); ``stratify`` keeps the class
    proportions of integer labels ``y`` in both parts."""
    x = np.asarray(x)
    n = len(x)
    if y is not None:
        y = np.asarray(y)
        if len(y) != n:
            raise ValueError(f"train_validation_split: x has {n} samples but y has {len(y)}")
    if not 0.0 < float(validation_fraction) < 1.0:
        raise ValueError(f"train_validation_split: validation_fraction must be in (0, 1), got {validation_fraction}")
    if n < 2:
        raise ValueError(f"train_validation_split: need at least 2 samples, got {n}")
    rng = np.random.default_rng(seed)
    if stratify:
        if y is None or y.ndim != 1 or y.dtype.kind not in "iub":
            raise ValueError("train_validation_split: stratify=True needs integer labels y of shape (N,)")
        val_idx = []
        for label in np.unique(y):
            members = np.flatnonzero(y == label)
            if shuffle:
                members = rng.permutation(members)
            take = int(round(len(members) * validation_fraction))
            val_idx.append(members[len(members) - take:])
        val_idx = np.sort(np.concatenate(val_idx))
        mask = np.zeros(n, dtype=bool)
        mask[val_idx] = True
        train_idx = np.flatnonzero(~mask)
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise ValueError("train_validation_split: the split leaves an empty part")
    else:
        n_val = min(n - 1, max(1, int(round(n * validation_fraction))))
        order = rng.permutation(n) if shuffle else np.arange(n)
        train_idx, val_idx = order[:n - n_val], order[n - n_val:]
    if y is None:
        return x[train_idx], x[val_idx]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
