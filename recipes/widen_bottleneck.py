#!/usr/bin/env python
"""Widens a trained model's bottleneck from C to k * C channels without changing what it reconstructs: the
start of `high` (C = 64) from `med` (C = 32) in recipes/shipped_models.py.

    python recipes/widen_bottleneck.py SRC_LOG_DIR DST_LOG_DIR --num_chan_bn 64

Starting `high` with the layers into and out of the bottleneck initialized anew (train.py
--restore_skip_vars to_bn,from_bn/weights) cost it its start: after 2.7 CPU hours it was still below `med` in
MS-SSIM at 1.6 times med's rate on the held-out photos (docs/training_log_cpu2_models.md). Widened, it starts
where med is and only has to learn what the new channels add.

The importance map (autoencoder.importance_mask) unmasks channel c where sigmoid(m) * C > c. Source channel c
goes to channel k * c of the wide bottleneck, where sigmoid(m) * k * C > k * c holds exactly where the
source's condition does; only the one partly masked channel at each position differs (clip(k * x) instead of
clip(x)). The k - 1 new channels after each source channel get fresh encoder weights (Glorot uniform, as
layers.conv2d) and zero decoder weights, so the decoder ignores them until training makes them useful.
Everything else (encoder and decoder trunks, centers, context model, global step) is copied; the optimizer
slots of the widened variables are left out, so train.py's restore starts them at zero.
"""
import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import config_parser  # noqa: E402
import logdir_helpers  # noqa: E402
import model_files  # noqa: E402
from tf_helpers import tf  # noqa: E402

TO_BN = 'autoencoder/encoder/to_bn/'
FROM_BN_WEIGHTS = 'autoencoder/decoder/from_bn/weights'
_BN_INIT = {'beta': 0., 'gamma': 1., 'moving_mean': 0., 'moving_variance': 1.}


def channel_map(num_chan_src, factor, heatmap=True):
    """Index in the wide to_bn output of each source to_bn output channel (heatmap channel 0 stays at 0)."""
    off = 1 if heatmap else 0
    return np.concatenate([np.arange(off), off + factor * np.arange(num_chan_src)]).astype(np.int64)


def _glorot_uniform(shape, rng):
    receptive = int(np.prod(shape[:-2]))
    limit = np.sqrt(6. / (receptive * (shape[-2] + shape[-1])))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def widen_variables(variables, factor, heatmap=True, seed=0):
    """{name: array} of a checkpoint -> {name: array} with a bottleneck `factor` times as wide.

    to_bn/weights: [k, k, n, C(+1)] -> [k, k, n, factor * C (+1)]; its batch norm likewise;
    from_bn/weights (transposed, [k, k, n, C]) -> [k, k, n, factor * C]. Slots of these are dropped.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError('the factor must be a positive integer, got {}'.format(factor))
    rng = np.random.RandomState(seed)
    w_to = variables[TO_BN + 'weights']
    num_src = w_to.shape[-1] - (1 if heatmap else 0)
    num_dst = factor * num_src + (1 if heatmap else 0)
    idx = channel_map(num_src, factor, heatmap)
    wide_to = TO_BN + 'weights'
    wide_bn = {TO_BN + 'BatchNorm/' + p for p in _BN_INIT}
    out = {}
    for name, value in variables.items():
        base = name.rsplit('/', 1)[0] if name.rsplit('/', 1)[-1].startswith('Adam') else name
        if base in (wide_to, FROM_BN_WEIGHTS) or base in wide_bn:
            if base != name:
                continue  # an optimizer slot of a widened variable: train.py starts it at zero
            if name == wide_to:
                new = _glorot_uniform(value.shape[:-1] + (num_dst,), rng)
                new[..., idx] = value
            elif name == FROM_BN_WEIGHTS:
                new = np.zeros(value.shape[:-1] + (factor * num_src,), value.dtype)
                new[..., factor * np.arange(num_src)] = value
            else:
                new = np.full(num_dst, _BN_INIT[name.rsplit('/', 1)[-1]], value.dtype)
                new[idx] = value
            out[name] = new
        else:
            out[name] = value
    return out


def write_checkpoint(variables, ckpt_dir, step):
    """Writes {name: array} as <ckpt_dir>/ckpt-<step> (names as given, so train.py's restore finds them)."""
    os.makedirs(ckpt_dir, exist_ok=True)
    with tf.Graph().as_default():
        var_list = {name: tf.Variable(value, name=name.replace('/', '_').replace(':', '_'))
                    for name, value in variables.items()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(var_list=var_list, save_relative_paths=True).save(
                sess, model_files.ckpt_path(ckpt_dir, step), write_meta_graph=False)


def read_variables(path):
    """{name: array} of every variable (optimizer slots included) of the checkpoint at path (ckpt-<step>)."""
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)}


def write_log_dir(dst_log_dir, variables, step, ae_config, pc_config):
    """Writes {name: array} as checkpoint `step` of the new log dir dst_log_dir, with the configs' copies; written
    aside and renamed, so that a crash leaves no half-written model behind."""
    tmp = dst_log_dir + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    write_checkpoint(variables, model_files.ckpt_dir_of(tmp), step)
    logdir_helpers.write_config_copies(tmp, {model_files.AE_CONFIG_COPY: ae_config,
                                             model_files.PC_CONFIG_COPY: pc_config})
    os.rename(tmp, dst_log_dir)


def widen(src_log_dir, dst_log_dir, num_chan_bn, seed=0):
    """Writes the latest checkpoint of src_log_dir widened to num_chan_bn channels into dst_log_dir, with the
    source's configs (num_chan_bn changed). Does nothing if dst_log_dir has a checkpoint. Returns it."""
    dst_ckpts = model_files.ckpt_dir_of(dst_log_dir)
    if os.path.isdir(dst_ckpts) and model_files.all_ckpt_steps(dst_ckpts):
        return dst_log_dir
    ae_config, pc_config = model_files.load_configs(src_log_dir)
    num_src = ae_config.num_chan_bn
    if num_chan_bn % num_src:
        raise ValueError('{} channels is not a multiple of the source\'s {}'.format(num_chan_bn, num_src))
    src_ckpts = model_files.ckpt_dir_of(src_log_dir)
    step = model_files.select_ckpt_step(src_ckpts)
    variables = read_variables(model_files.ckpt_path(src_ckpts, step))
    wide = widen_variables(variables, num_chan_bn // num_src, heatmap=bool(ae_config.heatmap), seed=seed)
    write_log_dir(dst_log_dir, wide, step,
                  config_parser.apply_overrides(ae_config, ['num_chan_bn={}'.format(num_chan_bn)]), pc_config)
    return dst_log_dir


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src_log_dir', help='log dir of the trained model (its latest checkpoint is widened)')
    p.add_argument('dst_log_dir', help='log dir to write (must not have a checkpoint yet)')
    p.add_argument('--num_chan_bn', type=int, required=True, help='channels of the wide bottleneck')
    p.add_argument('--seed', type=int, default=0, help='seed of the new channels\' encoder weights')
    flags = p.parse_args()
    try:
        widen(flags.src_log_dir, flags.dst_log_dir, flags.num_chan_bn, flags.seed)
    except (ValueError, model_files.ModelError) as e:
        sys.exit('Error: {}'.format(e))
    print('Wrote', flags.dst_log_dir)


if __name__ == '__main__':
    main()
