#!/usr/bin/env python
"""Seconds per training step: real input pipeline vs. a batch already in memory.

    python bench/train_speed.py [--ae ae_configs/cvpr/low] [--batch_size 8] [--steps 10]
        [--dataset '../shared/data/train/*']

Builds train.py's graph twice (same model, same optimizer): once fed by inputpipeline.py from image
files, once from a constant batch, and prints the mean step time of each after warm-up steps.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config_parser  # noqa: E402
import inputpipeline  # noqa: E402
import train  # noqa: E402
from tf_helpers import tf, create_session, default_data_format  # noqa: E402


def time_steps(ae_config, pc_config, make_input, steps, warmup):
    with tf.Graph().as_default():
        tf.set_random_seed(1234)
        x = make_input()
        g = train.TrainGraph(ae_config, pc_config, x, None, 1000, default_data_format())
        n_params = sum(int(np.prod(v.shape)) for v in tf.trainable_variables())
        with create_session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(warmup):
                sess.run(g.train_op)
            t0 = time.time()
            for _ in range(steps):
                sess.run(g.train_op)
            return (time.time() - t0) / steps, n_params


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ae', default='ae_configs/cvpr/low')
    p.add_argument('--pc', default='pc_configs/cvpr/res_shallow')
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--crop', type=int, default=160)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--dataset', default='../shared/data/train/*')
    p.add_argument('--config_override', '-co', action='append', default=[])
    flags = p.parse_args()
    ae_config = config_parser.apply_overrides(config_parser.parse(flags.ae)[0], flags.config_override + [
        'batch_size={}'.format(flags.batch_size), 'crop_size=({0}, {0})'.format(flags.crop)])
    pc_config = config_parser.parse(flags.pc)[0]
    ds = inputpipeline.resolve_dataset(flags.dataset)
    shape = (flags.batch_size, flags.crop, flags.crop, 3)
    batch = np.random.RandomState(0).uniform(0, 255, shape).astype(np.float32)

    t_pipe, n_params = time_steps(ae_config, pc_config, lambda: inputpipeline.input_batch(
        ds, ae_config.crop_size, flags.batch_size), flags.steps, flags.warmup)
    t_mem, _ = time_steps(ae_config, pc_config, lambda: tf.constant(batch), flags.steps, flags.warmup)
    print('model {} ({} trainable parameters), batch {} x {}x{}, data format {}, {} threads'.format(
        flags.ae, n_params, flags.batch_size, flags.crop, flags.crop, default_data_format(), os.cpu_count()))
    print('step with input pipeline: {:.3f} s'.format(t_pipe))
    print('step on in-memory batch:  {:.3f} s'.format(t_mem))
    print('pipeline overhead: {:+.1f}%'.format(100 * (t_pipe / t_mem - 1)))


if __name__ == '__main__':
    main()
