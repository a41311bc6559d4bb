"""The convolutional autoencoder of the paper (arch 'CVPR', subsampling 8), with the importance map.

Encoder: x (N x H x W x 3, pixels 0..255) -> normalize -> h1 (5x5/2, n/2) -> h2 (5x5/2, n) ->
B groups of 3 residual blocks, each group with a skip -> one linear residual block + skip from h2 ->
to_bn (5x5/2, C+1 channels, linear) -> importance map from channel 0 masks the other C channels ->
quantizer. Decoder: q (N x C x H/8 x W/8) -> from_bn (3x3/2 transposed, n) -> B groups of 3 residual
blocks -> linear residual block + skip -> h12 (5x5/2 transposed, n/2) -> h13 (5x5/2 transposed, 3,
linear) -> de-normalize -> clip to [0, 255].

Every conv is followed by batch norm (see layers.py). Images are NHWC at this module's boundary, the
bottleneck (z, q, symbols, importance mask) is always the N x C x h x w symbol volume; the convolutions
run in the device's data format (tf_helpers.default_data_format()), which does not change variables.
"""
from collections import namedtuple

import numpy as np

import config_parser
import layers
import quantizer
from tf_helpers import tf, default_data_format, to_data_format, to_nchw

SCOPE_AE = 'autoencoder'
SCOPE_AE_ENC = SCOPE_AE + '/encoder'
SCOPE_AE_DEC = SCOPE_AE + '/decoder'

DEFAULT_ARCH_PARAM_N = 128  # width n of the paper's autoencoder

# Per-channel statistics used by the original for FIXED normalization.
_MEAN = np.array([121.85369873, 113.58860779, 100.63715363], dtype=np.float32)
_VAR = np.array([4746.37695312, 4454.13964844, 4812.234375], dtype=np.float32)

# qbar: forward hard / backward soft; qhard: nearest centers; symbols: int64 center indices;
# z: masked bottleneck before quantization; heatmap: the 3D importance mask (None without heatmap).
# All are N x C x h x w.
EncoderOutput = namedtuple('EncoderOutput', ['qbar', 'qhard', 'symbols', 'z', 'heatmap'])


def get_network_cls(config):
    return config_parser.arch_class(config, {'CVPR': CVPR}, 'autoencoder', 'ae_configs/base', 'ae_configs/cvpr/low')


def importance_mask(heatmap_logits, num_channels):
    """The 3D importance mask of the paper (Sec. 3.2).

    :param heatmap_logits: N x h x w, the first bottleneck channel
    :return: N x C x h x w with mask_c = clip(sigmoid(y) * C - c, 0, 1): the first floor(h) channels
        are on, one is partially on, the rest are off.
    """
    with tf.name_scope('heatmap'):
        heatmap2d = tf.nn.sigmoid(heatmap_logits) * num_channels
        c = tf.reshape(tf.range(num_channels, dtype=tf.float32), (num_channels, 1, 1))
        return tf.clip_by_value(tf.expand_dims(heatmap2d, 1) - c, 0., 1., name='heatmap3D')


class CVPR(object):
    def __init__(self, config, data_format=None):
        self.config = config
        self.data_format = data_format or default_data_format()
        self.n = config.get('arch_param_n', DEFAULT_ARCH_PARAM_N)
        self.num_chan_bn = config.num_chan_bn
        self._reuse_enc = False
        self._reuse_dec = False
        self._centers = None

    # Public ---------------------------------------------------------------------------------------

    def encode(self, x, is_training):
        """:param x: float32 N x H x W x 3 in 0..255, H and W multiples of 8. :return: EncoderOutput"""
        with tf.variable_scope(SCOPE_AE_ENC, reuse=self._reuse_enc):
            if self._centers is None:
                self._centers = quantizer.create_centers_variable(self.config)
                quantizer.create_centers_regularization_term(self.config, self._centers)
            self._reuse_enc = True
            return self._encode(x, is_training)

    def decode(self, q, is_training):
        """:param q: float32 N x C x h x w. :return: float32 N x 8h x 8w x 3 in [0, 255]"""
        with tf.variable_scope(SCOPE_AE_DEC, reuse=self._reuse_dec):
            self._reuse_dec = True
            return self._decode(q, is_training)

    def get_centers_variable(self):
        if self._centers is None:
            raise ValueError('Call encode(...) before accessing the centers')
        return self._centers

    @staticmethod
    def encoder_variables():
        """Trainable variables of the encoder, including the centers."""
        return tf.trainable_variables(SCOPE_AE_ENC)

    @staticmethod
    def decoder_variables():
        return tf.trainable_variables(SCOPE_AE_DEC)

    @staticmethod
    def encoder_regularization_loss():
        """L2 of the encoder kernels and of the centers."""
        return tf.losses.get_regularization_loss(scope=SCOPE_AE_ENC)

    @staticmethod
    def decoder_regularization_loss():
        return tf.losses.get_regularization_loss(scope=SCOPE_AE_DEC)

    # Layers ---------------------------------------------------------------------------------------

    def _layer_args(self, is_training):
        return dict(is_training=is_training, data_format=self.data_format,
                    regularization_factor=self.config.regularization_factor)

    def _conv(self, net, num_outputs, kernel_size, stride, is_training, scope, activation_fn=tf.nn.relu):
        return layers.conv2d(net, num_outputs, kernel_size, stride, activation_fn, scope=scope,
                             **self._layer_args(is_training))

    def _deconv(self, net, num_outputs, kernel_size, is_training, scope, activation_fn=tf.nn.relu):
        return layers.conv2d_transpose(net, num_outputs, kernel_size, 2, activation_fn, scope=scope,
                                       **self._layer_args(is_training))

    def _residual_block(self, x, is_training, scope, activation_fn=tf.nn.relu):
        """conv3x3-BN-act, conv3x3-BN, + x. activation_fn=None makes both convs linear (as the original)."""
        with tf.variable_scope(scope):
            net = self._conv(x, self.n, 3, 1, is_training, 'conv1', activation_fn)
            net = self._conv(net, self.n, 3, 1, is_training, 'conv2', None)
            return net + x

    def _residual_groups(self, net, is_training, prefix):
        """B groups of three residual blocks (`res_block_<prefix>_b/<prefix>_b_i`), a skip around each."""
        for b in range(self.config.arch_param_B):
            group_input = net
            with tf.variable_scope('res_block_{}_{}'.format(prefix, b)):
                for i in (1, 2, 3):
                    net = self._residual_block(net, is_training, '{}_{}_{}'.format(prefix, b, i))
            net = net + group_input
        return net

    # Networks -------------------------------------------------------------------------------------

    def _encode(self, x, is_training):
        net = self._to_data_format(self._normalize(x))
        net = self._conv(net, self.n // 2, 5, 2, is_training, 'h1')
        net = self._conv(net, self.n, 5, 2, is_training, 'h2')
        after_h2 = net
        net = self._residual_groups(net, is_training, 'enc')
        net = self._residual_block(net, is_training, 'res_block_enc_final', activation_fn=None)
        net = net + after_h2
        num_out = self.num_chan_bn + 1 if self.config.heatmap else self.num_chan_bn
        net = self._conv(net, num_out, 5, 2, is_training, 'to_bn', activation_fn=None)
        bottleneck = to_nchw(net, self.data_format)
        if self.config.heatmap:
            heatmap = importance_mask(bottleneck[:, 0, :, :], self.num_chan_bn)
            with tf.name_scope('heatmap_mask'):
                z = heatmap * bottleneck[:, 1:, :, :]
        else:
            heatmap, z = None, bottleneck
        q = quantizer.quantize(z, self._centers, sigma=1.)
        return EncoderOutput(q.qbar, q.qhard, q.symbols, z, heatmap)

    def _decode(self, q, is_training):
        net = to_data_format(q, self.data_format)
        net = self._deconv(net, self.n, 3, is_training, 'from_bn')
        after_from_bn = net
        net = self._residual_groups(net, is_training, 'dec')
        net = self._residual_block(net, is_training, 'dec_after_res', activation_fn=None)
        net = net + after_from_bn
        net = self._deconv(net, self.n // 2, 5, is_training, 'h12')
        net = self._deconv(net, 3, 5, is_training, 'h13', activation_fn=None)
        net = self._from_data_format(net)
        return tf.clip_by_value(self._denormalize(net), 0., 255., name='clip')

    # Layout and normalization ---------------------------------------------------------------------

    def _to_data_format(self, x_nhwc):
        return x_nhwc if self.data_format == 'NHWC' else tf.transpose(x_nhwc, (0, 3, 1, 2))

    def _from_data_format(self, x):
        return x if self.data_format == 'NHWC' else tf.transpose(x, (0, 2, 3, 1))

    def _normalize(self, x_nhwc):
        if self.config.normalization == 'OFF':
            return x_nhwc
        with tf.name_scope('normalize'):
            return (x_nhwc - _MEAN) / np.sqrt(_VAR + 1e-10)

    def _denormalize(self, x_nhwc):
        if self.config.normalization == 'OFF':
            return x_nhwc
        with tf.name_scope('denormalize'):
            return x_nhwc * np.sqrt(_VAR + 1e-10) + _MEAN

