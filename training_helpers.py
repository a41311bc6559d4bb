"""Loss terms, learning-rate schedules, the two-optimizer train op and the train / test branches of train.py
(shared by the single-device graph in train.py and the replicated one in distribute.py)."""
from collections import namedtuple

from tf_helpers import tf
import bits
import ms_ssim
import probclass

# Distortion tensors of a batch; d_loss_scaled is the term that enters the loss.
Distortions = namedtuple('Distortions', ['mse', 'psnr', 'ms_ssim', 'd_loss_scaled'])

# The rate terms of the paper (Sec. 3.4).
RateLoss = namedtuple('RateLoss', ['H_real', 'H_mask', 'H_soft', 'pc_loss'])

# Everything the train branch computes on one batch; total_loss = dist.d_loss_scaled + rate.pc_loss +
# reg_enc_dec + reg_pc.
TrainTerms = namedtuple('TrainTerms', ['dist', 'rate', 'bpp', 'reg_enc_dec', 'reg_pc', 'total_loss'])


def train_terms(ae, pc, x_train, ae_config):
    """The train branch on a batch: batch-norm batch statistics, qbar, the loss terms (paper Sec. 3.4).

    Creates the networks' variables on the first call; batch-norm moving-average updates go to UPDATE_OPS.
    """
    enc = ae.encode(x_train, is_training=True)
    x_out = ae.decode(enc.qbar, is_training=True)
    pad_value = pc.auto_pad_value(ae)
    # the context model learns from the quantized values but sends no gradient into the encoder
    bc = pc.bitcost(tf.stop_gradient(enc.qbar), enc.symbols, pad_value)
    bpp = bits.bitcost_to_bpp(bc, x_train)
    rate = rate_loss(bc, enc.heatmap, ae_config)
    dist = distortions(x_train, x_out, ae_config, is_training=True)
    reg_enc_dec = ae.encoder_regularization_loss() + ae.decoder_regularization_loss()
    reg_pc = tf.losses.get_regularization_loss(scope=probclass.SCOPE)
    total_loss = dist.d_loss_scaled + rate.pc_loss + reg_enc_dec + reg_pc
    return TrainTerms(dist, rate, bpp, reg_enc_dec, reg_pc, total_loss)


def train_summaries(terms, lr_ae, lr_pc, centers):
    """The merged train summaries (train/..., centers) of TrainTerms."""
    s = tf.summary.scalar
    d, r = terms.dist, terms.rate
    return tf.summary.merge([
        s('train/mse', d.mse), s('train/psnr', d.psnr), s('train/ms_ssim', d.ms_ssim),
        s('train/bpp', terms.bpp), s('train/PC_loss/H_real', r.H_real),
        s('train/PC_loss/H_mask', r.H_mask), s('train/PC_loss/pc_loss', r.pc_loss),
        s('train/PC_loss/reg', terms.reg_pc), s('train/AE_loss/d_loss_scaled', d.d_loss_scaled),
        s('train/AE_loss/reg_enc_dec', terms.reg_enc_dec), s('train/total_loss', terms.total_loss),
        s('train/lr_ae', lr_ae), s('train/lr_pc', lr_pc),
        tf.summary.histogram('centers', centers)])


def test_branch(ae, pc, x_test, ae_config):
    """The test branch (batch-norm moving averages, qhard) on a test batch.

    :return: (fetches: dict of ms_ssim, psnr, bpp, centers; merged test summaries)
    """
    with tf.name_scope('test'):
        enc = ae.encode(x_test, is_training=False)
        x_out = ae.decode(enc.qhard, is_training=False)
        bc = pc.bitcost(enc.qhard, enc.symbols, pc.auto_pad_value(ae))
        bpp = bits.bitcost_to_bpp(bc, x_test)
        dist = distortions(x_test, x_out, ae_config, is_training=False)
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
    fetches = {'ms_ssim': dist.ms_ssim, 'psnr': dist.psnr, 'bpp': bpp, 'centers': ae.get_centers_variable()}
    return fetches, tf.summary.merge(summaries)


def distortions(x, x_out, config, is_training):
    """MSE, PSNR and MS-SSIM of a batch and the scaled distortion loss.

    :param x, x_out: float32 N x H x W x 3 in 0..255
    As in the original: the metric being minimized in training is computed on the float
    reconstruction (it needs gradients). Otherwise, and always on the test batch, MSE and PSNR are
    computed on both images cast to integers, i.e. truncated (what `tf.cast` does; the pixels an
    8-bit file would hold if written by truncation). MS-SSIM is always computed on the float
    reconstruction, also on the test batch.
    """
    minimized = config.distortion_to_minimize
    with tf.name_scope('distortions'):
        def pair(name):
            if is_training and name == minimized:
                return x, x_out
            return _truncated(x), _truncated(x_out)

        mse_per_image = _mse_per_image(*pair('mse'))
        mse = tf.reduce_mean(mse_per_image)
        # max(., 1e-10): identical images give a finite PSNR (the original: inf, and -inf as a loss)
        psnr_per_image = 10. * _log10(255. ** 2 / tf.maximum(_mse_per_image(*pair('psnr')), 1e-10))
        psnr = tf.reduce_mean(psnr_per_image)
        msssim = ms_ssim.ms_ssim(x, x_out, max_val=255.)
        d_loss_scaled = {
            'mse': lambda: mse,
            'psnr': lambda: config.K_psnr - psnr,
            'ms_ssim': lambda: config.K_ms_ssim * (1. - msssim),
        }[minimized]()
        return Distortions(mse, psnr, msssim, d_loss_scaled)


def _truncated(t):
    return tf.cast(tf.cast(t, tf.int32), tf.float32)


def _mse_per_image(a, b):
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


def _log10(x):
    return tf.log(x) / tf.log(10.)


def rate_loss(bit_cost, heatmap, config):
    """H_real = mean bits; H_mask = mean bits under the importance mask; H_soft = their average;
    pc_loss = beta * max(H_soft - H_target, 0)."""
    with tf.name_scope('rate_loss'):
        H_real = tf.reduce_mean(bit_cost, name='H_real')
        H_mask = tf.reduce_mean(bit_cost * heatmap, name='H_mask') if heatmap is not None else H_real
        H_soft = 0.5 * (H_mask + H_real)
        if config.H_target is None:
            raise ValueError('H_target is None in the autoencoder config (the root config ae_configs/base '
                             'is not runnable; use e.g. ae_configs/cvpr/low)')
        pc_loss = config.beta * tf.maximum(H_soft - config.H_target, 0.)
        return RateLoss(H_real, H_mask, H_soft, pc_loss)


def decay_steps(config, iterations_per_epoch):
    """Steps between two decays: lr_schedule_decay_interval epochs."""
    if iterations_per_epoch is None:
        raise ValueError('The learning-rate schedule needs the number of training images')
    return max(1, int(config.lr_schedule_decay_interval * iterations_per_epoch))


def learning_rate(config, global_step, iterations_per_epoch):
    """lr_initial * decay_rate ^ (step / decay_steps), floored with lr_schedule_decay_staircase."""
    # float(): an override such as `-co lr_initial=0` parses as an int, which exponential_decay rejects
    lr_initial = float(config.lr_initial)
    if config.lr_schedule == 'FIXED':
        return tf.constant(lr_initial, tf.float32)
    steps = decay_steps(config, iterations_per_epoch)
    return tf.train.exponential_decay(lr_initial, global_step, steps, float(config.lr_schedule_decay_rate),
                                      staircase=config.lr_schedule_decay_staircase)


def describe_schedule(name, config, iterations_per_epoch, lr_now):
    """One line saying what a network's learning rate is now and how it changes, e.g.
    'context model: lr 1.0e-07 at this step (1e-04, x0.1 every 344 steps)'. Warns when the rate has
    decayed below a thousandth of lr_initial: that network has stopped learning, which is easy to miss
    when an ImageNet schedule (decay every 2 epochs) meets a small training set."""
    lr_initial = float(config.lr_initial)
    if config.lr_schedule == 'FIXED':
        how = 'fixed'
    else:
        how = '{:.0e}, x{} every {} steps'.format(lr_initial, config.lr_schedule_decay_rate,
                                                  decay_steps(config, iterations_per_epoch))
    line = '{}: lr {:.1e} at this step ({})'.format(name, lr_now, how)
    if lr_now < 1e-3 * lr_initial:
        line += ('\nWarning: the {} has practically stopped learning; set a longer lr_schedule_decay_interval '
                 'or lr_schedule = FIXED (e.g. -co / -pco lr_schedule=FIXED) to train it further').format(name)
    return line


def optimizer(config, lr, name):
    if config.optimizer == 'ADAM':
        return tf.train.AdamOptimizer(lr, name=name)
    if config.optimizer == 'MOMENTUM':
        return tf.train.MomentumOptimizer(lr, config.optimizer_momentum, use_nesterov=True, name=name)
    if config.optimizer == 'SGD':
        return tf.train.GradientDescentOptimizer(lr, name=name)
    raise ValueError('Unknown optimizer {}'.format(config.optimizer))


def create_train_op(total_loss, ae_vars, pc_vars, ae_lr, pc_lr, ae_config, pc_config, global_step,
                    update_ops=None):
    """One gradient computation, two optimizers: the context model's variables with the PC config's
    optimizer and learning rate, everything else with the autoencoder's. Batch-norm moving averages
    (update_ops, default: all UPDATE_OPS of the graph) are updated with every step; only the AE optimizer
    increments global_step.

    Under a tf.distribute strategy (called in replica context) each optimizer sums the replicas' gradients,
    so total_loss must then be the replica's share of the objective (see distribute.py), and update_ops
    this replica's own updates."""
    if update_ops is None:
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
        grads = tf.gradients(total_loss, ae_vars + pc_vars)
    ae_grads, pc_grads = grads[:len(ae_vars)], grads[len(ae_vars):]
    train_ae = optimizer(ae_config, ae_lr, 'Adam_AE' if ae_config.optimizer == 'ADAM' else 'Opt_AE') \
        .apply_gradients(zip(ae_grads, ae_vars), global_step=global_step)
    train_pc = optimizer(pc_config, pc_lr, 'Adam_PC' if pc_config.optimizer == 'ADAM' else 'Opt_PC') \
        .apply_gradients(zip(pc_grads, pc_vars))
    return tf.group(train_ae, train_pc, name='train_op')
