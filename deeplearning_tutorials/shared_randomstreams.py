"""Theano's ``theano.tensor.shared_randomstreams.RandomStreams``, built on PyTensor.

:class:`RandomStreams` keeps Theano 1.0's method names, signatures and defaults
(``uniform``, ``normal``, ``binomial``, ``random_integers``, ``permutation``,
``choice``, ``seed``, ``updates``) and draws with PyTensor's
:class:`~pytensor.tensor.random.utils.RandomStream` machinery: every draw gets a
shared :class:`numpy.random.Generator` of its own, whose ``default_update`` is the
generator the draw leaves behind, so a compiled :func:`pytensor.function` moves
the stream on by itself at each call. The classic dropout code works unchanged::

    srng = RandomStreams(seed=1234)
    mask = srng.binomial(n=1, p=1 - p, size=x.shape)
    out = x * pt.cast(mask, floatX)          # a new mask at every call

The helpers of this module (size, ``ndim`` and dtype rules, the stream bookkeeping)
are shared with :mod:`deeplearning_tutorials.rng_mrg`.

Port note: the streams are NumPy ``Generator`` streams (PCG64 seeded through a
``SeedSequence``), not Theano's ``RandomState`` (Mersenne Twister) streams: the
distributions are Theano's, the numbers are not. The draws run in every backend
PyTensor compiles to (Numba, the C VM, JAX), with one exception: ``binomial`` with
``n`` other than the constant 1 needs NumPyro under JAX (``n=1`` is drawn as a
Bernoulli variable, which JAX has).

Port note: PyTensor 3 deprecates both ``RandomStream`` and setting
``default_update``; they are what gives Theano's automatic updates, so this module
uses them and silences those two deprecation warnings (only those) where it does.
``updates()`` lists the ``(generator, next generator)`` pairs for a program that
prefers to pass them to :func:`pytensor.function` itself.

Port note: every error about ``size`` or ``ndim`` is a :class:`ValueError` (Theano
raised a mix of ``TypeError``, ``ValueError`` and assertions), and Theano's ``-1``
entries in ``size`` ("the corresponding dimension of the parameters") are not
supported: sizes are non-negative integers or symbolic integer scalars, or one
symbolic integer vector (such as ``x.shape``). An ``ndim`` given with
``size=None`` must equal the number of dimensions of the broadcast parameters
(Theano ignored it).
"""

import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import shared
from pytensor.configdefaults import config
from pytensor.graph.basic import Variable
from pytensor.scalar import upcast
from pytensor.tensor import get_vector_length
from pytensor.tensor.random import basic as ptr
from pytensor.tensor.random.utils import RandomStream
from pytensor.tensor.type import float_dtypes, integer_dtypes

__all__ = ["RandomStreams"]


# ---------------------------------------------------------------------------
# Helpers shared with rng_mrg
# ---------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def normalize_size(size, ndim=None, params=(), *, required=False, positive=False):
    """Theano's ``size`` (and ``ndim``) as a size PyTensor's random variables accept.

    Parameters
    ----------
    size : None, int, tuple or list, or symbolic int vector or scalar
        ``None`` (the shape then comes from broadcasting ``params``), an int, a
        tuple or list of non-negative ints and symbolic integer scalars (e.g.
        ``(x.shape[0], 10)``), or a symbolic integer vector such as ``x.shape``.
    ndim : int, optional
        The number of dimensions of the draw. When given it must equal the length
        of ``size`` (or, with ``size=None``, the number of dimensions of the
        broadcast ``params``); it also fixes the length of a symbolic ``size``
        whose length PyTensor cannot infer.
    params : sequence
        The distribution's parameters, for the ``size=None`` check of ``ndim``.
    required : bool
        Whether ``size=None`` is an error (Theano's MRG streams).
    positive : bool
        Whether zero-length dimensions are an error (Theano's MRG streams).

    Returns
    -------
    None, tuple or TensorVariable
        ``None``, a tuple of ints and symbolic scalars, or a symbolic integer
        vector whose length is known.

    Raises
    ------
    ValueError
        For a missing ``size`` (when ``required``), a ``size`` that is not one of
        the forms above, a negative (or, when ``positive``, zero) dimension, or an
        ``ndim`` that disagrees with ``size``.
    """
    if ndim is not None and (not _is_int(ndim) or ndim < 0):
        raise ValueError(f"ndim must be a non-negative int, got {ndim!r}")
    if size is None:
        if required:
            raise ValueError(
                "size must be given (an int, a tuple or list of ints, or a symbolic integer "
                "vector such as x.shape); got None"
            )
        if ndim is not None and params:
            params_ndim = max(pt.as_tensor_variable(p).ndim for p in params)
            if params_ndim != ndim:
                raise ValueError(
                    f"ndim={ndim} but the parameters broadcast to {params_ndim} dimensions "
                    "(size=None)"
                )
        return None
    if isinstance(size, np.ndarray) and size.ndim <= 1:
        size = size.tolist()
    if _is_int(size):
        size = (size,)
    if isinstance(size, tuple | list):
        for dim in size:
            if isinstance(dim, Variable):
                if dim.type.ndim != 0 or dim.type.dtype not in integer_dtypes:
                    raise ValueError(f"a symbolic entry of size must be an integer scalar, got {dim.type}")
            elif _is_int(dim):
                if dim < 0 or (positive and dim == 0):
                    kind = "positive" if positive else "non-negative"
                    raise ValueError(f"the dimensions in size must be {kind}, got {tuple(size)}")
            else:
                raise ValueError(
                    f"size may only hold ints and symbolic integer scalars, got {dim!r} in {size!r}"
                )
        if ndim is not None and len(size) != ndim:
            raise ValueError(f"ndim={ndim} but size={tuple(size)!r} has {len(size)} dimensions")
        return tuple(size)
    if isinstance(size, Variable):
        size = pt.as_tensor_variable(size)
        if size.type.dtype not in integer_dtypes:
            raise ValueError(f"a symbolic size must hold integers, got {size.type}")
        if size.type.ndim == 0:
            size = pt.stack([size])
        elif size.type.ndim != 1:
            raise ValueError(f"a symbolic size must be a vector, got {size.type}")
        try:
            length = get_vector_length(size)
        except ValueError:
            if ndim is None:
                raise ValueError(
                    f"the length of the symbolic size {size} cannot be inferred: give ndim"
                ) from None
            return pt.specify_shape(size, (ndim,))
        if ndim is not None and length != ndim:
            raise ValueError(f"ndim={ndim} but the symbolic size has length {length}")
        return size
    raise ValueError(
        "size must be None, an int, a tuple or list of ints and symbolic integer scalars, "
        f"or a symbolic integer vector; got {size!r}"
    )


def float_dtype(dtype, *params):
    """The dtype of a continuous draw: ``dtype``, or Theano's rule when it is None.

    Parameters
    ----------
    dtype : str, numpy dtype or None
        The requested dtype; it must be a float dtype.
    *params
        The distribution's parameters (``low``/``high``, ``avg``/``std``).

    Returns
    -------
    str
        ``dtype``; if ``dtype`` is None, the upcast of ``config.floatX`` with the
        dtypes of ``params`` as PyTensor types them (a Python float is ``floatX``,
        a Python int the smallest int type that holds it, a NumPy value its own
        dtype): Theano's ``scal.upcast(config.floatX, low.dtype, high.dtype)``.

    Raises
    ------
    TypeError
        If ``dtype`` is not a float dtype.
    """
    if dtype is None:
        return upcast(config.floatX, *(pt.as_tensor_variable(p).type.dtype for p in params))
    dtype = config.floatX if dtype == "floatX" else np.dtype(dtype).name
    if dtype not in float_dtypes:
        raise TypeError(f"continuous draws need a float dtype, got {dtype!r}")
    return dtype


def cast_to(x, dtype):
    """``x`` as a tensor of ``dtype``.

    Parameters
    ----------
    x : tensor_like
    dtype : str or numpy dtype
        The dtype (``"floatX"`` means ``config.floatX``).

    Returns
    -------
    TensorVariable
        ``x`` itself when it already has ``dtype``, else ``pt.cast(x, dtype)``.
    """
    x = pt.as_tensor_variable(x)
    dtype = config.floatX if dtype == "floatX" else np.dtype(dtype).name
    return x if x.type.dtype == dtype else pt.cast(x, dtype)


def is_constant_one(n):
    """Whether ``n`` is the number 1, as Theano's ``if n == 1`` tested.

    Parameters
    ----------
    n : int, array_like or Variable

    Returns
    -------
    bool
        True for a non-symbolic scalar equal to 1; False for anything else, a
        symbolic ``n`` included (Theano compared variables by identity).
    """
    return not isinstance(n, Variable) and np.ndim(n) == 0 and n == 1


def size_with_last(size, n):
    """The shape ``size + (n,)`` as a symbolic vector.

    Parameters
    ----------
    size : None, tuple or TensorVariable
        A size as :func:`normalize_size` returns it (None: no leading dimensions).
    n : int or symbolic int scalar
        The last dimension.

    Returns
    -------
    TensorVariable
        An int64 vector of known length.
    """
    n = pt.cast(pt.as_tensor_variable(n), "int64")
    if size is None:
        return pt.stack([n])
    if isinstance(size, tuple):
        return pt.stack([pt.cast(pt.as_tensor_variable(d), "int64") for d in size] + [n])
    return pt.concatenate([pt.cast(size, "int64"), pt.stack([n])])


class StreamsBase(RandomStream):
    """What :class:`RandomStreams` and ``MRG_RandomStreams`` share.

    A :class:`~pytensor.tensor.random.utils.RandomStream` whose draws return the
    sample only and register the generator's update as its ``default_update``,
    and whose attribute fall-through to PyTensor's whole distribution namespace
    (with PyTensor's signatures) is closed: these classes offer Theano's methods.

    Parameters
    ----------
    seed : int, sequence of ints or None
        The entropy of the ``SeedSequence`` from which every stream is spawned.
    """

    def __init__(self, seed=None):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="RandomStream is deprecated", category=FutureWarning
            )
            super().__init__(seed=seed)

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def gen(self, op, *args, **kwargs):
        """Draw from ``op`` on a new stream whose update is automatic.

        Parameters
        ----------
        op : callable
            A PyTensor random variable (``pytensor.tensor.random.basic.uniform``, ...)
            or a function with the same ``rng`` and ``return_next_rng`` keywords.
        *args, **kwargs
            Passed to ``op`` (``size``, ``dtype``, the parameters), never ``rng``.

        Returns
        -------
        TensorVariable
            The draw. Its generator is a new shared variable seeded from this
            object's seed sequence, recorded in :meth:`updates`, whose
            ``default_update`` is the generator after the draw.
        """
        if "rng" in kwargs:
            raise ValueError("the rng argument cannot be given to a draw of a random stream")
        (seed,) = self.gen_seedgen.spawn(1)
        rng = shared(self.rng_ctor(seed), borrow=True)
        new_rng, out = op(*args, rng=rng, return_next_rng=True, **kwargs)
        self.state_updates.append((rng, new_rng))
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Setting default_update is deprecated", category=DeprecationWarning
            )
            rng.default_update = new_rng
        return out

    def updates(self):
        """The ``(generator, next generator)`` pairs of every draw made so far.

        Returns
        -------
        list of tuple
            One ``(shared generator, updated generator)`` pair per stream, in the
            order the draws were made; they are also each generator's
            ``default_update``.
        """
        return list(self.state_updates)

    def seed(self, seed=None):
        """Re-initialize every stream made so far from ``seed``.

        Parameters
        ----------
        seed : int, sequence of ints or None
            The new entropy; None means the seed given to the constructor.

        Returns
        -------
        None

        Notes
        -----
        The k-th stream gets the k-th child of ``SeedSequence(seed)``, the state a
        fresh object built with ``seed`` gives its k-th draw, and draws made after
        this call continue that sequence.

        Port note: Theano's ``seed`` left the streams made after it seeded from the
        constructor's seed; here they follow the new seed.
        """
        super().seed(seed)

    # The draws the two classes have in common, after their own argument checks.

    def _uniform(self, size, low, high, dtype):
        return self.gen(ptr.uniform, cast_to(low, dtype), cast_to(high, dtype), size=size,
                        dtype=dtype)

    def _normal(self, size, avg, std, dtype):
        return self.gen(ptr.normal, cast_to(avg, dtype), cast_to(std, dtype), size=size,
                        dtype=dtype)


# ---------------------------------------------------------------------------
# RandomStreams
# ---------------------------------------------------------------------------


class RandomStreams(StreamsBase):
    """Theano's ``shared_randomstreams.RandomStreams``: symbolic random draws.

    Every method returns a symbolic draw on a stream of its own; compiled into a
    :func:`pytensor.function`, the draw is new at every call.

    Parameters
    ----------
    seed : int or None
        The seed every stream is derived from; None draws it from the operating
        system (Theano's default).

    Notes
    -----
    Port note: the streams are NumPy ``Generator`` streams, not Theano's
    ``RandomState`` streams, so a seed gives other numbers than in Theano.
    Theano's ``multinomial`` and ``shuffle_row_elements`` are not ported.
    """

    def __init__(self, seed=None):
        super().__init__(seed=seed)

    def uniform(self, size=None, low=0.0, high=1.0, ndim=None, dtype=None):
        """Draw from the uniform distribution on ``[low, high)``.

        Parameters
        ----------
        size : None, int, tuple or list, or symbolic int vector
            The shape of the draw (``x.shape`` works); None: the broadcast shape of
            ``low`` and ``high``.
        low, high : float or tensor_like
            The bounds.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            A float dtype. Default: the upcast of ``config.floatX`` with the dtypes
            of ``low`` and ``high`` (Python floats count as ``floatX``).

        Returns
        -------
        TensorVariable
        """
        dtype = float_dtype(dtype, low, high)
        size = normalize_size(size, ndim, (low, high))
        return self._uniform(size, low, high, dtype)

    def normal(self, size=None, avg=0.0, std=1.0, ndim=None, dtype=None):
        """Draw from the normal distribution of mean ``avg`` and standard deviation ``std``.

        Parameters
        ----------
        size : None, int, tuple or list, or symbolic int vector
            The shape of the draw; None: the broadcast shape of ``avg`` and ``std``.
        avg, std : float or tensor_like
            Mean and standard deviation.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            A float dtype. Default: the upcast of ``config.floatX`` with the dtypes
            of ``avg`` and ``std``.

        Returns
        -------
        TensorVariable
        """
        dtype = float_dtype(dtype, avg, std)
        size = normalize_size(size, ndim, (avg, std))
        return self._normal(size, avg, std, dtype)

    def binomial(self, size=None, n=1, p=0.5, ndim=None, dtype="int64", prob=None):
        """Draw the number of successes in ``n`` trials of probability ``p``.

        Parameters
        ----------
        size : None, int, tuple or list, or symbolic int vector
            The shape of the draw; None: the broadcast shape of ``n`` and ``p``.
        n : int or tensor_like
            The number of trials.
        p : float or tensor_like
            The probability of success of each trial.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str
            The dtype of the result (a float dtype too: the counts are cast).
        prob : float or tensor_like, optional
            Deprecated name of ``p``; when given it replaces ``p``.

        Returns
        -------
        TensorVariable

        Notes
        -----
        Port note: with the constant ``n=1`` (dropout masks) the draw is a
        Bernoulli variable, which every PyTensor backend has; another ``n`` is a
        binomial variable, which PyTensor's JAX backend draws only with NumPyro
        installed. Theano printed its deprecation notice for ``prob`` to stderr;
        this issues a :class:`DeprecationWarning`.
        """
        if prob is not None:
            warnings.warn(
                "the parameter prob of binomial has been renamed p", DeprecationWarning,
                stacklevel=2,
            )
            p = prob
        size = normalize_size(size, ndim, (n, p))
        if is_constant_one(n):
            out = self.gen(ptr.bernoulli, p, size=size)
        else:
            out = self.gen(ptr.binomial, n, p, size=size)
        return cast_to(out, dtype)

    def random_integers(self, size=None, low=0, high=1, ndim=None, dtype="int64"):
        """Draw integers uniformly from ``low`` to ``high``, both included.

        Parameters
        ----------
        size : None, int, tuple or list, or symbolic int vector
            The shape of the draw; None: the broadcast shape of ``low`` and ``high``.
        low, high : int or tensor_like
            The smallest and the largest value.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str
            The dtype of the result.

        Returns
        -------
        TensorVariable
        """
        size = normalize_size(size, ndim, (low, high))
        low, high = cast_to(low, "int64"), cast_to(high, "int64")
        return cast_to(self.gen(ptr.integers, low, high + 1, size=size), dtype)

    def permutation(self, size=None, n=1, ndim=None, dtype="int64"):
        """Draw random permutations of ``0, ..., n - 1``.

        Parameters
        ----------
        size : None, (), int, tuple or list, or symbolic int vector
            How many permutations: the result has shape ``size + (n,)``; None or
            ``()``: one permutation, a vector of length ``n``.
        n : int or symbolic int scalar
            The length of each permutation.
        ndim : int, optional
            With ``size`` given, the length of ``size``; without it, None or 1.
        dtype : str
            The dtype of the result.

        Returns
        -------
        TensorVariable

        Notes
        -----
        Port note: a permutation is the ``argsort`` of ``n`` uniform (float64)
        draws, uniformly distributed over the ``n!`` permutations like NumPy's (ties
        have probability about ``n**2 / 2**54``); PyTensor's own permutation
        variable cannot draw a batch of permutations of ``arange(n)``.
        """
        if size is None or (isinstance(size, tuple | list) and len(size) == 0):
            if ndim not in (None, 1):
                raise ValueError(f"one permutation (size={size!r}) has 1 dimension, not ndim={ndim}")
            size = None
        else:
            size = normalize_size(size, ndim)
        keys = self.gen(ptr.uniform, 0.0, 1.0, size=size_with_last(size, n), dtype="float64")
        return cast_to(pt.argsort(keys, axis=-1), dtype)

    def choice(self, size=None, a=2, replace=True, p=None, ndim=None, dtype="int64"):
        """Draw elements of ``a`` (or of ``range(a)``), with or without replacement.

        Parameters
        ----------
        size : None, int, tuple or list, or symbolic int vector
            The shape of the draw; None: one element (a scalar).
        a : int, 1-D array_like, or symbolic int scalar or vector
            The population: ``range(a)`` for a scalar, its elements for a vector.
        replace : bool
            Whether an element may be drawn more than once.
        p : 1-D array_like, optional
            The probability of each element (default: all equal).
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str
            The dtype of the result (the elements of ``a`` are cast to it).

        Returns
        -------
        TensorVariable

        Notes
        -----
        Port note: Theano raised an error for ``size=None`` (its documentation
        promised a scalar, which this returns), and accepted a symbolic
        ``replace``; here ``replace`` must be a Python bool. Without replacement
        the draw is the first elements of a random order: ``argsort`` of uniform
        keys, or with ``p`` of Gumbel-perturbed ``log(p)`` keys (successive
        sampling proportional to ``p``, NumPy's distribution); drawing more
        elements than ``a`` has, or, with ``p``, than it has of nonzero
        probability, is not checked. (PyTensor's own choice without replacement
        is not used: under Numba, PyTensor 3.0.7 draws it from the first
        ``size`` elements only.)
        """
        if not isinstance(replace, bool | np.bool_):
            raise TypeError(f"replace must be a Python bool, got {replace!r}")
        a = pt.as_tensor_variable(a)
        if a.type.ndim > 1:
            raise ValueError(f"a must be a scalar or a vector, got {a.type}")
        size = normalize_size(size, ndim)
        if replace:
            out = self.gen(ptr.choice, a, size=size, replace=True, p=p)
            return cast_to(out, dtype)
        a_size = a if a.type.ndim == 0 else a.shape[0]
        if p is None:
            keys = self.gen(ptr.uniform, 0.0, 1.0, size=pt.stack([a_size]), dtype="float64")
        else:
            p = pt.as_tensor_variable(p)
            u = self.gen(ptr.uniform, 0.0, 1.0, size=pt.stack([a_size]), dtype="float64")
            keys = pt.log(p) - pt.log(-pt.log(u))
        order = pt.argsort(-keys)
        if size is None or (isinstance(size, tuple) and not size):
            idx = order[0]
        elif isinstance(size, tuple):
            shape = pt.stack([pt.cast(pt.as_tensor_variable(d), "int64") for d in size])
            idx = order[: pt.prod(shape)].reshape(shape, ndim=len(size))
        else:
            idx = order[: pt.prod(size)].reshape(size, ndim=get_vector_length(size))
        out = idx if a.type.ndim == 0 else a[idx]
        return cast_to(out, dtype)
