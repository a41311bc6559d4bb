"""Saving and restoring checkpoints `<log_dir>/ckpts/ckpt-<step>` (their paths: model_files.py).

Restoring takes the variables a checkpoint holds (minus skipped ones) and initializes the rest, so
checkpoints of other runs (e.g. the authors' released ones, or inference-only exports) load as well.
"""
import os

from model_files import CKPT_PREFIX, ckpt_dir_of
from tf_helpers import tf


class Saver(object):
    def __init__(self, log_dir, var_list=None, max_to_keep=1, keep_checkpoint_every_n_hours=1.):
        self.ckpt_dir = ckpt_dir_of(log_dir)
        self.var_list = var_list if var_list is not None else tf.global_variables()
        self._saver = tf.train.Saver(var_list=self.var_list, max_to_keep=max_to_keep,
                                     keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                                     save_relative_paths=True)

    def save(self, sess, step):
        os.makedirs(self.ckpt_dir, exist_ok=True)
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
