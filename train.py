#!/usr/bin/env python
"""Trains the autoencoder, the quantizer's centers and the context model jointly (paper Sec. 3.4).

    python train.py ae_configs/cvpr/low pc_configs/cvpr/res_shallow \
        --dataset_train '../shared/data/train/*' --dataset_test '../shared/data/train/bsds500_val_*'

Loss = distortion (K_ms_ssim * (1 - MS-SSIM) for the paper's configs) + beta * max(H_soft - H_target, 0)
+ L2 regularization. Writes `<log_dir_root>/<MMDD_HHMM> <ae config> <pc config>/` with copies of both
resolved configs, TensorBoard events and checkpoints in `ckpts/`.

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
import bits
import config_parser
import inputpipeline
from inference import AE_CONFIG_COPY, PC_CONFIG_COPY  # where val.py and codec.py look for them
import logdir_helpers
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
                   help='glob of training images (.png/.jpg/.jpeg), a directory, or imgnet_train '
                        '(TFRecords in $RECORDS_ROOT/train). Default: %(default)s')
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
        return os.path.dirname(saver_lib.ckpt_dir_of(flags.restore))
    suffix = ''
    if flags.restore:
        restored_log_dir = os.path.dirname(saver_lib.ckpt_dir_of(flags.restore))
        suffix = ' RESTORE@{}@{}'.format(os.path.dirname(os.path.abspath(restored_log_dir)).strip('/').replace(
            '/', '@'), logdir_helpers.log_date_from_log_dir(restored_log_dir))
    return logdir_helpers.create_unique_log_dir(ae_rel, pc_rel, log_dir_root, suffix)


def save_config_copies(log_dir, ae_config, pc_config):
    for name, config in ((AE_CONFIG_COPY, ae_config), (PC_CONFIG_COPY, pc_config)):
        path = os.path.join(log_dir, name)
        with open(path + '.tmp', 'w') as f:
            f.write(config.to_text())
        os.replace(path + '.tmp', path)


# Graph ---------------------------------------------------------------------------------------------

class TrainGraph(object):
    """The train branch (batch statistics, qbar) and the test branch (moving averages, qhard)."""

    def __init__(self, ae_config, pc_config, x_train, x_test, iterations_per_epoch, data_format):
        self.ae = autoencoder.get_network_cls(ae_config)(ae_config, data_format)
        self.pc = probclass.get_network_cls(pc_config)(pc_config, ae_config.num_centers)
        self.global_step = tf.train.get_or_create_global_step()

        enc = self.ae.encode(x_train, is_training=True)
        x_out = self.ae.decode(enc.qbar, is_training=True)
        pad_value = self.pc.auto_pad_value(self.ae)
        # the context model learns from the quantized values but sends no gradient into the encoder
        bc = self.pc.bitcost(tf.stop_gradient(enc.qbar), enc.symbols, pad_value)
        self.bpp_train = bits.bitcost_to_bpp(bc, x_train)
        self.rate = training_helpers.rate_loss(bc, enc.heatmap, ae_config)
        self.dist_train = training_helpers.distortions(x_train, x_out, ae_config, is_training=True)
        self.reg_enc_dec = self.ae.encoder_regularization_loss() + self.ae.decoder_regularization_loss()
        self.reg_pc = tf.losses.get_regularization_loss(scope=probclass.SCOPE)
        self.total_loss = self.dist_train.d_loss_scaled + self.rate.pc_loss + self.reg_enc_dec + self.reg_pc

        pc_vars = self.pc.variables()
        ae_vars = [v for v in tf.trainable_variables() if v not in set(pc_vars)]
        self.lr_ae = training_helpers.learning_rate(ae_config, self.global_step, iterations_per_epoch)
        self.lr_pc = training_helpers.learning_rate(pc_config, self.global_step, iterations_per_epoch)
        self.train_op = training_helpers.create_train_op(self.total_loss, ae_vars, pc_vars, self.lr_ae,
                                                         self.lr_pc, ae_config, pc_config, self.global_step)
        # the step count after this step's update (fetching global_step next to the train op may give
        # either value)
        with tf.control_dependencies([self.train_op]):
            self.step_after_train = tf.identity(self.global_step.read_value())
        self.train_summaries = self._train_summaries()
        self.test_fetches, self.test_summaries = self._test_branch(x_test, ae_config) \
            if x_test is not None else (None, None)

    def _train_summaries(self):
        s = tf.summary.scalar
        d, r = self.dist_train, self.rate
        return tf.summary.merge([
            s('train/mse', d.mse), s('train/psnr', d.psnr), s('train/ms_ssim', d.ms_ssim),
            s('train/bpp', self.bpp_train), s('train/PC_loss/H_real', r.H_real),
            s('train/PC_loss/H_mask', r.H_mask), s('train/PC_loss/pc_loss', r.pc_loss),
            s('train/PC_loss/reg', self.reg_pc), s('train/AE_loss/d_loss_scaled', d.d_loss_scaled),
            s('train/AE_loss/reg_enc_dec', self.reg_enc_dec), s('train/total_loss', self.total_loss),
            s('train/lr_ae', self.lr_ae), s('train/lr_pc', self.lr_pc),
            tf.summary.histogram('centers', self.ae.get_centers_variable())])

    def _test_branch(self, x_test, ae_config):
        with tf.name_scope('test'):
            enc = self.ae.encode(x_test, is_training=False)
            x_out = self.ae.decode(enc.qhard, is_training=False)
            bc = self.pc.bitcost(enc.qhard, enc.symbols, self.pc.auto_pad_value(self.ae))
            bpp = bits.bitcost_to_bpp(bc, x_test)
            dist = training_helpers.distortions(x_test, x_out, ae_config, is_training=False)
        # summaries outside the name scope, so that their tags are test/... and not test/test/...
        summaries = [tf.summary.scalar('test/mse', dist.mse), tf.summary.scalar('test/psnr', dist.psnr),
                     tf.summary.scalar('test/ms_ssim', dist.ms_ssim), tf.summary.scalar('test/bpp', bpp),
                     tf.summary.image('test/x_in', tf.cast(x_test[:3], tf.uint8), max_outputs=3),
                     tf.summary.image('test/x_out', tf.cast(tf.round(x_out[:3]), tf.uint8), max_outputs=3),
                     tf.summary.histogram('test/qbar', enc.qbar[:15])]
        if enc.heatmap is not None:
            hm = tf.reduce_sum(enc.heatmap[:3], axis=1, keepdims=True)  # N x 1 x h x w
            hm = tf.transpose(hm, (0, 2, 3, 1)) / float(ae_config.num_chan_bn)
            summaries.append(tf.summary.image('test/hm', hm, max_outputs=3))
        fetches = {'ms_ssim': dist.ms_ssim, 'psnr': dist.psnr, 'bpp': bpp,
                   'centers': self.ae.get_centers_variable()}
        return fetches, tf.summary.merge(summaries)


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


def restore_or_init(sess, flags):
    """:return: a description of what was restored (None for a fresh start)"""
    source = flags.restore or flags.from_identity
    if not source:
        sess.run(tf.global_variables_initializer())
        return None
    ckpt_dir = saver_lib.ckpt_dir_of(source)
    step = saver_lib.select_ckpt_step(ckpt_dir, flags.restore_itr if flags.restore else -1)
    skip = [s.strip() for s in flags.restore_skip_vars.split(',') if s.strip()]
    if flags.from_identity:
        skip += ['global_step', 'Adam', 'Opt_']
    restored, initialized = saver_lib.restore(sess, saver_lib.ckpt_path(ckpt_dir, step), skip)
    print('Restored {} variables from {} (step {}); initialized {}.'.format(
        len(restored), ckpt_dir, step, len(initialized)))
    return 'Restored'


def _run_or_nan(sess, fetches, itr):
    """sess.run, except that a summary op refusing NaN values (diverged weights) gives
    {'itr': itr, 'loss': nan} instead of an exception."""
    try:
        return sess.run(fetches)
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
    """Builds the graph in a fresh tf.Graph and trains. :return: the log dir"""
    with tf.Graph().as_default(), _StopRequest() as stop:
        return _train(flags, stop)


def _train(flags, stop):
    ae_config, ae_rel, pc_config, pc_rel = load_configs(flags)
    env = inputpipeline.env_settings()  # NUM_CROPS_PER_IMG, NUM_PREPROCESS_THREADS
    data_format = flags.data_format or default_data_format()
    ds_train = inputpipeline.resolve_dataset(flags.dataset_train)
    ds_test = inputpipeline.resolve_dataset(flags.dataset_test) if flags.log_interval_test > 0 else None
    itr_per_epoch = inputpipeline.iterations_per_epoch(ds_train, ae_config.batch_size, env.num_crops_per_img)

    tf.set_random_seed(flags.seed)
    x_train = inputpipeline.input_batch(ds_train, ae_config.crop_size, ae_config.batch_size, shuffle=True,
                                        num_crops_per_img=env.num_crops_per_img,
                                        num_parallel_calls=env.num_preprocess_threads, name='train')
    # As in the original: files in sorted order, no shuffling, crops and flips seeded with 666 and one crop
    # per image, so that every run is evaluated on the same sequence of test batches.
    x_test = (inputpipeline.input_batch(ds_test, ae_config.crop_size, ae_config.batch_size, shuffle=False,
                                        seed=inputpipeline.TEST_SEED, num_crops_per_img=1,
                                        num_parallel_calls=env.num_preprocess_threads, name='test')
              if ds_test else None)
    g = TrainGraph(ae_config, pc_config, x_train, x_test, itr_per_epoch, data_format)

    log_dir = make_log_dir(flags, ae_rel, pc_rel)
    save_config_copies(log_dir, ae_config, pc_config)
    crops = '' if env.num_crops_per_img == 1 else ' = {} images x {} crops'.format(
        ae_config.batch_size // env.num_crops_per_img, env.num_crops_per_img)
    print('Log dir: {}\n{} training images ({} per epoch at batch {}{}), data format {}'.format(
        log_dir, ds_train.num_images, itr_per_epoch, ae_config.batch_size, crops, data_format))
    codec_distances = (rd_curves.load_codec_distances(
        flags.other_codecs_root or rd_curves.default_other_codecs_root(), flags.dataset_codec_distance)
        if ds_test else {})
    writer = tf.summary.FileWriter(log_dir, graph=tf.get_default_graph())
    saver = saver_lib.Saver(log_dir, keep_checkpoint_every_n_hours=flags.ckpt_interval)
    job_id = logdir_helpers.log_date_from_log_dir(log_dir)

    with create_session(num_threads=flags.num_threads) as sess:
        restored = restore_or_init(sess, flags)
        itr = sess.run(g.global_step)
        lr_ae, lr_pc = sess.run([g.lr_ae, g.lr_pc])
        print(training_helpers.describe_schedule('autoencoder', ae_config, itr_per_epoch, lr_ae))
        print(training_helpers.describe_schedule('context model', pc_config, itr_per_epoch, lr_pc))
        if flags.max_steps is not None and itr >= flags.max_steps:
            print('Already at step {} >= --max_steps {}'.format(itr, flags.max_steps))
            return log_dir
        last_saved = itr if restored else None
        step_times = []
        fetches = {'itr': g.step_after_train, 'loss': g.total_loss}
        log_fetches = {'summary': g.train_summaries, 'ms_ssim': g.dist_train.ms_ssim, 'bpp': g.bpp_train,
                       'H_real': g.rate.H_real}
        while True:
            want_log = restored is not None or (itr + 1) % flags.log_interval_train == 0
            t0 = time.time()
            r = _run_or_nan(sess, dict(fetches, **(log_fetches if want_log else {})), itr + 1)
            step_times.append(time.time() - t0)
            itr = r['itr']
            if not np.isfinite(r['loss']):
                raise TrainingError('Loss is {} at step {}; stopping. The last good checkpoint is {}'.format(
                    r['loss'], itr, _describe_ckpt(last_saved, saver)))
            if want_log:
                writer.add_summary(r['summary'], itr)
                imgs_per_s = ae_config.batch_size / np.mean(step_times)
                print('{}: loss={:.3f}, ms_ssim={:.4f}, bpp={:.4f}, H_real={:.4f} (img/s: {:.1f}) {}{}'.format(
                    itr, r['loss'], r['ms_ssim'], r['bpp'], r['H_real'], imgs_per_s, job_id,
                    ' ' + restored if restored else ''), flush=True)
                step_times = []
            done = flags.max_steps is not None and itr >= flags.max_steps
            if g.test_fetches is not None and (itr % flags.log_interval_test == 0 or restored or done):
                tr = _run_or_nan(sess, dict(g.test_fetches, summary=g.test_summaries), itr)
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
            if itr % flags.log_interval_save == 0 or done or stop.signal:
                saver.save(sess, itr)
                last_saved = itr
            if stop.signal:
                print('Got signal {}: saved checkpoint at step {} in {}'.format(stop.signal, itr, saver.ckpt_dir))
                break
            if done:
                print('Reached --max_steps {}: saved checkpoint in {}'.format(flags.max_steps, saver.ckpt_dir))
                break
    writer.close()
    return log_dir


def main(argv=None):
    flags = parse_args(argv)
    try:
        train(flags)
    except (TrainingError, config_parser.ConfigError, inputpipeline.DatasetError, inputpipeline.SettingsError,
            ValueError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
