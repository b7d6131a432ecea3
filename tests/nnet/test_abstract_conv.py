"""Tests of Theano 1.0's ``conv2d`` (:mod:`deeplearning_tutorials.nnet.abstract_conv`) and
the legacy ``conv.conv2d`` in all their forms, against SciPy.

The oracle pads the images, spreads the filters with zeros (dilation), convolves
(``scipy.signal.convolve2d``) or correlates (``filter_flip=False``) each map pair
in 'valid' mode, sums over input maps and keeps every ``subsample``-th output.
The convolution is linear in each operand, so the gradients' oracle is the
transpose of the oracle's Jacobian, built one unit vector at a time.

Each backend compiles every case into one function (values and both gradients)
and must match the oracles: float64 to 1e-10, float32 to 1e-4.
"""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy.signal import convolve2d, correlate2d

from deeplearning_tutorials.nnet import conv as legacy
from deeplearning_tutorials.nnet import conv2d
from deeplearning_tutorials.nnet.abstract_conv import (
    conv2d_grad_wrt_inputs,
    conv2d_grad_wrt_weights,
    get_conv_output_shape,
)

HAS_JAX = importlib.util.find_spec("jax") is not None
pytestmark = pytest.mark.usefixtures("jax_x64")

# (input shape, filter shape, border_mode, subsample, filter_flip, filter_dilation):
# each border mode, odd sizes, strides that do and do not divide the output, both
# flips, dilations, tiny images, a 1x1 filter, filters as large as the padded image.
CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 2), "valid", (1, 1), True, (1, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 2), "valid", (2, 3), False, (1, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 2), "full", (1, 1), True, (1, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 2), "full", (2, 2), False, (2, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 3), "half", (1, 1), True, (1, 1)),
    ((2, 3, 7, 6), (4, 3, 2, 3), "half", (3, 2), False, (2, 2)),
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, (1, 1), True, (1, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (2, 1), True, (1, 3)),
    ((1, 1, 1, 1), (2, 1, 1, 1), "valid", (1, 1), True, (1, 1)),
    ((1, 2, 2, 3), (1, 2, 2, 2), "full", (1, 2), True, (1, 1)),
    ((1, 2, 2, 3), (3, 2, 3, 1), "half", (1, 1), False, (1, 1)),
    ((3, 1, 5, 5), (2, 1, 3, 3), "valid", (1, 1), True, (2, 2)),
    ((1, 2, 4, 4), (2, 2, 4, 4), "valid", (3, 3), False, (1, 1)),
    ((1, 1, 3, 2), (1, 1, 5, 4), 1, (1, 1), True, (1, 1)),
]


def _pads(border_mode, kshape, dilation):
    dk = [(k - 1) * d + 1 for k, d in zip(kshape[2:], dilation)]
    if border_mode == "valid":
        return 0, 0
    if border_mode == "full":
        return dk[0] - 1, dk[1] - 1
    if border_mode == "half":
        return dk[0] // 2, dk[1] // 2
    if isinstance(border_mode, int):
        return border_mode, border_mode
    return tuple(border_mode)


def oracle(x, w, border_mode, subsample, flip, dilation):
    """Theano's conv2d written with SciPy."""
    n_out, n_in, kh, kw = w.shape
    wd = np.zeros((n_out, n_in, (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1))
    wd[:, :, :: dilation[0], :: dilation[1]] = w
    ph, pw = _pads(border_mode, w.shape, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    op = convolve2d if flip else correlate2d
    out = np.array([[sum(op(xp[b, c], wd[f, c], "valid") for c in range(n_in))
                     for f in range(n_out)] for b in range(x.shape[0])])
    return out[:, :, :: subsample[0], :: subsample[1]]


def oracle_grads(x, w, gz, *args):
    """``(d sum(conv * gz) / dx, ... / dw)``: the Jacobians' transposes applied to gz."""
    def transpose_apply(f, shape):
        g = np.zeros(int(np.prod(shape)))
        for i in range(g.size):
            unit = np.zeros(g.size)
            unit[i] = 1.0
            g[i] = np.sum(f(unit.reshape(shape)) * gz)
        return g.reshape(shape)

    return (transpose_apply(lambda u: oracle(u, w, *args), x.shape),
            transpose_apply(lambda u: oracle(x, u, *args), w.shape))


@pytest.fixture(scope="module")
def case_data():
    rng = np.random.default_rng(20)
    data = []
    for xs, ws, bm, sub, flip, dil in CASES:
        x, w = rng.normal(size=xs), rng.normal(size=ws)
        z = oracle(x, w, bm, sub, flip, dil)
        gz = rng.normal(size=z.shape)
        data.append((x, w, gz, z, *oracle_grads(x, w, gz, bm, sub, flip, dil)))
    return data


def _compiled(mode, dtype):
    """One function: every case's output and its two gradients."""
    inputs, outputs = [], []
    for i, (xs, ws, bm, sub, flip, dil) in enumerate(CASES):
        # shapes undeclared: every backend works them out from the arrays
        x, w = pt.tensor4(f"x{i}", dtype=dtype), pt.tensor4(f"w{i}", dtype=dtype)
        gz = pt.tensor4(f"g{i}", dtype=dtype)
        z = conv2d(x, w, border_mode=bm, subsample=sub, filter_flip=flip, filter_dilation=dil,
                   filter_shape=CASES[i][1] if isinstance(bm, str) and bm != "valid" else None)
        inputs += [x, w, gz]
        outputs += [z, *pytensor.grad((z * gz).sum(), [x, w])]
    return pytensor.function(inputs, outputs, mode=mode)


# float64 on every backend; float32 on CVM (JAX runs with 64-bit types in this module)
@pytest.mark.parametrize("mode,dtype,tol", [
    ("NUMBA", "float64", 1e-10),
    ("CVM", "float64", 1e-10),
    pytest.param("JAX", "float64", 1e-10, marks=pytest.mark.skipif(
        not HAS_JAX, reason="JAX is not installed")),
    ("CVM", "float32", 1e-4),
])
def test_every_form_matches_scipy_with_gradients(mode, dtype, tol, case_data):
    fn = _compiled(mode, dtype)
    args = [a.astype(dtype) for x, w, gz, *_ in case_data for a in (x, w, gz)]
    results = fn(*args)
    for i, (case, (*_, z, gx, gw)) in enumerate(zip(CASES, case_data)):
        got_z, got_gx, got_gw = results[3 * i : 3 * i + 3]
        assert got_z.dtype == dtype
        assert got_z.shape == z.shape, case
        scale = 1 + np.abs(z).max()
        for got, want in ((got_z, z), (got_gx, gx), (got_gw, gw)):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=str(case))


@pytest.mark.parametrize("mode", [
    "NUMBA", "CVM",
    pytest.param("JAX", marks=pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")),
])
def test_the_gradients_as_functions_of_their_own(mode, case_data):
    # strided cases, whose output sizes leave the input size open, and a dilated one
    picks = [i for i, case in enumerate(CASES) if case[3] != (1, 1) or case[5] != (1, 1)][:4]
    inputs, outputs, args = [], [], []
    for i in picks:
        xs, ws, bm, sub, flip, dil = CASES[i]
        x, w, gz, _, gx, gw = case_data[i]
        xv, wv, gv = pt.tensor4(f"x{i}"), pt.tensor4(f"w{i}"), pt.tensor4(f"g{i}")
        kwargs = dict(border_mode=bm, subsample=sub, filter_flip=flip, filter_dilation=dil)
        inputs += [xv, wv, gv]
        outputs += [conv2d_grad_wrt_inputs(gv, wv, input_shape=xs, filter_shape=ws, **kwargs),
                    conv2d_grad_wrt_weights(xv, gv, filter_shape=ws, **kwargs)]
        args += [x, w, gz]
    got = pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore")(*args)
    for k, i in enumerate(picks):
        *_, gx, gw = case_data[i]
        assert got[2 * k].shape == CASES[i][0]
        np.testing.assert_allclose(got[2 * k], gx, atol=1e-10, err_msg=str(CASES[i]))
        np.testing.assert_allclose(got[2 * k + 1], gw, atol=1e-10, err_msg=str(CASES[i]))


def test_the_input_gradient_takes_a_symbolic_input_shape():
    rng = np.random.default_rng(8)
    # 6 x 6 images, 3 x 2 filters, strides 2: 2 x 3 outputs (so do 7 x 6 images)
    gz, w = rng.normal(size=(2, 4, 2, 3)), rng.normal(size=(4, 3, 3, 2))
    gv, wv, n = pt.tensor4("g"), pt.tensor4("w"), pt.iscalar("n")
    gx = conv2d_grad_wrt_inputs(gv, wv, input_shape=(2, 3, n, n), subsample=(2, 2))
    got = pytensor.function([gv, wv, n], gx, mode="NUMBA")(gz, w, 6)
    assert got.shape == (2, 3, 6, 6)
    want, _ = oracle_grads(np.zeros((2, 3, 6, 6)), w, gz, "valid", (2, 2), True, (1, 1))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_verify_grad_on_strided_dilated_unflipped():
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, 2, 6, 7)), rng.normal(size=(3, 2, 2, 3))
    verify_grad(lambda a, b: conv2d(a, b, border_mode=(1, 2), subsample=(2, 1),
                                    filter_flip=False, filter_dilation=(2, 1)),
                [x, w], rng=rng, mode="NUMBA")


def test_legacy_conv2d_is_flipped_valid_or_full():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 2, 5, 6)), rng.normal(size=(3, 2, 3, 2))
    xv, wv = pt.tensor4("x"), pt.tensor4("w")
    fn = pytensor.function([xv, wv], [
        legacy.conv2d(xv, wv, filter_shape=(3, 2, 3, 2), image_shape=(2, 2, 5, 6),
                      border_mode="full", subsample=(2, 2), unroll_batch=2, unroll_kern=3),
        legacy.conv2d(xv, wv),
    ], mode="NUMBA")
    full, valid = fn(x, w)
    np.testing.assert_allclose(full, oracle(x, w, "full", (2, 2), True, (1, 1)), atol=1e-12)
    np.testing.assert_allclose(valid, oracle(x, w, "valid", (1, 1), True, (1, 1)), atol=1e-12)
    assert full.shape == (2, 3, 4, 4)


def test_static_shapes_follow_theano():
    x, w = pt.tensor4("x", shape=(8, 3, 14, 14)), pt.tensor4("w", shape=(16, 3, 3, 3))
    assert conv2d(x, w, border_mode="half").type.shape == (8, 16, 14, 14)
    assert conv2d(x, w, border_mode="full", subsample=(2, 2)).type.shape == (8, 16, 8, 8)
    assert conv2d(x, w, subsample=(3, 3), filter_dilation=(2, 2)).type.shape == (8, 16, 4, 4)
    for args in [("half", (1, 1), (1, 1)), ("full", (2, 2), (1, 1)), ((2, 1), (3, 1), (2, 2)),
                 ("valid", (3, 3), (2, 2))]:
        bm, sub, dil = args
        assert get_conv_output_shape((8, 3, 14, 14), (16, 3, 3, 3), bm, sub, dil) == \
            conv2d(x, w, border_mode=bm, subsample=sub, filter_dilation=dil).type.shape


@pytest.mark.parametrize("kwargs,message", [
    (dict(border_mode="same"), "border_mode must be one of"),
    (dict(border_mode=-1), "border_mode must be a pair of ints >= 0"),
    (dict(subsample=(0, 1)), "subsample must be a pair of ints >= 1"),
    (dict(filter_dilation=(1, 0)), "filter_dilation must be a pair of ints >= 1"),
    (dict(input_shape=(2, 3, 4, 4), filter_shape=(5, 2, 3, 3)), "feature maps"),
    (dict(input_shape=(2, 3, 4, 4), filter_shape=(5, 3, 3, 3), filter_dilation=(2, 2)),
     "exceeds the image height 4"),
    (dict(input_shape=(2, 3, 4, 4), image_shape=(2, 3, 5, 5)), "differ"),
])
def test_bad_arguments_fail_when_the_graph_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv2d(pt.tensor4("x"), pt.tensor4("w"), **kwargs)


def test_half_and_full_need_the_filter_size():
    with pytest.raises(ValueError, match="declare filter_shape"):
        conv2d(pt.tensor4("x"), pt.tensor4("w"), border_mode="half")


def test_legacy_refuses_half_and_unknown_keywords():
    with pytest.raises(ValueError, match="border_mode must be one of"):
        legacy.conv2d(pt.tensor4("x"), pt.tensor4("w"), filter_shape=(1, 1, 3, 3),
                      border_mode="half")
    with pytest.raises(TypeError, match="unexpected keyword"):
        legacy.conv2d(pt.tensor4("x"), pt.tensor4("w"), input_shape=(1, 1, 5, 5))


def test_the_tutorials_case_is_one_conv2d_node():
    x, w = pt.tensor4("x"), pt.tensor4("w")
    z = conv2d(x, w)
    assert type(z.owner.op).__name__ == "Conv2d" and z.owner.inputs == [x, w]
