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
import gzip
import hashlib
import os
import pickle
import re
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
    """Return the path of IDX file ``base`` in ``folder`` (raw preferred, then .gz), or None."""
    for name in (base, base + ".gz"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def _idx_complete(folder):
    folder = Path(folder)
    return folder.is_dir() and all(_idx_member(folder, b) is not None for b, _ in IDX_FILES.values())


def _present(path):
    # A bare-name IDX folder counts only when all four files are there, so that a partial
    # folder in the working directory does not hide a complete one further down the list.
    return _idx_complete(path) if path.is_dir() else path.is_file()


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
        put where.
    """
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
        with open(tmp, "rb") as f:
            is_gzip = f.read(2) == _GZIP_MAGIC
        if is_gzip and _md5_file(tmp) == IDX_GZ_MD5[base]:
            return tmp.parent / (base + ".gz")
        raw = _read_bytes(tmp, base + ".gz" if is_gzip else base)
        digest = hashlib.md5(raw).hexdigest()
        if digest != IDX_MD5[base]:
            raise DatasetError(
                f"{base}: checksum mismatch (MD5 of the content {digest}, expected {IDX_MD5[base]})"
            )
        # A server may have sent it unzipped (Content-Encoding: gzip); keep it under the raw name.
        return tmp.parent / (base + ".gz" if is_gzip else base)

    return verify


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


def _read_bytes(path, label=None):
    """Return the file's bytes, decompressed when it is gzip, with gzip faults as DatasetError."""
    label = label or Path(path).name
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head != _GZIP_MAGIC:
            if str(label).endswith(".gz"):
                raise DatasetError(f"{label}: not a gzip file ({_DAMAGED})")
            return Path(path).read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DatasetError(f"{label}: no such file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{label}: {_gzip_fault(exc)}") from None


def _gzip_fault(exc):
    if isinstance(exc, EOFError):
        return f"truncated gzip stream ({_DAMAGED})"
    return f"corrupt gzip stream: {_one_line(exc)} ({_DAMAGED})"


def read_idx(path, kind):
    """Read one IDX file (raw or gzip) of unsigned bytes, checking its header.

    Parameters
    ----------
    path : str or os.PathLike
    kind : {'images', 'labels'}
        Images must be ``N x 28 x 28`` (magic 2051); labels ``N`` values in 0..9 (magic 2049).

    Returns
    -------
    numpy.ndarray
        uint8, shape ``(N, 28, 28)`` or ``(N,)``.

    Raises
    ------
    DatasetError
        On a missing or damaged file, a wrong magic number, dimensions, byte count or label.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', not {kind!r}")
    path = Path(path)
    label = path.name
    data = _read_bytes(path)
    magic, ndim = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    if len(data) < 4:
        raise DatasetError(f"{label}: truncated IDX header ({len(data)} bytes)")
    (found,) = struct.unpack(">i", data[:4])
    if found != magic:
        raise DatasetError(
            f"{label}: wrong IDX magic number {found} (expected {magic} for {kind})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{label}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if kind == "images" and dims[1:] != (N_ROWS, N_COLS):
        raise DatasetError(f"{label}: images are {dims[1]}x{dims[2]}, expected {N_ROWS}x{N_COLS}")
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != expected:
        fault = "truncated" if body < expected else "too long"
        raise DatasetError(
            f"{label}: IDX body {fault}: header {dims} says {expected} bytes, file holds {body}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and arr.size and arr.max() >= N_CLASSES:
        raise DatasetError(f"{label}: label {int(arr.max())} outside 0..{N_CLASSES - 1}")
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


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle only plain numpy arrays inside tuples and lists; refuse every other global.

    ``mnist.pkl.gz`` needs exactly three globals: ``numpy.core.multiarray._reconstruct``
    (spelled ``numpy._core.multiarray`` by numpy 2), ``numpy.ndarray`` and ``numpy.dtype``.
    The first two are wrapped so that they cannot allocate more than the pickle itself holds,
    and dtypes are limited to plain numeric ones.
    """

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DatasetError(f"{self.label}: refused to unpickle {module}.{name} (not a numpy array)")
        return allowed

    def persistent_load(self, pid):
        raise DatasetError(f"{self.label}: refused a persistent id in the pickle")


_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]


def _safe_reconstruct(subtype, shape, dtype):
    # numpy always pickles _reconstruct(ndarray, (0,), b'b') and fills it in via __setstate__,
    # whose data must then be in the pickle; so any other call is refused.
    if subtype is not np.ndarray or np.prod(shape, dtype=np.int64) != 0:
        raise pickle.UnpicklingError("unexpected ndarray construction")
    return _reconstruct(np.ndarray, shape, dtype)


def _safe_dtype(obj, align=False, copy=False):
    if not isinstance(obj, (str, bytes)):
        raise pickle.UnpicklingError("unexpected dtype construction")
    dtype = np.dtype(obj)
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise pickle.UnpicklingError(f"dtype {obj!r} is not a plain numeric type")
    # Always a copy: the pickle's BUILD step then sets the state of this copy, never that of
    # numpy's shared builtin dtype.
    return np.dtype(obj, bool(align), True)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


def _load_pkl(path, label=None):
    path = Path(path)
    label = label or path.name
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not is_gzip and path.name.endswith(".gz"):
                raise DatasetError(f"{label}: not a gzip file ({_DAMAGED})")
            stream = gzip.GzipFile(fileobj=raw) if is_gzip else raw
            try:
                unpickler = _SafeUnpickler(stream, encoding="latin1")
                unpickler.label = label
                obj = unpickler.load()
            except (DatasetError, EOFError, gzip.BadGzipFile, zlib.error):
                raise
            except Exception as exc:  # UnpicklingError, or numpy refusing a malformed state
                # Damaged deflate data often decompresses to garbage before the CRC is reached;
                # reading on to the trailer tells a damaged file from a foreign pickle.
                if is_gzip:
                    while stream.read(1 << 20):
                        pass
                raise DatasetError(
                    f"{label}: not a valid pickle of numpy arrays: {_one_line(exc)}"
                ) from None
            # Read to the end so that gzip checks its CRC and length trailer.
            if stream.read(1 << 16):
                raise DatasetError(f"{label}: unexpected bytes after the pickle ({_DAMAGED})")
    except FileNotFoundError:
        raise DatasetError(f"{label}: no such file") from None
    except EOFError as exc:
        if "end-of-stream" in str(exc) or "Compressed file ended" in str(exc):
            raise DatasetError(f"{label}: truncated gzip stream ({_DAMAGED})") from None
        raise DatasetError(f"{label}: pickle ends early ({_DAMAGED})") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{label}: {_gzip_fault(exc)}") from None
    return _check_structure(obj, label)


def _check_structure(obj, label):
    names = ("train", "valid", "test")
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DatasetError(f"{label}: expected 3 (x, y) pairs (train, valid, test), found {_describe(obj)}")
    out = []
    for name, pair in zip(names, obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DatasetError(f"{label}: {name} set is not an (x, y) pair but {_describe(pair)}")
        x, y = pair
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
        On a missing, damaged or ill-formed file, or a pickle that asks for anything but
        numpy arrays (nothing in the file is executed).
    """
    path = Path(os.fspath(dataset))
    if path.is_dir():
        return _load_idx_folder(path)
    if not path.exists():
        raise DatasetError(f"{dataset}: no such file or folder")
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
