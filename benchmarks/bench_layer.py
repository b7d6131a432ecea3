"""Time a Theano-era convolutional layer (beyond the tutorial's case) on every mode, and PyTorch.

The layer: a 3 x 3 'half' convolution (``deeplearning_tutorials.nnet.conv2d``,
padding 1) from 32 to 64 feature maps of 14 x 14, batch 128, then 2 x 2 max
pooling (``deeplearning_tutorials.signal.pool.pool_2d``); one step is the
forward pass and the gradients with respect to the input and the filters.
PyTorch computes the same step (``F.conv2d(..., padding=1)`` with the flipped
filters, ``F.max_pool2d``, ``backward``).

The configurations take turns, ``--repeat`` rounds of ``--steps`` steps each
after a warm-up, so that a slow spell of a shared machine falls on all of them;
each time is the median over all steps, each ratio the median of the ratios
taken round by round.

Usage::

    python benchmarks/bench_layer.py
    python benchmarks/bench_layer.py --write docs/benchmarks/layer.rst   # the docs' table
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lenet5 import _cpu_name, _torch_version, _versions  # noqa: E402

BATCH, IN_MAPS, OUT_MAPS, SIZE = 128, 32, 64, 14


def _data(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, IN_MAPS, SIZE, SIZE)).astype(dtype)
    w = (rng.normal(size=(OUT_MAPS, IN_MAPS, 3, 3)) * 0.1).astype(dtype)
    gz = rng.normal(size=(BATCH, OUT_MAPS, SIZE // 2, SIZE // 2)).astype(dtype)
    return x, w, gz


def port_step(mode, dtype):
    """The layer's step compiled in ``mode``: a function of no arguments."""
    import pytensor
    import pytensor.tensor as pt

    import deeplearning_tutorials.modes  # noqa: F401 (registers the DLT_ modes)
    from deeplearning_tutorials.nnet import conv2d
    from deeplearning_tutorials.signal.pool import pool_2d

    x, w, gz = (pytensor.shared(a) for a in _data(dtype))
    z = pool_2d(conv2d(x, w, border_mode="half", filter_shape=(OUT_MAPS, IN_MAPS, 3, 3),
                       input_shape=(BATCH, IN_MAPS, SIZE, SIZE)), ws=(2, 2), ignore_border=True)
    gx, gw = pytensor.grad((z * gz).sum(), [x, w])
    fn = pytensor.function([], [z, gx, gw], mode=mode)
    # np.asarray waits for JAX, which returns before its results are computed
    return lambda: [np.asarray(out) for out in fn()]


def torch_step(dtype):
    import torch
    import torch.nn.functional as F

    x, w, gz = (torch.from_numpy(a) for a in _data(dtype))
    x.requires_grad_(True)
    wf = torch.flip(w, dims=(2, 3)).contiguous().requires_grad_(True)

    def step():
        x.grad = wf.grad = None
        z = F.max_pool2d(F.conv2d(x, wf, padding=1), 2)
        z.backward(gz)
        return z, x.grad, wf.grad

    return step


def _time(step, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX"])
    parser.add_argument("--floatX", nargs="+", default=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--write", metavar="PATH",
                        help="also write the table as reStructuredText to PATH (the docs include it)")
    args = parser.parse_args(argv)

    rows = []
    for dtype in args.floatX:
        steps = {"torch": torch_step(dtype)}
        for mode in args.modes:
            steps[mode] = port_step(mode, dtype)
        for step in steps.values():
            _time(step, 3)  # warm-up: first calls, allocations
        times = {name: [] for name in steps}
        for _ in range(args.repeat):
            for name, step in steps.items():
                times[name].append(_time(step, args.steps))
        torch_ms = statistics.median(t for r in times["torch"] for t in r) * 1e3
        rows.append((f"PyTorch {_torch_version()}", dtype, torch_ms, None))
        for mode in args.modes:
            ms = statistics.median(t for r in times[mode] for t in r) * 1e3
            ratio = statistics.median(statistics.median(a) / statistics.median(b)
                                      for a, b in zip(times[mode], times["torch"]))
            rows.append((mode, dtype, ms, ratio))

    lines = [
        f"A 3 x 3 'half' convolution, {IN_MAPS} to {OUT_MAPS} maps of {SIZE} x {SIZE}, batch "
        f"{BATCH}, then 2 x 2 max pooling: forward and both gradients; measured "
        f"{time.strftime('%Y-%m-%d')} on {_cpu_name()}, {os.cpu_count()} cores; {_versions()}. "
        f"Written by ``python benchmarks/bench_layer.py --steps {args.steps} "
        f"--repeat {args.repeat}" + (f" --write {args.write}" if args.write else "") + "``.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - mode",
        "     - floatX",
        "     - step ms",
        "     - x PyTorch",
    ]
    for name, dtype, ms, ratio in rows:
        lines += [f"   * - {name}", f"     - {dtype}", f"     - {ms:.1f}",
                  f"     - {'' if ratio is None else f'{ratio:.2f}'}"]
    print("\n".join(lines))
    if args.write:
        with open(args.write, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
