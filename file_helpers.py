"""Writing files atomically: the one writer for every output of the scripts (images, compressed files,
CSVs, JSON, configs, TFRecords).

A file is written under a temporary name in its own directory and renamed over the target when complete
(os.replace is atomic within a file system), so a reader, a crash or Ctrl-C never leaves a partial file
under the target's name: resuming scripts (val.py, other_codecs.py, make_records.py) take an existing file
as finished. The result gets the permissions of a newly created file (0666 minus the umask), not
mkstemp's 0600.
"""
import contextlib
import glob
import os
import tempfile

_TMP_SUFFIX = '.tmp'


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _temp_prefix(path):
    return '.' + os.path.basename(path) + '.'


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path` to write the file to (by any means, e.g. a TFRecordWriter);
    when the block ends without an exception the file becomes `path`, otherwise it is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=_TMP_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)


def remove_leftover_temp_files(path):
    """Removes the temporary files of writes to `path` that a killed process (SIGKILL, power loss) left
    behind; an exception or Ctrl-C removes its own. :return: the paths removed"""
    pattern = os.path.join(glob.escape(os.path.dirname(os.path.abspath(path))),
                           glob.escape(_temp_prefix(path)) + '*' + _TMP_SUFFIX)
    removed = glob.glob(pattern)
    for tmp in removed:
        os.unlink(tmp)
    return removed
