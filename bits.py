"""From bit costs of the symbol volume to bits per pixel."""
from tf_helpers import tf


def bitcost_to_bpp(bit_cost, input_batch_nhwc):
    """Bits per pixel of a batch.

    :param bit_cost: N x C x h x w bits per symbol
    :param input_batch_nhwc: the N x H x W x 3 images the symbols describe
    :return: scalar, sum of all bits / (N * H * W)
    """
    with tf.name_scope('bitcost_to_bpp'):
        shape = tf.shape(input_batch_nhwc)
        num_pixels = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        return tf.reduce_sum(bit_cost) / num_pixels
