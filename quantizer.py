"""Quantization to L learned centers (paper Sec. 3.1).

Forward pass: every bottleneck value is replaced by its nearest center (qhard); backward pass: the
gradient of the soft assignment qsoft = sum_j softmax_j(-sigma * (x - c_j)^2) * c_j. Combined as
qbar = qsoft + stop_gradient(qhard - qsoft). Only the index of the nearest center (the symbol) is coded.
"""
from collections import namedtuple

from tf_helpers import tf

CENTERS_SEED = 666

QuantizerOutput = namedtuple('QuantizerOutput', ['qbar', 'qsoft', 'qhard', 'symbols'])


def create_centers_variable(config):
    """centers: float32 (L,), uniform in centers_initial_range (cast to int, as the original), op seed 666."""
    minval, maxval = map(int, config.centers_initial_range)
    return tf.get_variable('centers', shape=(config.num_centers,), dtype=tf.float32,
                           initializer=tf.random_uniform_initializer(minval, maxval, seed=CENTERS_SEED))


def create_centers_regularization_term(config, centers):
    """regularization_factor_centers * sum(c^2) / 2, collected in REGULARIZATION_LOSSES."""
    if not config.regularization_factor_centers:
        return
    with tf.name_scope('centers/Regularizer'):
        reg = tf.multiply(float(config.regularization_factor_centers), tf.nn.l2_loss(centers),
                          name='l2_regularizer')
    tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, reg)


def quantize(x, centers, sigma=1.):
    """Quantizes x to the centers.

    :param x: float32 tensor of any shape (N x C x h x w for the bottleneck)
    :param centers: float32 (L,)
    :return: QuantizerOutput of tensors shaped like x: qbar, qsoft, qhard (float32), symbols (int64)
    """
    with tf.name_scope('quantize'):
        dist = tf.square(tf.expand_dims(x, -1) - centers)  # (..., L)
        phi_soft = tf.nn.softmax(-sigma * dist, axis=-1)
        qsoft = tf.reduce_sum(phi_soft * centers, axis=-1)
        # argmin of the distance; the original's argmax(softmax(-1e7 * dist)) picks the same index.
        symbols = tf.argmin(dist, axis=-1)
        qhard = tf.gather(centers, symbols)
        with tf.name_scope('qbar'):
            qbar = qsoft + tf.stop_gradient(qhard - qsoft)
        return QuantizerOutput(qbar, qsoft, qhard, symbols)
