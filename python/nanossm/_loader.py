"""Finds, probes and loads libnanossm on first use (never at import).

The library embeds a Go runtime, which brings three rules:
  * A Go runtime does not survive fork(): the library is loaded lazily, so forking before the
    first call is harmless; a child forked after it gets a clear RuntimeError instead of a hang.
  * Two Go runtimes in one process are unsupported: exactly one flavour is ever loaded.
  * The CUDA flavour links gorgonia.org/cu, whose init() calls cuInit and exits the whole process
    if that fails. So before loading it we call cuInit ourselves through ctypes (harmless when it
    fails) and load the CUDA flavour only when CUDA starts and sees a device; otherwise the
    CPU-only flavour, which loads anywhere.

NANOSSM_FLAVOUR=cpu|cuda|auto (default auto) forces a flavour; NANOSSM_LIB_DIR points at the
directory holding libnanossm.so / libnanossm_cpu.so (default: this package's _lib/).
"""
import ctypes
import os
import threading

_MAX_DIMS = 4


class Tensor(ctypes.Structure):
    """nanossm_tensor of include/nanossm.h."""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * _MAX_DIMS),
        ("strides", ctypes.c_int64 * _MAX_DIMS),
    ]


class ScanOptions(ctypes.Structure):
    """nanossm_scan_options of include/nanossm.h."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("initial_state", Tensor),
        ("final_state", Tensor),
        ("cu_seqlens", Tensor),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
        ("max_seqlen", ctypes.c_int64),
    ]


class BackwardOptions(ctypes.Structure):
    """nanossm_backward_options of include/nanossm.h."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("initial_state", Tensor),
        ("grad_final_state", Tensor),
        ("grad_initial_state", Tensor),
        ("cu_seqlens", Tensor),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
        ("max_seqlen", ctypes.c_int64),
    ]


SCAN_REVERSE = 1
STATUS_NAMES = {0: "OK", 1: "INVALID_ARGUMENT", 2: "UNSUPPORTED", 3: "CUDA", 4: "NO_CUDA",
                5: "INTERNAL"}

_lock = threading.Lock()
_lib = None
_flavour = None
_pid = None


def lib_dir():
    return os.environ.get("NANOSSM_LIB_DIR") or os.path.join(os.path.dirname(__file__), "_lib")


def cuda_probe():
    """(ok, why): whether cuInit succeeds in this process and sees at least one device."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return False, f"no CUDA driver (libcuda.so.1: {e})"
    rc = cuda.cuInit(0)
    if rc != 0:
        return False, f"cuInit failed with CUresult {rc} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
    n = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(n))
    if rc != 0 or n.value < 1:
        return False, "CUDA driver found but no device is visible"
    return True, f"{n.value} CUDA device(s)"


def _choose():
    want = os.environ.get("NANOSSM_FLAVOUR", "auto").lower()
    if want not in ("auto", "cpu", "cuda"):
        raise ValueError(f"NANOSSM_FLAVOUR: expected auto, cpu or cuda, got {want!r}")
    cuda_so = os.path.join(lib_dir(), "libnanossm.so")
    cpu_so = os.path.join(lib_dir(), "libnanossm_cpu.so")
    if want == "cpu":
        return "cpu", cpu_so, "forced by NANOSSM_FLAVOUR=cpu"
    ok, why = cuda_probe()
    if want == "cuda" and not ok:
        raise RuntimeError(f"nanossm: NANOSSM_FLAVOUR=cuda but CUDA cannot start here: {why}")
    if ok and os.path.exists(cuda_so):
        return "cuda", cuda_so, why
    if ok:
        why = f"{cuda_so} was not built"
    return "cpu", cpu_so, why


def _declare(lib):
    # descriptors are passed as addresses (_call.py packs them into one buffer per thread)
    T = O = ctypes.c_void_p
    sigs = {
        "nanossm_version": ([], ctypes.c_int32),
        "nanossm_status_string": ([ctypes.c_int32], ctypes.c_char_p),
        "nanossm_last_error": ([], ctypes.c_char_p),
        "nanossm_has_cuda": ([], ctypes.c_int32),
        "nanossm_runtime_stats": ([ctypes.POINTER(ctypes.c_int64)] * 2, ctypes.c_int32),
        "nanossm_scan_workspace_size": ([T, T, T, O, ctypes.c_int32, ctypes.POINTER(ctypes.c_int64)], ctypes.c_int32),
        "nanossm_scan": ([T, T, T, O, ctypes.c_int32, ctypes.c_void_p], ctypes.c_int32),
        "nanossm_scan_backward_workspace_size": ([T] * 6 + [O, ctypes.c_int32, ctypes.POINTER(ctypes.c_int64)], ctypes.c_int32),
        "nanossm_scan_backward": ([T] * 6 + [O, ctypes.c_int32, ctypes.c_void_p], ctypes.c_int32),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res


def lib():
    """The loaded library (loading it on first call)."""
    global _lib, _flavour, _pid
    if _lib is not None and _pid == os.getpid():
        return _lib
    with _lock:
        if _lib is not None:
            if _pid != os.getpid():
                raise RuntimeError(
                    "nanossm: this process was forked after nanossm loaded its library (which "
                    "holds a Go runtime that cannot survive fork()); use nanossm only in the parent, "
                    "or start children with the 'spawn' or 'forkserver' method")
            return _lib
        flavour, path, why = _choose()
        if not os.path.exists(path):
            raise RuntimeError(f"nanossm: {path} not found; build it with `make lib` ({why})")
        handle = ctypes.CDLL(path)
        _declare(handle)
        _lib, _flavour, _pid = handle, (flavour, why), os.getpid()
        return _lib


def runtime_stats():
    """(goroutines, Go heap bytes) of the loaded library's runtime: for leak checks."""
    g, h = ctypes.c_int64(0), ctypes.c_int64(0)
    check(lib().nanossm_runtime_stats(ctypes.byref(g), ctypes.byref(h)))
    return g.value, h.value


def flavour():
    """('cuda' | 'cpu', reason), loading the library if needed."""
    lib()
    return _flavour


def loaded():
    """Whether the library (and so the Go runtime) is loaded in this process."""
    return _lib is not None


class NanossmError(RuntimeError):
    """A failed library call; .status is the nanossm_status code."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def check(status):
    """Raise for a non-OK status: ValueError for bad arguments, NanossmError otherwise."""
    if status == 0:
        return
    L = lib()
    msg = (L.nanossm_last_error() or b"").decode(errors="replace")
    if status == 1:
        raise ValueError(msg)
    raise NanossmError(status, f"nanossm {STATUS_NAMES.get(status, status)}: {msg}")
