"""The decoder's compiled layer step (fixed_point_kernel.c), built on first use with the system C compiler.

The wavefront decoder (fixed_point_pc.decode_waves) evaluates 4 layers at each of ~350 waves per Kodak image;
in numpy each layer is a handful of calls, and two threads gain little because those calls hold the GIL.
The C step does one layer of one wave part in one call, with the product left to BLAS (scipy's sgemm), and
ctypes releases the GIL while it runs, so the two parts of a wave use both cores: the symbol decoding of a
Kodak image takes ~0.6x the time of the numpy path (README, codec speed). The results are the numpy path's
bit for bit (the values are exact integers in float32, see fixed_point_pc); tests/test_fixed_point_pc.py
compares the two.

load() compiles the C source once per machine into a cache dir (~/.cache/cpm_kernels, or the temp dir),
named by a hash of the source and the flags, and returns None when it cannot (no compiler, no scipy BLAS, a
failed build): the decoder then uses numpy. CPM_KERNEL=0 in the environment turns the kernel off.
"""
import ctypes
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from arithmetic_coding import freqs as freqs_lib

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixed_point_kernel.c')
# Portable flags first (the cache may outlive the CPU it was built on): x86-64-v2 has SSE4.1's round
# instruction for floorf; other architectures get the compiler's default target.
_FLAG_SETS = (['-O3', '-march=x86-64-v2'], ['-O3'])
_STATE = {}


class Kernel(object):
    """ctypes bindings: layer(...) as cpm_layer in the C source, with pointers as ints; sgemm: BLAS's."""

    def __init__(self, lib, sgemm):
        P, I64, F32, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        self.layer = lib.cpm_layer
        self.layer.argtypes = [I64, P, P, INT, P, INT, P, P, INT, P, P, F32, F32, P, P, P]
        self.layer.restype = INT
        self.sgemm = sgemm
        self._freqs = lib.cpm_freqs
        self._freqs.argtypes = [I64, INT, P, INT, P, I64, I64, P]
        self._freqs.restype = INT

    @staticmethod
    def makes_tables_for(L, frac_bits):
        """Whether freqs() covers L symbols at frac_bits (the range of freqs_from_int_logits' fast path)."""
        return 1 <= L <= freqs_lib._FAST_MAX_L and 0 <= frac_bits <= freqs_lib._FAST_MAX_FRAC_BITS

    def freqs(self, logits, frac_bits):
        """arithmetic_coding.freqs_from_int_logits(logits, frac_bits) for int64 logits (n, L <= 7) and
        frac_bits <= 22 (makes_tables_for; ValueError outside): the same tables, in one call."""
        logits = np.ascontiguousarray(logits, np.int64)
        n, L = logits.shape
        if not self.makes_tables_for(L, frac_bits):
            raise ValueError('compiled tables take L <= {} and frac_bits <= {}, got {} and {}'.format(
                freqs_lib._FAST_MAX_L, freqs_lib._FAST_MAX_FRAC_BITS, L, frac_bits))
        out = np.empty((n, L), np.int64)
        self._freqs(n, L, logits.ctypes.data, frac_bits, freqs_lib.EXP_TABLE.ctypes.data,
                    len(freqs_lib.EXP_TABLE), freqs_lib.TOTAL, out.ctypes.data)
        return out


def load():
    """The Kernel, or None if it cannot be built or loaded here (the reason: last_error())."""
    if 'kernel' not in _STATE:
        try:
            _STATE['kernel'] = _load()
        except (OSError, ImportError, AttributeError, ValueError, subprocess.SubprocessError) as e:
            _STATE['kernel'], _STATE['error'] = None, '{}: {}'.format(type(e).__name__, e)
    return _STATE['kernel']


def last_error():
    return _STATE.get('error')


def _load():
    if os.environ.get('CPM_KERNEL', '1') == '0':
        raise ValueError('turned off (CPM_KERNEL=0)')
    sgemm = _sgemm_pointer()
    return Kernel(ctypes.CDLL(_build()), sgemm)


def _cython_blas():
    """scipy.linalg.cython_blas, without importing scipy.linalg if it has not been (~0.3 s, about the time of a
    Kodak image's symbol decoding): its extension module alone, registered under its name so that a later
    import of scipy.linalg uses it (~0.05 s)."""
    name = 'scipy.linalg.cython_blas'
    if name in sys.modules:
        return sys.modules[name]
    import scipy
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(os.path.dirname(scipy.__file__), 'linalg', 'cython_blas' + suffix)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
    from scipy.linalg import cython_blas
    return cython_blas


def _sgemm_pointer():
    """The address of BLAS's sgemm, from scipy's Cython BLAS capsule."""
    capsule = _cython_blas().__pyx_capi__['sgemm']
    get_name, get_pointer = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _cache_dir():
    for d in (os.path.join(os.path.expanduser('~'), '.cache', 'cpm_kernels'),
              os.path.join(tempfile.gettempdir(), 'cpm_kernels')):
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise OSError('no writable cache dir for the compiled kernel')


def _build():
    """Path of the shared library, compiled if the cache does not have it yet."""
    cc = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    if not cc:
        raise OSError('no C compiler (cc, gcc or clang) on PATH')
    with open(SOURCE, 'rb') as f:
        source = f.read()
    errors = []
    for flags in _FLAG_SETS:
        tag = hashlib.sha256(source + ' '.join([cc] + flags + [sys.platform]).encode()).hexdigest()[:16]
        path = os.path.join(_cache_dir(), 'fixed_point_kernel-{}.so'.format(tag))
        if os.path.exists(path):
            return path
        tmp = '{}.{}.tmp'.format(path, os.getpid())
        proc = subprocess.run([cc] + flags + ['-shared', '-fPIC', '-o', tmp, SOURCE, '-lm'],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            os.replace(tmp, path)  # atomic: processes building at once each get a whole file
            return path
        errors.append(' '.join(proc.stderr.split())[:300])
        if os.path.exists(tmp):
            os.remove(tmp)
    raise OSError('compiling {} failed: {}'.format(SOURCE, ' | '.join(errors)))
