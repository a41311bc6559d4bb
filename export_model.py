#!/usr/bin/env python
"""Exports a training log dir for shipping: the inference variables only (no optimizer slots).

    python export_model.py LOG_DIR OUT_ROOT [--ckpt_step N]

Writes `OUT_ROOT/<job id> <ae config> <pc config>/` (the log dir's name without a `RESTORE@...` suffix,
so that fine-tuned runs ship under a plain name) with the two config copies and `ckpts/ckpt-<step>` holding the
autoencoder, centers, context model and global_step (so that `train.py --restore` can continue from it,
with fresh optimizer state). val.py and codec.py take the result like any log dir.
"""
import argparse
import os
import shutil
import sys

import inference
import logdir_helpers
import saver as saver_lib
from tf_helpers import tf


def shipped_name(log_dir):
    """`<job id> <ae config> <pc config>` of a log dir, e.g. without the suffix a --restore run adds;
    other names are kept as they are."""
    try:
        ae_rel, pc_rel = logdir_helpers.config_rel_paths_from_log_dir(log_dir)
    except ValueError:
        return os.path.basename(os.path.normpath(log_dir))
    return ' '.join([logdir_helpers.log_date_from_log_dir(log_dir),
                     logdir_helpers.config_rel_to_dir_part(ae_rel), logdir_helpers.config_rel_to_dir_part(pc_rel)])


def export(log_dir, out_root, ckpt_step=None):
    model = inference.Model(log_dir, ckpt_step=ckpt_step)
    out_dir = os.path.join(out_root, shipped_name(log_dir))
    logdir_helpers.write_config_copies(out_dir, {inference.AE_CONFIG_COPY: model.ae_config,
                                                 inference.PC_CONFIG_COPY: model.pc_config})
    ckpt_dir = saver_lib.ckpt_dir_of(out_dir)
    if os.path.isdir(ckpt_dir):
        shutil.rmtree(ckpt_dir)
    with model.graph.as_default():
        step = tf.train.get_or_create_global_step()
        model.sess.run(tf.assign(step, model.step))
        saver_lib.Saver(out_dir, var_list=tf.global_variables()).save(model.sess, model.step)
    model.close()
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('log_dir')
    p.add_argument('out_root')
    p.add_argument('--ckpt_step', type=int, default=None, help='default: the latest checkpoint')
    flags = p.parse_args(argv)
    try:
        out_dir = export(flags.log_dir, flags.out_root, flags.ckpt_step)
    except (inference.ModelError, ValueError, OSError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs)
    print('Exported {} -> {} ({:.1f} MB)'.format(flags.log_dir, out_dir, size / 1e6))
    return 0


if __name__ == '__main__':
    sys.exit(main())
