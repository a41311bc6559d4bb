#!/usr/bin/env python
"""Trains the autoencoder, the quantizer's centers and the context model jointly (paper Sec. 3.4).

    python train.py ae_configs/cvpr/low pc_configs/cvpr/res_shallow \
        --dataset_train '../shared/data/train/bsds500_t*,../shared/data/train/imagenet_*' \
        --dataset_test '../shared/data/train/bsds500_val_*'

Loss = distortion (K_ms_ssim * (1 - MS-SSIM) for the paper's configs) + beta * max(H_soft - H_target, 0)
+ L2 regularization. Writes `<log_dir_root>/<MMDD_HHMM> <ae config> <pc config>/` with copies of both
resolved configs, TensorBoard events and checkpoints in `ckpts/`.

Several GPUs or machines (tf.distribute): --strategy mirrored | multi_worker, see docs/distributed_training.md.

Environment variables (as in the original): NUM_CROPS_PER_IMG (default 1: crops per training image; a batch
holds batch_size // NUM_CROPS_PER_IMG images, and an epoch of the LR schedule that many fewer steps),
NUM_PREPROCESS_THREADS (default 4: images decoded and cropped in parallel), RECORDS_ROOT (default data: where
imgnet_train / imgnet_test are).
"""
import argparse
import os
import signal
import sys
import time

import numpy as np

import autoencoder
import config_parser
import distribute
import inputpipeline
import logdir_helpers
import model_files
import model_graph
import probclass
import rd_curves
import saver as saver_lib
import training_helpers
from tf_helpers import tf, create_session, default_data_format

GRAPH_SEED = 1234


class TrainingError(Exception):
    """A problem that ends training with a message instead of a traceback."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('autoencoder_config_path', help='e.g. ae_configs/cvpr/low')
    p.add_argument('probclass_config_path', help='e.g. pc_configs/cvpr/res_shallow')
    p.add_argument('--dataset_train', '-dtrain', default='imgnet_train',
                   help='glob of training images (.png/.jpg/.jpeg; several: comma-separated), a directory, or '
                        'imgnet_train (TFRecords in $RECORDS_ROOT/train). Default: %(default)s')
    p.add_argument('--dataset_test', '-dtest', default='imgnet_test',
                   help='like --dataset_train; imgnet_test = $RECORDS_ROOT/val. Default: %(default)s')
    p.add_argument('--dataset_codec_distance', '-dcodec', default='testset',
                   help='log the test batch\'s distance to the classical codecs that other_codecs.py measured on '
                        'this dataset (test/distance_<codec>_ms-ssim and _psnr; the original: BPG only); curves '
                        'are read from --other_codecs_root. Default: %(default)s')
    p.add_argument('--other_codecs_root', default=None,
                   help='default: $OTHER_CODECS_ROOT, else other_codecs')
    p.add_argument('--log_dir_root', '-o', default='logs', help='Default: %(default)s')
    p.add_argument('--log_interval_train', '-ltrain', type=int, default=100,
                   help='steps between train log lines and summaries. Default: %(default)s')
    p.add_argument('--log_interval_save', '-lsave', type=int, default=1000,
                   help='steps between checkpoints. Default: %(default)s')
    p.add_argument('--log_interval_test', '-ltest', type=int, default=1000,
                   help='steps between evaluations of a test batch; -1 disables. Default: %(default)s')
    p.add_argument('--temporary', '-t', action='store_true', help='log into <log_dir_root>_TMP')
    p.add_argument('--restore', '-r', metavar='LOG_DIR', help='continue from the checkpoint of a log dir '
                   '(or its ckpts/ dir): same step, LR schedule where it was')
    p.add_argument('--restore_itr', '-i', type=int, default=-1,
                   help='with --restore: latest checkpoint with step <= this (-1: latest)')
    p.add_argument('--restore_continue', action='store_true',
                   help='with --restore: keep writing into the restored log dir')
    p.add_argument('--restore_skip_vars', default='',
                   help='with --restore: comma-separated substrings; matching variables are re-initialized')
    p.add_argument('--from_identity', metavar='LOG_DIR',
                   help='initialize from a log dir, skipping global_step and optimizer slots (a fresh run)')
    p.add_argument('--ckpt_interval', type=float, default=1.,
                   help='hours between checkpoints that are kept permanently. Default: %(default)s')
    p.add_argument('--max_steps', type=int, default=None, help='stop after this global step')
    p.add_argument('--max_cpu_hours', type=float, default=None,
                   help='stop (saving a checkpoint) once this process has used this much CPU time, all threads '
                        'together (2 cores busy for 1 h = 2 CPU hours): a compute budget that other load on '
                        'the machine does not shrink, e.g. for pilots of several configs at equal cost')
    p.add_argument('--config_override', '-co', action='append', default=[], metavar='KEY=VALUE',
                   help='override an autoencoder config key, e.g. batch_size=8 (repeatable)')
    p.add_argument('--pc_config_override', '-pco', action='append', default=[], metavar='KEY=VALUE',
                   help='override a context-model config key, e.g. arch_param__k=16 (repeatable)')
    p.add_argument('--data_format', choices=['NCHW', 'NHWC'], default=None,
                   help='force the conv data format (default: NCHW on GPU, NHWC on CPU)')
    p.add_argument('--seed', type=int, default=GRAPH_SEED, help='graph-level random seed')
    p.add_argument('--num_threads', type=int, default=None,
                   help='CPU threads for TensorFlow (default: one per core); e.g. 1 per run when '
                        'several runs share a machine')
    distribute.add_arguments(p)
    return p.parse_args(argv)


# Configs and log dir ----------------------------------------------------------------------------------

def load_configs(flags):
    ae_config, ae_rel = config_parser.parse(flags.autoencoder_config_path)
    pc_config, pc_rel = config_parser.parse(flags.probclass_config_path)
    ae_config = config_parser.apply_overrides(ae_config, flags.config_override)
    pc_config = config_parser.apply_overrides(pc_config, flags.pc_config_override)
    autoencoder.get_network_cls(ae_config)
    probclass.get_network_cls(pc_config)
    if ae_config.H_target is None:
        raise TrainingError('{}: H_target is None; the root config is not trainable, use e.g. '
                            'ae_configs/cvpr/low'.format(flags.autoencoder_config_path))
    return ae_config, ae_rel, pc_config, pc_rel


def make_log_dir(flags, ae_rel, pc_rel):
    log_dir_root = flags.log_dir_root + ('_TMP' if flags.temporary else '')
    if flags.restore and flags.restore_continue:
        return os.path.dirname(model_files.ckpt_dir_of(flags.restore))
    suffix = ''
    if flags.restore:
        restored_log_dir = os.path.dirname(model_files.ckpt_dir_of(flags.restore))
        suffix = ' RESTORE@{}@{}'.format(os.path.dirname(os.path.abspath(restored_log_dir)).strip('/').replace(
            '/', '@'), logdir_helpers.log_date_from_log_dir(restored_log_dir))
    return logdir_helpers.create_unique_log_dir(ae_rel, pc_rel, log_dir_root, suffix)


# Loop ----------------------------------------------------------------------------------------------

class _StopRequest(object):
    """Turns SIGINT/SIGTERM into a flag so that the loop can save a checkpoint before exiting."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame):
        self.signal = signum


def restore_or_init(sess, flags, dist=None, graph=None):
    """:return: a description of what was restored (None for a fresh start)"""
    source = flags.restore or flags.from_identity
    if not source:
        if dist is None:
            sess.run(tf.global_variables_initializer())
        else:
            dist.initialize(sess)
        return None
    if dist is not None and not dist.is_chief:
        # only the chief reads the checkpoint (it need not be visible here); this worker takes its values
        dist.restore(sess, graph, None, ())
        return 'Restored'
    ckpt_dir = model_files.ckpt_dir_of(source)
    step = model_files.select_ckpt_step(ckpt_dir, flags.restore_itr if flags.restore else -1)
    skip = [s.strip() for s in flags.restore_skip_vars.split(',') if s.strip()]
    if flags.from_identity:
        skip += ['global_step', 'Adam', 'Opt_']
    if dist is None:
        restored, initialized = saver_lib.restore(sess, model_files.ckpt_path(ckpt_dir, step), skip)
    else:
        restored, initialized = dist.restore(sess, graph, model_files.ckpt_path(ckpt_dir, step), skip)
    print('Restored {} variables from {} (step {}); initialized {}.'.format(
        len(restored), ckpt_dir, step, len(initialized)))
    return 'Restored'


def _cpu_hours():
    """CPU time of this process so far (user + system, all threads), in hours."""
    t = os.times()
    return (t.user + t.system) / 3600.


def _run_or_nan(run, fetches, itr, feed_dict=None):
    """run(fetches) (sess.run), except that a summary op refusing NaN values (diverged weights) gives
    {'itr': itr, 'loss': nan} instead of an exception."""
    try:
        return run(fetches) if feed_dict is None else run(fetches, feed_dict)
    except tf.errors.InvalidArgumentError as e:
        if 'nan' not in e.message.lower():
            raise
        return {'itr': itr, 'loss': float('nan')}


def _describe_ckpt(step, saver):
    return 'step {} in {}'.format(step, saver.ckpt_dir) if step is not None else 'none (no checkpoint was written yet)'


def _test_point(r):
    return {'bpp': float(r['bpp']), 'ms-ssim': float(r['ms_ssim']), 'psnr': float(r['psnr'])}


def _fmt_test(itr, r, distances):
    centers = np.array2string(np.asarray(r['centers']), precision=3, separator=', ')
    # d_<codec>: MS-SSIM above the codec at this bpp (the original printed d_BPG)
    d = ''.join(', d_{}={:.4f}'.format(tag.split('/distance_')[1][:-len('_ms-ssim')], v)
                for tag, v in sorted(distances.items()) if tag.endswith('_ms-ssim'))
    return '{}: test ms_ssim={:.4f}, psnr={:.2f}, bpp={:.4f}{}, centers={}'.format(
        itr, r['ms_ssim'], r['psnr'], r['bpp'], d, centers)


def train(flags):
    """Builds the graph in a fresh tf.Graph and trains. :return: the log dir (None on a worker that is not
    the chief of a multi-worker run)"""
    # before anything initializes TensorFlow's devices (--cpu_replicas)
    dist = distribute.from_flags(flags)
    with tf.Graph().as_default(), _StopRequest() as stop:
        return _train(flags, stop, dist)


def _train(flags, stop, dist=None):
    ae_config, ae_rel, pc_config, pc_rel = load_configs(flags)
    env = inputpipeline.env_settings()  # NUM_CROPS_PER_IMG, NUM_PREPROCESS_THREADS
    data_format = flags.data_format or default_data_format()
    ds_train = inputpipeline.resolve_dataset(flags.dataset_train)
    ds_test = inputpipeline.resolve_dataset(flags.dataset_test) if flags.log_interval_test > 0 else None
    itr_per_epoch = inputpipeline.iterations_per_epoch(ds_train, ae_config.batch_size, env.num_crops_per_img)
    chief = dist is None or dist.is_chief
    if not chief:
        ds_test = None  # the chief evaluates the test batch

    tf.set_random_seed(flags.seed)
    if dist is None:
        x_train = inputpipeline.input_batch(ds_train, ae_config.crop_size, ae_config.batch_size, shuffle=True,
                                            num_crops_per_img=env.num_crops_per_img,
                                            num_parallel_calls=env.num_preprocess_threads, name='train')
    else:
        print(dist.describe(), flush=True)
        with dist.input_device():
            x_train = inputpipeline.input_batch(
                ds_train, ae_config.crop_size, dist.worker_batch_size(ae_config.batch_size, env.num_crops_per_img),
                shuffle=True, num_crops_per_img=env.num_crops_per_img,
                num_parallel_calls=env.num_preprocess_threads, name='train', shard=dist.shard())
    # As in the original: files in sorted order, no shuffling, crops and flips seeded with 666 and one crop
    # per image, so that every run is evaluated on the same sequence of test batches.
    x_test = (inputpipeline.input_batch(ds_test, ae_config.crop_size, ae_config.batch_size, shuffle=False,
                                        seed=inputpipeline.TEST_SEED, num_crops_per_img=1,
                                        num_parallel_calls=env.num_preprocess_threads, name='test')
              if ds_test else None)
    if dist is None:
        g = model_graph.TrainGraph(ae_config, pc_config, x_train, x_test, itr_per_epoch, data_format)
    else:
        g = distribute.DistributedTrainGraph(dist, ae_config, pc_config, x_train, x_test, itr_per_epoch,
                                             data_format)

    if chief:
        log_dir = make_log_dir(flags, ae_rel, pc_rel)
        logdir_helpers.write_config_copies(log_dir, {model_files.AE_CONFIG_COPY: ae_config,
                                                     model_files.PC_CONFIG_COPY: pc_config})
        crops = '' if env.num_crops_per_img == 1 else ' = {} images x {} crops'.format(
            ae_config.batch_size // env.num_crops_per_img, env.num_crops_per_img)
        replicas = '' if dist is None else ' = {} replicas x {}'.format(
            dist.num_replicas, ae_config.batch_size // dist.num_replicas)
        print('Log dir: {}\n{} training images ({} per epoch at batch {}{}{}), data format {}'.format(
            log_dir, ds_train.num_images, itr_per_epoch, ae_config.batch_size, crops, replicas, data_format))
        codec_distances = (rd_curves.load_codec_distances(
            flags.other_codecs_root or rd_curves.default_other_codecs_root(), flags.dataset_codec_distance)
            if ds_test else {})
        writer = tf.summary.FileWriter(log_dir, graph=tf.get_default_graph())
        saver = saver_lib.Saver(log_dir, keep_checkpoint_every_n_hours=flags.ckpt_interval)
        job_id = logdir_helpers.log_date_from_log_dir(log_dir)
    else:
        log_dir = writer = saver = None
        print('Worker {} of {}: training; the chief writes the log dir and checkpoints'.format(
            dist.worker_index, dist.num_workers), flush=True)

    session = create_session(num_threads=flags.num_threads) if dist is None else dist.session(flags.num_threads)
    # multi-worker: with the worker timeout, and peer failures as clear errors
    run = session.run if dist is None else (lambda *args: dist.run(session, *args))
    with session as sess:
        restored = restore_or_init(sess, flags, dist, g)
        itr = run(g.global_step)
        lr_ae, lr_pc = run([g.lr_ae, g.lr_pc])
        if chief:
            print(training_helpers.describe_schedule('autoencoder', ae_config, itr_per_epoch, lr_ae))
            print(training_helpers.describe_schedule('context model', pc_config, itr_per_epoch, lr_pc))
        if flags.max_steps is not None and itr >= flags.max_steps:
            print('Already at step {} >= --max_steps {}'.format(itr, flags.max_steps))
            return log_dir
        last_saved = itr if restored else None
        step_times = []
        fetches = {'itr': g.step_after_train, 'loss': g.total_loss}
        if dist is not None:
            # a stop request of any worker comes back to all of them with this step's losses
            fetches['stop'] = g.stop_any
        log_fetches = {'summary': g.train_summaries, 'ms_ssim': g.dist_train.ms_ssim, 'bpp': g.bpp_train,
                       'H_real': g.rate.H_real}
        while True:
            want_log = chief and (restored is not None or (itr + 1) % flags.log_interval_train == 0)
            out_of_time = flags.max_cpu_hours is not None and _cpu_hours() >= flags.max_cpu_hours
            feed = None if dist is None else {g.stop_request: 1. if stop.signal or out_of_time else 0.}
            t0 = time.time()
            r = _run_or_nan(run, dict(fetches, **(log_fetches if want_log else {})), itr + 1, feed)
            step_times.append(time.time() - t0)
            itr = r['itr']
            if not np.isfinite(r['loss']):
                raise TrainingError('Loss is {} at step {}; stopping. The last good checkpoint is {}'.format(
                    r['loss'], itr, _describe_ckpt(last_saved, saver) if chief else 'named by the chief'))
            # several workers all stop at the step that carried a request (one process stops at once, as before)
            stopping = r['stop'] if dist is not None and dist.multi_worker else bool(stop.signal or out_of_time)
            if want_log:
                writer.add_summary(r['summary'], itr)
                imgs_per_s = ae_config.batch_size / np.mean(step_times)
                print('{}: loss={:.3f}, ms_ssim={:.4f}, bpp={:.4f}, H_real={:.4f} (img/s: {:.1f}, CPU {:.3f} h) {}{}'
                      .format(itr, r['loss'], r['ms_ssim'], r['bpp'], r['H_real'], imgs_per_s, _cpu_hours(), job_id,
                              ' ' + restored if restored else ''), flush=True)
                step_times = []
            done = flags.max_steps is not None and itr >= flags.max_steps
            if not chief:
                restored = None
                if stopping or done:
                    print('Worker {}: {} at step {}'.format(
                        dist.worker_index, 'stopped by a signal' if stopping else 'reached --max_steps', itr))
                    break
                continue
            if g.test_fetches is not None and (itr % flags.log_interval_test == 0 or restored or done):
                tr = _run_or_nan(run, dict(g.test_fetches, summary=g.test_summaries), itr)
                if 'summary' not in tr:
                    raise TrainingError('The test batch gives NaN at step {} (the weights diverged); '
                                        'stopping. The last good checkpoint is {}'.format(
                                            itr, _describe_ckpt(last_saved, saver)))
                writer.add_summary(tr['summary'], itr)
                distances, _ = rd_curves.distance_scalars('test', _test_point(tr), codec_distances)
                writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v)
                                                     for k, v in distances.items()]), itr)
                print(_fmt_test(itr, tr, distances), flush=True)
            restored = None
            if itr % flags.log_interval_save == 0 or done or stopping:
                saver.save(sess, itr)
                last_saved = itr
            if stopping:
                print('{}: saved checkpoint at step {} in {} (CPU {:.3f} h)'.format(
                    'Got signal {}'.format(stop.signal) if stop.signal else
                    'Used --max_cpu_hours {:g}'.format(flags.max_cpu_hours) if out_of_time else
                    'Another worker got SIGINT/SIGTERM', itr, saver.ckpt_dir, _cpu_hours()))
                break
            if done:
                print('Reached --max_steps {}: saved checkpoint in {}'.format(flags.max_steps, saver.ckpt_dir))
                break
        if dist is not None:
            # equal on all workers when they stayed in sync (compare the workers' last lines)
            fingerprint, differ = dist.fingerprint(sess)
            print('Worker {}: variables fingerprint {} at step {}{}'.format(
                dist.worker_index, fingerprint, itr, '; copies on this worker differ: ' + ', '.join(differ[:5])
                if differ else ''), flush=True)
    if writer is not None:
        writer.close()
    return log_dir


def main(argv=None):
    flags = parse_args(argv)
    try:
        train(flags)
    except (TrainingError, config_parser.ConfigError, inputpipeline.DatasetError, inputpipeline.SettingsError,
            distribute.DistributionError, ValueError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
