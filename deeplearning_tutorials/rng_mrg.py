"""Theano's ``theano.sandbox.rng_mrg.MRG_RandomStreams``, built on PyTensor.

:class:`MRG_RandomStreams` keeps Theano 1.0's signatures and defaults for
``uniform``, ``binomial``, ``normal`` (with ``truncate``), ``truncated_normal``,
``seed`` and ``updates``, and shares its machinery with
:class:`deeplearning_tutorials.shared_randomstreams.RandomStreams`: a draw is a
PyTensor random variable on a shared NumPy ``Generator`` whose update is
automatic in :func:`pytensor.function`.

Port note: Theano's MRG31k3p generator, its GPU kernels and its ``nstreams``
sub-streams are not ported: the numbers come from NumPy's PCG64 streams, so a seed
gives other numbers than in Theano, with the same distributions. Theano's
``multinomial``, ``choice`` and ``multinomial_wo_replacement`` are not ported.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import undefined_grad

from deeplearning_tutorials.shared_randomstreams import (
    StreamsBase,
    cast_to,
    float_dtype,
    is_constant_one,
    normalize_size,
)

__all__ = ["MRG_RandomStreams"]

#: Theano's MRG31k3p moduli: a seed must be below M2 (and each of 6 ints below its modulus).
M1 = 2147483647
M2 = 2147462579

#: The standard normal CDF at -2 and 2: the bounds of the uniform draw that the
#: inverse CDF maps onto the normal truncated at two standard deviations.
_PHI_MINUS_2 = 0.022750131948179195
_PHI_PLUS_2 = 0.9772498680518208

#: The standard deviation of the standard normal truncated to [-2, 2]
#: (Theano's constant, ``scipy.stats.truncnorm.std(-2, 2)``).
_TRUNCATED_STD = 0.87962566103423978


def check_seed(seed):
    """Refuse the seeds Theano's ``MRG_RandomStreams`` refuses.

    Parameters
    ----------
    seed : int or sequence of 6 ints
        An int in ``1 .. M2 - 1``, or six ints: the first three below ``M1`` and
        not all 0, the last three below ``M2`` and not all 0.

    Returns
    -------
    int or list of int
        ``seed`` as the entropy of a ``SeedSequence``.

    Raises
    ------
    ValueError
        For 0, a negative seed, or a seed out of range.
    TypeError
        For anything but one int or six ints.

    Notes
    -----
    Port note: Theano let negative seeds through; they are refused here (NumPy's
    ``SeedSequence`` takes no negative entropy). An ``np.integer`` counts as an
    int (Theano wanted a Python ``int``).
    """
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        if seed == 0:
            raise ValueError("seed should not be 0", seed)
        if seed < 0:
            raise ValueError("seed should not be negative", seed)
        if seed >= M2:
            raise ValueError(f"seed should be less than {M2}", seed)
        return int(seed)
    try:
        values = [int(v) for v in seed]
    except (TypeError, ValueError):
        raise TypeError(f"seed should be 1 integer or 6 integers, got {seed!r}") from None
    if len(values) != 6:
        raise TypeError(f"seed should be 1 integer or 6 integers, got {seed!r}")
    if min(values) < 0:
        raise ValueError("the values of seed should not be negative", seed)
    if not any(values[:3]):
        raise ValueError("The first 3 values of seed should not be all 0", seed)
    if not any(values[3:]):
        raise ValueError("The last 3 values of seed should not be all 0", seed)
    if max(values[:3]) >= M1:
        raise ValueError(f"The first 3 values of seed should be less than {M1}", seed)
    if max(values[3:]) >= M2:
        raise ValueError(f"The last 3 values of seed should be less than {M2}", seed)
    return values


class MRG_RandomStreams(StreamsBase):  # noqa: N801 (Theano's name)
    """Theano's ``MRG_RandomStreams``: symbolic random draws, reproducible by default.

    Parameters
    ----------
    seed : int or sequence of 6 ints
        Theano's seed: an int in ``1 .. 2147462578`` (default 12345), or six ints
        (see :func:`check_seed`).

    Notes
    -----
    Port note: ``nstreams`` is accepted by every method and ignored (one NumPy
    generator per draw replaces Theano's parallel MRG sub-streams), and the seed
    is the entropy of a NumPy ``SeedSequence``, so the numbers are not Theano's.
    """

    def __init__(self, seed=12345):
        super().__init__(seed=check_seed(seed))

    def seed(self, seed=None):
        """Re-initialize every stream made so far from ``seed``.

        Parameters
        ----------
        seed : int, sequence of 6 ints, or None
            The new seed (checked as the constructor's); None: the constructor's.

        Returns
        -------
        None
        """
        super().seed(None if seed is None else check_seed(seed))

    def uniform(self, size, low=0.0, high=1.0, ndim=None, dtype=None, nstreams=None):
        """Draw from the uniform distribution between ``low`` and ``high``.

        Parameters
        ----------
        size : int, tuple or list, or symbolic int vector
            The shape of the draw (``x.shape`` works); required.
        low, high : float or tensor_like
            The bounds, cast to ``dtype``.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            A float dtype. Default: the upcast of ``config.floatX`` with the dtypes
            of ``low`` and ``high`` (Python floats count as ``floatX``).
        nstreams : int, optional
            Ignored.

        Returns
        -------
        TensorVariable

        Raises
        ------
        ValueError
            If ``size`` is None or holds a dimension that is not positive.

        Notes
        -----
        Port note: Theano's MRG excluded both bounds; NumPy's generator draws in
        ``[low, high)`` (in float32 a draw can also round up to ``high``, with a
        probability of about 3e-8). Theano raised ``TypeError`` for a missing or
        a list ``size``; here a list is accepted and a missing ``size`` is a
        ``ValueError``, as in Theano's ``normal``. ``nstreams`` is ignored.
        """
        dtype = float_dtype(dtype, low, high)
        size = normalize_size(size, ndim, required=True, positive=True)
        return self._uniform(size, low, high, dtype)

    def binomial(self, size=None, n=1, p=0.5, ndim=None, dtype="int64", nstreams=None):
        """Draw Bernoulli trials of probability ``p`` (Theano's MRG supports ``n=1`` only).

        Parameters
        ----------
        size : int, tuple or list, or symbolic int vector
            The shape of the draw; required (None raises ``ValueError``).
        n : int
            Must be 1.
        p : float or tensor_like
            The probability of a 1.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str
            The dtype of the result.
        nstreams : int, optional
            Ignored.

        Returns
        -------
        TensorVariable
            ``cast(u < p, dtype)`` for ``u`` uniform on ``[0, 1)``, Theano's
            construction.

        Raises
        ------
        NotImplementedError
            If ``n`` is not the constant 1 (as in Theano).

        Notes
        -----
        Port note: ``nstreams`` is ignored.
        """
        if not is_constant_one(n):
            raise NotImplementedError("MRG_RandomStreams.binomial with n > 1")
        u = self.uniform(size=size, ndim=ndim, nstreams=nstreams)
        return cast_to(pt.lt(u, p), dtype)

    def normal(self, size, avg=0.0, std=1.0, ndim=None, dtype=None, nstreams=None,
               truncate=False):
        """Draw from the normal distribution of mean ``avg`` and standard deviation ``std``.

        Parameters
        ----------
        size : int, tuple or list, or symbolic int vector
            The shape of the draw; required.
        avg, std : float or tensor_like
            Mean and standard deviation, cast to ``dtype``.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            A float dtype. Default: the upcast of ``config.floatX`` with the dtypes
            of ``avg`` and ``std``.
        nstreams : int, optional
            Ignored.
        truncate : bool
            If True, no value lies more than 2 standard deviations from ``avg``
            (the standard deviation of the result is then ``0.8796 * std``).

        Returns
        -------
        TensorVariable

        Raises
        ------
        ValueError
            If ``size`` is None or holds a dimension that is not positive.

        Notes
        -----
        Port note: Theano drew with Box-Muller from its own uniforms, and with
        ``truncate`` gave each value beyond 2 standard deviations a new radius
        (keeping its angle) and moved the redrawn values after the others. Here
        the draw is PyTensor's normal variable, and with ``truncate`` the exact
        normal truncated to ``[-2, 2]``: the inverse CDF ``sqrt(2) * erfinv(2u - 1)``
        of ``u`` uniform on ``[Phi(-2), Phi(2))``, clipped to ``[-2, 2]`` against
        rounding. Theano's redrawn values (about 4.6 %) did not follow the
        truncated normal exactly; these do. As in Theano, ``avg`` and ``std``
        have no gradient. ``nstreams`` is ignored.
        """
        dtype = float_dtype(dtype, avg, std)
        size = normalize_size(size, ndim, required=True, positive=True)
        avg = undefined_grad(cast_to(avg, dtype))
        std = undefined_grad(cast_to(std, dtype))
        if not truncate:
            return self._normal(size, avg, std, dtype)
        u = self._uniform(size, _PHI_MINUS_2, _PHI_PLUS_2, dtype)
        two = pt.constant(2.0, dtype=dtype)
        z = pt.constant(np.sqrt(2.0), dtype=dtype) * pt.erfinv(two * u - pt.constant(1.0, dtype=dtype))
        z = pt.clip(z, -two, two)
        return z * std + avg

    def truncated_normal(self, size, avg=0.0, std=1.0, ndim=None, dtype=None, nstreams=None):
        """Draw from the normal distribution truncated at 2 standard deviations.

        Parameters
        ----------
        size : int, tuple or list, or symbolic int vector
            The shape of the draw; required.
        avg : float or tensor_like
            The mean.
        std : float or tensor_like
            The standard deviation of the result: the untruncated normal's is
            ``std / 0.8796`` (Theano's rescaling), and values lie within
            ``2 * std / 0.8796`` of ``avg``.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            A float dtype. Default: as in :meth:`normal`.
        nstreams : int, optional
            Ignored.

        Returns
        -------
        TensorVariable
        """
        std = pt.as_tensor_variable(std) / pt.constant(_TRUNCATED_STD)
        return self.normal(size=size, avg=avg, std=std, ndim=ndim, dtype=dtype,
                           nstreams=nstreams, truncate=True)
