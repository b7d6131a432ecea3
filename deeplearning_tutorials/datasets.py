"""Find, fetch, check and load MNIST, as the tutorials' ``load_data`` needs it.

The original ``load_data`` looked for ``mnist.pkl.gz`` in the working directory, then in the
project's ``data/`` folder, and downloaded it from the LISA lab when it was missing. That URL
has been dead since about 2020, and the file is a Python 2 pickle, which Python's ``pickle``
would happily let run arbitrary code. This module keeps the lookup, adds a per-user cache and
several mirrors, accepts the four original IDX files as an equivalent source, and reads both
formats without executing anything from the file.

Public API
----------
:class:`DatasetError`
    Raised, with a one-line message naming the file and the fault, for every data problem.
:func:`locate`
    Resolve a dataset name or path to a file or IDX folder, downloading it when needed.
:func:`load_arrays`
    Read a ``mnist.pkl.gz`` or an IDX folder into ``((train_x, train_y), (valid_x, valid_y),
    (test_x, test_y))`` numpy arrays.
:func:`fetch`
    Download one format into a data folder ahead of time (``python -m
    deeplearning_tutorials.datasets``, or the ``dlt-fetch-mnist`` console script).

Everything here is numpy only: the lessons turn the arrays into shared variables themselves.
"""

import argparse
import contextlib
import gzip
import hashlib
import math
import os
import pickle
import re
import stat
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetError",
    "IDX_FILES",
    "cache_dir",
    "fetch",
    "load_arrays",
    "locate",
    "main",
    "read_idx",
]

#: The project's own data folder, searched after the working directory (as the original did).
PROJECT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"

#: Environment variable that replaces the per-user cache folder.
DATA_ENV = "DEEPLEARNING_TUTORIALS_DATA"
#: Environment variable holding comma-separated mirror base URLs that replace the built-in ones.
MIRRORS_ENV = "DEEPLEARNING_TUTORIALS_MIRRORS"

PKL_NAME = "mnist.pkl.gz"
IDX_DIR_NAME = "mnist"
FETCH_COMMAND = "python -m deeplearning_tutorials.datasets"

#: The four IDX files, in the order the splits use them: key -> (file name, kind).
IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "images"),
    "train_labels": ("train-labels-idx1-ubyte", "labels"),
    "test_images": ("t10k-images-idx3-ubyte", "images"),
    "test_labels": ("t10k-labels-idx1-ubyte", "labels"),
}

# MD5 of each IDX file's uncompressed bytes (the canonical sums of the MNIST database). These
# decide whether a download is genuine, since a mirror may recompress the same bytes.
IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# MD5 of the .gz files as LeCun published them (and torchvision checks them). A match is
# accepted without decompressing; a mismatch falls back to the uncompressed sums above.
IDX_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}

# MD5s of known mnist.pkl.gz copies: deeplearning.net's (also on figshare) and Michael
# Nielsen's re-gzipped one. Any other copy is accepted only if the arrays inside rebuild the
# canonical IDX files exactly.
PKL_GZ_MD5 = {
    "a02cd19f81d51c426d7ca14024243ce9",
    "98100ca27dc0e07ddd9f822cf9d244db",
}

PKL_URLS = (
    "https://figshare.com/ndownloader/files/25635053",
    "https://github.com/mnielsen/neural-networks-and-deep-learning/raw/master/data/mnist.pkl.gz",
)
IDX_BASE_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
N_ROWS = N_COLS = 28
N_TRAIN = 50000
N_TRAINING_FILE = 60000
N_CLASSES = 10
#: The most images or labels an IDX file may declare: MNIST's 60000 training plus 10000 test.
MAX_IDX_ITEMS = 70000

# The most bytes a decompressed pickle may hold. The arrays of mnist.pkl.gz take 220 MB; a text
# protocol's escapes take up to four times that.
_MAX_PKL_BYTES = 1 << 30

_GZIP_MAGIC = b"\x1f\x8b"
_DAMAGED = "file is damaged; delete it and fetch again"


class DatasetError(ValueError):
    """A dataset file is missing, damaged, unsafe or of the wrong structure.

    The message is one line that names the file and the fault.
    """


# ----------------------------------------------------------------------------------------
# Where things are looked for
# ----------------------------------------------------------------------------------------


def cache_dir():
    """Return the per-user folder that downloads go to.

    Returns
    -------
    pathlib.Path
        ``$DEEPLEARNING_TUTORIALS_DATA`` when set, otherwise pooch's per-user cache folder
        for this project (``~/.cache/deeplearning_tutorials`` on Linux). It is not created.
    """
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override).expanduser()
    import pooch

    return Path(pooch.os_cache("deeplearning_tutorials"))


def _search_dirs():
    # The working directory first and then data/, as the original did; the cache last.
    return [Path.cwd(), PROJECT_DATA_DIR, cache_dir()]


def _idx_member(folder, base):
    """Return the path of IDX file ``base`` in ``folder`` (raw preferred, then .gz), or None.

    Anything of that name counts, so that reading it says what is wrong with it (a folder, a
    FIFO, an unreadable file) rather than that it is missing.
    """
    for name in (base, base + ".gz"):
        path = Path(folder) / name
        if path.exists():
            return path
    return None


def _idx_complete(folder):
    folder = Path(folder)
    return folder.is_dir() and all(_idx_member(folder, b) is not None for b, _ in IDX_FILES.values())


def _present(path):
    # A bare-name IDX folder counts only when all four files are there, so that a partial
    # folder in the working directory does not hide a complete one further down the list.
    return _idx_complete(path) if path.is_dir() else path.exists()


def locate(dataset=PKL_NAME, download=True, mirrors=None):
    """Resolve a dataset name or path, downloading the known ones when missing.

    The lookup extends the original ``load_data``'s:

    1. ``dataset`` as given, when it names an existing file or IDX folder;
    2. for a bare name: the working directory, then the project's ``data/`` folder, then the
       per-user cache (:func:`cache_dir`);
    3. for ``'mnist.pkl.gz'`` only: a complete IDX folder ``mnist/`` in ``data/`` or the cache,
       which :func:`load_arrays` turns into the same arrays;
    4. for the known names (``'mnist.pkl.gz'``, and ``'mnist'`` meaning the IDX folder), a
       download into the cache; ``'mnist.pkl.gz'`` falls back to the IDX files when no
       mirror of the pickle answers.

    Parameters
    ----------
    dataset : str or os.PathLike
        A file name, a path to ``mnist.pkl.gz`` or to a folder holding the four IDX files.
    download : bool
        Whether step 4 may run.
    mirrors : sequence of str, optional
        Base URLs to download from instead of the built-in ones (or ``$DEEPLEARNING_TUTORIALS_MIRRORS``).

    Returns
    -------
    pathlib.Path
        The file or folder to give :func:`load_arrays`.

    Raises
    ------
    DatasetError
        When nothing is found and nothing can be downloaded; the message says which files to
        put where. Also when a path cannot be examined (a name too long, a folder without
        permission).
    """
    try:
        return _locate(dataset, download, mirrors)
    except OSError as exc:
        raise DatasetError(_cannot_read(exc.filename or dataset, exc)) from None


def _locate(dataset, download, mirrors):
    path = Path(os.fspath(dataset)).expanduser()
    if path.exists():
        return path.absolute()  # stays valid if the caller changes directory later
    if path.name != str(dataset) or path.name in ("", ".", ".."):
        raise DatasetError(f"{dataset}: no such file or folder")
    name = path.name
    for folder in _search_dirs():
        candidate = folder / name
        if _present(candidate):
            return candidate
    if name == PKL_NAME:
        for folder in (PROJECT_DATA_DIR, cache_dir()):
            if _idx_complete(folder / IDX_DIR_NAME):
                return folder / IDX_DIR_NAME
    if name not in (PKL_NAME, IDX_DIR_NAME):
        where = ", ".join(str(d) for d in _search_dirs())
        raise DatasetError(f"{name}: not found in {where}")
    if not download:
        raise DatasetError(f"{name}: not found and download=False; {_where_to_put(name)}")

    dest = cache_dir()
    try:
        if name == IDX_DIR_NAME:
            return _fetch_idx(dest, mirrors)
        try:
            return _fetch_pkl(dest, mirrors)
        except DatasetError as pkl_error:
            # The IDX files give the same arrays, so they stand in for a pickle no mirror has.
            try:
                return _fetch_idx(dest, mirrors)
            except DatasetError as idx_error:
                raise DatasetError(f"{pkl_error}; {idx_error}") from None
    except DatasetError as exc:
        raise DatasetError(f"{name}: not found, and the download failed: {exc}; {_where_to_put(name)}") from None


def _cannot_read(path, exc):
    reason = exc.strerror or _one_line(exc)
    return f"{path}: cannot read it ({reason}); check the path and its permissions, or fetch the file again"


def _where_to_put(name):
    data, cache = PROJECT_DATA_DIR, cache_dir()
    idx = ", ".join(base + ".gz" for base, _ in IDX_FILES.values())
    if name == IDX_DIR_NAME:
        files = f"put {idx} in {data / IDX_DIR_NAME} or {cache / IDX_DIR_NAME}"
    else:
        files = (
            f"put {PKL_NAME} in {data} or {cache} (or {idx} in "
            f"{data / IDX_DIR_NAME} or {cache / IDX_DIR_NAME})"
        )
    return f"{files}, or run `{FETCH_COMMAND}` where the network is reachable"


# ----------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------


def _mirror_bases(mirrors):
    if mirrors is None:
        env = os.environ.get(MIRRORS_ENV, "")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] or None
    if mirrors is None:
        return None
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _urls(file_name, mirrors, defaults):
    bases = _mirror_bases(mirrors)
    if bases is None:
        return list(defaults)
    return [base + file_name for base in bases]


def _md5_file(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(urls, final, verify, progressbar=None):
    """Download the first URL whose bytes pass ``verify`` and move them to ``final``.

    Each try goes to a fresh temporary file beside ``final`` so that the final path only ever
    holds a verified file; a failed or rejected download is deleted before the next mirror.

    Parameters
    ----------
    urls : list of str
        Mirrors, tried in order.
    final : pathlib.Path
        Where the verified file goes.
    verify : callable
        ``verify(tmp_path) -> pathlib.Path``: raises DatasetError when the bytes are wrong,
        returns the final path to use (the name may change, e.g. a mirror sent it unzipped).
    progressbar : bool, optional
        Defaults to whether stderr is a terminal.

    Returns
    -------
    pathlib.Path
    """
    import pooch

    if progressbar is None:
        progressbar = sys.stderr.isatty()
    failures = []
    for url in urls:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=".part", dir=final.parent)
        except OSError as exc:
            raise DatasetError(
                f"{final.name}: cannot write to {final.parent} ({_one_line(exc)}); "
                f"set ${DATA_ENV} to a writable folder"
            ) from None
        os.close(fd)
        tmp = Path(tmp)
        if progressbar:
            print(f"Downloading {final.name} from {url}", file=sys.stderr)
        try:
            downloader = pooch.HTTPDownloader(progressbar=progressbar, chunk_size=1 << 16)
            downloader(url, str(tmp), None)
            target = verify(tmp)
            os.replace(tmp, target)
            return target
        except Exception as exc:  # any network or content fault: next mirror
            failures.append(f"{url}: {_reason(exc)}")
            if progressbar:
                print(f"{url}: {_reason(exc)}", file=sys.stderr)
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"{final.name}: could not download it ({'; '.join(failures) or 'no mirrors'})"
    )


def _reason(exc):
    """Say in a few words why a download failed (requests' own messages run to lines)."""
    import requests

    text = _one_line(exc, limit=10_000)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        match = re.search(r"IncompleteRead\([^)]*\)", text)
        return "connection closed before the end" + (f" ({match.group(0)})" if match else "")
    if isinstance(exc, requests.ConnectionError):
        match = re.search(r"\[Errno -?\d+\][^'\")]*", text)
        return match.group(0).strip() if match else "connection failed"
    return _one_line(exc)


def _one_line(exc, limit=200):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _verify_idx(base):
    def verify(tmp):
        with _open_data(tmp, base) as f:
            is_gzip = isinstance(f, gzip.GzipFile)
        if is_gzip and _md5_file(tmp) == IDX_GZ_MD5[base]:
            return tmp.parent / (base + ".gz")
        digest = _md5_content(tmp, base + ".gz" if is_gzip else base)
        if digest != IDX_MD5[base]:
            raise DatasetError(
                f"{base}: checksum mismatch (MD5 of the content {digest}, expected {IDX_MD5[base]})"
            )
        # A server may have sent it unzipped (Content-Encoding: gzip); keep it under the raw name.
        return tmp.parent / (base + ".gz" if is_gzip else base)

    return verify


def _md5_content(path, label):
    """MD5 of a file's bytes, decompressed when it is gzip, reading at most one IDX file's worth."""
    limit = 16 + MAX_IDX_ITEMS * N_ROWS * N_COLS
    digest = hashlib.md5()
    with _open_data(path, label) as f:
        while chunk := f.read(1 << 20):
            limit -= len(chunk)
            if limit < 0:
                raise DatasetError(f"{label}: larger than any MNIST file ({_DAMAGED})")
            digest.update(chunk)
    return digest.hexdigest()


def _verify_pkl(tmp):
    if _md5_file(tmp) in PKL_GZ_MD5:
        return tmp.parent / PKL_NAME
    arrays = _load_pkl(tmp, label=PKL_NAME)
    _check_canonical(arrays, PKL_NAME)
    return tmp.parent / PKL_NAME


def _check_canonical(arrays, label):
    """Check that the arrays rebuild the canonical IDX files byte for byte."""
    (trx, try_), (vax, vay), (tex, tey) = arrays
    parts = {
        "train-images-idx3-ubyte": np.concatenate([trx, vax]),
        "train-labels-idx1-ubyte": np.concatenate([try_, vay]),
        "t10k-images-idx3-ubyte": tex,
        "t10k-labels-idx1-ubyte": tey,
    }
    for base, arr in parts.items():
        if arr.ndim == 2:
            u8 = np.rint(arr * np.float32(256)).clip(0, 255).astype(np.uint8)
            if not np.array_equal(u8.astype(np.float32) * np.float32(1 / 256), arr):
                raise DatasetError(f"{label}: checksum mismatch (pixels are not multiples of 1/256)")
            header = struct.pack(">iiii", IMAGE_MAGIC, len(arr), N_ROWS, N_COLS)
        else:
            u8 = arr.astype(np.uint8)
            header = struct.pack(">ii", LABEL_MAGIC, len(arr))
        digest = hashlib.md5(header + u8.tobytes()).hexdigest()
        if digest != IDX_MD5[base]:
            raise DatasetError(
                f"{label}: checksum mismatch (the arrays do not rebuild {base}: MD5 {digest})"
            )


def _fetch_pkl(dest, mirrors=None, progressbar=None):
    return _download(_urls(PKL_NAME, mirrors, PKL_URLS), Path(dest) / PKL_NAME, _verify_pkl, progressbar)


def _fetch_idx(dest, mirrors=None, progressbar=None):
    folder = Path(dest) / IDX_DIR_NAME
    for base, _ in IDX_FILES.values():
        if _idx_member(folder, base) is not None:
            continue  # each file is moved in only after verification, so a present one is whole
        name = base + ".gz"
        defaults = [b + name for b in IDX_BASE_URLS]
        _download(_urls(name, mirrors, defaults), folder / name, _verify_idx(base), progressbar)
    return folder


def fetch(format="pkl", dest=None, mirrors=None, progressbar=None):
    """Download MNIST ahead of time into a data folder.

    Parameters
    ----------
    format : {'pkl', 'idx'}
        ``'pkl'``: ``<dest>/mnist.pkl.gz``; ``'idx'``: the four ``.gz`` files in ``<dest>/mnist/``.
    dest : str or os.PathLike, optional
        The data folder; defaults to :func:`cache_dir`. Give the project's ``data/`` folder or
        the working directory to have :func:`locate` find the files there.
    mirrors : sequence of str, optional
        Base URLs replacing the built-in mirrors.
    progressbar : bool, optional
        Defaults to whether stderr is a terminal.

    Returns
    -------
    list of pathlib.Path
        The files now in place. A file already there is checked, and fetched again if bad.

    Raises
    ------
    DatasetError
        When no mirror serves a genuine copy.
    """
    dest = Path(dest).expanduser() if dest is not None else cache_dir()
    if format == "pkl":
        path = dest / PKL_NAME
        if path.is_file():
            try:
                _verify_pkl(path)
                return [path]
            except DatasetError:
                pass  # replaced below; os.replace swaps it only once a good copy is in
        return [_fetch_pkl(dest, mirrors, progressbar)]
    if format == "idx":
        folder = dest / IDX_DIR_NAME
        for base, _ in IDX_FILES.values():
            present = _idx_member(folder, base)
            if present is not None:
                try:
                    _verify_idx(base)(present)
                except DatasetError:
                    present.unlink()
        _fetch_idx(dest, mirrors, progressbar)
        return [_idx_member(folder, base) for base, _ in IDX_FILES.values()]
    raise DatasetError(f"{format}: unknown format (use 'pkl' or 'idx')")


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_data(path, label=None):
    """Open a dataset file for reading, through gzip when it starts with gzip's magic bytes.

    Yields a binary stream. A missing, irregular (folder, FIFO) or unreadable file, and a
    damaged gzip stream met while the caller reads, raise DatasetError.
    """
    path = Path(path)
    label = label or path.name
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise DatasetError(f"{path}: is {kind}, not a regular file; give the path of the data file itself")
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not is_gzip and label.endswith(".gz"):
                raise DatasetError(f"{label}: not a gzip file ({_DAMAGED})")
            if not is_gzip:
                yield raw
                return
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream
    except FileNotFoundError:
        raise DatasetError(f"{label}: no such file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{label}: {_gzip_fault(exc)}") from None
    except OSError as exc:
        raise DatasetError(_cannot_read(path, exc)) from None


def _gzip_fault(exc):
    if isinstance(exc, EOFError):
        return f"truncated gzip stream ({_DAMAGED})"
    return f"corrupt gzip stream: {_one_line(exc)} ({_DAMAGED})"


def read_idx(path, kind):
    """Read one IDX file (raw or gzip) of unsigned bytes, checking its header.

    The header is read and checked first, and then exactly the number of bytes it declares,
    so a file that inflates to more than MNIST's size is refused without inflating it.

    Parameters
    ----------
    path : str or os.PathLike
    kind : {'images', 'labels'}
        Images must be ``N x 28 x 28`` (magic 2051); labels ``N`` values in 0..9 (magic 2049);
        ``N`` at most :data:`MAX_IDX_ITEMS`.

    Returns
    -------
    numpy.ndarray
        uint8, shape ``(N, 28, 28)`` or ``(N,)``.

    Raises
    ------
    DatasetError
        On a missing, unreadable or damaged file, a wrong magic number, dimensions, byte count
        or label.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', not {kind!r}")
    path = Path(path)
    label = path.name
    magic, ndim = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    header = 4 + 4 * ndim
    with _open_data(path) as f:
        head = f.read(header)
        if len(head) < 4:
            raise DatasetError(f"{label}: truncated IDX header ({len(head)} bytes; {_DAMAGED})")
        (found,) = struct.unpack(">i", head[:4])
        if found != magic:
            raise DatasetError(
                f"{label}: wrong IDX magic number {found} (expected {magic} for {kind}); "
                "check that the file is the right one"
            )
        if len(head) < header:
            raise DatasetError(f"{label}: truncated IDX header ({len(head)} of {header} bytes; {_DAMAGED})")
        dims = struct.unpack(f">{ndim}I", head[4:])
        if kind == "images" and dims[1:] != (N_ROWS, N_COLS):
            raise DatasetError(
                f"{label}: images are {dims[1]}x{dims[2]}, expected {N_ROWS}x{N_COLS}; "
                "check that the file is MNIST's"
            )
        if dims[0] > MAX_IDX_ITEMS:
            raise DatasetError(
                f"{label}: header declares {dims[0]} {kind}, more than MNIST's {MAX_IDX_ITEMS} ({_DAMAGED})"
            )
        expected = math.prod(dims)
        body = f.read(expected)
        if len(body) < expected:
            raise DatasetError(
                f"{label}: IDX body truncated: header {dims} says {expected} bytes, "
                f"file holds {len(body)} ({_DAMAGED})"
            )
        if f.read(1):
            raise DatasetError(
                f"{label}: IDX body too long: header {dims} says {expected} bytes, "
                f"the file holds more ({_DAMAGED})"
            )
    arr = np.frombuffer(body, dtype=np.uint8).reshape(dims)
    if kind == "labels" and arr.size and arr.max() >= N_CLASSES:
        raise DatasetError(f"{label}: label {int(arr.max())} outside 0..{N_CLASSES - 1} ({_DAMAGED})")
    return arr


def _load_idx_folder(folder):
    folder = Path(folder)
    arrays = {}
    for key, (base, kind) in IDX_FILES.items():
        path = _idx_member(folder, base)
        if path is None:
            raise DatasetError(f"{folder / (base + '.gz')}: no such file (nor {base})")
        arrays[key] = read_idx(path, kind)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[split + "_images"]), len(arrays[split + "_labels"])
        if n_img != n_lab:
            raise DatasetError(
                f"{folder}: {IDX_FILES[split + '_images'][0]} holds {n_img} images but "
                f"{IDX_FILES[split + '_labels'][0]} holds {n_lab} labels"
            )
    if len(arrays["train_images"]) != N_TRAINING_FILE:
        raise DatasetError(
            f"{IDX_FILES['train_images'][0]}: {len(arrays['train_images'])} images, expected "
            f"{N_TRAINING_FILE} (the first {N_TRAIN} train, the rest validate)"
        )

    def as_xy(images, labels):
        # uint8 / 256 is exact in float32, so this equals the pickle's arrays bit for bit.
        x = images.reshape(len(images), N_ROWS * N_COLS).astype(np.float32)
        x *= np.float32(1 / 256)
        return x, labels.astype(np.int64)

    train_x, train_y = as_xy(arrays["train_images"], arrays["train_labels"])
    test = as_xy(arrays["test_images"], arrays["test_labels"])
    return (
        (train_x[:N_TRAIN], train_y[:N_TRAIN]),
        (train_x[N_TRAIN:], train_y[N_TRAIN:]),
        test,
    )


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something no pickle of plain numpy arrays does; the message says what."""


_REFUSED_ADVICE = "delete the file and fetch it again"


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle only plain numeric numpy arrays inside tuples and lists; refuse every other global.

    The globals allowed are exactly those numpy's own pickles of such arrays name, under
    numpy 1's and numpy 2's module names: ``_reconstruct`` with ``ndarray`` and ``dtype``
    (protocols 0 to 4, and the Python 2 ``mnist.pkl.gz``), ``_codecs.encode`` (Python 3's
    bytes at protocols 0 to 2) and ``_frombuffer`` (protocol 5). Each stands in for the real
    one and checks its arguments: a dtype takes nothing but a byte order from its state, and an
    array is made only from data bytes the pickle holds in full, of exactly its size, checked
    before anything is allocated.
    """

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            name = f"{module}.{name}"
            name = name if name.isprintable() and len(name) <= 80 else _short(name)
            raise _Refused(f"refused to unpickle {name} (not a numpy array)")
        return allowed

    def persistent_load(self, pid):
        raise _Refused("refused a persistent id in the pickle")


def _short(obj, limit=80):
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value):
    return type(value) is int or type(value) is bool


def _checked_shape(shape):
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"refused the array shape {_short(shape)} (not a tuple of sizes)")
    return shape


def _check_size(shape, dtype, held):
    needed = math.prod(shape) * dtype.itemsize
    if held != needed:
        raise _Refused(
            f"an array of shape {shape} and type {dtype} needs {needed} bytes, but the pickle "
            f"holds {held} for it"
        )


class _Dtype:
    """What the pickle's ``numpy.dtype(...)`` gives: a plain numeric dtype, until an array takes it."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        # numpy's state is (3, byte order, None, None, None, -1, -1, 0) for a plain dtype; the
        # other fields (flags above all) would make numpy take the data for something else.
        plain = type(state) is tuple and all(type(v) in (int, str, type(None)) for v in state)
        allowed = [self.dtype.newbyteorder(order).__reduce__()[2] for order in "<>"]
        if not plain or state not in allowed:
            raise _Refused(
                f"refused the dtype state {_short(state)} (a plain numeric dtype takes only a byte order)"
            )
        self.dtype = self.dtype.newbyteorder(state[1])


class _Array:
    """What the pickle's ``_reconstruct(ndarray, (0,), b'b')`` gives, until BUILD brings the data."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None:
            raise _Refused("refused a second state for one array")
        numpys = (
            type(state) is tuple
            and len(state) == 5
            and _is_int(state[0])
            and state[0] == 1
            and isinstance(state[2], _Dtype)
            and _is_int(state[3])
            and state[3] in (0, 1)
        )
        if not numpys:
            expected = "numpy's (1, shape, dtype, fortran, data)"
            raise _Refused(f"refused the array state {_short(state)} (not {expected})")
        _, shape, dtype, fortran, data = state
        if type(data) not in (bytes, str):
            raise _Refused(f"refused array data of type {type(data).__name__} (plain arrays hold bytes)")
        _check_size(_checked_shape(shape), dtype.dtype, len(data))
        if type(data) is str:  # a Python 2 str, which encoding='latin1' turned into text
            try:
                data = data.encode("latin1")
            except UnicodeEncodeError:
                raise _Refused("refused array data given as text beyond latin-1") from None
        array = _reconstruct(np.ndarray, (0,), b"b")
        array.__setstate__((1, shape, dtype.dtype, bool(fortran), data))
        self.array = array


class _NdarrayName:
    """What the pickle's ``numpy.ndarray`` gives: good only as ``_reconstruct``'s first argument."""

    __slots__ = ()

    def __repr__(self):
        return "numpy.ndarray"

    def __call__(self, *args, **kwargs):
        raise _Refused("refused to call numpy.ndarray (it would allocate memory the pickle does not hold)")


_NDARRAY = _NdarrayName()
_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]


def _safe_reconstruct(subtype, shape, typecode):
    # numpy always pickles _reconstruct(ndarray, (0,), b'b') and then sets the state, which
    # holds the data; _Array checks that state.
    if (
        subtype is not _NDARRAY
        or type(shape) is not tuple
        or shape != (0,)
        or type(typecode) not in (bytes, str)
        or typecode not in (b"b", "b")
    ):
        call = _short((subtype, shape, typecode))
        raise _Refused(f"refused _reconstruct{call} (numpy's pickles use (ndarray, (0,), b'b'))")
    return _Array()


def _safe_frombuffer(buf, dtype, shape, order, axis_order=None):
    # Protocol 5: the data comes in the pickle as bytes or a bytearray (no out-of-band buffers
    # are given to the unpickler), and the array is a view of it.
    if type(buf) not in (bytes, bytearray) or not isinstance(dtype, _Dtype) or order not in ("C", "F", "K"):
        raise _Refused(f"refused _frombuffer with {type(buf).__name__}, {_short(dtype)}, {_short(order)}")
    _check_size(_checked_shape(shape), dtype.dtype, len(buf))
    array = np.frombuffer(buf, dtype=dtype.dtype)
    if order != "K":
        return array.reshape(shape, order=order)
    if type(axis_order) is not tuple or sorted(axis_order) != list(range(len(shape))):
        raise _Refused(f"refused the axis order {_short(axis_order)} for shape {shape}")
    return array.reshape(shape).transpose(axis_order)


def _safe_dtype(obj, align=False, copy=False):
    if type(obj) is not str or not _is_int(align) or not _is_int(copy):
        raise _Refused(f"refused numpy.dtype{_short((obj, align, copy))} (not a plain numeric type)")
    try:
        dtype = np.dtype(obj)
    except TypeError:
        raise _Refused(f"refused numpy.dtype({_short(obj)}) (not a numpy type)") from None
    if dtype.kind not in "iuf":
        raise _Refused(f"refused dtype {_short(obj)} (not a plain numeric type)")
    return _Dtype(dtype)


def _safe_encode(text, encoding):
    # Python 3 pickles bytes at protocols 0 to 2 as _codecs.encode(text, 'latin1'): one byte a
    # character, so the result is never larger than the text the pickle holds.
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        args = f"{type(text).__name__}, {_short(encoding)}"
        raise _Refused(f"refused _codecs.encode with {args} (only latin-1 text)")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise _Refused("refused _codecs.encode of text beyond latin-1") from None


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_encode,
}

# What a malformed pickle makes the unpickler or the allowed globals raise, besides EOFError.
_UNPICKLING_FAULTS = (
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    MemoryError,
    RecursionError,
)


class _Bounded:
    """A read-only stream that refuses, before reading, to give more than ``limit`` bytes in all.

    The unpickler asks for each string or frame by the length the pickle declares, so a pickle
    cannot make it read (and decompress) more than an MNIST pickle holds.
    """

    def __init__(self, stream, limit):
        self.stream = stream
        self.limit = self.left = limit

    def _take(self, n):
        if n > self.left:
            raise _Refused(f"the pickle holds more than {self.limit} bytes, more than any MNIST pickle")
        self.left -= n

    def read(self, n):
        self._take(n)
        data = self.stream.read(n)
        self.left += n - len(data)
        return data

    def readinto(self, buffer):
        n = memoryview(buffer).nbytes
        self._take(n)
        got = self.stream.readinto(buffer)
        self.left += n - got
        return got

    def readline(self):
        line = self.stream.readline(self.left + 1)
        self._take(len(line))
        return line

    def drain(self):
        """Read what is left within the limit, so that gzip reaches its trailer and checks it."""
        while self.left > 0:
            chunk = self.stream.read(min(self.left, 1 << 20))
            if not chunk:
                break
            self.left -= len(chunk)


def _load_pkl(path, label=None):
    path = Path(path)
    label = label or path.name
    with _open_data(path, label) as stream:
        is_gzip = isinstance(stream, gzip.GzipFile)
        bounded = _Bounded(stream, _MAX_PKL_BYTES)
        try:
            obj = _SafeUnpickler(bounded, encoding="latin1").load()
        except _Refused as exc:
            raise DatasetError(f"{label}: {exc}; {_REFUSED_ADVICE}") from None
        except EOFError as exc:
            if "end-of-stream" in str(exc) or "Compressed file ended" in str(exc):
                raise  # gzip's: _open_data reports a truncated file
            raise DatasetError(f"{label}: pickle ends early ({_DAMAGED})") from None
        except _UNPICKLING_FAULTS as exc:
            # Damaged deflate data often decompresses to garbage before the CRC is reached;
            # reading on to the trailer tells a damaged file from a foreign pickle.
            if is_gzip:
                bounded.drain()
            raise DatasetError(
                f"{label}: not a valid pickle of numpy arrays: {_one_line(exc)}; {_REFUSED_ADVICE}"
            ) from None
        # Read to the end so that gzip checks its CRC and length trailer.
        if stream.read(1 << 16):
            raise DatasetError(f"{label}: unexpected bytes after the pickle ({_DAMAGED})")
    return _check_structure(obj, label)


def _check_structure(obj, label):
    names = ("train", "valid", "test")
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DatasetError(f"{label}: expected 3 (x, y) pairs (train, valid, test), found {_describe(obj)}")
    out = []
    for name, pair in zip(names, obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DatasetError(f"{label}: {name} set is not an (x, y) pair but {_describe(pair)}")
        x, y = (v.array if isinstance(v, _Array) and v.array is not None else v for v in pair)
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DatasetError(f"{label}: {name} set holds {_describe(x)}, {_describe(y)}, not arrays")
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != N_ROWS * N_COLS:
            raise DatasetError(
                f"{label}: {name}_x is {x.dtype} {x.shape}, expected float32 (N, {N_ROWS * N_COLS})"
            )
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise DatasetError(f"{label}: {name}_y is {y.dtype} {y.shape}, expected int64 (N,)")
        if len(x) != len(y):
            raise DatasetError(f"{label}: {name} set has {len(x)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise DatasetError(f"{label}: {name}_y holds label {bad} outside 0..{N_CLASSES - 1}")
        if x.size and not (x.min() >= 0 and x.max() <= 1):
            raise DatasetError(f"{label}: {name}_x holds pixels outside [0, 1]")
        out.append((x, y.astype(np.int64, copy=False)))
    return tuple(out)


def _describe(obj):
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array {obj.shape}"
    if isinstance(obj, _Array):
        return "an array without data"
    if isinstance(obj, _Dtype):
        return "a dtype"
    return f"a {type(obj).__name__}"


def load_arrays(dataset):
    """Load MNIST as the tutorials' three ``(x, y)`` splits.

    Parameters
    ----------
    dataset : str or os.PathLike
        ``mnist.pkl.gz`` (a gzip of a Python 2 pickle), or a folder holding the four IDX files
        (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte``, each raw or ``.gz``). Use :func:`locate` to resolve a name.

    Returns
    -------
    tuple
        ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``: x float32
        ``(N, 784)`` with values ``uint8 / 256``, y int64. From IDX files, train is training
        images 0..49999, valid 50000..59999 and test the t10k set, which is exactly the pickle.

    Raises
    ------
    DatasetError
        On a missing, unreadable, damaged or ill-formed file, or a pickle that asks for
        anything but plain numpy arrays (nothing in the file is executed, and no array is
        allocated larger than the data the pickle holds for it).
    """
    path = Path(os.fspath(dataset))
    try:
        if path.is_dir():
            return _load_idx_folder(path)
        if not path.exists():
            raise DatasetError(f"{dataset}: no such file or folder")
    except OSError as exc:  # examining the path or a file in the folder (a name too long, say)
        raise DatasetError(_cannot_read(exc.filename or dataset, exc)) from None
    return _load_pkl(path)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def main(argv=None):
    """Fetch MNIST ahead of time: ``python -m deeplearning_tutorials.datasets``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success; 1 after printing a one-line error on stderr.
    """
    parser = argparse.ArgumentParser(
        prog=FETCH_COMMAND,
        description="Download MNIST (checked against known checksums) for the tutorials.",
    )
    parser.add_argument(
        "--dest",
        help=f"data folder to put the files in (default: ${DATA_ENV} or the per-user cache, "
        "where the tutorials look last); 'idx' files go in its mnist/ subfolder",
    )
    parser.add_argument(
        "--format",
        choices=("pkl", "idx"),
        default="pkl",
        help="pkl: the tutorial's mnist.pkl.gz (default); idx: the four original IDX files",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        help=f"base URL to download from instead of the built-in mirrors (repeatable; "
        f"also ${MIRRORS_ENV}, comma-separated)",
    )
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.format, args.dest, args.mirror)
    except (DatasetError, OSError) as exc:
        print(f"error: {_one_line(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
