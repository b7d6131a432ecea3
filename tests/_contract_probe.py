"""Run in a fresh process by test_contract.py: print what PyTensor, Numba, JAX and the
process look like, and what plain graphs compile to, as JSON.

``python _contract_probe.py plain`` never imports the package; ``... package``
imports every module of it and compiles and runs a graph of its Ops under NUMBA,
CVM and JAX first.
"""

import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import get_mode

OWN = "deeplearning_tutorials"
PYTENSOR_MODES = ("FAST_COMPILE", "FAST_RUN", "C", "CVM", "JAX", "NUMBA", "PYTORCH")
WATCHED_MODULES = (
    "pytensor.compile.mode",
    "pytensor.link.c.cmodule",
    "pytensor.link.c.basic",
    "pytensor.link.numba.linker",
    "pytensor.link.jax.linker",
    "pytensor.link.vm",
    "pytensor.tensor.math",
    "pytensor.tensor.special",
    "numba.core.codegen",
    "scipy.linalg",
)


def describe(value):
    """A process-independent description of an attribute's value."""
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismethod(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    if isinstance(value, float):
        return "float"  # timings, which differ between any two processes
    if isinstance(value, (str, int, bool, type(None))):
        return repr(value)
    return type(value).__qualname__


def module_state(name):
    module = importlib.import_module(name)
    state = {}
    for attr, value in vars(module).items():
        state[attr] = describe(value)
        if inspect.isclass(value) and value.__module__ == name:
            for member, inner in vars(value).items():
                if member != "__slotnames__":  # copyreg's cache, set by any pickling
                    state[f"{attr}.{member}"] = describe(inner)
    return state


def dispatch_state(dispatcher):
    """The implementations registered for Op types that are not the package's."""
    return {
        describe(cls): describe(fn)
        for cls, fn in dispatcher.registry.items()
        if not getattr(cls, "__module__", "").startswith(OWN)
    }


def mode_state():
    from pytensor.compile.mode import predefined_linkers, predefined_modes

    modes = {
        name: [type(m.linker).__name__, str(sorted(getattr(m.provided_optimizer, "include", [])))]
        for name, m in predefined_modes.items() if name in PYTENSOR_MODES
    }
    linkers = {name: type(linker).__name__ for name, linker in predefined_linkers.items()}
    return {"modes": modes, "linkers": linkers}


def config_state():
    return {name: str(getattr(pytensor.config, name, None))
            for name in ("mode", "linker", "floatX", "gcc__cxxflags", "blas__ldflags", "openmp",
                         "cxx", "optimizer", "device")}


def threads():
    return len(os.listdir("/proc/self/task"))


def children():
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found += f.read().split()
    return found


def plain_graphs(mode_name):
    """Compile and run graphs that use none of the package's Ops; their nodes and results."""
    rng = np.random.default_rng(0)
    mode = get_mode(mode_name)
    out = {}
    # A logistic regression trained with givens over shared data.
    data_x = pytensor.shared(rng.standard_normal((60, 7)), name="data_x")
    data_y = pytensor.shared(rng.integers(0, 3, 60).astype("int64"), name="data_y")
    W = pytensor.shared(np.zeros((7, 3)), name="W")
    b = pytensor.shared(np.zeros(3), name="b")
    x, y, index = pt.matrix("x"), pt.lvector("y"), pt.lscalar("index")
    p = pt.special.softmax(x @ W + b, axis=1)
    nll = -pt.mean(pt.log(p)[pt.arange(20), y])
    gW, gb = pt.grad(nll, [W, b])
    updates = [(W, W - 0.1 * gW), (b, b - 0.1 * gb)]
    if mode_name == "JAX":
        # PyTensor's JAX takes neither the symbolic slice nor shapes of shared data.
        train = pytensor.function([x, y], nll, updates=updates, mode=mode)
        batches = [(data_x.get_value()[i * 20:(i + 1) * 20], data_y.get_value()[i * 20:(i + 1) * 20])
                   for i in range(3)]
        costs = [float(train(*batch)) for batch in batches]
    else:
        givens = {x: data_x[index * 20:(index + 1) * 20], y: data_y[index * 20:(index + 1) * 20]}
        train = pytensor.function([index], nll, updates=updates, givens=givens, mode=mode)
        costs = [float(train(i)) for i in range(3)]
    out["logreg"] = (_nodes(train), _digest(costs, W.get_value(), b.get_value()))
    # Reductions and products.
    a, c = pt.matrix("a"), pt.matrix("c")
    v = pt.vector("v")
    exprs = [a.sum(), a.mean(axis=0), a.max(axis=1), a.prod(), (a * 2).sum(axis=1), a @ c,
             pt.outer(v, v), pt.tanh(a).sum(), pt.exp(v).cumsum()]
    f = pytensor.function([a, c, v], exprs, mode=mode)
    av, cv, vv = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(6)
    out["reductions"] = (_nodes(f), _digest(*f(av, cv, vv)))
    return out


def _nodes(f):
    return [str(node.op) for node in f.maker.fgraph.toposort()]


def _digest(*values):
    h = hashlib.sha256()
    for value in values:
        h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()


def use_the_package():
    """Import every module of the package; compile and run its Ops on three backends."""
    import deeplearning_tutorials
    import deeplearning_tutorials.modes  # noqa: F401 (they name their backends' code)
    import deeplearning_tutorials.nnet  # noqa: F401
    from deeplearning_tutorials import dispatch

    # The modules with the backends' code import PyTensor's Numba and JAX
    # backends (and so Numba, SciPy's BLAS and JAX, whose threads start as they
    # load); the package imports them only when a graph of its Ops is compiled
    # for those backends.
    backends = sorted({*dispatch.NUMBA.modules.values(), *dispatch.JAX.modules.values()})
    imported = []
    for info in pkgutil.walk_packages(deeplearning_tutorials.__path__, OWN + "."):
        if info.name not in backends:
            importlib.import_module(info.name)
            imported.append(info.name)
    after_import = {"threads": threads(), "children": children()}
    for name in backends:
        importlib.import_module(name)
        imported.append(name)
    from deeplearning_tutorials.nnet import conv2d, pool_2d

    x, w = pt.tensor4("x"), pt.tensor4("w")
    y = pool_2d(conv2d(x, w), ws=(2, 2))
    g = pt.grad(y.sum(), w)
    xv = np.random.default_rng(1).standard_normal((2, 2, 8, 8))
    wv = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    for name in ("NUMBA", "CVM", "JAX", "DLT_NUMBA", "DLT_CVM", "DLT_JAX"):
        pytensor.function([x, w], [y, g], mode=name)(xv, wv)
    return imported, after_import


def main(kind):
    report = {}
    if kind == "package":
        report["imported"], report["after_import"] = use_the_package()
    else:
        report["after_import"] = {"threads": threads(), "children": children()}
    report["graphs"] = {name: plain_graphs(name) for name in ("NUMBA", "CVM", "JAX")}
    import pytensor.link.jax.dispatch as jax_dispatch  # noqa: F401 (for its registry)
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.numba.dispatch import numba_funcify

    report["state"] = {
        "modules": {name: module_state(name) for name in WATCHED_MODULES},
        "numba_funcify": dispatch_state(numba_funcify),
        "jax_funcify": dispatch_state(jax_funcify),
        "modes": mode_state(),
        "config": config_state(),
        "environ": dict(os.environ),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
