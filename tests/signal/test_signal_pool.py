"""Tests of Theano's ``pool_2d`` (:mod:`deeplearning_tutorials.signal.pool`) and
``downsample.max_pool_2d`` in all their forms.

The oracles are Theano 1.0's ``Pool`` and ``MaxPoolGrad`` / ``AveragePoolGrad``
written out as loops over the windows: the output count of ``Pool.out_shape``;
a window starts at ``r * stride`` in the padded image and ends at the window's
size or the padded image's end; 'max', 'sum' and 'average_exc_pad' leave the
padding out, 'average_inc_pad' counts it. The gradient of a window goes to
every input equal to its maximum (ties included, adding up where windows
overlap), or is spread over the inputs the window counted.

Each backend compiles every case into one function (values and gradients):
float64 to 1e-10, float32 to 1e-5.
"""

import importlib.util
import itertools
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from deeplearning_tutorials.nnet import MaxPool2d
from deeplearning_tutorials.signal.downsample import max_pool_2d
from deeplearning_tutorials.signal.pool import pool_2d, pool_output_length

HAS_JAX = importlib.util.find_spec("jax") is not None
pytestmark = pytest.mark.usefixtures("jax_x64")


def theano_out_length(size, ws, stride, pad, ignore_border):
    """The output length along one axis, as Theano 1.0's ``Pool.out_shape`` computes it
    (written out here, independently of the package's ``pool_output_length``)."""
    r = size + 2 * pad
    if ignore_border:
        return r // stride if ws == stride else max((r - ws) // stride + 1, 0)
    if stride >= ws:
        return (r - 1) // stride + 1
    return max(0, (r - 1 - ws + stride) // stride) + 1


def _regions(size, ws, stride, pad, ignore_border, counts_padding):
    """Theano's window bounds along one axis, in unpadded coordinates."""
    n = theano_out_length(size, ws, stride, pad, ignore_border)
    padded = size + 2 * pad
    out = []
    for r in range(n):
        start, end = r * stride, min(r * stride + ws, padded)
        if not counts_padding:
            start, end = max(start, pad), min(end, size + pad)
        out.append((start - pad, end - pad, end - start))
    return out


def oracle(x, gz, ws, stride, pad, ignore_border, mode):
    """Theano's Pool and its gradient, by loops; returns (z, gx)."""
    inc = mode == "average_inc_pad"
    rows = _regions(x.shape[-2], ws[0], stride[0], pad[0], ignore_border, inc)
    cols = _regions(x.shape[-1], ws[1], stride[1], pad[1], ignore_border, inc)
    z = np.zeros(x.shape[:-2] + (len(rows), len(cols)))
    gx = np.zeros(x.shape)
    for k in np.ndindex(*x.shape[:-2]):
        for r, (r0, r1, rn) in enumerate(rows):
            for c, (c0, c1, cn) in enumerate(cols):
                # the real inputs of the window (padding is zero, counted or not)
                win = x[k][max(r0, 0) : r1, max(c0, 0) : c1]
                g = gz[k][r, c]
                if mode == "max":
                    z[k][r, c] = win.max()
                    gx[k][max(r0, 0) : r1, max(c0, 0) : c1] += (win == win.max()) * g
                elif mode == "sum":
                    z[k][r, c] = win.sum()
                    gx[k][max(r0, 0) : r1, max(c0, 0) : c1] += g
                else:
                    z[k][r, c] = win.sum() / (rn * cn)
                    gx[k][max(r0, 0) : r1, max(c0, 0) : c1] += g / (rn * cn)
    return z, gx


# (input shape, ws, stride, pad, ignore_border, mode): overlapping and gapped
# strides, padding, partial windows kept, images smaller than the window, 3-D
# and 5-D inputs, every mode.
CASES = [
    (shape, ws, st, pad, ib, mode)
    for mode in ("max", "sum", "average_inc_pad", "average_exc_pad")
    for shape, ws, st, pad, ib in [
        ((2, 3, 7, 6), (3, 2), (1, 2), (1, 1), True),
        ((2, 3, 7, 6), (3, 3), (2, 2), (0, 0), False),
        ((2, 1, 7, 6), (2, 2), (3, 3), (0, 0), False),
        ((1, 2, 2, 2), (3, 3), (1, 1), (0, 0), False),
        ((1, 1, 2, 2), (3, 3), (2, 2), (0, 0), True),
        ((3, 5, 5), (3, 3), (2, 2), (1, 1), True),
        ((1, 2, 1, 4, 5), (2, 3), (1, 1), (1, 0), True),
    ]
]


@pytest.fixture(scope="module")
def case_data():
    rng = np.random.default_rng(7)
    data = []
    for shape, ws, st, pad, ib, mode in CASES:
        # few distinct values: ties in windows, overlapping ones included
        x = rng.integers(-2, 3, size=shape).astype(float)
        n_out = [theano_out_length(n, w, s, p, ib)
                 for n, w, s, p in zip(shape[-2:], ws, st, pad)]
        gz = rng.normal(size=shape[:-2] + tuple(n_out))
        data.append((x, gz, *oracle(x, gz, ws, st, pad, ib, mode)))
    return data


def _compiled(mode, dtype):
    inputs, outputs = [], []
    for i, (shape, ws, st, pad, ib, pmode) in enumerate(CASES):
        x = pt.tensor(f"x{i}", dtype=dtype, shape=(None,) * len(shape))
        gz = pt.tensor(f"g{i}", dtype=dtype, shape=(None,) * len(shape))
        z = pool_2d(x, ws=ws, ignore_border=ib, stride=st, pad=pad, mode=pmode)
        inputs += [x, gz]
        outputs += [z, pytensor.grad((z * gz).sum(), x)]
    return pytensor.function(inputs, outputs, mode=mode)


# float64 on every backend; float32 on CVM (JAX runs with 64-bit types in this module)
@pytest.mark.parametrize("mode,dtype,tol", [
    ("NUMBA", "float64", 1e-10),
    ("CVM", "float64", 1e-10),
    pytest.param("JAX", "float64", 1e-10, marks=pytest.mark.skipif(
        not HAS_JAX, reason="JAX is not installed")),
    ("CVM", "float32", 1e-5),
])
def test_every_form_matches_theanos_loops_with_gradients(mode, dtype, tol, case_data):
    fn = _compiled(mode, dtype)
    results = fn(*[a.astype(dtype) for data in case_data for a in data[:2]])
    for k, (case, (_, _, z, gx)) in enumerate(zip(CASES, case_data)):
        got_z, got_gx = results[2 * k], results[2 * k + 1]
        assert got_z.dtype == dtype
        assert got_z.shape == z.shape, case
        np.testing.assert_allclose(got_z, z, rtol=tol, atol=tol, err_msg=str(case))
        np.testing.assert_allclose(got_gx, gx, rtol=tol, atol=tol, err_msg=str(case))


@pytest.mark.parametrize("mode", [
    "NUMBA", "CVM",
    pytest.param("JAX", marks=pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")),
])
def test_integer_images_keep_their_type_and_averages_truncate(mode):
    x = pt.tensor4("x", dtype="int32")
    modes = ("max", "sum", "average_inc_pad", "average_exc_pad")
    outs = [pool_2d(x, ws=(2, 3), ignore_border=True, stride=(1, 2), pad=(1, 1), mode=m)
            for m in modes]
    v = np.random.default_rng(5).integers(-50, 50, size=(2, 1, 4, 5)).astype("int32")
    for m, got in zip(modes, pytensor.function([x], outs, mode=mode)(v)):
        z, _ = oracle(v.astype(float), np.zeros(got.shape), (2, 3), (1, 2), (1, 1), True, m)
        assert got.dtype == np.int32, m
        np.testing.assert_array_equal(got, np.trunc(z), err_msg=m)


def test_ties_in_overlapping_windows_each_get_the_gradient():
    # 3x3 of equal values, 2x2 windows at stride 1: every input is a maximum of each
    # window holding it, so its gradient is the number of those windows
    x = pt.matrix("x")
    g = pytensor.grad(pool_2d(x, ws=(2, 2), ignore_border=True, stride=(1, 1)).sum(), x)
    got = pytensor.function([x], g, mode="NUMBA")(np.ones((3, 3)))
    np.testing.assert_array_equal(got, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_verify_grad_on_averages_with_padding():
    rng = np.random.default_rng(1)
    for mode in ("average_inc_pad", "average_exc_pad", "sum"):
        verify_grad(lambda a, m=mode: pool_2d(a, ws=(3, 2), ignore_border=True, stride=(2, 1),
                                              pad=(1, 1), mode=m),
                    [rng.normal(size=(2, 1, 5, 4))], rng=rng, mode="NUMBA")


def test_the_tutorials_case_is_one_maxpool_node():
    x = pt.tensor4("x")
    for z in (pool_2d(x, ws=(2, 2), ignore_border=True),
              pool_2d(x, ws=(2, 2), ignore_border=True, stride=(2, 2), pad=(0, 0))):
        assert isinstance(z.owner.op, MaxPool2d) and z.owner.inputs == [x]


def test_static_shapes_follow_theano():
    # Theano 1.0's Pool.out_shape for a 7 x 6 image, in the order of the product below.
    expected = iter([(6, 5), (6, 5), (8, 7), (3, 2), (4, 2), (4, 3),
                     (5, 5), (5, 5), (7, 7), (3, 2), (3, 2), (4, 3)])
    x = pt.tensor4("x", shape=(1, 1, 7, 6))
    for ws, st, pad, ib in itertools.product([(2, 2), (3, 2)], [(1, 1), (2, 3)],
                                             [(0, 0), (1, 1)], [True, False]):
        if pad != (0, 0) and not ib:
            continue
        z = pool_2d(x, ws=ws, ignore_border=ib, stride=st, pad=pad)
        assert z.type.shape[2:] == next(expected), (ws, st, pad, ib)


def test_output_lengths_are_theanos():
    for size, ws, st, pad, ib in itertools.product(range(1, 10), range(1, 5), range(1, 5),
                                                   range(3), [True, False]):
        if pad < ws and (ib or not pad):  # Theano's conditions on padding
            assert pool_output_length(size, ws, st, pad, ib) == theano_out_length(
                size, ws, st, pad, ib), (size, ws, st, pad, ib)


def test_deprecated_names_warn_and_mean_the_same():
    x = pt.tensor4("x")
    with pytest.warns(UserWarning, match="'ds' parameter"):
        a = pool_2d(x, ds=(3, 3), st=(2, 2), padding=(1, 1), ignore_border=True)
    b = pool_2d(x, ws=(3, 3), stride=(2, 2), pad=(1, 1), ignore_border=True)
    v = np.random.default_rng(0).normal(size=(1, 2, 6, 5))
    fn = pytensor.function([x], [a, b], mode="NUMBA")
    np.testing.assert_array_equal(*fn(v))
    with pytest.warns(UserWarning, match="ignore_border"):
        pool_2d(x, ws=(2, 2))


def test_downsample_max_pool_2d_defaults_to_partial_windows_with_a_warning():
    x = pt.matrix("x")
    with pytest.warns(UserWarning, match="ignore_border"):
        z = max_pool_2d(x, (2, 2))
    assert pytensor.function([x], z, mode="NUMBA")(np.arange(9.0).reshape(3, 3)).tolist() == \
        [[4.0, 5.0], [7.0, 8.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = max_pool_2d(x, (2, 2), ignore_border=True, st=(1, 1), mode="sum")
    assert pytensor.function([x], z, mode="NUMBA")(np.ones((3, 3))).tolist() == \
        [[4.0, 4.0], [4.0, 4.0]]


@pytest.mark.parametrize("kwargs,message", [
    (dict(ws=(2, 2), pad=(1, 1), ignore_border=False), "ignore_border=True"),
    (dict(ws=(2, 2), pad=(2, 0), ignore_border=True), "smaller than the window"),
    (dict(ws=(2, 0), ignore_border=True), "ws must be a pair of ints >= 1"),
    (dict(ws=(2, 2), stride=(0, 1), ignore_border=True), "stride must be a pair"),
    (dict(ws=(2, 2), mode="min", ignore_border=True), "mode must be one of"),
    (dict(ignore_border=True), "give the window size"),
    (dict(ws=(2, 2), ds=(2, 2), ignore_border=True), "not both"),
])
def test_bad_arguments_fail_when_the_graph_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pool_2d(pt.tensor4("x"), **kwargs)
