import importlib
import os

import numpy as np
import pytest

import fastnn
import fastnn.nn

# CI installs the wheel and sets FASTNN_REQUIRE_NATIVE=1: the suite must then run
# against the compiled extension, never silently against the NumPy fallback.
if os.environ.get("FASTNN_REQUIRE_NATIVE") == "1" and not fastnn.config()["native_available"]:
    raise RuntimeError(f"native extension required but not loaded: {fastnn.config()['native_error']}")

NATIVE = fastnn.config()["native_available"]
requires_native = pytest.mark.skipif(not NATIVE, reason="native extension not built")
# a build without OpenMP (FASTNN_NO_OPENMP=1) runs every kernel on one thread: it has no
# multi-thread schedules to check
OPENMP = NATIVE and fastnn.config()["openmp"]
requires_openmp = pytest.mark.skipif(not OPENMP, reason="single-threaded build: no multi-thread schedules")


def optional_module(name):
    """The optional dependency `name` (a test without it skips), except where
    FASTNN_REQUIRE_OPTIONAL (comma-separated) names it: CI's stage with the extras
    installed sets it, so a missing or broken install fails there instead of skipping."""
    if name in os.environ.get("FASTNN_REQUIRE_OPTIONAL", "").split(","):
        return importlib.import_module(name)
    return pytest.importorskip(name)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _image_data_format_restored():
    """fastnn.nn.set_image_data_format is global: every test starts from, and leaves, the
    default it found (channels_first), so that no test leaks a format into the next."""
    before = fastnn.nn.image_data_format()
    yield
    fastnn.nn.set_image_data_format(before)


class MeanAbsoluteErrorLoss(fastnn.nn.losses.Loss):
    """A loss of a user's own (not one load_model can rebuild), written to the base class's signature."""
    name = "mean_absolute_error"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        return np.asarray(t, dtype)

    def __call__(self, y, t):
        d = y - t
        return float(np.abs(d).mean()), np.sign(d) / d.size
