#!/usr/bin/env python
"""Exports a training log dir for shipping: the inference variables only (no optimizer slots), and the
model for ONNX Runtime, on which codec.py runs without TensorFlow.

    python export_model.py LOG_DIR OUT_ROOT [--ckpt_step N]
    python export_model.py --onnx_only MODEL_DIR

Writes `OUT_ROOT/<job id> <ae config> <pc config>/` (the log dir's name without a `RESTORE@...` suffix,
so that fine-tuned runs ship under a plain name) with the two config copies, `ckpts/ckpt-<step>` holding the
autoencoder, centers, context model and global_step (so that `train.py --restore` can continue from it,
with fresh optimizer state), and `onnx/` (onnx_export.py). val.py and codec.py take the result like any log
dir. --onnx_only writes `onnx/` into MODEL_DIR itself, from its latest checkpoint (e.g. after further training,
when codec.py says the export is older than the checkpoint).
"""
import argparse
import os
import shutil
import sys

import inference
import logdir_helpers
import model_files
import onnx_export
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


def export_onnx_only(model_dir):
    model = inference.Model(model_dir)
    try:
        return onnx_export.export(model)
    finally:
        model.close()


def export(log_dir, out_root, ckpt_step=None):
    model = inference.Model(log_dir, ckpt_step=ckpt_step)
    out_dir = os.path.join(out_root, shipped_name(log_dir))
    logdir_helpers.write_config_copies(out_dir, {model_files.AE_CONFIG_COPY: model.ae_config,
                                                 model_files.PC_CONFIG_COPY: model.pc_config})
    ckpt_dir = model_files.ckpt_dir_of(out_dir)
    if os.path.isdir(ckpt_dir):
        shutil.rmtree(ckpt_dir)
    with model.graph.as_default():
        step = tf.train.get_or_create_global_step()
        model.sess.run(tf.assign(step, model.step))
        saver_lib.Saver(out_dir, var_list=tf.global_variables()).save(model.sess, model.step)
    onnx_export.export(model, out_dir)
    model.close()
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('log_dir', help='training log dir (with --onnx_only: the model dir to write onnx/ into)')
    p.add_argument('out_root', nargs='?', help='where the exported model dir is created (not with --onnx_only)')
    p.add_argument('--ckpt_step', type=int, default=None, help='default: the latest checkpoint')
    p.add_argument('--onnx_only', action='store_true',
                   help='only (re)write LOG_DIR/onnx/ from its latest checkpoint')
    flags = p.parse_args(argv)
    if (flags.out_root is None) != flags.onnx_only:
        p.error('give OUT_ROOT, or --onnx_only without it')
    if flags.onnx_only and flags.ckpt_step is not None:
        p.error('--onnx_only exports the latest checkpoint (the one codec.py checks the export against)')
    try:
        if flags.onnx_only:
            out_dir = export_onnx_only(flags.log_dir)
            print('Exported {} for ONNX Runtime -> {}'.format(flags.log_dir, out_dir))
            return 0
        out_dir = export(flags.log_dir, flags.out_root, flags.ckpt_step)
    except (model_files.ModelError, ValueError, OSError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs)
    print('Exported {} -> {} ({:.1f} MB)'.format(flags.log_dir, out_dir, size / 1e6))
    return 0


if __name__ == '__main__':
    sys.exit(main())
