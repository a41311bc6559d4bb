"""The context model (paper Sec. 3.3): a 3D masked-conv probability classifier over the symbol volume.

The N x C x h x w volume of quantized values is a 3D volume with depth = channel (N x C x h x w x 1,
NDHWC with one feature). Masked (K//2+1) x K x K convolutions (2 x 3 x 3 for K=3) see the previous
channel fully and the current channel only up to the current position in raster order, so the logits
for symbol (c, y, x) depend only on symbols before it in (channel, row, column) order. Four layers
(conv0, a residual block of two convs, conv2) give a (5, 9, 9) receptive field: the volume is padded
by 4 in front in depth and by 4 on both sides in h and w, and VALID convs give exactly C x h x w
outputs of L logits. As in the released model, the logits go through a ReLU.
"""
import numpy as np

import config_parser
import pc_geometry
# the masks live in a TF-free module so that the codec core imports without TensorFlow
from pc_geometry import SCOPE, filter_shape, first_mask, other_mask  # noqa: F401
from tf_helpers import tf


def get_network_cls(pc_config):
    return config_parser.arch_class(pc_config, {'res_shallow': ResShallow}, 'probclass', 'pc_configs/base',
                                    'pc_configs/cvpr/res_shallow')


class ResShallow(object):
    """conv0 (first mask, ReLU) -> res1 [conv1 (ReLU), conv2 (linear)] + skip -> conv2 (L logits, ReLU).

    Variables: probclass3d/logits/{conv3d_conv0_mask, res1/conv3d_conv1_mask, res1/conv3d_conv2_mask,
    conv3d_conv2_mask}/{weights [D, H, W, in, out], biases [out]}.
    """
    NUM_LAYERS = 4
    # Variable scopes of the four layers in evaluation order (fixed_point_pc reads them in this order).
    LAYER_SCOPES = pc_geometry.RES_SHALLOW_LAYER_SCOPES

    def __init__(self, pc_config, num_centers):
        self.config = pc_config
        self.L = num_centers
        self.kernel_size = pc_config.kernel_size
        self.k = pc_config.arch_param__k
        self._reuse = False

    @property
    def context_size(self):
        """Width/height of the receptive field: 4 layers * (K - 1) + 1 = 9."""
        return self.NUM_LAYERS * (self.kernel_size - 1) + 1

    @property
    def context_shape(self):
        """(D, H, W) of the receptive field: (5, 9, 9) for K=3."""
        return self.context_size // 2 + 1, self.context_size, self.context_size

    @property
    def pad(self):
        return self.context_size // 2

    def auto_pad_value(self, ae):
        """centers[0] with use_centers_for_padding (a symbol-0 border, which the codec can reproduce)."""
        return ae.get_centers_variable()[0] if self.config.use_centers_for_padding else 0.

    def logits(self, q, pad_value):
        """:param q: float32 N x C x h x w quantized volume. :return: float32 N x C x h x w x L logits."""
        with tf.variable_scope(SCOPE, reuse=self._reuse):
            self._reuse = True
            p = self.pad
            with tf.name_scope('pad'):
                q_pad = tf.pad(q, [[0, 0], [p, 0], [p, p], [p, p]], constant_values=pad_value)
            with tf.variable_scope('logits'):
                return self._logits(tf.expand_dims(q_pad, -1))

    def bitcost(self, q, target_symbols, pad_value):
        """Bits of each symbol under the model: softmax cross-entropy in base 2, N x C x h x w."""
        logits = self.logits(q, pad_value)
        with tf.name_scope('bitcost'):
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_symbols, logits=logits)
            bc = ce * np.log2(np.e).astype(np.float32)
        self._add_regularization()
        return bc

    @staticmethod
    def variables():
        return tf.trainable_variables(SCOPE)

    def _add_regularization(self):
        factor = self.config.regularization_factor
        if factor is None or tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES, SCOPE):
            return
        weights = [v for v in self.variables() if v.name.endswith('weights:0')]
        with tf.name_scope(SCOPE + '/Regularizer'):
            reg = float(factor) * tf.add_n([tf.nn.l2_loss(w) for w in weights])
        tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, reg)

    def _logits(self, net):
        masks = {'first': first_mask(self.kernel_size), 'other': other_mask(self.kernel_size)}
        net = self._conv3d(net, self.k, masks['first'], 'conv3d_conv0_mask', tf.nn.relu)
        res_input = net
        with tf.variable_scope('res1'):
            net = self._conv3d(net, self.k, masks['other'], 'conv3d_conv1_mask', tf.nn.relu)
            net = self._conv3d(net, self.k, masks['other'], 'conv3d_conv2_mask', None)
            # each VALID layer shrinks D by 1 and H, W by 2: crop the skip to match
            net = net + res_input[:, 2:, 2:-2, 2:-2, :]
        return self._conv3d(net, self.L, masks['other'], 'conv3d_conv2_mask', tf.nn.relu)

    @staticmethod
    def _conv3d(x, num_outputs, mask, scope, activation_fn):
        num_inputs = x.shape.as_list()[-1]
        with tf.variable_scope(scope):
            weights = tf.get_variable('weights', shape=mask.shape + (num_inputs, num_outputs),
                                      initializer=tf.glorot_uniform_initializer())
            biases = tf.get_variable('biases', shape=(num_outputs,), initializer=tf.zeros_initializer())
            masked = weights * mask[:, :, :, np.newaxis, np.newaxis]
            net = tf.nn.conv3d(x, masked, [1, 1, 1, 1, 1], 'VALID')
            net = tf.nn.bias_add(net, biases)
            return activation_fn(net) if activation_fn else net
