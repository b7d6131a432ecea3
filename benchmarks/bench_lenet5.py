"""Time the LeNet5 port on every backend, and PyTorch, in one run on one machine.

Each configuration runs in its own process, one after the other, so that they do
not share caches or threads: first one cold run per backend, then ``--repeat``
rounds of warm runs in which every configuration, PyTorch included, takes its
turn, so that a slow spell of a shared machine falls on all of them.  Each
time is the median over the rounds, and each ratio the median of the ratios
taken round by round.  For each we report:

* ``compile s``: building the graph and compiling the training and validation
  functions (the first training call included), with a cold cache (a fresh
  PyTensor compile directory) and again with a warm one (the same directory,
  a new process);
* ``train ms``: the median wall time of one training minibatch (batch 500),
  after a warm-up;
* ``valid ms``: one validation pass (20 minibatches of 500, as the tutorial
  scores the 10,000 validation images);
* ``x torch``: the ratio to PyTorch's time for the same float type, in the
  same round.

PyTorch runs the same architecture, initial weights, data and hyper-parameters
(its ``conv2d`` is a cross-correlation, so it is given the flipped kernels).

Usage::

    python benchmarks/bench_lenet5.py                       # every mode, both floatX
    python benchmarks/bench_lenet5.py --modes DLT_NUMBA --floatX float32 --steps 20
    python benchmarks/bench_lenet5.py --write docs/benchmarks/cpu.rst   # the docs' table

The port runs as the programs do, in the named mode.  The table records the machine, the date and the versions it ran.

MNIST is read from ``--dataset`` (default: ``$DEEPLEARNING_TUTORIALS_MNIST/../mnist.pkl.gz``
when that variable is set, else the tutorial's lookup of ``mnist.pkl.gz``).
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BATCH = 500


def _dataset_default():
    folder = os.environ.get("DEEPLEARNING_TUTORIALS_MNIST")
    if folder:
        return os.path.join(os.path.dirname(os.path.abspath(folder)), "mnist.pkl.gz")
    return "mnist.pkl.gz"


def _arrays(dataset, n_train):
    from deeplearning_tutorials import datasets

    (tx, ty), (vx, vy), (sx, sy) = datasets.load_arrays(datasets.locate(dataset))
    return [(tx[:n_train], ty[:n_train]), (vx, vy), (sx[:BATCH], sy[:BATCH])]


def _time_steps(step, n_batches, steps, warmup=3):
    # ``float`` waits for the result: JAX returns before its computation ends.
    for i in range(warmup):
        float(step(i % n_batches))
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        float(step(i % n_batches))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_port(mode, floatX, dataset, steps):
    """One configuration of the port, in this process; returns a dict of figures."""
    import pytensor

    from pytensor.compile.mode import get_mode

    from deeplearning_tutorials import modes  # noqa: F401 (registers the DLT_ modes)
    from deeplearning_tutorials.testing import lenet5_functions

    data = _arrays(dataset, n_train=4 * BATCH)
    # As the lessons run (flags.with_flags): the mode set globally.
    with pytensor.config.change_flags(floatX=floatX, mode=get_mode(mode)):
        t0 = time.perf_counter()
        _, train_model, validate_model = lenet5_functions(data)
        float(train_model(0))
        compile_s = time.perf_counter() - t0
        float(validate_model(0))
        train_ms = _time_steps(train_model, 4, steps)
        t0 = time.perf_counter()
        for i in range(20):
            float(validate_model(i))
        valid_ms = (time.perf_counter() - t0) * 1e3
    return {"compile_s": compile_s, "train_ms": train_ms, "valid_ms": valid_ms}


def run_torch(floatX, dataset, steps):
    """PyTorch (eager, CPU) on the same model, weights and data."""
    import numpy as np
    import pytensor
    import torch
    import torch.nn.functional as F

    from deeplearning_tutorials.testing import lenet5_functions

    dtype = {"float32": torch.float32, "float64": torch.float64}[floatX]
    data = _arrays(dataset, n_train=4 * BATCH)
    with pytensor.config.change_flags(floatX=floatX):
        # Only the initial weights are taken from the port: nothing is compiled.
        layers, _, _ = lenet5_functions(data, mode="FAST_COMPILE")
    w = [torch.tensor(np.asarray(p.get_value()), dtype=dtype, requires_grad=True)
         for layer in layers for p in layer.params]
    W0, b0, W1, b1, W2, b2, W3, b3 = w
    with torch.no_grad():
        # Theano's conv2d flips the kernels; PyTorch's correlates.
        W0.copy_(torch.flip(W0, dims=(2, 3)))
        W1.copy_(torch.flip(W1, dims=(2, 3)))

    def forward(xb):
        h = torch.tanh(F.max_pool2d(F.conv2d(xb.view(-1, 1, 28, 28), W0), 2) + b0.view(1, -1, 1, 1))
        h = torch.tanh(F.max_pool2d(F.conv2d(h, W1), 2) + b1.view(1, -1, 1, 1))
        h = torch.tanh(h.flatten(1) @ W2 + b2)
        return torch.log_softmax(h @ W3 + b3, dim=1)

    tx = torch.tensor(data[0][0], dtype=dtype)
    ty = torch.tensor(data[0][1], dtype=torch.int64)
    vx = torch.tensor(data[1][0], dtype=dtype)
    vy = torch.tensor(data[1][1], dtype=torch.int64)

    def step(i):
        xb, yb = tx[i * BATCH:(i + 1) * BATCH], ty[i * BATCH:(i + 1) * BATCH]
        loss = F.nll_loss(forward(xb), yb)
        for p in w:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in w:
                p -= 0.1 * p.grad
        return loss.item()

    def validate(i):
        with torch.no_grad():
            pred = forward(vx[i * BATCH:(i + 1) * BATCH]).argmax(1)
            return (pred != vy[i * BATCH:(i + 1) * BATCH]).double().mean().item()

    t0 = time.perf_counter()
    first = step(0)
    compile_s = time.perf_counter() - t0
    train_ms = _time_steps(step, 4, steps)
    validate(0)
    t0 = time.perf_counter()
    for i in range(20):
        validate(i)
    valid_ms = (time.perf_counter() - t0) * 1e3
    return {"compile_s": compile_s, "train_ms": train_ms, "valid_ms": valid_ms, "first_cost": first}


def _child(args):
    if args.child == "torch":
        out = run_torch(args.floatX[0], args.dataset, args.steps)
    else:
        out = run_port(args.child, args.floatX[0], args.dataset, args.steps)
    print("RESULT " + json.dumps(out))


def _median_run(results):
    """The median of each figure over the runs that succeeded (the last error if none did)."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[-1] if results else {"error": "not run"}
    return {key: statistics.median(r[key] for r in good)
            for key in ("compile_s", "train_ms", "valid_ms") if key in good[0]}


def _spawn(config, floatX, args, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", config, "--floatX", floatX,
           "--steps", str(args.steps), "--dataset", args.dataset]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX"])
    parser.add_argument("--floatX", nargs="+", default=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=10, help="timed training minibatches")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of warm runs; each figure is the median over the rounds")
    parser.add_argument("--dataset", default=_dataset_default())
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--write", metavar="PATH",
                        help="also write the table as reStructuredText to PATH (the docs include it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    rows = []
    for floatX in args.floatX:
        configs = ([] if args.no_torch else ["torch"]) + list(args.modes)
        with contextlib.ExitStack() as stack:
            envs, cold = {"torch": dict(os.environ)}, {}
            for mode in args.modes:
                compiledir = stack.enter_context(tempfile.TemporaryDirectory())
                env = dict(os.environ)
                env["PYTENSOR_FLAGS"] = ",".join(
                    f for f in (env.get("PYTENSOR_FLAGS"), f"base_compiledir={compiledir}") if f
                )
                env["NUMBA_CACHE_DIR"] = os.path.join(compiledir, "numba")
                envs[mode] = env
                cold[mode] = _spawn(mode, floatX, args, env)
            # Warm runs, the configurations taking turns, so that a slow spell of
            # a shared machine falls on all of them rather than on one.
            runs = {config: [] for config in configs}
            for _ in range(args.repeat):
                for config in configs:
                    runs[config].append(_spawn(config, floatX, args, envs[config]))
        summary = {config: _median_run(runs[config]) for config in configs}
        if "torch" in runs:
            # Ratios round by round (the two runs were seconds apart), then their median.
            for mode in args.modes:
                for key in ("train_ms", "valid_ms"):
                    pairs = [(r[key], t[key]) for r, t in zip(runs[mode], runs["torch"])
                             if "error" not in r and "error" not in t]
                    if pairs:
                        summary[mode]["ratio_" + key] = statistics.median(a / b for a, b in pairs)
        for mode in args.modes:
            if "error" not in summary[mode] and "error" not in cold[mode]:
                summary[mode]["compile_cold_s"] = cold[mode]["compile_s"]
            elif "error" in cold[mode]:
                summary[mode] = cold[mode]
        torch_row = summary.get("torch")
        if torch_row is not None:
            rows.append(("PyTorch " + _torch_version(), floatX, torch_row, None))
        for mode in args.modes:
            rows.append((mode, floatX, summary[mode], torch_row))

    table = _table(rows, args)
    print("\n".join(table))
    if args.write:
        with open(args.write, "w") as f:
            f.write("\n".join(table) + "\n")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions():
    import importlib.metadata as md

    found = [f"Python {platform.python_version()}"]
    for name in ("pytensor", "numpy", "scipy", "numba", "jax", "torch"):
        try:
            found.append(f"{name} {md.version(name).split('+')[0]}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def _table(rows, args):
    """The results as a reStructuredText list-table, with the machine, date and versions."""
    lines = [
        f"LeNet5, batch {BATCH}, measured {time.strftime('%Y-%m-%d')} on {_cpu_name()}, "
        f"{os.cpu_count()} cores; {_versions()}. Written by ``python benchmarks/bench_lenet5.py "
        f"--steps {args.steps} --repeat {args.repeat}"
        + (f" --write {args.write}" if args.write else "") + "``.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - mode",
        "     - floatX",
        "     - train ms",
        "     - x PyTorch",
        "     - valid ms",
        "     - x PyTorch",
        "     - compile s (cold / warm)",
    ]
    for name, floatX, r, ref in rows:
        if "error" in r:
            cells = [name, floatX, "failed: " + r["error"][:60], "", "", "", ""]
        else:
            def ratio(key):
                if not ref or "error" in ref or "ratio_" + key not in r:
                    return ""
                return f"{r['ratio_' + key]:.2f}"

            compile_s = (f"{r['compile_cold_s']:.1f} / {r['compile_s']:.1f}"
                         if "compile_cold_s" in r else "")
            cells = [name, floatX, f"{r['train_ms']:.1f}", ratio("train_ms"),
                     f"{r['valid_ms']:.0f}", ratio("valid_ms"), compile_s]
        lines.append(f"   * - {cells[0]}")
        lines.extend(f"     - {c}" for c in cells[1:])
    return lines


def _torch_version():
    try:
        import torch

        return torch.__version__.split("+")[0]
    except ImportError:
        return "(not installed)"


if __name__ == "__main__":
    main()
