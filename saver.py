"""Checkpoints in `<log_dir>/ckpts/ckpt-<step>`, with the list of saved variable names.

Restoring takes the variables a checkpoint holds (minus skipped ones) and initializes the rest, so
checkpoints of other runs (e.g. the authors' released ones, or inference-only exports) load as well.
"""
import glob
import os
import pickle
import re

from tf_helpers import tf

CKPT_DIR_NAME = 'ckpts'
CKPT_PREFIX = 'ckpt'
VAR_NAMES_FILE = 'var_names.pkl'
_STEP_RE = re.compile(r'ckpt-(\d+)\.index$')


def ckpt_dir_of(log_dir_or_ckpt_dir):
    d = os.path.normpath(log_dir_or_ckpt_dir)
    return d if os.path.basename(d) == CKPT_DIR_NAME else os.path.join(d, CKPT_DIR_NAME)


def all_ckpt_steps(ckpt_dir):
    """Sorted steps of the checkpoints in ckpt_dir."""
    steps = (_STEP_RE.search(p) for p in glob.glob(os.path.join(glob.escape(ckpt_dir), CKPT_PREFIX + '-*.index')))
    return sorted(int(m.group(1)) for m in steps if m)


def ckpt_path(ckpt_dir, step):
    return os.path.join(ckpt_dir, '{}-{}'.format(CKPT_PREFIX, step))


def select_ckpt_step(ckpt_dir, restore_itr=-1):
    """The latest step, or with restore_itr >= 0 the latest step <= restore_itr."""
    steps = all_ckpt_steps(ckpt_dir)
    if restore_itr is not None and restore_itr >= 0:
        steps = [s for s in steps if s <= restore_itr]
    if not steps:
        raise ValueError('No checkpoint{} in {}'.format(
            '' if restore_itr is None or restore_itr < 0 else ' with step <= {}'.format(restore_itr), ckpt_dir))
    return steps[-1]


class Saver(object):
    def __init__(self, log_dir, var_list=None, max_to_keep=1, keep_checkpoint_every_n_hours=1.):
        self.ckpt_dir = ckpt_dir_of(log_dir)
        self.var_list = var_list if var_list is not None else tf.global_variables()
        self._saver = tf.train.Saver(var_list=self.var_list, max_to_keep=max_to_keep,
                                     keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                                     save_relative_paths=True)

    def save(self, sess, step):
        os.makedirs(self.ckpt_dir, exist_ok=True)
        names_path = os.path.join(self.ckpt_dir, VAR_NAMES_FILE)
        if not os.path.exists(names_path):
            with open(names_path, 'wb') as f:
                pickle.dump([v.op.name for v in self.var_list], f)
        return self._saver.save(sess, os.path.join(self.ckpt_dir, CKPT_PREFIX), global_step=step,
                                write_meta_graph=False)


def restore(sess, ckpt_file, skip_var_substrings=(), var_list=None):
    """Restores the variables of var_list (default: all global ones) that ckpt_file holds with the same
    shape, except those whose name contains one of skip_var_substrings; initializes all others.

    :return: (restored names, initialized names)
    """
    var_list = var_list if var_list is not None else tf.global_variables()
    available = dict(tf.train.list_variables(ckpt_file))
    to_restore, to_init = [], []
    for v in var_list:
        name = v.op.name
        skip = any(s and s in name for s in skip_var_substrings)
        if not skip and name in available and list(available[name]) == v.shape.as_list():
            to_restore.append(v)
        else:
            to_init.append(v)
    if to_restore:
        tf.train.Saver(var_list=to_restore).restore(sess, ckpt_file)
    if to_init:
        sess.run(tf.variables_initializer(to_init))
    return [v.op.name for v in to_restore], [v.op.name for v in to_init]
