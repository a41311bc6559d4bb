"""Log directories named like the original's: `<root>/<MMDD_HHMM> <ae config> <pc config>`.

Config paths are stored relative to their config root with `/` -> `@` (e.g.
`0515_1103 cvpr@low cvpr@res_shallow`); the leading `MMDD_HHMM` is the job id that val.py and plotter.py
take. The minute is bumped until no directory in the root starts with the same id, under a file lock so
two runs starting together get different ids.
"""
import datetime
import fcntl
import glob
import os
import re

import file_helpers

_DATE_FMT = '%m%d_%H%M'
JOB_ID_RE = re.compile(r'\d{4}_\d{4}')  # MMDD_HHMM; .match: a name that starts with one


def config_rel_to_dir_part(rel_path):
    return rel_path.replace('/', '@')


def create_unique_log_dir(ae_rel, pc_rel, log_dir_root, suffix='', now=None):
    """Creates and returns `<log_dir_root>/<job id> <ae_rel> <pc_rel><suffix>` with a job id unused in root."""
    os.makedirs(log_dir_root, exist_ok=True)
    with open(os.path.join(log_dir_root, 'lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            existing = {log_date_from_log_dir(d) for d in os.listdir(log_dir_root)}
            stamp = (now or datetime.datetime.now()).replace(second=0, microsecond=0)
            while stamp.strftime(_DATE_FMT) in existing:
                stamp += datetime.timedelta(minutes=1)
            name = '{} {} {}{}'.format(stamp.strftime(_DATE_FMT), config_rel_to_dir_part(ae_rel),
                                       config_rel_to_dir_part(pc_rel), suffix)
            path = os.path.join(log_dir_root, name)
            os.makedirs(path)
            return path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_config_copies(log_dir, copies):
    """Writes {file name: Config} into a log dir: the resolved configs a log dir carries, which
    inference.Model reads back."""
    for name, config in copies.items():
        file_helpers.atomic_write_bytes(os.path.join(log_dir, name), config.to_text().encode())


def log_date_from_log_dir(log_dir):
    """The job id `MMDD_HHMM` of a log dir name (None if it has none)."""
    m = JOB_ID_RE.match(os.path.basename(os.path.normpath(log_dir)))
    return m.group(0) if m else None


def config_rel_paths_from_log_dir(log_dir):
    """(ae_rel, pc_rel) from a log dir name, e.g. ('cvpr/low', 'cvpr/res_shallow')."""
    parts = os.path.basename(os.path.normpath(log_dir)).split(' ')
    if len(parts) < 3 or not JOB_ID_RE.match(parts[0]):
        raise ValueError('Not a log dir name of the form "MMDD_HHMM AE_CONFIG PC_CONFIG": {}'.format(log_dir))
    return parts[1].replace('@', '/'), parts[2].replace('@', '/')


def find_log_dir(log_dir_root, job_id):
    """The one directory `<log_dir_root>/<job_id>*` that is a training log dir; ValueError otherwise."""
    matches = sorted(p for p in glob.glob(os.path.join(glob.escape(log_dir_root), glob.escape(job_id) + '*'))
                     if os.path.isdir(os.path.join(p, 'ckpts')))
    if len(matches) != 1:
        raise ValueError('Job id {!r} matches {} log dirs with checkpoints in {}{}'.format(
            job_id, len(matches), log_dir_root, (': ' + ', '.join(map(os.path.basename, matches)))
            if matches else ''))
    return matches[0]
