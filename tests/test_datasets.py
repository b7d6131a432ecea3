"""Tests of :mod:`deeplearning_tutorials.datasets`: lookup, download, validation, safe unpickling.

The real files come from the ``mnist_dir`` / ``mnist_pkl`` fixtures (tests/conftest.py) and
are only read; every write goes to ``tmp_path``. Downloads run against a real HTTP server on
127.0.0.1 serving those files, well-behaved or not depending on the URL's first component.
"""

import codecs
import gzip
import hashlib
import os
import pickle
import pickletools
import signal
import socket
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deeplearning_tutorials import datasets
from deeplearning_tutorials.datasets import DatasetError, load_arrays, locate, read_idx

IDX_BASES = [base for base, _ in datasets.IDX_FILES.values()]
IDX_GZ = [base + ".gz" for base in IDX_BASES]


# ----------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pkl_arrays(mnist_pkl):
    return load_arrays(mnist_pkl)


@pytest.fixture(scope="session")
def idx_arrays(mnist_dir):
    return load_arrays(mnist_dir)


@pytest.fixture(scope="session")
def real_raw(mnist_dir):
    """The four IDX files' uncompressed bytes, by base name."""
    return {base: gzip.decompress((mnist_dir / (base + ".gz")).read_bytes()) for base in IDX_BASES}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A working directory, project data/ folder and cache, all empty and under tmp_path."""
    ns = SimpleNamespace(cwd=tmp_path / "cwd", data=tmp_path / "data", cache=tmp_path / "cache")
    for folder in (ns.cwd, ns.data, ns.cache):
        folder.mkdir()
    monkeypatch.chdir(ns.cwd)
    monkeypatch.setattr(datasets, "PROJECT_DATA_DIR", ns.data)
    monkeypatch.setenv(datasets.DATA_ENV, str(ns.cache))
    monkeypatch.delenv(datasets.MIRRORS_ENV, raising=False)
    # A proxy from the environment would swallow the requests to 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return ns


def _corrupt(data):
    # Same length, a damaged stretch in the middle: the gzip stream or its CRC fails.
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/<mode>/<file>``; the mode decides how well it behaves."""

    files = {}  # name -> genuine bytes
    wrong = {}  # name -> well-formed bytes of the wrong content
    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        _, mode, name = self.path.split("/", 2)
        body = self.files.get(name)
        if mode == "wrong":
            body = self.wrong.get(name, body)
        if body is None or mode == "missing" or (mode == "nopkl" and name.endswith(".pkl.gz")):
            self.send_error(404)
            return
        headers = {"Content-Type": "application/octet-stream"}
        if mode == "corrupt":
            body = _corrupt(body)
        if mode == "gzipenc":
            headers["Content-Encoding"] = "gzip"
        if mode != "cutnolen":
            headers["Content-Length"] = str(len(body))
        if mode in ("cut", "cutnolen"):
            body = body[: len(body) // 2]
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


class _Server(SimpleNamespace):
    def __init__(self, url, requests, files):
        super().__init__(url=url, requests=requests, files=files)

    def __repr__(self):  # keeps megabytes of file contents out of failure reports
        return f"<server {self.url}>"


@pytest.fixture(scope="session")
def server(mnist_dir, mnist_pkl, real_raw):
    """A real HTTP server on 127.0.0.1 (random port) in a thread; yields its base URL."""
    files = {name: (mnist_dir / name).read_bytes() for name in IDX_GZ}
    files["mnist.pkl.gz"] = mnist_pkl.read_bytes()
    labels = bytearray(real_raw["t10k-labels-idx1-ubyte"])
    labels[8] = (labels[8] + 1) % 10  # still a valid label file, but not MNIST's
    tiny = ((np.zeros((3, 784), np.float32), np.arange(3)),) * 3
    wrong = {
        "t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(labels)),
        "mnist.pkl.gz": gzip.compress(pickle.dumps(tiny, protocol=4)),
    }
    handler = type("Handler", (_Handler,), {"files": files, "wrong": wrong, "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield _Server(url, handler.requests, files)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused():
    """A base URL on which every connection is refused (a port just closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).rglob("*.part"))


def _assert_same(a, b):
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == np.float32 and ya.dtype == yb.dtype == np.int64
        assert xa.tobytes() == xb.tobytes() and ya.tobytes() == yb.tobytes()


# ----------------------------------------------------------------------------------------
# The real files
# ----------------------------------------------------------------------------------------


def test_pkl_and_idx_give_bit_identical_arrays(pkl_arrays, idx_arrays):
    _assert_same(pkl_arrays, idx_arrays)


@pytest.mark.parametrize("source", ["pkl_arrays", "idx_arrays"])
def test_known_facts(source, request):
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = request.getfixturevalue(source)
    assert train_x.shape == (50000, 784) and valid_x.shape == (10000, 784)
    assert test_x.shape == (10000, 784)
    assert train_y.shape == (50000,) and valid_y.shape == (10000,) and test_y.shape == (10000,)
    assert max(x.max() for x in (train_x, valid_x, test_x)) == np.float32(0.99609375)
    assert min(x.min() for x in (train_x, valid_x, test_x)) == 0
    counts = [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]
    assert np.bincount(train_y, minlength=10).tolist() == counts
    assert valid_y[:10].tolist() == [3, 8, 6, 9, 6, 4, 5, 3, 8, 4]


def test_real_pickle_needs_only_the_admitted_globals(mnist_pkl):
    ops = pickletools.genops(gzip.decompress(mnist_pkl.read_bytes()))
    needed = {tuple(arg.split(" ")) for op, arg, _ in ops if op.name == "GLOBAL"}
    assert needed == {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
    assert needed <= set(datasets._ALLOWED_GLOBALS)


@pytest.mark.slow
def test_real_files_match_canonical_checksums(pkl_arrays, real_raw):
    for base, raw in real_raw.items():
        assert hashlib.md5(raw).hexdigest() == datasets.IDX_MD5[base]
    datasets._check_canonical(pkl_arrays, "mnist.pkl.gz")


def test_uncompressed_idx_folder_loads_the_same(tmp_path, real_raw, idx_arrays):
    for base, raw in real_raw.items():
        (tmp_path / base).write_bytes(raw)
    _assert_same(load_arrays(tmp_path), idx_arrays)


# ----------------------------------------------------------------------------------------
# Lookup order
# ----------------------------------------------------------------------------------------


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _idx_folder(folder):
    for name in IDX_GZ:
        _touch(folder / name)
    return folder


def test_locate_path_as_given(isolated, tmp_path):
    f = _touch(tmp_path / "elsewhere" / "my.pkl.gz")
    assert locate(f) == f and locate(str(f)) == f
    folder = _idx_folder(tmp_path / "elsewhere" / "idx")
    assert locate(folder) == folder


def test_locate_prefers_cwd_then_data_then_cache(isolated):
    in_cache = _touch(isolated.cache / "mnist.pkl.gz")
    assert locate(download=False) == in_cache
    in_data = _touch(isolated.data / "mnist.pkl.gz")
    assert locate(download=False) == in_data
    _touch(isolated.cwd / "mnist.pkl.gz")
    assert locate(download=False).resolve() == (isolated.cwd / "mnist.pkl.gz").resolve()


def test_locate_cache_follows_env_var(isolated, tmp_path, monkeypatch):
    other = tmp_path / "other-cache"
    monkeypatch.setenv(datasets.DATA_ENV, str(other))
    assert datasets.cache_dir() == other
    f = _touch(other / "mnist.pkl.gz")
    assert locate("mnist.pkl.gz", download=False) == f


def test_locate_idx_folder_by_name(isolated):
    _touch(isolated.data / "mnist" / IDX_GZ[0])  # incomplete: skipped
    folder = _idx_folder(isolated.cache / "mnist")
    assert locate("mnist", download=False) == folder


def test_locate_pkl_falls_back_to_local_idx_folder(isolated):
    folder = _idx_folder(isolated.data / "mnist")
    assert locate("mnist.pkl.gz", download=False) == folder


def test_locate_unknown_or_missing(isolated, tmp_path):
    with pytest.raises(DatasetError, match=r"^other\.pkl\.gz: not found in "):
        locate("other.pkl.gz")
    with pytest.raises(DatasetError, match="no such file or folder"):
        locate(tmp_path / "nowhere" / "mnist.pkl.gz")
    with pytest.raises(DatasetError, match="download=False") as info:
        locate("mnist.pkl.gz", download=False)
    assert str(isolated.data) in str(info.value) and str(isolated.cache) in str(info.value)


# ----------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_download_pkl(isolated, server, pkl_arrays):
    path = locate("mnist.pkl.gz", mirrors=[f"{server.url}/good/"])
    assert path == isolated.cache / "mnist.pkl.gz"
    assert path.read_bytes() == server.files["mnist.pkl.gz"]
    _assert_same(load_arrays(path), pkl_arrays)
    assert _leftovers(isolated.cache) == []
    assert locate("mnist.pkl.gz", mirrors=["http://invalid.invalid/"]) == path  # no new download


def test_download_idx_via_env_mirrors(isolated, server, idx_arrays, monkeypatch):
    monkeypatch.setenv(datasets.MIRRORS_ENV, f"{server.url}/missing/, {server.url}/good")
    folder = locate("mnist")
    assert folder == isolated.cache / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_GZ)
    _assert_same(load_arrays(folder), idx_arrays)


@pytest.mark.slow
def test_corrupt_first_mirror_then_good(isolated, server):
    start = len(server.requests)
    path = locate("mnist.pkl.gz", mirrors=[f"{server.url}/corrupt/", f"{server.url}/good/"])
    assert server.requests[start:] == ["/corrupt/mnist.pkl.gz", "/good/mnist.pkl.gz"]
    assert path.read_bytes() == server.files["mnist.pkl.gz"]
    assert _leftovers(isolated.cache) == []


@pytest.mark.parametrize("mode", ["cut", "cutnolen"])
def test_cut_off_download_leaves_nothing_and_next_mirror_follows(isolated, server, mode):
    name = "train-images-idx3-ubyte.gz"  # fetched first; large enough to be cut mid-stream
    bad = f"{server.url}/{mode}/"
    with pytest.raises(DatasetError, match=name) as info:
        datasets._fetch_idx(isolated.cache, mirrors=[bad])
    assert "\n" not in str(info.value)
    assert not (isolated.cache / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert _leftovers(isolated.cache) == []
    start = len(server.requests)
    folder = datasets._fetch_idx(isolated.cache, mirrors=[bad, f"{server.url}/good/"])
    assert server.requests[start : start + 2] == [f"/{mode}/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]
    assert (folder / name).read_bytes() == server.files[name]
    assert _leftovers(isolated.cache) == []


def test_offline_error_names_the_files_and_places(isolated, refused):
    with pytest.raises(DatasetError) as info:
        locate("mnist.pkl.gz", mirrors=[refused, refused + "other/"])
    message = str(info.value)
    assert "\n" not in message and message.startswith("mnist.pkl.gz: ")
    assert "Connection refused" in message
    for part in ("mnist.pkl.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 str(isolated.data), str(isolated.cache), datasets.FETCH_COMMAND):
        assert part in message
    assert not (isolated.cache / "mnist.pkl.gz").exists()
    assert _leftovers(isolated.cache) == []


def test_pkl_download_falls_back_to_idx(isolated, server, idx_arrays):
    # The only mirror has the IDX files but not the pickle.
    folder = locate("mnist.pkl.gz", mirrors=[f"{server.url}/nopkl/"])
    assert folder == isolated.cache / "mnist"
    assert not (isolated.cache / "mnist.pkl.gz").exists()
    _assert_same(load_arrays(folder), idx_arrays)


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte.gz", "mnist.pkl.gz"])
def test_checksum_mismatch_is_rejected(isolated, server, name):
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        fetch_format = "pkl" if name.endswith("pkl.gz") else "idx"
        datasets.fetch(fetch_format, isolated.cache, mirrors=[f"{server.url}/wrong/"])
    assert "\n" not in str(info.value)
    assert not (isolated.cache / "mnist.pkl.gz").exists()
    assert not (isolated.cache / "mnist" / name).exists()
    assert not (isolated.cache / "mnist" / name[:-3]).exists()
    assert _leftovers(isolated.cache) == []


def test_fetch_replaces_a_damaged_file(isolated, server):
    folder = isolated.cache / "mnist"
    folder.mkdir()
    damaged = folder / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(_corrupt(server.files[damaged.name]))
    paths = datasets.fetch("idx", isolated.cache, mirrors=[f"{server.url}/good/"])
    assert [p.name for p in paths] == IDX_GZ
    assert damaged.read_bytes() == server.files[damaged.name]


def test_fetch_replaces_a_fifo_without_blocking(isolated, server):
    folder = isolated.cache / "mnist"
    folder.mkdir()
    fifo = folder / "t10k-labels-idx1-ubyte.gz"
    os.mkfifo(fifo)

    def expired(signum, frame):
        raise TimeoutError("opening the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    try:
        datasets.fetch("idx", isolated.cache, mirrors=[f"{server.url}/good/"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert fifo.is_file() and fifo.read_bytes() == server.files[fifo.name]


def test_server_side_gzip_encoding_keeps_the_raw_file(isolated, server, real_raw):
    # A server that marks the .gz as Content-Encoding: gzip makes requests unzip it.
    name = "t10k-labels-idx1-ubyte"
    datasets._download(
        [f"{server.url}/gzipenc/{name}.gz"],
        isolated.cache / (name + ".gz"),
        datasets._verify_idx(name),
    )
    assert (isolated.cache / name).read_bytes() == real_raw[name]
    assert not (isolated.cache / (name + ".gz")).exists()


# ----------------------------------------------------------------------------------------
# Bad input files, one fault each
# ----------------------------------------------------------------------------------------


def _idx_bytes(magic, dims, body):
    return struct.pack(f">i{len(dims)}i", magic, *dims) + bytes(body)


def _labels(values):
    return _idx_bytes(2049, [len(values)], values)


def _images(n):
    return _idx_bytes(2051, [n, 28, 28], np.arange(n * 784, dtype=np.uint8).tobytes())


def test_missing_file(tmp_path, mnist_dir):
    with pytest.raises(DatasetError, match=r"mnist\.pkl\.gz: no such file"):
        load_arrays(tmp_path / "mnist.pkl.gz")
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in IDX_GZ[:3]:
        (folder / name).symlink_to(mnist_dir / name)
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: no such file"):
        load_arrays(folder)


def test_truncated_gzip_pickle(tmp_path, mnist_pkl):
    path = tmp_path / "mnist.pkl.gz"
    with open(mnist_pkl, "rb") as f:
        path.write_bytes(f.read(1_000_000))
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: truncated gzip stream \(file is damaged"):
        load_arrays(path)


def test_damaged_gzip_pickle(tmp_path, mnist_pkl):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(_corrupt(mnist_pkl.read_bytes()))
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: .*damaged"):
        load_arrays(path)


def test_not_gzip(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(b"<html>404</html>")
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: not a gzip file"):
        load_arrays(path)


def test_truncated_gzip_idx(tmp_path, mnist_dir):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((mnist_dir / path.name).read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"^t10k-labels-idx1-ubyte\.gz: truncated gzip stream"):
        read_idx(path, "labels")


def test_wrong_idx_magic(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(_idx_bytes(2051, [3], [1, 2, 3]))
    with pytest.raises(DatasetError, match=r"^t10k-labels-idx1-ubyte: wrong IDX magic number 2051 \(expected 2049"):
        read_idx(path, "labels")
    path.write_bytes(_images(2))
    with pytest.raises(DatasetError, match="wrong IDX magic number 2051"):
        read_idx(path, "labels")


@pytest.mark.parametrize(
    "content, message",
    [
        (_idx_bytes(2051, [10, 28, 28], bytes(784 * 9)), r"IDX body truncated: header \(10, 28, 28\) says 7840 bytes, file holds 7056"),
        (_idx_bytes(2051, [1, 28, 28], bytes(785)), "IDX body too long"),
        (_idx_bytes(2051, [1, 32, 32], bytes(1024)), "images are 32x32, expected 28x28"),
        (struct.pack(">ii", 2051, 1), "truncated IDX header"),
        (b"\x00\x00", "truncated IDX header"),
    ],
)
def test_bad_idx_images(tmp_path, content, message):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(DatasetError, match=r"^t10k-images-idx3-ubyte\.gz: " + message):
        read_idx(path, "images")


def test_idx_labels_outside_0_9(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(_labels([1, 2, 10]))
    with pytest.raises(DatasetError, match=r"^t10k-labels-idx1-ubyte: label 10 outside 0\.\.9"):
        read_idx(path, "labels")


def _idx_folder_with_test_set(tmp_path, mnist_dir, images, labels):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in IDX_GZ[:2]:
        (folder / name).symlink_to(mnist_dir / name)
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    return folder


def test_idx_image_and_label_counts_disagree(tmp_path, mnist_dir):
    folder = _idx_folder_with_test_set(tmp_path, mnist_dir, _images(5), _labels([1, 2, 3, 4]))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte holds 5 images but t10k-labels-idx1-ubyte holds 4 labels"):
        load_arrays(folder)


def test_idx_training_file_of_the_wrong_size(tmp_path, mnist_dir):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(_images(3))
    (folder / "train-labels-idx1-ubyte").write_bytes(_labels([1, 2, 3]))
    for name in IDX_GZ[2:]:
        (folder / name).symlink_to(mnist_dir / name)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: 3 images, expected 60000"):
        load_arrays(folder)


def _write_pkl(path, obj, protocol=4):
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=protocol)))
    return path


_X = np.zeros((2, 784), np.float32)
_Y = np.array([0, 9])


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2, 3], r"train set is not an \(x, y\) pair but a int"),
        (((_X, _Y),) * 2, r"expected 3 \(x, y\) pairs .*found a tuple of 2"),
        ({"train": 1}, r"expected 3 \(x, y\) pairs .*found a dict"),
        (((_X, _Y), (_X, _Y), (_X,)), r"test set is not an \(x, y\) pair but a tuple of 1"),
        (((_X, _Y), (_X.astype(np.float64), _Y), (_X, _Y)), r"valid_x is float64 \(2, 784\), expected float32"),
        (((_X[:, :100], _Y),) * 3, r"train_x is float32 \(2, 100\)"),
        (((_X, _Y.astype(np.float32)),) * 3, r"train_y is float32 \(2,\), expected int64"),
        (((_X, _Y[:1]),) * 3, "train set has 2 images but 1 labels"),
        (((_X, _Y), (_X, _Y), (_X, np.array([3, 10]))), r"test_y holds label 10 outside 0\.\.9"),
        (((_X, np.array([-1, 0])),) * 3, r"train_y holds label -1 outside 0\.\.9"),
        (((_X + 2, _Y),) * 3, r"train_x holds pixels outside \[0, 1\]"),
        (((_X, [0, 1]),) * 3, r"train set holds a float32 array \(2, 784\), a list of 2, not arrays"),
    ],
)
def test_pickle_of_the_wrong_structure(tmp_path, obj, message):
    path = _write_pkl(tmp_path / "mnist.pkl.gz", obj)
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: " + message):
        load_arrays(path)


def test_small_pickle_of_the_right_structure_loads(tmp_path):
    path = _write_pkl(tmp_path / "tiny.pkl.gz", ((_X, _Y), (_X, _Y.astype(np.int32)), (_X, _Y)))
    arrays = load_arrays(path)
    assert [y.dtype for _, y in arrays] == [np.int64] * 3
    with pytest.raises(DatasetError, match="checksum mismatch"):
        datasets._verify_pkl(path)


def test_pickle_refuses_other_numpy_constructions(tmp_path):
    # Object arrays need globals no pickle of numeric arrays uses; _codecs.encode is admitted
    # for Python 3's protocol-2 bytes, as latin-1 text only.
    path = _write_pkl(tmp_path / "mnist.pkl.gz", ((np.array([None, 1], dtype=object), _Y),) * 3)
    with pytest.raises(DatasetError, match="refused to unpickle|not a plain numeric"):
        load_arrays(path)
    path = _write_pkl(tmp_path / "mnist.pkl.gz", ((_X, _Evil(codecs.encode, ("x" * 9, "rot13"))),) * 3)
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: refused _codecs\.encode with str, 'rot13'"):
        load_arrays(path)


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["system", "open", "eval", "nested"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_runs_nothing(tmp_path, how, protocol):
    pwned = tmp_path / "pwned"
    payload = {
        "system": _Evil(os.system, (f"touch {pwned}",)),
        "open": _Evil(open, (str(pwned), "w")),
        "eval": _Evil(eval, (f"open({str(pwned)!r}, 'w')",)),
        "nested": ((_X, _Y), (_X, _Y), (_X, _Evil(os.system, (f"touch {pwned}",)))),
    }[how]
    path = _write_pkl(tmp_path / "mnist.pkl.gz", payload, protocol=protocol)
    with pytest.raises(
        DatasetError,
        match=r"^mnist\.pkl\.gz: refused to unpickle \S+ \(not a numpy array\); delete the file and fetch it again$",
    ):
        load_arrays(path)
    assert not pwned.exists()


# ----------------------------------------------------------------------------------------
# The fetch command
# ----------------------------------------------------------------------------------------


def _run_fetch(args, env_extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(env_extra, NO_PROXY="127.0.0.1,localhost")
    env.pop(datasets.MIRRORS_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "deeplearning_tutorials.datasets", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_fetch_command_error_is_one_line(tmp_path, refused):
    result = _run_fetch(["--dest", str(tmp_path), "--mirror", refused], {datasets.DATA_ENV: str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mnist.pkl.gz: could not download it")
    assert "Traceback" not in result.stderr and "Connection refused" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_fetch_command_idx(tmp_path, server):
    dest = tmp_path / "dest"
    result = _run_fetch(
        ["--dest", str(dest), "--format", "idx", "--mirror", f"{server.url}/good/"],
        {datasets.DATA_ENV: str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(dest / "mnist" / name) for name in IDX_GZ]
    assert result.stderr == ""
    for name in IDX_GZ:
        assert (dest / "mnist" / name).read_bytes() == server.files[name]


def test_fetch_command_bad_format_exits_with_usage(tmp_path):
    result = _run_fetch(["--format", "csv"], {datasets.DATA_ENV: str(tmp_path)})
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_fetch_keeps_a_genuine_file_without_downloading(tmp_path, mnist_pkl, refused):
    (tmp_path / "mnist.pkl.gz").symlink_to(mnist_pkl)
    assert datasets.fetch("pkl", tmp_path, mirrors=[refused]) == [tmp_path / "mnist.pkl.gz"]


def test_progress_bar_goes_to_stderr(isolated, server, capsys):
    name = "t10k-labels-idx1-ubyte"
    path = datasets._download(
        [f"{server.url}/missing/{name}.gz", f"{server.url}/good/{name}.gz"],
        isolated.cache / (name + ".gz"),
        datasets._verify_idx(name),
        progressbar=True,
    )
    out, err = capsys.readouterr()
    assert out == "" and "HTTP 404" in err and f"Downloading {name}.gz from" in err
    assert path.read_bytes() == server.files[name + ".gz"]


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("1", "1 error")])
def test_missing_real_data_skips_or_fails_under_ci(tmp_path, ci, outcome):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DEEPLEARNING_TUTORIALS_MNIST"] = str(tmp_path / "absent" / "mnist")
    if ci:
        env["CI"] = ci
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_pkl_and_idx_give_bit_identical_arrays"],
        capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).parents[1],
    )
    assert outcome in result.stdout, result.stdout
    assert result.returncode == (1 if ci else 0)
