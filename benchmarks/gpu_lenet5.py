"""LeNet5 on a GPU through the JAX backend: the port against the same step written in JAX.

One script for a lent GPU machine (or any JAX device), in three parts:

1. ``step``: ms per training minibatch (batch 500) of the port
   (``lenet5_functions(..., mode="DLT_JAX")``, the tutorial's own graph with its
   ``givens`` slices; on a GPU its convolutions are im2col + GEMM, see
   ``deeplearning_tutorials.nnet.jax``) and of the same step hand-written in JAX (``jax.jit`` of
   ``jax.grad``, the data on the device, ``lax.dynamic_slice`` for the
   minibatch, the parameters donated).  Each step is timed as the tutorial's
   loop calls it: the call, then ``float(cost)``, which waits for the device.
   Both start from the same initial weights; their first costs are printed
   side by side.
   A second figure, "pipelined", reads only the last cost of a series, as the
   training loop does on a device backend (each cost is read once the next
   step has started).
2. ``schedule``: the whole default LeNet5 run
   (``python -m deeplearning_tutorials.convolutional_mlp --mode DLT_JAX --floatX
   float32``), timed end to end as a child process (interpreter start, MNIST
   loading and compilation included): once with an empty compile cache, then
   ``--warm-runs`` times with the one the first run left; its output goes to
   ``$OUT`` when set.
3. A summary table, printed last.

``--trace-steps N`` also traces N of the port's float32 training steps with
JAX's profiler and prints, per step, the device's kernels (time and count)
and the host's busiest events: where a step's time goes on the device, and
what the host does for each call.

Usage::

    python benchmarks/gpu_lenet5.py --dataset mnist.pkl.gz              # all of it
    python benchmarks/gpu_lenet5.py --dataset mnist.pkl.gz --epochs 1   # a short check
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench_lenet5 import BATCH
from bench_lenet5 import _time_steps as _median_ms  # median ms, each cost read


def _pipelined_ms(step, n_batches, steps):
    """ms per step when the host reads only the last cost, as the training loop
    does for a device backend (it reads each cost once the next step has started)."""
    float(step(0))
    t0 = time.perf_counter()
    for i in range(steps):
        c = step(i % n_batches)
    float(c)
    return (time.perf_counter() - t0) / steps * 1e3


def _arrays(dataset):
    from deeplearning_tutorials import datasets

    return datasets.load_arrays(datasets.locate(dataset))


def port_step(arrays, floatX, steps):
    """The port's training function on the JAX backend: (ms per step, first cost, layers)."""
    import pytensor

    from deeplearning_tutorials.testing import lenet5_functions

    with pytensor.config.change_flags(floatX=floatX):
        t0 = time.perf_counter()
        layers, train_model, validate_model = lenet5_functions(arrays, mode="DLT_JAX")
        first = float(train_model(0))
        compile_s = time.perf_counter() - t0
        n_batches = arrays[0][0].shape[0] // BATCH
        ms = _median_ms(train_model, n_batches, steps)
        pipelined = _pipelined_ms(train_model, n_batches, steps)
        float(validate_model(0))
        t0 = time.perf_counter()
        for i in range(20):
            float(validate_model(i))
        valid_ms = (time.perf_counter() - t0) * 1e3
    return {"train_ms": ms, "pipelined_ms": pipelined, "valid_ms": valid_ms, "first_cost": first,
            "compile_s": compile_s}


def initial_params(arrays, floatX):
    """The port's initial weights (RandomState(23455)), as numpy arrays, in layer order."""
    import numpy as np
    import pytensor

    from deeplearning_tutorials.testing import lenet5_functions

    small = [(a[:BATCH], b[:BATCH]) for a, b in arrays]
    with pytensor.config.change_flags(floatX=floatX):
        layers, _, _ = lenet5_functions(small, mode="FAST_COMPILE")
    return [np.asarray(p.get_value()) for layer in layers for p in layer.params]


def jax_step(arrays, floatX, steps, precision=None):
    """LeNet5's training step written directly in JAX: (ms per step, first cost)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dtype = jnp.dtype(floatX)
    params = [jnp.asarray(p, dtype) for p in initial_params(arrays, floatX)]
    tx = jax.device_put(jnp.asarray(arrays[0][0], dtype))
    ty = jax.device_put(jnp.asarray(arrays[0][1], jnp.int32))
    dn = ("NCHW", "OIHW", "NCHW")

    def conv_pool(h, W, b):
        h = lax.conv_general_dilated(h, W[:, :, ::-1, ::-1], (1, 1), "VALID",
                                     dimension_numbers=dn, precision=precision)
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        return jnp.tanh(h + b[None, :, None, None])

    def cost(params, xb, yb):
        W0, b0, W1, b1, W2, b2, W3, b3 = params
        h = conv_pool(xb.reshape(BATCH, 1, 28, 28), W0, b0)
        h = conv_pool(h, W1, b1)
        h = jnp.tanh(jnp.dot(h.reshape(BATCH, -1), W2, precision=precision) + b2)
        logp = jax.nn.log_softmax(jnp.dot(h, W3, precision=precision) + b3)
        return -jnp.mean(logp[jnp.arange(BATCH), yb])

    def step(params, i):
        xb = lax.dynamic_slice_in_dim(tx, i * BATCH, BATCH)
        yb = lax.dynamic_slice_in_dim(ty, i * BATCH, BATCH)
        c, g = jax.value_and_grad(cost)(params, xb, yb)
        return [p - 0.1 * gp for p, gp in zip(params, g)], c

    step = jax.jit(step, donate_argnums=0)
    # The layer order of the port is W, b per layer from the input up.
    state = {"params": params}

    def call(i):
        state["params"], c = step(state["params"], i)
        return c

    t0 = time.perf_counter()
    first = float(call(0))
    compile_s = time.perf_counter() - t0
    ms = _median_ms(call, arrays[0][0].shape[0] // BATCH, steps)
    pipelined = _pipelined_ms(call, arrays[0][0].shape[0] // BATCH, steps)
    return {"train_ms": ms, "pipelined_ms": pipelined, "first_cost": first, "compile_s": compile_s}


def summarize_trace(trace_dir, steps, top=25):
    """Lines summarizing a ``jax.profiler.trace(..., create_perfetto_trace=True)`` of ``steps`` steps.

    Device rows: each GPU stream's busy time and span per step, and its kernels
    by total time. Host rows: the busiest named events (XLA's launch of the
    program, PyTensor's call, Python frames) per step.
    """
    import collections
    import glob
    import gzip

    paths = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")))
    if not paths:
        return ["no trace was written"]
    with gzip.open(paths[-1]) as f:
        events = json.load(f)["traceEvents"]
    meta = {(e["pid"], e.get("tid"), e["name"]): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name")}
    totals = collections.defaultdict(lambda: [0.0, 0])
    spans = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        process = meta.get((e["pid"], None, "process_name"), "")
        device = "GPU" in process.upper()
        thread = meta.get((e["pid"], e.get("tid"), "thread_name"), "?")
        key = (device, thread if device else "host", e["name"])
        totals[key][0] += e.get("dur", 0.0)
        totals[key][1] += 1
        if device:
            lo, hi = spans.get(thread, (float("inf"), 0.0))
            spans[thread] = (min(lo, e["ts"]), max(hi, e["ts"] + e.get("dur", 0.0)))
    lines = []
    for thread, (lo, hi) in sorted(spans.items()):
        rows = sorted(((v[0], v[1], k[2]) for k, v in totals.items() if k[0] and k[1] == thread), reverse=True)
        busy = sum(r[0] for r in rows)
        lines.append(f"device {thread}: busy {busy / steps:.1f} us of a {(hi - lo) / steps:.1f} us span per step, "
                     f"{sum(r[1] for r in rows) / steps:.1f} kernels per step")
        lines += [f"  {t / steps:8.1f} us x{n / steps:4.1f}  {name[:120]}" for t, n, name in rows[:top]]
    rows = sorted(((v[0], v[1], k[2]) for k, v in totals.items() if not k[0]), reverse=True)
    lines.append("host, busiest events (nested events count in each of their parents):")
    lines += [f"  {t / steps:8.1f} us x{n / steps:4.1f}  {name[:120]}" for t, n, name in rows[:top]]
    return lines


def trace_port(arrays, steps):
    """Trace ``steps`` float32 training steps of the port (after three untraced ones)."""
    import jax
    import pytensor

    from deeplearning_tutorials.testing import lenet5_functions

    with pytensor.config.change_flags(floatX="float32"):
        _, train_model, _ = lenet5_functions(arrays, mode="DLT_JAX")
        n_batches = arrays[0][0].shape[0] // BATCH
        for i in range(3):
            float(train_model(i))
        with tempfile.TemporaryDirectory() as d:
            with jax.profiler.trace(d, create_perfetto_trace=True):
                cost = None
                for i in range(steps):
                    cost = train_model(i % n_batches)
                float(cost)
            return summarize_trace(d, steps)


def profile_schedule(dataset, epochs, out_dir):
    """A short run of the default schedule under cProfile: where the loop's time goes."""
    prof = os.path.join(out_dir or tempfile.gettempdir(), "schedule.prof")
    cmd = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "deeplearning_tutorials.convolutional_mlp",
           "--dataset", dataset, "--mode", "DLT_JAX", "--floatX", "float32", "--quiet",
           "--n-epochs", str(epochs)]
    subprocess.run(cmd, capture_output=True, text=True)
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    return buf.getvalue()


def schedule(dataset, floatX, epochs, out_dir, compiledir, label):
    """The whole default run as a child process, timed end to end.

    ``compiledir`` is the child's PyTensor ``base_compiledir`` (JAX's compiled
    programs are cached there too): a fresh one gives a cold run, the same one
    again a warm run."""
    cmd = [sys.executable, "-m", "deeplearning_tutorials.convolutional_mlp", "--dataset", dataset,
           "--mode", "DLT_JAX", "--floatX", floatX, "--quiet"]
    if epochs is not None:
        cmd += ["--n-epochs", str(epochs)]
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={compiledir}")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out_dir:
        with open(os.path.join(out_dir, f"schedule_{floatX}_{label}.txt"), "w") as f:
            f.write(" ".join(cmd) + "\n\n" + proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    best = next((ln for ln in reversed(lines) if ln.startswith("Best validation")), None)
    ran = next((ln for ln in proc.stderr.splitlines() if " ran for " in ln), None)
    return {"label": label, "rc": proc.returncode, "wall_s": wall, "best": best, "ran_for": ran,
            "tail": "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [""])[-1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist.pkl.gz")
    parser.add_argument("--steps", type=int, default=200, help="timed training minibatches")
    parser.add_argument("--floatX", nargs="+", default=["float32", "float64"])
    parser.add_argument("--epochs", type=int, default=None,
                        help="n_epochs of the full run (the tutorial's 200 when omitted)")
    parser.add_argument("--skip-schedule", action="store_true")
    parser.add_argument("--warm-runs", type=int, default=1,
                        help="full runs with the compile cache the first (cold) run left")
    parser.add_argument("--profile-epochs", type=int, default=0,
                        help="also profile a run of this many epochs (0: none)")
    parser.add_argument("--trace-steps", type=int, default=0,
                        help="also trace this many float32 steps of the port with JAX's profiler (0: none)")
    args = parser.parse_args(argv)
    out_dir = os.environ.get("OUT")

    # The child runs first, while this process holds no GPU memory: JAX takes
    # most of the device's memory when it starts.
    scheds = []
    if not args.skip_schedule:
        with tempfile.TemporaryDirectory() as compiledir:
            labels = ["cold"] + [f"warm{i + 1}" if args.warm_runs > 1 else "warm"
                                 for i in range(args.warm_runs)]
            for label in labels:
                scheds.append(schedule(args.dataset, "float32", args.epochs, out_dir, compiledir, label))
                print("schedule", json.dumps(scheds[-1]), flush=True)
    if args.profile_epochs:
        print(profile_schedule(args.dataset, args.profile_epochs, out_dir), flush=True)

    import jax

    from deeplearning_tutorials.nnet.jax import conv_algorithm

    algorithms = {fx: conv_algorithm(dtype=fx) for fx in args.floatX}
    print(f"jax {jax.__version__}, devices {jax.devices()}, the port's convolutions {algorithms}", flush=True)
    arrays = _arrays(args.dataset)
    if args.trace_steps:
        print("\n".join(trace_port(arrays, args.trace_steps)), flush=True)
    rows = {}
    for floatX in args.floatX:
        rows[f"port {floatX}"] = port_step(arrays, floatX, args.steps)
        print("port", floatX, json.dumps(rows[f"port {floatX}"]), flush=True)
        rows[f"jax {floatX}"] = jax_step(arrays, floatX, args.steps)
        print("jax", floatX, json.dumps(rows[f"jax {floatX}"]), flush=True)
        if floatX == "float32":
            rows["jax float32 HIGHEST"] = jax_step(arrays, floatX, args.steps,
                                                   precision=jax.lax.Precision.HIGHEST)
            print("jax HIGHEST", json.dumps(rows["jax float32 HIGHEST"]), flush=True)

    print()
    print(f"LeNet5 on {jax.devices()[0].device_kind}, batch {BATCH}; {time.strftime('%Y-%m-%d')}")
    print("| what | train ms, read each cost | train ms, pipelined | valid pass ms | first cost | compile s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        valid = f"{r['valid_ms']:.1f}" if "valid_ms" in r else ""
        print(f"| {name} | {r['train_ms']:.3f} | {r['pipelined_ms']:.3f} | {valid} | "
              f"{r['first_cost']:.10f} | {r['compile_s']:.1f} |")
    for sched in scheds:
        print(f"full schedule (float32, {sched['label']} cache): rc {sched['rc']}, "
              f"{sched['wall_s']:.1f} s end to end; {sched['best']}; {sched['ran_for']} {sched['tail']}")
    if out_dir:
        with open(os.path.join(out_dir, "gpu_lenet5.json"), "w") as f:
            json.dump({"rows": rows, "schedules": scheds}, f, indent=1)


if __name__ == "__main__":
    main()
