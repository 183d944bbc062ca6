"""fastnn.optim against the book's update rules (common/optimizer.py), written out
here in float64, for several steps, on both backends and in float32/float64;
plus weight decay, L1, max-norm, learning-rate schedules and argument checks."""
import math

import numpy as np
import pytest

import fastnn
from fastnn import optim
from conftest import requires_native

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


class BookRule:
    """The book's update rules on float64 copies, with L2 / L1 folded into the gradient."""

    def __init__(self, name, lr, wd=0.0, l1=0.0, **hyper):
        self.name, self.lr, self.wd, self.l1, self.hyper = name, lr, wd, l1, hyper
        self.state = {}
        self.iter = 0

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.iter += 1
        for key, p in params.items():
            g = grads[key] + self.wd * p + self.l1 * np.sign(p)
            s = self.state.setdefault(key, {"a": np.zeros_like(p), "b": np.zeros_like(p)})
            if self.name == "SGD":
                p -= lr * g
            elif self.name == "Momentum":
                s["a"] = self.hyper.get("momentum", 0.9) * s["a"] - lr * g
                p += s["a"]
            elif self.name == "Nesterov":
                mom = self.hyper.get("momentum", 0.9)
                s["a"] = mom * s["a"] - lr * g
                p += mom * mom * s["a"] - (1 + mom) * lr * g
            elif self.name == "AdaGrad":
                s["a"] += g * g
                p -= lr * g / (np.sqrt(s["a"]) + 1e-7)
            elif self.name == "RMSprop":
                rho = self.hyper.get("decay_rate", 0.99)
                s["a"] = rho * s["a"] + (1 - rho) * g * g
                p -= lr * g / (np.sqrt(s["a"]) + 1e-7)
            elif self.name == "Adam":
                b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
                s["a"] = b1 * s["a"] + (1 - b1) * g           # first moment
                s["b"] = b2 * s["b"] + (1 - b2) * g * g       # second moment
                step = lr * math.sqrt(1 - b2 ** self.iter) / (1 - b1 ** self.iter)
                p -= step * s["a"] / (np.sqrt(s["b"]) + 1e-7)


NAMES = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
HYPER = {"SGD": {}, "Momentum": {"momentum": 0.8}, "Nesterov": {"momentum": 0.7}, "AdaGrad": {},
         "RMSprop": {"decay_rate": 0.9}, "Adam": {"beta1": 0.8, "beta2": 0.95}}


def make_params(rng, dtype):
    big = rng.standard_normal((5, 4)).astype(dtype)
    return {
        "W1": rng.standard_normal((4, 3)).astype(dtype),
        "b1": rng.standard_normal(3).astype(dtype),
        "W2": rng.standard_normal((2, 1, 3, 3)).astype(dtype),
        "Wt": big.T,                                  # a non-contiguous view, updated in place
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("wd,l1", [(0.0, 0.0), (0.05, 0.01)])
def test_updates_follow_the_book(backend, dtype, name, wd, l1, rng):
    params = make_params(rng, dtype)
    originals = {k: v for k, v in params.items()}
    ref_params = {k: v.astype(np.float64) for k, v in params.items()}
    opt = getattr(optim, name)(lr=0.05, weight_decay=wd, l1=l1, **HYPER[name])
    ref = BookRule(name, 0.05, wd, l1, **HYPER[name])
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        saved = {k: g.copy() for k, g in grads.items()}
        opt.update(params, grads)
        ref.step(ref_params, {k: g.astype(np.float64) for k, g in grads.items()})
        for k in params:
            assert params[k] is originals[k] and params[k].dtype == dtype
            np.testing.assert_allclose(params[k], ref_params[k], err_msg=k, **tol(dtype))
            np.testing.assert_array_equal(grads[k], saved[k])     # gradients are never modified
    # the state is kept as the book keeps it
    if name in ("Momentum", "Nesterov"):
        np.testing.assert_allclose(opt.v["W1"], ref.state["W1"]["a"], **tol(dtype))
    elif name in ("AdaGrad", "RMSprop"):
        np.testing.assert_allclose(opt.h["W1"], ref.state["W1"]["a"], **tol(dtype))
    elif name == "Adam":
        assert opt.iter == 4
        np.testing.assert_allclose(opt.m["W1"], ref.state["W1"]["a"], **tol(dtype))
        np.testing.assert_allclose(opt.v["W1"], ref.state["W1"]["b"], **tol(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_python_numbers_as_parameters_are_rebound_as_in_the_book(backend, name):
    # chapter 6's optimizer_compare_naive.py: params = {'x': -7.0, 'y': 2.0}, a path recorded
    # by appending params['x'] after each update
    params = {"x": -7.0, "y": 2}
    ref_params = {"x": np.array(-7.0), "y": np.array(2.0)}
    opt = getattr(optim, name)(lr=0.3, **HYPER[name])
    ref = BookRule(name, 0.3, **HYPER[name])
    path = []
    for _ in range(30):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        opt.update(params, grads)
        ref.step(ref_params, {k: np.array(g) for k, g in grads.items()})
        path.append(params["x"])
        assert type(params["x"]) is float and type(params["y"]) is float
        assert params["x"] == pytest.approx(float(ref_params["x"]), rel=1e-12, abs=1e-300)
        assert params["y"] == pytest.approx(float(ref_params["y"]), rel=1e-12, abs=1e-300)
    assert len(set(path)) > 1
    scalar32 = {"w": np.float32(1.5)}
    opt.update(scalar32, {"w": 1.0})
    assert type(scalar32["w"]) is np.float32
    with pytest.raises(TypeError, match="number in a tuple"):
        optim.SGD().update((1.0,), [1.0])
    numbers = {"x": 3.0, "y": 1.0}
    optim.SGD(lr=0.5).update(numbers, {"x": 1, "y": 2})            # integer gradients of numbers, as the book's
    assert numbers == {"x": 2.5, "y": 0.0}
    with pytest.raises(TypeError, match="gradient 'y' must be a float32 or float64 array"):
        optim.SGD(lr=0.5).update(numbers, {"x": 1.0, "y": np.array("a")})
    assert numbers == {"x": 2.5, "y": 0.0}                         # nothing changed: all or nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_integer_gradient_arrays_update_as_their_float64_values(name, dtype):
    # the book's params[key] -= lr * grads[key] takes any numeric gradient
    p_int, p_float = np.linspace(-1, 1, 7).astype(dtype), np.linspace(-1, 1, 7).astype(dtype)
    g = np.array([3, -2, 0, 1, 5, -7, 2])
    by_int, by_float = getattr(optim, name)(lr=0.1), getattr(optim, name)(lr=0.1)
    for _ in range(3):
        by_int.update({"w": p_int}, {"w": g})
        by_float.update({"w": p_float}, {"w": g.astype(np.float64)})
    assert p_int.dtype == dtype
    np.testing.assert_array_equal(p_int, p_float)
    assert not np.array_equal(p_int, np.linspace(-1, 1, 7).astype(dtype))


def test_book_defaults():
    assert optim.SGD().lr == 0.01
    m = optim.Momentum()
    assert (m.lr, m.momentum, m.v) == (0.01, 0.9, None)
    assert optim.AdaGrad().lr == 0.01 and optim.AdaGrad().h is None
    r = optim.RMSprop()
    assert (r.lr, r.decay_rate) == (0.01, 0.99)
    a = optim.Adam()
    assert (a.lr, a.beta1, a.beta2, a.iter, a.m, a.v) == (0.001, 0.9, 0.999, 0, None, None)


def test_gradient_of_another_dtype_and_list_params(backend, rng):
    p = rng.standard_normal((3, 2)).astype(np.float32)
    g = rng.standard_normal((3, 2))
    expected = p.astype(np.float64) - 0.1 * g
    optim.SGD(lr=0.1).update([p], [g])
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_max_norm_clips_columns_and_filters_but_not_biases(backend):
    W = np.array([[3.0, 0.1], [4.0, 0.2]])           # column norms 5 and ~0.22
    K = np.zeros((2, 1, 2, 2))
    K[0] = 2.0                                       # filter norm 4
    K[1] = 0.1
    b = np.array([10.0, -10.0])
    params = {"W": W, "K": K, "b": b}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    optim.SGD(lr=0.1, max_norm=2.0).update(params, grads)
    np.testing.assert_allclose(W[:, 0], [1.2, 1.6])
    np.testing.assert_allclose(W[:, 1], [0.1, 0.2])
    np.testing.assert_allclose(K[0], 1.0)
    np.testing.assert_allclose(K[1], 0.1)
    np.testing.assert_array_equal(b, [10.0, -10.0])


def test_max_norm_clips_float32_columns_whose_squares_overflow(backend):
    W = np.full((2, 1), 1e20, np.float32)            # norm 1.41e20; its squares are beyond float32
    optim.SGD(lr=0.1, max_norm=1.0).update({"W": W}, {"W": np.zeros_like(W)})
    np.testing.assert_allclose(W[:, 0], [np.sqrt(0.5)] * 2, rtol=1e-6)


def test_max_norm_applies_after_the_update(backend):
    W = np.array([[0.0], [1.0]])
    optim.SGD(lr=1.0, max_norm=1.5).update({"W": W}, {"W": np.array([[-3.0], [-3.0]])})
    # after the step W = (3, 4), norm 5 -> scaled to norm 1.5
    np.testing.assert_allclose(W[:, 0], [0.9, 1.2])


@pytest.mark.parametrize("schedule,expected", [
    (optim.StepDecay(step_size=2, gamma=0.5), [1.0, 1.0, 0.5, 0.5, 0.25]),
    (optim.ExponentialDecay(0.25, decay_steps=2), [1.0, 0.5, 0.25, 0.125, 0.0625]),
    (optim.ExponentialDecay(0.25, decay_steps=2, staircase=True), [1.0, 1.0, 0.25, 0.25, 0.0625]),
    (optim.InverseTimeDecay(1.0, decay_steps=1), [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5]),
    (optim.InverseTimeDecay(1.0, decay_steps=2, staircase=True), [1.0, 1.0, 0.5, 0.5, 1 / 3]),
    (lambda step, base: base / (step + 1) ** 2, [1.0, 1 / 4, 1 / 9, 1 / 16, 1 / 25]),
], ids=["step", "exp", "exp-staircase", "inverse", "inverse-staircase", "callable"])
def test_schedules_drive_lr(backend, schedule, expected):
    p = np.zeros(2)
    opt = optim.SGD(lr=1.0, schedule=schedule)
    assert opt.lr == pytest.approx(expected[0])
    total = 0.0
    for rate in expected:
        opt.update({"p": p}, {"p": np.ones(2)})
        assert opt.lr == pytest.approx(rate)        # lr shows the rate of the update just made
        total += rate
        np.testing.assert_allclose(p, -total)


def test_adam_uses_the_scheduled_rate(backend, rng):
    p = rng.standard_normal(4)
    ref = {"p": p.copy()}
    opt = optim.Adam(lr=0.1, schedule=optim.StepDecay(1, 0.5))
    book = BookRule("Adam", 0.1)
    for step in range(3):
        g = rng.standard_normal(4)
        opt.update({"p": p}, {"p": g})
        book.step(ref, {"p": g}, lr=0.1 * 0.5 ** step)
        np.testing.assert_allclose(p, ref["p"], rtol=1e-12)


def test_lr_is_settable_without_schedule(backend):
    p = np.zeros(1)
    opt = optim.Momentum(lr=0.1, momentum=0.0)
    opt.lr = 0.5                                    # e.g. a scheduler callback
    opt.update({"p": p}, {"p": np.ones(1)})
    np.testing.assert_allclose(p, [-0.5])


def test_get_and_config_round_trip():
    assert isinstance(optim.get("adam"), optim.Adam)
    assert isinstance(optim.get("RMSprop", lr=0.1), optim.RMSprop)
    opt = optim.Nesterov(lr=0.2, momentum=0.5, weight_decay=1e-3, schedule=optim.ExponentialDecay(0.9, 10))
    clone = optim.get(opt.get_config())
    assert type(clone) is optim.Nesterov and clone.get_config() == opt.get_config()
    assert optim.get(opt) is opt
    with pytest.raises(ValueError, match="optim.get"):
        optim.get("adadelta")


def test_bad_arguments():
    with pytest.raises(ValueError, match="SGD.*lr"):
        optim.SGD(lr=-1)
    with pytest.raises(TypeError, match="Adam.*beta1"):
        optim.Adam(beta1="0.9")
    with pytest.raises(ValueError, match="Adam"):
        optim.Adam(beta2=1.0)
    with pytest.raises(ValueError, match="max_norm"):
        optim.SGD(max_norm=0)
    with pytest.raises(TypeError, match="schedule"):
        optim.SGD(schedule=3)
    with pytest.raises(ValueError, match="StepDecay"):
        optim.StepDecay(0)
    p = {"W": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="no gradient.*'W'"):
        optim.SGD().update(p, {})
    with pytest.raises(ValueError, match="shape"):
        optim.SGD().update(p, {"W": np.zeros(3)})
    with pytest.raises(TypeError, match="SGD.update: expected parameter 'W' to be a float32 or float64 array, "
                                        "got dtype int64"):
        optim.SGD().update({"W": np.zeros(2, dtype=np.int64)}, {"W": np.zeros(2)})
    with pytest.raises(TypeError, match="SGD.update: expected parameter 'W' to be a writeable float ndarray"):
        optim.SGD().update({"W": [1.0, 2.0]}, {"W": np.zeros(2)})
    with pytest.raises(TypeError, match=r"SGD.update: parameter 'W' is float32 in the other byte order \(>f4\)"):
        optim.SGD().update({"W": np.zeros(2, dtype=">f4")}, {"W": np.zeros(2)})
    with pytest.raises(TypeError, match="dict"):
        optim.SGD().update(np.zeros(2), np.zeros(2))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["float16 parameter", "longdouble parameter", "float16 gradient",
                                  "big-endian parameter"])
def test_a_dtype_the_kernels_refuse_is_caught_before_any_parameter_changes(backend, name, case):
    params = {"a": np.ones(2), "b": np.ones(3)}
    grads = {"a": np.ones(2), "b": np.ones(3)}
    if case == "float16 parameter":
        params["b"] = params["b"].astype(np.float16)
    elif case == "longdouble parameter":
        params["b"] = params["b"].astype(np.longdouble)
    elif case == "big-endian parameter":
        params["b"] = params["b"].astype(">f8")
    else:
        grads["b"] = grads["b"].astype(np.float16)
    opt = getattr(optim, name)(lr=0.1, **HYPER[name])
    with pytest.raises(TypeError, match=f"{name}.update: .*'b'.* (float32 or float64|in the other byte order)"):
        opt.update(params, grads)
    np.testing.assert_array_equal(params["a"], 1.0)
    assert opt.iterations == 0 and not getattr(opt, "iter", 0)
    for store in ("v", "h", "m"):
        assert not getattr(opt, store, None)


@pytest.mark.parametrize("returned", [float("nan"), float("inf"), -0.5, "x", None])
def test_a_schedules_rate_is_checked_before_any_parameter_changes(backend, returned):
    calls = []

    def schedule(step, base_lr):  # a good rate for the constructor's call, then a bad one
        calls.append(step)
        return base_lr if len(calls) == 1 else returned

    opt = optim.SGD(lr=0.1, schedule=schedule)
    p = {"W": np.ones(3)}
    error = TypeError if isinstance(returned, (str, type(None))) else ValueError
    with pytest.raises(error, match="SGD: expected (a finite )?learning rate from the schedule"):
        opt.update(p, {"W": np.ones(3)})
    np.testing.assert_array_equal(p["W"], 1.0)
    assert opt.iterations == 0 and calls == [0, 0]
    with pytest.raises(error, match="from the schedule at step 0"):
        optim.SGD(lr=0.1, schedule=lambda step, base_lr: returned)


def test_exponential_decay_past_the_largest_float_is_an_infinite_rate():
    assert optim.ExponentialDecay(10.0)(10**6, 0.1) == float("inf")
    assert optim.ExponentialDecay(10.0)(10**6, 0.0) == 0.0
    assert optim.ExponentialDecay(0.5)(10**6, 0.1) == 0.0
    opt = optim.SGD(lr=0.1, schedule=optim.ExponentialDecay(10.0, decay_steps=1e-300))
    with pytest.raises(ValueError, match="SGD: expected a finite learning rate from the schedule at step 1, got inf"):
        opt.update({"W": np.ones(2)}, {"W": np.ones(2)})
        opt.update({"W": np.ones(2)}, {"W": np.ones(2)})


def test_get_names_an_unknown_argument():
    with pytest.raises(ValueError, match=r"optim.get: unknown argument\(s\) \['foo'\] for Adam"):
        optim.get({"name": "adam", "foo": 1})
    with pytest.raises(ValueError, match="unknown argument"):
        optim.get("sgd", rho=0.9)


@pytest.mark.parametrize("name", NAMES)
def test_a_read_only_parameter_is_a_type_error_and_nothing_changes(backend, name):
    # the type fastnn.ops raises for a read-only array it updates in place
    frozen = np.ones(3)
    frozen.flags.writeable = False
    params = {"a": np.ones(2), "b": frozen}
    opt = getattr(optim, name)(lr=0.1, **HYPER[name])
    with pytest.raises(TypeError, match=f"{name}.update: parameter 'b' is read-only"):
        opt.update(params, {"a": np.ones(2), "b": np.ones(3)})
    np.testing.assert_array_equal(params["a"], 1.0)
    np.testing.assert_array_equal(frozen, 1.0)
    assert opt.iterations == 0


def test_a_bad_entry_changes_nothing(backend):
    params = {"a": np.ones(2), "b": np.ones(3)}
    opt = optim.Adam(lr=0.1)
    with pytest.raises(ValueError, match="'b'"):
        opt.update(params, {"a": np.ones(2), "b": np.ones(4)})
    np.testing.assert_array_equal(params["a"], 1.0)
    assert opt.iter == 0 and opt.iterations == 0 and opt.m is None


@pytest.mark.parametrize("name", NAMES)
def test_a_gradient_overlapping_the_parameter_reads_as_numpy_reads_it(backend, name):
    # p = a[1:], g = a[:-1]: NumPy's p -= lr * g reads all of g before writing p
    a = np.arange(1.0, 40.0)
    b = a.copy()
    p, g = a[1:], a[:-1]
    ref_p, ref_g = b[1:].copy(), b[:-1].copy()
    opt = getattr(optim, name)(lr=0.5, **HYPER[name])
    ref = BookRule(name, 0.5, **HYPER[name])
    opt.update({"p": p}, {"p": g})
    ref.step({"p": ref_p}, {"p": ref_g})
    np.testing.assert_allclose(p, ref_p, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_is_keras_name_for_lr(name):
    cls = getattr(optim, name)
    opt = cls(learning_rate=0.25, **HYPER[name])
    assert opt.lr == opt.learning_rate == opt.base_lr == 0.25 and opt.get_config()["lr"] == 0.25
    assert cls(**HYPER[name]).learning_rate == (0.001 if name == "Adam" else 0.01)     # the defaults as before
    with pytest.raises(ValueError, match=f"{name}: give lr or learning_rate .* not both"):
        cls(lr=0.1, learning_rate=0.1, **HYPER[name])
    with pytest.raises(ValueError, match=f"{name}: expected learning_rate >= 0"):
        cls(learning_rate=-1.0)
    assert optim.get(name.lower(), learning_rate=0.5).lr == 0.5
    # setting it sets the rate the next update uses: 0 leaves the parameter as it is
    opt.learning_rate = 0.0
    assert opt.lr == 0.0
    p = np.array([1.0, -2.0])
    opt.update({"p": p}, {"p": np.array([3.0, 4.0])})
    np.testing.assert_array_equal(p, [1.0, -2.0])
    with pytest.raises(TypeError, match=f"{name}: expected learning_rate to be a real number, got str"):
        opt.learning_rate = "0.1"
    with pytest.raises(ValueError, match=f"{name}.learning_rate: the optimizer has a schedule"):
        cls(lr=0.1, schedule=optim.StepDecay(2), **HYPER[name]).learning_rate = 0.5


def test_sgd_with_momentum_is_keras_sgd_momentum(backend):
    # Keras: v = m * v - lr * g; p += v. By hand for lr = 0.1, m = 0.5 and gradients 2, then -4:
    # v1 = -0.2, p1 = 1 - 0.2 = 0.8; v2 = 0.5 * -0.2 + 0.4 = 0.3, p2 = 1.1
    opt = optim.SGD(learning_rate=0.1, momentum=0.5)
    p = np.array([1.0])
    opt.update({"p": p}, {"p": np.array([2.0])})
    np.testing.assert_allclose(p, [0.8], rtol=1e-15)
    opt.update({"p": p}, {"p": np.array([-4.0])})
    np.testing.assert_allclose(p, [1.1], rtol=1e-15)
    np.testing.assert_allclose(opt.v["p"], [0.3], rtol=1e-15)
    clone = optim.get(opt.get_config())
    assert type(clone) is optim.SGD and (clone.lr, clone.momentum) == (0.1, 0.5)
    assert "momentum" not in optim.SGD().get_config()          # a plain SGD's config is unchanged
    with pytest.raises(ValueError, match=r"SGD: nesterov=True .* not supported; fastnn.optim.Nesterov"):
        optim.SGD(momentum=0.9, nesterov=True)
    with pytest.raises(TypeError, match="SGD: expected nesterov to be True or False, got 1"):
        optim.SGD(momentum=0.9, nesterov=1)
    with pytest.raises(ValueError, match="SGD: expected momentum >= 0"):
        optim.SGD(momentum=-0.1)


@pytest.mark.parametrize("cls", [optim.ExponentialDecay, optim.InverseTimeDecay])
def test_staircase_must_be_a_bool(cls):
    for bad in ("no", 1, None, 0.0):
        with pytest.raises(TypeError, match=f"{cls.__name__}: expected staircase to be True or False, got"):
            cls(0.5, decay_steps=2, staircase=bad)
    # step 3 of 2-step decays: exponent/ratio 1.5, floored to 1 with staircase
    assert optim.ExponentialDecay(0.5, 2, staircase=True)(3, 1.0) == 0.5
    assert optim.ExponentialDecay(0.5, 2, staircase=np.bool_(False))(3, 1.0) == pytest.approx(0.5 ** 1.5, rel=1e-15)
    assert optim.InverseTimeDecay(0.5, 2, staircase=True)(3, 1.0) == pytest.approx(1 / 1.5, rel=1e-15)
    assert optim.InverseTimeDecay(0.5, 2, staircase=False)(3, 1.0) == pytest.approx(1 / 1.75, rel=1e-15)


def test_keras_positional_sgd_and_a_config_of_the_rate_in_use():
    sgd = optim.SGD(0.01, 0.9)                        # Keras's SGD(learning_rate, momentum)
    assert sgd.momentum == 0.9 and sgd.weight_decay == 0.0
    adam = optim.Adam()
    adam.learning_rate = 5e-4                         # as ReduceLROnPlateau lowers it
    assert optim.get(adam.get_config()).lr == 5e-4 and "lr=0.0005" in repr(adam)
    scheduled = optim.SGD(lr=1.0, schedule=optim.StepDecay(1, 0.5))
    scheduled.update({"w": np.ones(1)}, {"w": np.ones(1)})
    scheduled.update({"w": np.ones(1)}, {"w": np.ones(1)})
    assert scheduled.lr == 0.5 and scheduled.get_config()["lr"] == 1.0   # with a schedule: its base


def test_a_state_restored_in_another_dtype_keeps_its_values():
    momentum = optim.Momentum(lr=0.1, momentum=0.5)
    momentum.set_state({"iterations": 1, "lr": 0.1, "slots": {"v": {"w": np.array([2.0, -2.0])}}})
    w = np.zeros(2, np.float32)
    momentum.update({"w": w}, {"w": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(w, [1.0, -1.0])     # v = 0.5 * v - 0.1 * 0; w += v
    assert momentum.v["w"].dtype == np.float32
