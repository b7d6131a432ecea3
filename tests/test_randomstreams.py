"""Tests of :mod:`deeplearning_tutorials.shared_randomstreams` and
:mod:`deeplearning_tutorials.rng_mrg`: Theano's random streams on PyTensor.

* distributions: means and variances of 100 000 draws within 6 standard errors,
  Kolmogorov-Smirnov tests of the continuous ones, frequencies of the discrete
  ones; compiled once per ``floatX`` (float32 and float64) with ``mode="NUMBA"``;
* Theano's dtype rules (``floatX`` upcast with the parameters' dtypes);
* sizes from tuples, ints, lists and symbolic ``x.shape``, ``ndim`` checks, errors;
* the dropout mask: new at every call, the same for the same seed, reset by
  ``seed()``; under NUMBA, and once under CVM and JAX.
"""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import stats

from deeplearning_tutorials.rng_mrg import MRG_RandomStreams
from deeplearning_tutorials.shared_randomstreams import RandomStreams

N = 100_000
SIGMAS = 6


def assert_moments(sample, mean, var, mu4):
    """Sample mean and variance within SIGMAS standard errors of ``mean`` and ``var``.

    ``mu4`` is the fourth central moment: the variance of the sample variance is
    about ``(mu4 - var**2) / n``.
    """
    sample = np.asarray(sample, dtype=np.float64).ravel()
    n = sample.size
    assert abs(sample.mean() - mean) < SIGMAS * math.sqrt(var / n), (sample.mean(), mean)
    assert abs(sample.var() - var) < SIGMAS * math.sqrt((mu4 - var**2) / n), (sample.var(), var)


def assert_frequencies(sample, probs):
    """The frequency of each value ``k`` within SIGMAS standard errors of ``probs[k]``."""
    sample = np.asarray(sample).ravel()
    n = sample.size
    assert set(np.unique(sample)) <= set(probs)
    for value, prob in probs.items():
        freq = np.count_nonzero(sample == value) / n
        assert abs(freq - prob) < SIGMAS * math.sqrt(prob * (1 - prob) / n), (value, freq, prob)


def bernoulli_mu4(p):
    return p * (1 - p) * (1 - 3 * p * (1 - p))


# ---------------------------------------------------------------------------
# One compiled function per floatX, holding every distribution
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["float64", "float32"])
def draws(request):
    """``(floatX, graph, values)``: the continuous draws and the masks, whose dtypes
    follow ``floatX``, symbolic and evaluated (NUMBA)."""
    floatX = request.param
    with pytensor.config.change_flags(floatX=floatX):
        rs = RandomStreams(seed=20240601)
        mrg = MRG_RandomStreams(seed=4321)
        x = pt.matrix("x")
        graph = {
            "rs_uniform": rs.uniform((N,), low=2.0, high=5.0),
            "rs_normal": rs.normal((N,), avg=-1.0, std=3.0),
            "rs_binomial1": rs.binomial((N,), n=1, p=0.3),
            "rs_uniform_x": rs.uniform(x.shape),
            "rs_normal_x": rs.normal(size=(x.shape[1], 2, x.shape[0])),
            "rs_mask_x": rs.binomial(size=x.shape, p=0.5, dtype=floatX),
            "mrg_uniform": mrg.uniform((N,), low=-1.0, high=1.0),
            "mrg_normal": mrg.normal((N,), avg=1.0, std=0.5),
            "mrg_truncate": mrg.normal((N,), avg=1.0, std=0.5, truncate=True),
            "mrg_truncated_normal": mrg.truncated_normal(N, avg=0.0, std=2.0),
            "mrg_binomial": mrg.binomial((N,), p=0.7),
            "mrg_uniform_x": mrg.uniform(x.shape, nstreams=7),
            "mrg_normal_x": mrg.normal(x.shape),
        }
        fn = pytensor.function([x], list(graph.values()), mode="NUMBA")
        values = fn(np.zeros((3, 5), dtype=floatX))
    return floatX, graph, dict(zip(graph, values, strict=True))


@pytest.fixture(scope="module")
def discrete():
    """The integer draws of RandomStreams (their dtypes do not follow floatX), evaluated."""
    rs = RandomStreams(seed=97)
    graph = {
        "rs_binomial5": rs.binomial((N,), n=5, p=0.3),
        "rs_integers": rs.random_integers((N,), low=2, high=4),
        "rs_permutation": rs.permutation((N // 4,), n=4),
        "rs_choice_p": rs.choice((N,), a=3, p=[0.2, 0.3, 0.5]),
        "rs_choice_a": rs.choice([N], a=[10, 20, 30, 40]),
    }
    values = pytensor.function([], list(graph.values()), mode="NUMBA")()
    for key, value in zip(graph, values, strict=True):
        assert graph[key].type.dtype == value.dtype == "int64", key
    return dict(zip(graph, values, strict=True))


def test_dtypes_of_the_draws(draws):
    floatX, graph, values = draws
    expected = {
        "rs_uniform": floatX, "rs_normal": floatX, "rs_binomial1": "int64", "rs_uniform_x": floatX,
        "rs_normal_x": floatX, "rs_mask_x": floatX, "mrg_uniform": floatX, "mrg_normal": floatX,
        "mrg_truncate": floatX, "mrg_truncated_normal": floatX, "mrg_binomial": "int64",
        "mrg_uniform_x": floatX, "mrg_normal_x": floatX,
    }
    for key, dtype in expected.items():
        assert graph[key].type.dtype == dtype, key
        assert values[key].dtype == dtype, key


def test_shapes_from_symbolic_sizes(draws):
    _, graph, values = draws
    assert values["rs_uniform_x"].shape == (3, 5)
    assert values["rs_normal_x"].shape == (5, 2, 3)
    assert values["rs_mask_x"].shape == (3, 5)
    assert values["mrg_uniform_x"].shape == (3, 5)
    assert values["mrg_normal_x"].shape == (3, 5)
    assert graph["rs_uniform_x"].type.ndim == 2
    assert graph["rs_normal_x"].type.ndim == 3
    assert values["mrg_truncated_normal"].shape == (N,)


def test_uniform(draws):
    _, _, values = draws
    for key, low, high in [("rs_uniform", 2.0, 5.0), ("mrg_uniform", -1.0, 1.0)]:
        u = values[key]
        assert u.min() >= low and u.max() <= high
        width = high - low
        assert_moments(u, (low + high) / 2, width**2 / 12, width**4 / 80)
        assert stats.kstest(u.astype(np.float64), stats.uniform(low, width).cdf).pvalue > 1e-4


def test_normal(draws):
    _, _, values = draws
    for key, avg, std in [("rs_normal", -1.0, 3.0), ("mrg_normal", 1.0, 0.5)]:
        z = values[key]
        assert_moments(z, avg, std**2, 3 * std**4)
        assert stats.kstest(z.astype(np.float64), stats.norm(avg, std).cdf).pvalue > 1e-4


def test_truncated_normal(draws):
    _, _, values = draws
    for key, avg, scale in [("mrg_truncate", 1.0, 0.5), ("mrg_truncated_normal", 0.0, 2.0 / 0.87962566103423978)]:
        z = values[key]
        law = stats.truncnorm(-2, 2, loc=avg, scale=scale)
        assert z.min() >= avg - 2 * scale * (1 + 1e-6) and z.max() <= avg + 2 * scale * (1 + 1e-6)
        assert_moments(z, avg, law.var(), scale**4 * stats.truncnorm(-2, 2).moment(4))
        assert stats.kstest(z.astype(np.float64), law.cdf).pvalue > 1e-4
    # truncated_normal's std is the one asked for (Theano's rescaling).
    assert abs(values["mrg_truncated_normal"].std() - 2.0) < 0.02


def test_bernoulli(draws):
    _, _, values = draws
    assert_frequencies(values["rs_binomial1"], {0: 0.7, 1: 0.3})
    assert_moments(values["rs_binomial1"], 0.3, 0.21, bernoulli_mu4(0.3))
    assert_frequencies(values["mrg_binomial"], {0: 0.3, 1: 0.7})
    assert_frequencies(values["rs_mask_x"], {0.0: 0.5, 1.0: 0.5})


def test_binomial(discrete):
    n, p = 5, 0.3
    b5 = discrete["rs_binomial5"]
    assert_frequencies(b5, {k: stats.binom(n, p).pmf(k) for k in range(n + 1)})
    npq = n * p * (1 - p)
    assert_moments(b5, n * p, npq, npq * (1 + 3 * (n - 2) * p * (1 - p)))


def test_random_integers_includes_high(discrete):
    assert_frequencies(discrete["rs_integers"], {2: 1 / 3, 3: 1 / 3, 4: 1 / 3})


def test_permutation(discrete):
    perms = discrete["rs_permutation"]
    assert perms.shape == (N // 4, 4)
    np.testing.assert_array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(4), perms.shape))
    for position in range(4):
        assert_frequencies(perms[:, position], dict.fromkeys(range(4), 0.25))
    codes = perms @ np.array([64, 16, 4, 1])
    assert len(np.unique(codes)) == 24
    assert_frequencies(codes, dict.fromkeys(np.unique(codes).tolist(), 1 / 24))


def test_choice_with_replacement(discrete):
    assert_frequencies(discrete["rs_choice_p"], {0: 0.2, 1: 0.3, 2: 0.5})
    assert_frequencies(discrete["rs_choice_a"], dict.fromkeys([10, 20, 30, 40], 0.25))


def test_choice_without_replacement():
    rs = RandomStreams(seed=3)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    fn = pytensor.function(
        [], [rs.choice((2,), a=4, replace=False, p=p), rs.choice(3, a=[10, 20, 30, 40, 50], replace=False),
             rs.choice(a=5, replace=False)],
        mode="NUMBA",
    )
    picks = [fn() for _ in range(3000)]
    weighted = np.array([w for w, _, _ in picks])
    plain = np.array([u for _, u, _ in picks])
    single = np.array([s for _, _, s in picks])
    assert weighted.shape == (3000, 2) and plain.shape == (3000, 3) and single.shape == (3000,)
    assert np.all(weighted[:, 0] != weighted[:, 1])
    assert all(len(set(row)) == 3 for row in plain.tolist())
    # Successive sampling: the first pick follows p, the second p_j * sum_i p_i / (1 - p_i).
    assert_frequencies(weighted[:, 0], dict(enumerate(p)))
    second = {j: sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(4)}
    assert_frequencies(weighted[:, 1], second)
    assert_frequencies(plain[:, 0], dict.fromkeys([10, 20, 30, 40, 50], 0.2))
    assert_frequencies(plain.ravel(), dict.fromkeys([10, 20, 30, 40, 50], 0.2))
    assert_frequencies(single, dict.fromkeys(range(5), 0.2))


# ---------------------------------------------------------------------------
# Theano's dtype rules (no compilation)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("floatX", ["float32", "float64"])
@pytest.mark.parametrize("cls", [RandomStreams, MRG_RandomStreams])
def test_dtype_rules(cls, floatX):
    with pytensor.config.change_flags(floatX=floatX):
        s = cls(seed=1)
        for method in (s.uniform, s.normal):
            assert method((2,)).dtype == floatX
            # Python floats count as floatX, small Python ints do not upcast.
            assert method((2,), 0.1, 3).dtype == floatX
            # NumPy float64 values and float64 variables upcast; float32 ones do not.
            assert method((2,), np.float64(0.0)).dtype == "float64"
            assert method((2,), 0.0, pt.dscalar()).dtype == "float64"
            assert method((2,), pt.fscalar(), 1.0).dtype == floatX
            # A Python int needing int32 upcasts float32 to float64 (Theano's upcast).
            assert method((2,), 0, 100000).dtype == "float64"
            # An explicit dtype wins.
            assert method((2,), np.float64(0.0), dtype="float32").dtype == "float32"
            assert method((2,), dtype=np.float64).dtype == "float64"
            with pytest.raises(TypeError, match="float dtype"):
                method((2,), dtype="int32")
        assert s.binomial((2,), p=0.5).dtype == "int64"
        assert s.binomial((2,), p=0.5, dtype=floatX).dtype == floatX
        assert s.binomial((2,), p=0.5, dtype="int8").dtype == "int8"
        if cls is MRG_RandomStreams:
            assert s.normal((2,), truncate=True).dtype == floatX
            assert s.truncated_normal((2,)).dtype == floatX
            assert s.normal((2,), avg=np.float64(0), truncate=True).dtype == "float64"
        else:
            assert s.random_integers((2,)).dtype == "int64"
            assert s.random_integers((2,), dtype="int32").dtype == "int32"
            assert s.permutation(n=3).dtype == "int64"
            assert s.choice(a=[0.5, 1.5]).dtype == "int64"
            assert s.choice(a=[0.5, 1.5], dtype=floatX).dtype == floatX


# ---------------------------------------------------------------------------
# Sizes, ndim, errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RandomStreams, MRG_RandomStreams])
def test_static_sizes(cls):
    s = cls(seed=1)
    assert s.uniform((2, 3)).type.shape == (2, 3)
    assert s.uniform([4]).type.shape == (4,)
    assert s.normal(5).type.shape == (5,)
    assert s.normal(np.array([2, 3])).type.shape == (2, 3)
    assert s.binomial((2, 3, 4), p=0.1).type.shape == (2, 3, 4)
    assert s.uniform((2, 3), ndim=2).type.ndim == 2


@pytest.mark.parametrize("cls", [RandomStreams, MRG_RandomStreams])
def test_ndim_and_size_checks(cls):
    s = cls(seed=1)
    x = pt.tensor3("x")
    assert s.uniform(x.shape, ndim=3).type.ndim == 3
    with pytest.raises(ValueError, match="ndim"):
        s.uniform((2, 3), ndim=3)
    with pytest.raises(ValueError, match="ndim"):
        s.normal(x.shape, ndim=2)
    # A vector of unknown length needs ndim, which fixes it.
    v = pt.lvector("v")
    with pytest.raises(ValueError, match="give ndim"):
        s.uniform(v)
    assert s.uniform(v, ndim=2).type.ndim == 2
    with pytest.raises(ValueError, match="non-negative|positive"):
        s.uniform((2, -1))
    with pytest.raises(ValueError, match="only hold ints"):
        s.uniform((2.0, 3))
    with pytest.raises(ValueError, match="integers"):
        s.uniform(pt.dvector())
    with pytest.raises(ValueError, match="vector"):
        s.uniform(pt.lmatrix())
    with pytest.raises(ValueError, match="size must be"):
        s.uniform("2, 3")
    with pytest.raises(ValueError, match="ndim must be"):
        s.uniform((2,), ndim=1.0)


def test_shared_randomstreams_size_none():
    s = RandomStreams(seed=1)
    assert s.uniform().type.ndim == 0
    assert s.uniform(low=np.zeros(3), high=1.0).type.shape == (3,)
    assert s.normal(avg=pt.matrix(), std=1.0).type.ndim == 2
    assert s.binomial(n=1, p=pt.vector()).type.ndim == 1
    assert s.uniform(low=np.zeros(3), ndim=1).type.ndim == 1
    with pytest.raises(ValueError, match="ndim=2"):
        s.uniform(low=np.zeros(3), ndim=2)
    assert s.uniform((0, 2)).type.shape == (0, 2)
    assert s.permutation((), n=3).type.shape == (3,)
    assert s.uniform(()).type.ndim == 0
    assert s.choice((), a=3).type.ndim == 0
    assert s.choice((), a=3, replace=False).type.ndim == 0
    assert s.choice(pt.as_tensor([2, 3]), a=9, replace=False).type.ndim == 2
    with pytest.raises(ValueError, match="one permutation"):
        s.permutation(n=3, ndim=2)
    assert s.permutation((2, 3), n=4, ndim=2).type.ndim == 3


def test_mrg_requires_a_positive_size():
    s = MRG_RandomStreams()
    for call in (lambda: s.uniform(None), lambda: s.normal(None), lambda: s.binomial(p=0.5),
                 lambda: s.normal(None, truncate=True), lambda: s.truncated_normal(None)):
        with pytest.raises(ValueError, match="size must be given"):
            call()
    with pytest.raises(ValueError, match="positive"):
        s.uniform((3, 0))
    with pytest.raises(NotImplementedError, match="n > 1"):
        s.binomial((3,), n=2)
    with pytest.raises(NotImplementedError, match="n > 1"):
        s.binomial((3,), n=pt.lscalar())


def test_mrg_seed_checks():
    for bad in (0, -3, 2147462579):
        with pytest.raises(ValueError):
            MRG_RandomStreams(bad)
    for bad in ([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [2147483647, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 2147462579]):
        with pytest.raises(ValueError):
            MRG_RandomStreams(bad)
    for bad in ("abc", [1, 2, 3], 1.5):
        with pytest.raises(TypeError):
            MRG_RandomStreams(bad)
    MRG_RandomStreams([1, 2, 3, 4, 5, 6]).uniform((2,))
    with pytest.raises(ValueError):
        MRG_RandomStreams().seed(0)


def test_other_errors():
    s = RandomStreams(seed=1)
    with pytest.warns(DeprecationWarning, match="renamed p"):
        draw = s.binomial((3,), prob=0.25)
    assert draw.type.shape == (3,)
    with pytest.raises(TypeError, match="bool"):
        s.choice((2,), a=3, replace=pt.bscalar())
    with pytest.raises(ValueError, match="scalar or a vector"):
        s.choice((2,), a=np.ones((2, 2)))
    with pytest.raises(ValueError, match="rng"):
        s.gen(pytensor.tensor.random.basic.uniform, size=(2,), rng=None)
    # Only Theano's methods: no fall-through to PyTensor's namespace.
    with pytest.raises(AttributeError, match="gamma"):
        s.gamma  # noqa: B018
    with pytest.raises(AttributeError, match="multinomial"):
        MRG_RandomStreams().multinomial  # noqa: B018


def test_updates_and_default_updates():
    s = RandomStreams(seed=1)
    a = s.uniform((2,))
    s.binomial((2,), n=3, p=0.5)
    pairs = s.updates()
    assert len(pairs) == 2
    for rng, new_rng in pairs:
        assert rng.default_update is new_rng
    assert a.owner.inputs[0] is pairs[0][0]


def test_no_deprecation_warnings_leak():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = RandomStreams(seed=1)
        m = MRG_RandomStreams()
        s.uniform((2,)), s.normal((2,)), s.binomial((2,)), s.binomial((2,), n=2)
        s.random_integers((2,)), s.permutation((2,), n=3), s.choice((2,)), s.choice((2,), replace=False)
        m.uniform((2,)), m.normal((2,)), m.normal((2,), truncate=True), m.binomial((2,))


# ---------------------------------------------------------------------------
# The dropout mask: new at each call, reproducible, reseedable
# ---------------------------------------------------------------------------


def dropout_fn(floatX, seed, mode="NUMBA"):
    """The classic dropout graph, ``x * cast(binomial(n=1, p=1 - p, size=x.shape), floatX)``,
    with p = 0.5, on both classes: the compiled function and the two stream objects."""
    with pytensor.config.change_flags(floatX=floatX):
        rs, mrg = RandomStreams(seed), MRG_RandomStreams(seed)
        x = pt.matrix("x")
        outs = [x * pt.cast(s.binomial(n=1, p=1 - 0.5, size=x.shape), floatX) for s in (rs, mrg)]
        fn = pytensor.function([x], outs, mode=mode)
    return fn, rs, mrg


@pytest.mark.parametrize("floatX", ["float64", "float32"])
def test_dropout_mask_new_each_call_reproducible_and_reseedable(floatX):
    fn, rs, mrg = dropout_fn(floatX, seed=42)
    ones = np.ones((40, 50), dtype=floatX)
    first = fn(ones)
    second = fn(ones)
    for a, b in zip(first, second, strict=True):
        assert a.dtype == floatX and a.shape == (40, 50)
        assert set(np.unique(a)) == {0.0, 1.0}
        assert_frequencies(a, {0.0: 0.5, 1.0: 0.5})
        assert not np.array_equal(a, b)
    # The same seed gives the same masks.
    again, _, _ = dropout_fn(floatX, seed=42)
    for a, b in zip(first, again(ones), strict=True):
        np.testing.assert_array_equal(a, b)
    # seed() resets the streams to what that seed gives; another seed differs.
    rs.seed(42)
    mrg.seed(42)
    for a, b in zip(first, fn(ones), strict=True):
        np.testing.assert_array_equal(a, b)
    rs.seed(7)
    mrg.seed(7)
    for a, b in zip(first, fn(ones), strict=True):
        assert not np.array_equal(a, b)
    # seed(None): the constructor's seed.
    rs.seed()
    mrg.seed()
    for a, b in zip(first, fn(ones), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_under_cvm():
    fn, _, _ = dropout_fn("float64", seed=5, mode="CVM")
    ones = np.ones((40, 50))
    first, second = fn(ones), fn(ones)
    for a, b in zip(first, second, strict=True):
        assert_frequencies(a, {0.0: 0.5, 1.0: 0.5})
        assert not np.array_equal(a, b)


@pytest.mark.usefixtures("jax_x64")
def test_dropout_under_jax():
    pytest.importorskip("jax")
    with warnings.catch_warnings():
        # PyTensor's JAX linker copies the generators, and says so.
        warnings.filterwarnings("ignore", message="The RandomType SharedVariables", category=UserWarning)
        fn, _, _ = dropout_fn("float64", seed=5, mode="JAX")
    ones = np.ones((40, 50))
    first, second = fn(ones), fn(ones)
    for a, b in zip(first, second, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == (40, 50)
        assert_frequencies(a, {0.0: 0.5, 1.0: 0.5})
        assert not np.array_equal(a, b)


def test_modules_import_neither_numba_nor_jax():
    code = (
        "import sys\n"
        "import deeplearning_tutorials.shared_randomstreams, deeplearning_tutorials.rng_mrg\n"
        "import deeplearning_tutorials.nnet.nnet\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'jax'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
