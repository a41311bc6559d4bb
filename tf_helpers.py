"""TensorFlow set-up shared by every module: a quiet import, graph mode, device-dependent data format.

Every module imports TensorFlow as ``from tf_helpers import tf``; that ``tf`` is ``tensorflow.compat.v1``
with v2 behaviour disabled, so the code reads like the original TF 1.x research code (placeholders,
variable scopes, ``get_variable``, ``Session``, ``Saver``).
"""
import contextlib
import os
import sys

# TF prints oneDNN / CUDA notices to fd 2 while importing, some of them before its log level applies.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@contextlib.contextmanager
def _quiet_fd2():
    """Redirect the process's stderr (fd 2) to /dev/null, for C++ code that ignores log levels."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. some embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_fd2():
    import tensorflow.compat.v1 as tf  # noqa: E402
    tf.disable_v2_behavior()
    tf.logging.set_verbosity(tf.logging.ERROR)
    _GPU_AVAILABLE = bool(tf.config.list_physical_devices('GPU'))

DATA_FORMAT_ENV = 'IMGCOMP_DATA_FORMAT'


def default_data_format():
    """'NCHW' on a GPU (the original's layout, faster there), 'NHWC' on CPU (TF's CPU convs want it).

    Override with the environment variable IMGCOMP_DATA_FORMAT=NCHW|NHWC. Kernels have the same shape
    in both layouts, so checkpoints do not depend on this choice.
    """
    forced = os.environ.get(DATA_FORMAT_ENV)
    if forced:
        forced = forced.upper()
        if forced not in ('NCHW', 'NHWC'):
            raise ValueError('{}={} must be NCHW or NHWC'.format(DATA_FORMAT_ENV, forced))
        return forced
    return 'NCHW' if _GPU_AVAILABLE else 'NHWC'


def channel_axis(data_format):
    return 1 if data_format == 'NCHW' else 3


def to_data_format(x_nchw, data_format):
    """Transposes an NCHW tensor to data_format."""
    return x_nchw if data_format == 'NCHW' else tf.transpose(x_nchw, (0, 2, 3, 1))


def to_nchw(x, data_format):
    """Transposes a tensor in data_format to NCHW."""
    return x if data_format == 'NCHW' else tf.transpose(x, (0, 3, 1, 2))


def create_session(graph=None, num_threads=None):
    """A session that grows GPU memory as needed and falls back to the CPU for ops without a GPU kernel.

    :param num_threads: CPU threads for TF's ops (None: one per core)
    """
    config = tf.ConfigProto(allow_soft_placement=True)
    if num_threads:
        config.intra_op_parallelism_threads = num_threads
        config.inter_op_parallelism_threads = num_threads
    config.gpu_options.allow_growth = True
    return tf.Session(graph=graph, config=config)
