"""Draw the LeNet5 figures of the docs from a saved training run.

The figures are never drawn by hand: this script reads what a run saved and
writes three PNG files into ``docs/figures/`` (or ``--out``):

``lenet_filters.png``
    the learned layer0 filters, one 5 x 5 image each;
``lenet_predictions.png``
    test images with the digit the saved network predicts for them
    (needs all eight parameters and the MNIST test set);
``lenet_curve.png``
    the validation error against the iteration.

Inputs
------
``--params FILE.npz``
    The parameters.  Two layouts are read:

    * named arrays ``layer0_W`` (shape ``(nkerns[0], 1, 5, 5)``), ``layer0_b``,
      ``layer1_W``, ``layer1_b``, ``layer2_W``, ``layer2_b``, ``layer3_W``,
      ``layer3_b``; only ``layer0_W`` is required (the filters);
    * the files :func:`deeplearning_tutorials.training.save_params` writes,
      ``param_000`` ... ``param_007``, in the order of ``evaluate_lenet5``'s
      ``params`` list: layer3 W, b, layer2 W, b, layer1 W, b, layer0 W, b.

``--curve FILE.json``
    Either a JSON list of ``[iteration, validation_error]`` pairs, or a JSON
    object (a lesson's results dictionary) holding such a list under
    ``"validation_curve"``.  Errors are fractions (0.0091 for 0.91 %), as the
    results dictionary holds them.

``--dataset``
    Where the test images for the predictions come from (default
    ``mnist.pkl.gz``, looked up as ``load_data`` does, never downloaded).

Usage::

    python docs/make_figures.py --params best.npz --curve curve.json

How the committed figures were made: see ``docs/figures/README.txt``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
NAMES = [
    "layer3_W",
    "layer3_b",
    "layer2_W",
    "layer2_b",
    "layer1_W",
    "layer1_b",
    "layer0_W",
    "layer0_b",
]


def read_params(path):
    """Return a dict ``{'layer0_W': array, ...}`` from either layout."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        files = list(data.files)
        if "layer0_W" in files:
            return {k: data[k] for k in files if k in NAMES}
        numbered = sorted(k for k in files if k.startswith("param_"))
        if len(numbered) != len(NAMES):
            raise SystemExit(
                f"{path}: expected layer0_W..layer3_b or {len(NAMES)} arrays "
                f"param_000..param_007, found {files}"
            )
        return {name: data[k] for name, k in zip(NAMES, numbered)}


def read_curve(path):
    """Return the validation curve as an ``(n, 2)`` float array."""
    with open(path) as f:
        record = json.load(f)
    if isinstance(record, dict):
        record = record["validation_curve"]
    curve = np.asarray(record, dtype=float).reshape(-1, 2)
    return curve


def draw_filters(W, out):
    """Draw each ``W[k, 0]`` (a 5 x 5 filter) as a grey image, scaled on its own."""
    n = W.shape[0]
    cols = min(n, 10)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05 + 0.2))
    for k, ax in enumerate(np.ravel(axes)):
        ax.set_axis_off()
        if k >= n:
            continue
        w = W[k, 0]
        bound = np.abs(w).max() or 1.0
        ax.imshow(w, cmap="gray", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(str(k), fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _conv_valid(x, W):
    """Theano's conv2d: true convolution, 'valid', summed over input maps."""
    from scipy.signal import convolve2d

    B, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    out = np.zeros((B, F, H - kh + 1, Wd - kw + 1))
    for b in range(B):
        for f in range(F):
            for c in range(C):
                out[b, f] += convolve2d(x[b, c], W[f, c], mode="valid")
    return out


def _pool(x):
    B, F, H, W = x.shape
    x = x[:, :, : H // 2 * 2, : W // 2 * 2]
    return x.reshape(B, F, H // 2, 2, W // 2, 2).max(axis=(3, 5))


def predict(p, images):
    """LeNet5's forward pass in plain NumPy, for a few images of shape (n, 784)."""
    x = images.reshape(-1, 1, 28, 28).astype(float)
    h0 = np.tanh(_pool(_conv_valid(x, p["layer0_W"])) + p["layer0_b"][None, :, None, None])
    h1 = np.tanh(_pool(_conv_valid(h0, p["layer1_W"])) + p["layer1_b"][None, :, None, None])
    h2 = np.tanh(h1.reshape(len(x), -1) @ p["layer2_W"] + p["layer2_b"])
    scores = h2 @ p["layer3_W"] + p["layer3_b"]
    return scores.argmax(axis=1)


def draw_predictions(p, images, labels, out):
    pred = predict(p, images)
    n = len(images)
    cols = 8
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.95, rows * 1.1))
    for k, ax in enumerate(np.ravel(axes)):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(images[k].reshape(28, 28), cmap="gray_r", interpolation="nearest")
        ok = pred[k] == labels[k]
        text = f"{pred[k]}" if ok else f"{pred[k]} ({labels[k]})"
        ax.set_title(text, fontsize=9, color="black" if ok else "red")
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return int((pred != labels).sum())


def draw_curve(curve, out):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(curve[:, 0], curve[:, 1] * 100.0, marker="o", markersize=3)
    ax.set_xlabel("iteration (minibatches)")
    ax.set_ylabel("validation error (%)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="The file formats are described in this script's docstring.",
    )
    parser.add_argument("--params", required=True, help="parameters (.npz)")
    parser.add_argument("--curve", help="validation curve (.json)")
    parser.add_argument("--dataset", default="mnist.pkl.gz", help="MNIST, for the predictions")
    parser.add_argument("--n-samples", type=int, default=24, help="test images to show")
    parser.add_argument("--out", default=str(HERE / "figures"), help="output folder")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = read_params(args.params)
    draw_filters(p["layer0_W"], out / "lenet_filters.png")
    print(f"wrote {out / 'lenet_filters.png'}")

    if args.curve:
        draw_curve(read_curve(args.curve), out / "lenet_curve.png")
        print(f"wrote {out / 'lenet_curve.png'}")

    if all(name in p for name in NAMES):
        try:
            from deeplearning_tutorials import datasets

            _, _, (test_x, test_y) = datasets.load_arrays(
                datasets.locate(args.dataset, download=False)
            )
        except Exception as exc:  # no data here: the other figures still stand
            print(f"no predictions figure: {exc}", file=sys.stderr)
        else:
            n = args.n_samples
            wrong = draw_predictions(p, test_x[:n], test_y[:n], out / "lenet_predictions.png")
            print(f"wrote {out / 'lenet_predictions.png'} ({wrong} of {n} wrong)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
