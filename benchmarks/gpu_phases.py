"""Where the time of the default LeNet5 run on the JAX backend goes, phase by phase.

``python benchmarks/gpu_phases.py --dataset mnist.pkl.gz`` runs the lesson's
default schedule (``python -m deeplearning_tutorials.convolutional_mlp --mode JAX
--floatX float32 --quiet``) several times as child processes, each timed from
the interpreter's start to its exit, and each child reports its own phases:

* ``import``: the port's modules (PyTensor, JAX) imported;
* ``build``: MNIST loaded and the three functions compiled (PyTensor's
  rewrites; JAX compiles a function at its first call);
* ``first``: the first call of each function (XLA's compilation, or its
  persistent cache's load);
* ``loop``: the training loop, split into the time the host spends in the
  training calls, in the validation and test calls, and the rest (waiting for
  the device when a cost is read, the loop's own work);
* ``exit``: the rest of the process.

The runs differ in their compile directory (an empty one gives a cold run) and
in a variant, named by ``--runs LABEL:DIR:VARIANT`` (VARIANT a ``+``-joined
list, possibly empty):

* ``trust``: the three functions get PyTensor's ``trust_input`` (no check
  or conversion of the index on each call; the index is passed as a 0-d int64
  array, the type the checked call would have made);
* ``xla-cb-off``: ``XLA_FLAGS=--xla_gpu_enable_command_buffer=`` (no CUDA graphs);
* ``cb1``: ``XLA_FLAGS=--xla_gpu_graph_min_graph_size=1``;
* ``bginit``: JAX's device backend is started in a thread while MNIST loads;
* ``old``: the training loop of another version of ``training.py``, the
  file ``DLT_PHASES_OLD_TRAINING`` names (an A/B against an earlier version).

``--read-patterns STEPS`` instead times, in one process, ways of reading the
training costs back from the device (see :func:`read_patterns`).
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

XLA_VARIANTS = {
    "xla-cb-off": "--xla_gpu_enable_command_buffer=",
    "cb1": "--xla_gpu_graph_min_graph_size=1",
}


def child(argv):
    """One run of the lesson's main, instrumented; phases as JSON on stderr."""
    variant = set(filter(None, os.environ.get("DLT_PHASES_VARIANT", "").split("+")))
    marks = {}
    if "bginit" in variant:
        import threading

        import jax

        def init():
            jax.devices()
            marks["backend_ready"] = time.perf_counter() - T0

        threading.Thread(target=init, daemon=True).start()

    import numpy as np

    from deeplearning_tutorials import cli, training
    from deeplearning_tutorials import convolutional_mlp as lesson

    marks["import"] = time.perf_counter() - T0
    sums = {}
    original_loop = training.patience_loop

    def timed(fn, key):
        if "trust" in variant and hasattr(fn, "trust_input"):
            fn.trust_input = True
            inner = fn

            def fn(i):
                return inner(np.asarray(i, dtype="int64"))

        state = {"first": True}
        sums[key] = 0.0
        sums[key + "_n"] = 0

        def call(i):
            t = time.perf_counter()
            r = fn(i)
            dt = time.perf_counter() - t
            if state["first"]:
                state["first"] = False
                marks[key + "_first"] = dt
            else:
                sums[key] += dt
                sums[key + "_n"] += 1
            return r

        return call

    def loop(train_model, validate_model, test_model, *args, **kwargs):
        marks["loop_start"] = time.perf_counter() - T0
        try:
            return original_loop(timed(train_model, "train"), timed(validate_model, "valid"),
                                 timed(test_model, "test"), *args, **kwargs)
        finally:
            marks["loop_end"] = time.perf_counter() - T0

    training.patience_loop = loop
    if "old" in variant:  # A/B: the loop of another version of training.py
        import importlib.util

        older = os.environ["DLT_PHASES_OLD_TRAINING"]
        spec = importlib.util.spec_from_file_location("older_training", older)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        original_loop = module.patience_loop
    try:
        rc = cli.main(lesson.evaluate_lenet5, argv)
    finally:
        marks["main_end"] = time.perf_counter() - T0
        print("PHASES " + json.dumps({"marks": marks, "sums": sums}), file=sys.stderr, flush=True)
    return rc


def run(dataset, label, compiledir, variant, out_dir, epochs=None):
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={compiledir}", DLT_PHASES_VARIANT=variant)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    flags = [XLA_VARIANTS[v] for v in variant.split("+") if v in XLA_VARIANTS]
    if flags:
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", "")] + flags))
    cmd = [sys.executable, __file__, "--child", "--dataset", dataset, "--mode", "JAX",
           "--floatX", "float32", "--quiet"]
    if epochs is not None:
        cmd += ["--n-epochs", str(epochs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out_dir:
        with open(os.path.join(out_dir, f"phases_{label}.txt"), "w") as f:
            f.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    phases = next((json.loads(ln[7:]) for ln in proc.stderr.splitlines() if ln.startswith("PHASES ")),
                  {"marks": {}, "sums": {}})
    best = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("Best validation")), "")
    return {"label": label, "variant": variant, "rc": proc.returncode, "wall_s": round(wall, 2),
            "best": best, **phases,
            "tail": "" if proc.returncode == 0 else proc.stderr.strip()[-600:]}


def summary(r):
    m, s = r["marks"], r["sums"]
    if "loop_end" not in m:
        return f"{r['label']:>12} {r['variant']:<18} rc {r['rc']} wall {r['wall_s']:.1f} s  {r['tail']}"
    loop = m["loop_end"] - m["loop_start"]
    calls = s["train"] + s["valid"] + s["test"]
    first = m.get("train_first", 0) + m.get("valid_first", 0) + m.get("test_first", 0)
    n = s["train_n"]
    return (f"{r['label']:>12} {r['variant']:<18} wall {r['wall_s']:5.1f} s | import {m['import']:4.1f} "
            f"build {m['loop_start'] - m['import']:4.1f} first calls {first:4.1f} | loop {loop - first:5.1f} s: "
            f"train calls {s['train']:5.2f} s ({s['train'] / n * 1e6:4.0f} us x {n}), "
            f"valid+test calls {s['valid'] + s['test']:4.2f} s "
            f"({(s['valid'] + s['test']) / max(1, s['valid_n'] + s['test_n']) * 1e6:4.0f} us x "
            f"{s['valid_n'] + s['test_n']}), rest {loop - first - calls:5.2f} s | "
            f"exit {r['wall_s'] - m['main_end']:4.1f} s | {r['best'][:60]}")


def read_patterns(dataset, steps, rounds=2):
    """µs per float32 training step (and per validation call) for ways of reading the costs.

    In one process, with the port's functions on the JAX backend: no read at
    all; each cost read one minibatch late (the loop before commit f8109eb);
    100 costs read in turn once 100 have been started; the 100 read in one
    transfer, stacked on the device (the loop now) or with ``jax.device_get``;
    and a validation pass's 20 errors read in turn or in one transfer.
    """
    import collections

    import jax
    import jax.numpy as jnp
    import numpy as np
    import pytensor
    from gpu_lenet5 import _arrays, _pipelined_ms

    from deeplearning_tutorials.testing import lenet5_functions

    arrays = _arrays(dataset)
    with pytensor.config.change_flags(floatX="float32"):
        _, train, validate = lenet5_functions(arrays, mode="JAX")
        float(train(0))
        float(validate(0))
    n = arrays[0][0].shape[0] // 500
    stack = jax.jit(lambda *xs: jnp.stack(xs))

    def grouped(read, k=100):
        def run():
            group = []
            for i in range(steps):
                group.append(train(i % n))
                if len(group) == k:
                    read(group)
                    group = []
            if group:
                read(group)
        return run

    def late():
        previous = None
        for i in range(steps):
            cost = train(i % n)
            if previous is not None:
                float(previous)
            previous = cost
        float(previous)

    patterns = {
        "no read": lambda: _pipelined_ms(train, n, steps),
        "each one late": late,
        "100 in turn": grouped(lambda g: [float(c) for c in g]),
        "100 stacked": grouped(lambda g: [float(c) for c in np.asarray(stack(*g))]),
        "100 device_get": grouped(lambda g: [float(c) for c in jax.device_get(g)]),
    }
    passes = {
        "valid pass, in turn": lambda: float(np.mean([validate(i) for i in range(20)])),
        "valid pass, stacked": lambda: float(np.mean(np.asarray(stack(*[validate(i) for i in range(20)])))),
    }
    n_passes = max(1, steps // 20)  # validation passes of 20 calls
    times = collections.defaultdict(list)
    for _ in range(rounds):
        for name, run in patterns.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
        for name, run in passes.items():
            t0 = time.perf_counter()
            for _ in range(n_passes):
                run()
            times[name].append((time.perf_counter() - t0) / (n_passes * 20) * 1e6)
    return dict(times)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist.pkl.gz")
    parser.add_argument("--runs", nargs="+",
                        default=["cold:a:", "warm:a:", "trust:a:trust", "bginit:a:bginit+trust",
                                 "warm2:a:"],
                        help="LABEL:DIR:VARIANT; runs naming the same DIR share a compile directory")
    parser.add_argument("--epochs", type=int, default=None,
                        help="n_epochs of each run (the tutorial's 200 when omitted)")
    parser.add_argument("--read-patterns", type=int, default=0, metavar="STEPS",
                        help="instead of the runs, time ways of reading the costs over STEPS steps")
    args = parser.parse_args(argv)
    out_dir = os.environ.get("OUT")
    if args.read_patterns:
        for name, us in read_patterns(args.dataset, args.read_patterns).items():
            print(f"{name:24s} " + " ".join(f"{u:7.0f}" for u in us) + " us")
        return 0
    results = []
    with tempfile.TemporaryDirectory() as root:
        for spec in args.runs:
            label, d, variant = spec.split(":")
            r = run(args.dataset, label, os.path.join(root, d), variant, out_dir, args.epochs)
            results.append(r)
            print(summary(r), flush=True)
    if out_dir:
        with open(os.path.join(out_dir, "gpu_phases.json"), "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
