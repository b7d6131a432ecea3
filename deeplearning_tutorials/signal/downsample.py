"""Theano 0.7 and 0.8's ``theano.tensor.signal.downsample.max_pool_2d``."""

import warnings

from deeplearning_tutorials.signal.pool import pool

__all__ = ["max_pool_2d"]


def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0), mode="max"):
    """Pool the last two axes of ``input`` (Theano 0.7 and 0.8's spelling of ``pool_2d``).

    Parameters
    ----------
    input : TensorVariable, shape (..., h, w)
    ds : (int, int)
        Window height and width.
    ignore_border : bool or None
        None means False, with Theano's warning that the default would change.
    st : (int, int) or None
        Steps between windows; None: the window.
    padding : (int, int)
        Rows and columns of padding each side.
    mode : {'max', 'sum', 'average_inc_pad', 'average_exc_pad'}

    Returns
    -------
    TensorVariable, shape (..., oh, ow)
        As :func:`deeplearning_tutorials.signal.pool.pool_2d` gives.
    """
    if ignore_border is None:
        warnings.warn("max_pool_2d() will have the parameter ignore_border default value "
                      "changed to True (currently False). To have consistent behavior with all "
                      "Theano version, explicitly add the parameter ignore_border=True.",
                      stacklevel=2)
        ignore_border = False
    return pool(input, ds, ignore_border, st, padding, mode)
