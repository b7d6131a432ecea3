"""What the subprocess tests of the C kernels share (not a test module).

Those tests run fresh interpreters: the thread pool is started, and the Numba
backend's library loaded, once per process, with the environment read then.
"""

import json
import os
import subprocess
import sys
import textwrap

# LeNet5's two layers with 80 images through every Op on one backend: several chunks per
# convolution (32 images for the second layer, 72 for the first), and the first layer's
# filter gradient on the direct path, split over the threads. Saves inputs and results as
# ``<dtype>-<layer>-<key>.npy`` in argv[1]; argv[2] is the mode (CVM unless given).
LENET_OPS = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.conv import (
        conv2d_op, conv2d_grad_inputs_op, conv2d_grad_filters_op)
    from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad
    from deeplearning_tutorials.nnet import numba_c, threads_c
    folder = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "CVM"
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(7)
        x = pt.tensor4(dtype=dtype); w = pt.tensor4(dtype=dtype); g = pt.tensor4(dtype=dtype)
        m = pt.tensor4(dtype=dtype)
        f = pytensor.function([x, w, g], [conv2d_op(x, w), conv2d_grad_inputs_op(g, w),
                                          conv2d_grad_filters_op(x, g)], mode=mode)
        pool = MaxPool2d((2, 2), True)
        fp = pytensor.function([x, m], [pool(x), MaxPool2dGrad((2, 2), True)(x, pool(x), m)],
                               mode=mode)
        for name, (xs, ws) in {"layer0": ((80, 1, 28, 28), (20, 1, 5, 5)),
                               "layer1": ((80, 20, 12, 12), (50, 20, 5, 5))}.items():
            xv = rng.standard_normal(xs).astype(dtype)
            wv = rng.standard_normal(ws).astype(dtype)
            oh, ow = xs[2] - ws[2] + 1, xs[3] - ws[3] + 1
            gv = rng.standard_normal((xs[0], ws[0], oh, ow)).astype(dtype)
            z, gi, gw = f(xv, wv, gv)
            zv = rng.standard_normal(z.shape).astype(dtype)
            pz, pg = fp(zv, rng.standard_normal((xs[0], ws[0], oh // 2, ow // 2)).astype(dtype))
            outputs = {"z": z, "gi": gi, "gw": gw, "pool": pz, "poolgrad": pg}
            for key, val in {"x": xv, "w": wv, "g": gv, **outputs}.items():
                np.save(f"{folder}/{dtype}-{name}-{key}.npy", val)
    print(json.dumps({"capsule": type(threads_c._pool_v1).__name__,
                      "loaded": numba_c._state["loaded"], "error": numba_c.error()}))
    """
)


def run_python(code, tmp_path, *args, env=None, timeout=600):
    """Run ``code`` in a fresh interpreter and return the JSON of its last line.

    ``env``: variables to set on top of this process's environment (None removes one).
    """
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    script = tmp_path / "script.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
