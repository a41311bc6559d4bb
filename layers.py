"""The original's slim layers, rebuilt from tf.nn ops so that checkpoints keep slim's variable names.

slim.conv2d / slim.conv2d_transpose inside the original's batch-norm arg scope mean: SAME padding,
Glorot-uniform kernel, no bias, then batch norm, then the activation, plus an L2 regularizer on the
kernel. Variables (per layer scope): `weights` ([k, k, in, out]; [k, k, out, in] for transposed convs)
and `BatchNorm/{beta, gamma, moving_mean, moving_variance}`.
"""
from tf_helpers import tf, channel_axis

BN_DECAY = 0.9
BN_EPSILON = 1e-5


def _add_l2_regularizer(weights, regularization_factor):
    """Adds regularization_factor * sum(w^2) / 2 to REGULARIZATION_LOSSES (slim.l2_regularizer)."""
    if not regularization_factor:
        return
    with tf.name_scope('Regularizer'):
        reg = tf.multiply(float(regularization_factor), tf.nn.l2_loss(weights), name='l2_regularizer')
    tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, reg)


def _kernel(shape, regularization_factor):
    w = tf.get_variable('weights', shape=shape, dtype=tf.float32,
                        initializer=tf.glorot_uniform_initializer())
    _add_l2_regularizer(w, regularization_factor)
    return w


def batch_norm(x, is_training, data_format):
    """Fused batch norm with slim's variables; moving averages are updated through UPDATE_OPS.

    In training mode the batch statistics normalize x, and moving_* <- decay * moving_* + (1 - decay) *
    batch_* (TF's fused kernel returns the Bessel-corrected batch variance, as in TF 1.x).
    """
    num_channels = x.shape[channel_axis(data_format)]
    with tf.variable_scope('BatchNorm'):
        beta = tf.get_variable('beta', [num_channels], initializer=tf.zeros_initializer())
        gamma = tf.get_variable('gamma', [num_channels], initializer=tf.ones_initializer())
        moving_mean = tf.get_variable('moving_mean', [num_channels], initializer=tf.zeros_initializer(),
                                      trainable=False)
        moving_variance = tf.get_variable('moving_variance', [num_channels],
                                          initializer=tf.ones_initializer(), trainable=False)
        if not is_training:
            out, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, moving_mean, moving_variance,
                                               epsilon=BN_EPSILON, data_format=data_format,
                                               is_training=False)
            return out
        out, batch_mean, batch_variance = tf.nn.fused_batch_norm(
            x, gamma, beta, epsilon=BN_EPSILON, data_format=data_format, is_training=True)
        for moving, batch in ((moving_mean, batch_mean), (moving_variance, batch_variance)):
            update = tf.assign_sub(moving, (moving - batch) * (1. - BN_DECAY))
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
        return out


def _strides(stride, data_format):
    return [1, 1, stride, stride] if data_format == 'NCHW' else [1, stride, stride, 1]


def conv2d(x, num_outputs, kernel_size, stride=1, activation_fn=tf.nn.relu, *, scope, is_training,
           data_format, regularization_factor):
    """SAME conv (no bias) -> batch norm -> activation_fn (None: linear)."""
    num_inputs = x.shape[channel_axis(data_format)]
    with tf.variable_scope(scope):
        w = _kernel([kernel_size, kernel_size, num_inputs, num_outputs], regularization_factor)
        net = tf.nn.conv2d(x, w, _strides(stride, data_format), 'SAME', data_format=data_format)
        net = batch_norm(net, is_training, data_format)
        return activation_fn(net) if activation_fn else net


def conv2d_transpose(x, num_outputs, kernel_size, stride=2, activation_fn=tf.nn.relu, *, scope,
                     is_training, data_format, regularization_factor):
    """SAME transposed conv (no bias, kernel [k, k, out, in]) -> batch norm -> activation_fn."""
    num_inputs = x.shape[channel_axis(data_format)]
    with tf.variable_scope(scope):
        w = _kernel([kernel_size, kernel_size, num_outputs, num_inputs], regularization_factor)
        shape = tf.shape(x)
        if data_format == 'NCHW':
            out_shape = tf.stack([shape[0], num_outputs, shape[2] * stride, shape[3] * stride])
        else:
            out_shape = tf.stack([shape[0], shape[1] * stride, shape[2] * stride, num_outputs])
        net = tf.nn.conv2d_transpose(x, w, out_shape, _strides(stride, data_format), 'SAME',
                                     data_format=data_format)
        net = _set_upsampled_shape(net, x, num_outputs, stride, data_format)
        net = batch_norm(net, is_training, data_format)
        return activation_fn(net) if activation_fn else net


def _set_upsampled_shape(net, x, num_outputs, stride, data_format):
    """conv2d_transpose loses static shapes; restore what is known (fused BN needs the channels)."""
    n, *spatial_and_c = x.shape.as_list()
    if data_format == 'NCHW':
        _, h, w = spatial_and_c
        shape = [n, num_outputs, h and h * stride, w and w * stride]
    else:
        h, w, _ = spatial_and_c
        shape = [n, h and h * stride, w and w * stride, num_outputs]
    net.set_shape(shape)
    return net
