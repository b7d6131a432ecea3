"""Tests of :mod:`deeplearning_tutorials.datasets` against hostile and unusual files.

Pickles that ask for memory they do not hold, dtypes with state beyond a byte order, gzip
bombs behind IDX headers, files that cannot be read; and the Python 3 pickles (protocols 2 to
5, numpy 1's and numpy 2's module names) that must load. Every file is written under
``tmp_path``.
"""

import codecs
import gzip
import io
import os
import pickle
import pickletools
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from deeplearning_tutorials import datasets
from deeplearning_tutorials.datasets import DatasetError, load_arrays, locate, read_idx

_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy._core.numeric._frombuffer (numpy.core in numpy 1)
_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]


class _Reduce:
    """Pickles as ``func(*args)``, then ``BUILD`` with ``state`` when one is given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _arrays(n=(3, 2, 1), seed=0):
    """Three small (x, y) splits like MNIST's: x float32 multiples of 1/256, y int64."""
    rng = np.random.default_rng(seed)
    out = []
    for rows in n:
        x = rng.integers(0, 256, size=(rows, 784)).astype(np.float32) * np.float32(1 / 256)
        out.append((x, rng.integers(0, 10, size=rows).astype(np.int64)))
    return tuple(out)


# numpy 1 names its modules numpy.core, numpy 2 numpy._core: the same opcodes, as written by
# protocols 0 to 3 and (with the string's length first) by protocols 4 and 5.
_NAMES = {
    1: [b"cnumpy.core.", b"\x8c\x15numpy.core.multiarray", b"\x8c\x12numpy.core.numeric"],
    2: [b"cnumpy._core.", b"\x8c\x16numpy._core.multiarray", b"\x8c\x13numpy._core.numeric"],
}


def _as_numpy(version, data):
    """The same pickle as numpy ``version`` (1 or 2) writes it, whichever numpy wrote it.

    From numpy 2 to 1, protocols 2 and 3 give what numpy 1.26 writes byte for byte, and 4 and 5
    the same opcodes, framed again.
    """
    for old, new in zip(_NAMES[3 - version], _NAMES[version]):
        data = data.replace(old, new)
    assert b"numpy.core" not in data if version == 2 else b"numpy._core" not in data
    return pickletools.optimize(data) if data[1] >= 4 else data


class _Anything:
    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        pass


class _Recorder(pickle.Unpickler):
    """Runs a pickle with every global replaced by a harmless class, noting the names."""

    def find_class(self, module, name):
        self.names.add((module, name))
        return _Anything


def _globals(data):
    recorder = _Recorder(io.BytesIO(data))
    recorder.names = set()
    recorder.load()
    return recorder.names


def _write(path, data, compress=True):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _assert_same(a, b):
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == np.float32 and ya.dtype == np.int64
        assert xa.shape == xb.shape and ya.shape == yb.shape
        assert xa.tobytes() == xb.tobytes() and ya.tobytes() == yb.tobytes()


def _one_line(info):
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------
# Python 3 pickles of the same structure load
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["C", "fortran", "readonly"])
@pytest.mark.parametrize("numpy_version", [2, 1], ids=["numpy 2", "numpy 1"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickles_load(tmp_path, protocol, numpy_version, layout):
    arrays = _arrays()
    if layout == "fortran":
        arrays = tuple((np.asfortranarray(x), y) for x, y in arrays)
    if layout == "readonly":  # protocol 5 then holds the data as bytes, not a bytearray
        for x, y in arrays:
            x.flags.writeable = y.flags.writeable = False
    data = _as_numpy(numpy_version, pickle.dumps(arrays, protocol=protocol))
    assert _globals(data) <= set(datasets._ALLOWED_GLOBALS)
    loaded = load_arrays(_write(tmp_path / "mnist.pkl.gz", data))
    _assert_same(loaded, arrays)
    if layout == "fortran":
        assert loaded[0][0].flags.f_contiguous and not loaded[0][0].flags.c_contiguous


def test_python3_pickles_name_what_the_loader_admits():
    # What numpy 1 and numpy 2 write is admitted; nothing more is.
    needed = set()
    for protocol in (2, 3, 4, 5):
        data = pickle.dumps(_arrays(), protocol=protocol)
        needed |= _globals(_as_numpy(1, data)) | _globals(_as_numpy(2, data))
    assert needed == set(datasets._ALLOWED_GLOBALS)


def test_frombuffer_with_an_axis_order_loads():
    # numpy 2 pickles an array whose axes are permuted, at protocol 5, with order 'K'.
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4).transpose(1, 2, 0)
    data = pickle.dumps(x, protocol=5)
    if x.__reduce_ex__(5)[1][3:4] != ("K",):
        pytest.skip("this numpy pickles permuted axes without an axis order")
    loaded = datasets._SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    assert loaded.shape == x.shape and loaded.strides == x.strides and np.array_equal(loaded, x)


@pytest.fixture(scope="module")
def real_arrays(mnist_pkl):
    return load_arrays(mnist_pkl)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [2, 5])
def test_real_mnist_as_python3_pickle(tmp_path, real_arrays, protocol):
    # Uncompressed, to keep the test quick: the loader reads a pickle with or without gzip.
    path = _write(tmp_path / "mnist.pkl", pickle.dumps(real_arrays, protocol=protocol), compress=False)
    _assert_same(load_arrays(path), real_arrays)


# ----------------------------------------------------------------------------------------
# Pickles that ask for more than they hold, or for more than plain arrays
# ----------------------------------------------------------------------------------------

_F4_STATE = np.dtype("<f4").__reduce__()[2]


@pytest.mark.parametrize(
    "state",
    [
        _F4_STATE[:7] + (0x3F,),  # flags: numpy would take the floats for object pointers
        _F4_STATE[:7] + (1,),
        _F4_STATE[:5] + (8, 4, 0),  # element size and alignment
        (3, "|") + _F4_STATE[2:],
        _F4_STATE[:3] + (("a",), {"a": (np.dtype("f4"), 0)}) + _F4_STATE[5:],
        _F4_STATE + ({"meta": 1},),
        "f4",
    ],
    ids=["flags-63", "flags-1", "elsize", "byteorder-|", "fields", "metadata", "not-a-tuple"],
)
@pytest.mark.parametrize("via", ["_reconstruct", "_frombuffer"])
def test_dtype_state_beyond_byte_order_is_refused(tmp_path, state, via):
    dtype = _Reduce(np.dtype, ("f4", False, True), state)
    data = bytes(2 * 784 * 4)
    if via == "_reconstruct":
        x = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2, 784), dtype, False, data))
    else:
        x = _Reduce(_frombuffer, (bytearray(data), dtype, (2, 784), "C"))
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(((x, np.arange(2)),) * 3, protocol=5))
    with pytest.raises(DatasetError) as info:
        load_arrays(path)
    assert _one_line(info).startswith("mnist.pkl.gz: refused the dtype state ")
    assert str(info.value).endswith("(a plain numeric dtype takes only a byte order); delete the file and fetch it again")


def test_big_endian_arrays_load_as_numpy_loads_them(tmp_path):
    # A byte order is the one state a dtype may carry; numpy swaps such data to native order.
    arrays = _arrays()
    swapped = tuple((x.astype(">f4"), y.astype(">i8")) for x, y in arrays)
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(swapped, protocol=2))
    _assert_same(load_arrays(path), arrays)


def _peak_while(func):
    """Run func (which must raise DatasetError); return the error and the peak traced bytes."""
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as info:
            func()
        return info, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bare_ndarray_constructor_is_refused_before_allocating(tmp_path):
    # numpy.ndarray(shape, dtype) would hand back 3 GB of uninitialised memory.
    x = _Reduce(np.ndarray, ((1_000_000, 784), "f4"))
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(((x, np.arange(2)),) * 3, protocol=5))
    assert path.stat().st_size < 300
    info, peak = _peak_while(lambda: load_arrays(path))
    assert _one_line(info) == (
        "mnist.pkl.gz: refused to call numpy.ndarray (it would allocate memory the pickle does not hold); "
        "delete the file and fetch it again"
    )
    assert peak < 1 << 20


_BIG = (1_000_000, 784)  # 3136000000 bytes of float32


@pytest.mark.parametrize(
    "x, message",
    [
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, _BIG, np.dtype("f4"), False, b"\0" * 8)),
            r"an array of shape \(1000000, 784\) and type float32 needs 3136000000 bytes, "
            r"but the pickle holds 8 for it; delete the file and fetch it again$",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2, 784), np.dtype("f4"), False, b"\0" * 6273)),
            "needs 6272 bytes, but the pickle holds 6273",
        ),
        (
            _Reduce(_frombuffer, (bytearray(8), np.dtype("f4"), _BIG, "C")),
            r"needs 3136000000 bytes, but the pickle holds 8 for it",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, _BIG, b"b")),
            r"refused _reconstruct\(.*\) \(numpy's pickles use \(ndarray, \(0,\), b'b'\)\)",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (-1, 784), np.dtype("f4"), False, b"")),
            r"refused the array shape \(-1, 784\)",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2, 784), np.dtype("f4"), False, [0.0] * 4)),
            r"refused array data of type list",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b")),
            r"train set holds an array without data, a int64 array \(2,\), not arrays",
        ),
        (
            _Reduce(_frombuffer, (bytearray(8), np.dtype("f4"), (2,), "K", (1, 0))),
            r"refused the axis order \(1, 0\) for shape \(2,\)",
        ),
    ],
    ids=["state-short", "state-long", "frombuffer-short", "reconstruct-shape", "negative", "list-data",
         "no-state", "axis-order"],
)
def test_array_size_must_match_the_bytes_held(tmp_path, x, message):
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(((x, np.arange(2)),) * 3, protocol=5))
    info, peak = _peak_while(lambda: load_arrays(path))
    assert _one_line(info).startswith("mnist.pkl.gz: ")
    assert info.match(message)
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "args, message",
    [
        (("abc", "rot13"), r"refused _codecs\.encode with str, 'rot13' \(only latin-1 text\)"),
        ((b"abc", "latin1"), r"refused _codecs\.encode with bytes"),
        (("\u0101", "latin1"), r"refused _codecs\.encode of text beyond latin-1"),
    ],
)
def test_codecs_encode_only_latin1_text(tmp_path, args, message):
    x = _Reduce(codecs.encode, args)
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(((x, np.arange(2)),) * 3, protocol=2))
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: " + message):
        load_arrays(path)


def test_out_of_band_buffers_are_refused(tmp_path):
    buffers = []
    data = pickle.dumps(_arrays(), protocol=5, buffer_callback=buffers.append)
    assert buffers
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: not a valid pickle of numpy arrays: .*out-of-band"):
        load_arrays(_write(tmp_path / "mnist.pkl.gz", data))


def _declaring(opcode, length, fmt="<Q"):
    # A protocol-4 pickle that declares a string of `length` bytes and holds a few.
    return b"\x80\x04" + opcode + struct.pack(fmt, length) + b"\0" * 16


@pytest.mark.parametrize(
    "data",
    [
        _declaring(b"\x8d", 1 << 40),  # BINUNICODE8
        _declaring(b"\x8d", 3 << 29),
        _declaring(b"\x8e", 3 << 29),  # BINBYTES8
        _declaring(b"\x96", 3 << 29),  # BYTEARRAY8
        _declaring(b"\x95", 3 << 29),  # FRAME
        _declaring(b"X", (1 << 31) - 1, "<I"),  # BINUNICODE
    ],
    ids=["binunicode8-1TB", "binunicode8", "binbytes8", "bytearray8", "frame", "binunicode"],
)
def test_declared_lengths_beyond_any_mnist_pickle_are_refused(tmp_path, data):
    path = _write(tmp_path / "mnist.pkl.gz", data)
    info, peak = _peak_while(lambda: load_arrays(path))
    assert _one_line(info).startswith("mnist.pkl.gz: ")
    assert info.match("more than any MNIST pickle|not a valid pickle of numpy arrays")
    if data[2:3] not in (b"\x8e", b"\x96"):  # the C unpickler reserves those before reading
        assert peak < 1 << 20


def test_declared_bytes_reserve_no_resident_memory(tmp_path):
    # For BINBYTES8 and BYTEARRAY8 CPython's unpickler reserves the declared length before it
    # reads; the refusal then comes before any of it is written, so none of it becomes resident.
    paths = [_write(tmp_path / f"{op.hex()}.pkl.gz", _declaring(op, 3 << 29)) for op in (b"\x8e", b"\x96")]
    code = (
        "import resource, sys\n"
        "from deeplearning_tutorials.datasets import DatasetError, load_arrays\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        load_arrays(path)\n"
        "    except DatasetError as exc:\n"
        "        print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    *messages, grown_kib = result.stdout.splitlines()
    # "MemoryError" where the machine cannot even reserve the declared length
    assert len(messages) == 2 and all("more than any MNIST pickle" in m or "MemoryError" in m for m in messages)
    assert int(grown_kib) < 64 * 1024


def test_pickle_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    # Many strings, each small, are counted together against the limit.
    monkeypatch.setattr(datasets, "_MAX_PKL_BYTES", 50_000)
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps([bytes([i]) * 1000 for i in range(100)], protocol=2))
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: the pickle holds more than 50000 bytes"):
        load_arrays(path)
    lines = [chr(65 + i % 26) * 1000 + str(i) for i in range(100)]  # protocol 0 reads them as lines
    path = _write(tmp_path / "mnist.pkl.gz", pickle.dumps(lines, protocol=0))
    with pytest.raises(DatasetError, match=r"^mnist\.pkl\.gz: the pickle holds more than 50000 bytes"):
        load_arrays(path)
    small = _arrays((2, 2, 2))
    _assert_same(load_arrays(_write(tmp_path / "ok.pkl.gz", pickle.dumps(small, protocol=5))), small)


# ----------------------------------------------------------------------------------------
# IDX files: the header is checked before the body is read
# ----------------------------------------------------------------------------------------


def _gzip_stream(path, head, zeros):
    """Write head plus `zeros` zero bytes as one gzip file, compressing a megabyte at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(compressor.compress(head))
        for _ in range(zeros >> 20):
            f.write(compressor.compress(block))
        f.write(compressor.flush())
    return path


_BOMB_ZEROS = 128 << 20


@pytest.mark.parametrize(
    "kind, head, message",
    [
        ("images", struct.pack(">iiii", 2051, 10**9, 28, 28),
         r"header declares 1000000000 images, more than MNIST's 70000 \(file is damaged"),
        ("labels", struct.pack(">iI", 2049, 2**32 - 1), r"header declares 4294967295 labels, more than"),
        ("labels", struct.pack(">ii", 2049, 70001), r"header declares 70001 labels, more than"),
        ("images", struct.pack(">iiii", 2051, 10, 28, 28) + bytes(7840),
         r"IDX body too long: header \(10, 28, 28\) says 7840 bytes, the file holds more \(file is damaged"),
    ],
    ids=["images-count", "labels-count", "labels-70001", "trailing-zeros"],
)
def test_idx_gzip_bomb_is_refused_before_inflating(tmp_path, kind, head, message):
    path = _gzip_stream(tmp_path / f"bomb-{kind}.gz", head, _BOMB_ZEROS)
    assert path.stat().st_size < _BOMB_ZEROS // 500
    info, peak = _peak_while(lambda: read_idx(path, kind))
    assert _one_line(info).startswith(f"bomb-{kind}.gz: ")
    assert info.match(message)
    assert peak < 4 << 20  # inflating it all would take 128 MB


def test_idx_largest_count_is_accepted(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(struct.pack(">ii", 2049, 70000) + bytes(range(10)) * 7000)
    assert read_idx(path, "labels").shape == (70000,)


def test_idx_verify_of_a_download_reads_a_bounded_amount(tmp_path):
    path = _gzip_stream(tmp_path / "t10k-labels.part", struct.pack(">ii", 2049, 10000), _BOMB_ZEROS)
    info, peak = _peak_while(lambda: datasets._verify_idx("t10k-labels-idx1-ubyte")(path))
    assert _one_line(info) == "t10k-labels-idx1-ubyte.gz: larger than any MNIST file (file is damaged; delete it and fetch again)"
    assert peak < 8 << 20  # inflating it all would take 128 MB


# ----------------------------------------------------------------------------------------
# Files that cannot be read
# ----------------------------------------------------------------------------------------


@pytest.fixture
def alarm():
    """Fail, rather than hang, if reading a FIFO blocks."""

    def expired(signum, frame):
        raise TimeoutError("reading blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 10)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _unreadable(tmp_path, case):
    """Make a dataset path of the given fault; return (path, text its message must hold)."""
    path = tmp_path / "mnist.pkl.gz"
    if case == "fifo":
        os.mkfifo(path)
        return path, "is a FIFO, not a regular file"
    if case == "io-error":  # a regular file whose read fails: /proc/self/mem at address 0
        path.symlink_to("/proc/self/mem")
        return path, "cannot read it (Input/output error)"
    if case == "name-too-long":
        path = tmp_path / ("x" * 300)
        return path, "cannot read it (File name too long)"
    if case == "not-a-folder":
        (tmp_path / "file").write_bytes(b"x")
        path = tmp_path / "file" / "mnist.pkl.gz"
        return path, "no such file or folder"
    if case == "broken-symlink":
        path.symlink_to(tmp_path / "absent")
        return path, "no such file or folder"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["fifo", "io-error", "name-too-long", "not-a-folder", "broken-symlink"])
def test_unreadable_pickle_is_one_line(tmp_path, alarm, case):
    path, reason = _unreadable(tmp_path, case)
    with pytest.raises(DatasetError) as info:
        load_arrays(locate(path, download=False))
    message = _one_line(info)
    assert message.startswith(str(path) + ": ") and reason in message


@pytest.mark.parametrize("case", ["fifo", "io-error", "folder"])
def test_unreadable_idx_file_is_one_line(tmp_path, mnist_dir, alarm, case):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).symlink_to(mnist_dir / name)
    member = folder / "t10k-labels-idx1-ubyte.gz"
    reason = {"fifo": "is a FIFO", "io-error": "cannot read it (Input/output error)", "folder": "is a folder"}[case]
    if case == "fifo":
        os.mkfifo(member)
    elif case == "io-error":
        member.symlink_to("/proc/self/mem")
    else:
        member.mkdir()
    with pytest.raises(DatasetError) as info:
        load_arrays(locate(folder, download=False))
    message = _one_line(info)
    assert message.startswith(str(member) + ": ") and reason in message
    with pytest.raises(DatasetError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_idx(member, "labels")


def test_locate_of_an_unusable_name_is_one_line(tmp_path):
    with pytest.raises(DatasetError) as info:
        locate("x" * 300, download=False)
    assert _one_line(info).endswith("cannot read it (File name too long); check the path and its permissions, or fetch the file again")


def test_permission_denied_is_one_line():
    # Root reads any file, so the loading runs in a child that gives up root first (as the
    # user "nobody") once it has imported everything it needs.
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        unreadable = folder / "mnist.pkl.gz"
        unreadable.write_bytes(b"x")
        unreadable.chmod(0)
        locked = folder / "locked"
        locked.mkdir(mode=0)
        code = (
            "import os, sys\n"
            "from deeplearning_tutorials.datasets import DatasetError, load_arrays\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534)\n"
            "    os.setuid(65534)\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        load_arrays(path)\n"
            "    except DatasetError as exc:\n"
            "        print(exc)\n"
        )
        paths = [unreadable, locked / "mnist.pkl.gz", locked]
        result = subprocess.run(
            [sys.executable, "-c", code, *map(str, paths)],
            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        advice = "cannot read it (Permission denied); check the path and its permissions, or fetch the file again"
        assert result.stdout.splitlines() == [
            f"{unreadable}: {advice}",
            f"{locked / 'mnist.pkl.gz'}: {advice}",
            f"{locked / 'train-images-idx3-ubyte'}: {advice}",
        ]
    finally:
        (folder / "locked").chmod(0o755)
        shutil.rmtree(folder)
