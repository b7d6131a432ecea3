"""Theano's ``theano.tensor.signal.pool.pool_2d``: pooling with any window, stride and padding.

The tutorial's case (max over non-overlapping windows, no padding) is one
:class:`~deeplearning_tutorials.nnet.pool.MaxPool2d` node; every other case is
one :class:`~deeplearning_tutorials.nnet.general_pool.Pool2d` node. Their
gradients are Theano's: a window's gradient goes to every input equal to the
window's maximum (ties included) and adds up where windows overlap; an average
spreads it over the inputs it counted.
"""

import warnings

from deeplearning_tutorials.nnet.conv import int_pair
from deeplearning_tutorials.nnet.general_pool import MODES, Pool2d, pool_output_length
from deeplearning_tutorials.nnet.pool import MaxPool2d, as_pool_input

__all__ = ["pool_2d", "pool_output_length"]


def pool_2d(input, ws=None, ignore_border=None, stride=None, pad=(0, 0), mode="max", ds=None,
            st=None, padding=None):
    """Pool the last two axes of ``input`` (Theano 1.0's ``pool_2d``).

    Parameters
    ----------
    input : TensorVariable, shape (..., h, w), at least 2-D
    ws : (int, int)
        Window height and width.
    ignore_border : bool or None
        True: windows lie inside the (padded) image,
        ``oh = (h + 2 * pad_h - ws_h) // stride_h + 1``; False: one more window
        covers the rest when the windows do not tile the image (padding must
        then be 0). None means False, with Theano's warning.
    stride : (int, int) or None
        Steps between windows; None: the window (no overlap).
    pad : (int, int)
        Rows and columns of padding each side, smaller than the window;
        'max' and 'sum' leave the padding out, 'average_inc_pad' counts it.
    mode : {'max', 'sum', 'average_inc_pad', 'average_exc_pad'}
        What each window gives.
    ds, st, padding
        Deprecated names of ``ws``, ``stride`` and ``pad`` (with Theano's warnings).

    Returns
    -------
    TensorVariable, shape (..., oh, ow)
        See :func:`pool_output_length`.

    Raises
    ------
    ValueError
        For a missing or bad window, stride or padding, padding with
        ``ignore_border=False``, padding not smaller than the window, an unknown
        mode, an input of fewer than 2 dimensions, or both a name and its
        deprecated name.
    """
    for old, new, value, name in ((ds, ws, "ws", "ds"), (st, stride, "stride", "st")):
        if old is not None and new is not None:
            raise ValueError(f"pool_2d: give {value} only, not both {value} and {name}")
    if padding is not None and tuple(pad) != (0, 0):
        raise ValueError("pool_2d: give pad only, not both pad and padding")
    for old, name, new in ((ds, "ds", "ws"), (st, "st", "stride"), (padding, "padding", "pad")):
        if old is not None:
            warnings.warn(f"DEPRECATION: the '{name}' parameter is not going to exist anymore "
                          f"as it is going to be replaced by the parameter '{new}'.",
                          stacklevel=2)
    ws = ws if ds is None else ds
    stride = stride if st is None else st
    pad = pad if padding is None else padding
    if ws is None:
        raise ValueError("pool_2d: give the window size ws")
    if ignore_border is None:
        warnings.warn("pool_2d() will have the parameter ignore_border default value changed "
                      "to True (currently False). To have consistent behavior with all Theano "
                      "version, explicitly add the parameter ignore_border=True.", stacklevel=2)
        ignore_border = False
    return pool(input, ws, ignore_border, stride, pad, mode)


def pool(input, ws, ignore_border, stride=None, pad=(0, 0), mode="max"):
    """:func:`pool_2d` with its arguments checked and no deprecated names."""
    ws = int_pair(ws, "pool_2d: ws", 1)
    stride = ws if stride is None else int_pair(stride, "pool_2d: stride", 1)
    pad = int_pair(pad, "pool_2d: pad", 0)
    if mode not in MODES:
        raise ValueError(f"pool_2d: mode must be one of {MODES}, got {mode!r}")
    if pad != (0, 0) and not ignore_border:
        raise ValueError("pool_2d: padding works only with ignore_border=True")
    if pad[0] >= ws[0] or pad[1] >= ws[1]:
        raise ValueError(f"pool_2d: the padding {pad} must be smaller than the window {ws}")
    x = as_pool_input(input)
    if mode == "max" and stride == ws and pad == (0, 0):
        return MaxPool2d(ws, bool(ignore_border))(x)
    return Pool2d(ws, stride, pad, bool(ignore_border), mode)(x)
