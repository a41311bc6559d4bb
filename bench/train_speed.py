#!/usr/bin/env python
"""Seconds per training step: real input pipeline vs. a batch already in memory; or one device vs. the
distributed path.

    python bench/train_speed.py [--ae ae_configs/cvpr/low] [--batch_size 8] [--steps 10]
        [--dataset '../shared/data/train/*']
    python bench/train_speed.py --strategy mirrored --cpu_replicas 2 [--rounds 5] [--steps 5]

Builds train.py's graph twice (same model, same optimizer): once fed by inputpipeline.py from image
files, once from a constant batch, and prints the mean step time of each after warm-up steps.

With --strategy mirrored both graphs take the same in-memory global batch, one on a single device, one
replicated by MirroredStrategy (with --cpu_replicas K: over K logical CPU devices, which share the same cores,
so no speed-up is possible and the difference is the cost of the distributed path: per-replica graphs,
all-reduces, the per-step reductions of train.py). Timings alternate between the two in --rounds rounds and
the medians are printed, so that load from other processes hits both alike.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config_parser  # noqa: E402
import distribute  # noqa: E402
import inputpipeline  # noqa: E402
import model_graph  # noqa: E402
from tf_helpers import tf, create_session, default_data_format  # noqa: E402


def time_steps(ae_config, pc_config, make_input, steps, warmup):
    with tf.Graph().as_default():
        tf.set_random_seed(1234)
        x = make_input()
        g = model_graph.TrainGraph(ae_config, pc_config, x, None, 1000, default_data_format())
        n_params = sum(int(np.prod(v.shape)) for v in tf.trainable_variables())
        with create_session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(warmup):
                sess.run(g.train_op)
            t0 = time.time()
            for _ in range(steps):
                sess.run(g.train_op)
            return (time.time() - t0) / steps, n_params


class _Stepper(object):
    """A training graph in its own tf.Graph and session, stepped with the fetches train.py uses."""

    def __init__(self, ae_config, pc_config, batch, dist=None):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(1234)
            if dist is None:
                g = model_graph.TrainGraph(ae_config, pc_config, tf.constant(batch), None, 1000, default_data_format())
                self.sess = create_session(self.graph)
                self.fetches, self.feed = {'itr': g.step_after_train, 'loss': g.total_loss}, None
            else:
                with dist.input_device():
                    x = tf.constant(batch)
                g = distribute.DistributedTrainGraph(dist, ae_config, pc_config, x, None, 1000,
                                                     default_data_format())
                self.sess = dist.session()
                self.fetches = {'itr': g.step_after_train, 'loss': g.total_loss, 'stop': g.stop_any}
                self.feed = {g.stop_request: 0.}
            self.sess.run(tf.global_variables_initializer())

    def seconds_per_step(self, steps):
        t0 = time.time()
        for _ in range(steps):
            self.sess.run(self.fetches, self.feed)
        return (time.time() - t0) / max(steps, 1)


def compare_distributed(flags, ae_config, pc_config, batch, dist):
    single = _Stepper(ae_config, pc_config, batch)
    replicated = _Stepper(ae_config, pc_config, batch, dist)
    for stepper in (single, replicated):
        stepper.seconds_per_step(flags.warmup)
    times = {'single': [], 'distributed': []}
    for r in range(flags.rounds):
        order = [('single', single), ('distributed', replicated)]
        for name, stepper in (order if r % 2 == 0 else order[::-1]):
            times[name].append(stepper.seconds_per_step(flags.steps))
    t_single, t_dist = np.median(times['single']), np.median(times['distributed'])
    print('model {}, global batch {} x {}x{}, data format {}, {} cores, load average {:.1f} (1 min) at the end'.format(
        flags.ae, flags.batch_size, flags.crop, flags.crop, default_data_format(), os.cpu_count(),
        os.getloadavg()[0]))
    print('one device:          {:.3f} s/step (median of {} rounds of {} steps; all: {})'.format(
        t_single, flags.rounds, flags.steps, ', '.join('{:.3f}'.format(t) for t in times['single'])))
    print('{}: {:.3f} s/step (all: {})'.format(dist.describe(), t_dist,
                                              ', '.join('{:.3f}'.format(t) for t in times['distributed'])))
    print('distributed path overhead: {:+.1f}%'.format(100 * (t_dist / t_single - 1)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ae', default='ae_configs/cvpr/low')
    p.add_argument('--pc', default='pc_configs/cvpr/res_shallow')
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--crop', type=int, default=160)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--rounds', type=int, default=5, help='with --strategy: alternating timing rounds')
    p.add_argument('--dataset', default='../shared/data/train/*')
    p.add_argument('--config_override', '-co', action='append', default=[])
    p.add_argument('--strategy', choices=['mirrored'], default=None,
                   help='time the distributed path against one device on an in-memory batch')
    p.add_argument('--cpu_replicas', type=int, default=None, metavar='K')
    flags = p.parse_args()
    dist = None
    if flags.strategy:
        # before TensorFlow initializes its devices
        dist = distribute.from_flags(argparse.Namespace(strategy=flags.strategy, cpu_replicas=flags.cpu_replicas))
    ae_config = config_parser.apply_overrides(config_parser.parse(flags.ae)[0], flags.config_override + [
        'batch_size={}'.format(flags.batch_size), 'crop_size=({0}, {0})'.format(flags.crop)])
    pc_config = config_parser.parse(flags.pc)[0]
    shape = (flags.batch_size, flags.crop, flags.crop, 3)
    batch = np.random.RandomState(0).uniform(0, 255, shape).astype(np.float32)
    if dist is not None:
        dist.worker_batch_size(flags.batch_size)  # refuses a batch that does not divide
        compare_distributed(flags, ae_config, pc_config, batch, dist)
        return
    ds = inputpipeline.resolve_dataset(flags.dataset)

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
