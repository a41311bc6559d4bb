"""Loss terms, learning-rate schedules and the two-optimizer train op of train.py."""
from collections import namedtuple

from tf_helpers import tf
import ms_ssim

# Distortion tensors of a batch; d_loss_scaled is the term that enters the loss.
Distortions = namedtuple('Distortions', ['mse', 'psnr', 'ms_ssim', 'd_loss_scaled'])

# The rate terms of the paper (Sec. 3.4).
RateLoss = namedtuple('RateLoss', ['H_real', 'H_mask', 'H_soft', 'pc_loss'])


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


def create_train_op(total_loss, ae_vars, pc_vars, ae_lr, pc_lr, ae_config, pc_config, global_step):
    """One gradient computation, two optimizers: the context model's variables with the PC config's
    optimizer and learning rate, everything else with the autoencoder's. Batch-norm moving averages
    (UPDATE_OPS) are updated with every step; only the AE optimizer increments global_step."""
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        grads = tf.gradients(total_loss, ae_vars + pc_vars)
    ae_grads, pc_grads = grads[:len(ae_vars)], grads[len(ae_vars):]
    train_ae = optimizer(ae_config, ae_lr, 'Adam_AE' if ae_config.optimizer == 'ADAM' else 'Opt_AE') \
        .apply_gradients(zip(ae_grads, ae_vars), global_step=global_step)
    train_pc = optimizer(pc_config, pc_lr, 'Adam_PC' if pc_config.optimizer == 'ADAM' else 'Opt_PC') \
        .apply_gradients(zip(pc_grads, pc_vars))
    return tf.group(train_ae, train_pc, name='train_op')
