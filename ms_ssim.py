"""MS-SSIM (and PSNR / MSE) as a TensorFlow graph op, for the training loss and in-graph summaries.

Why it exists: the paper trains with d = 1 - MS-SSIM on 160 x 160 crops. ``tf.image.ssim_multiscale``
cannot be used: it rejects 160 x 160 inputs (its 11 x 11 window does not fit the coarsest scale) and
its gradients become NaN for dissimilar images (negative terms raised to fractional powers). This op
computes exactly the definition of the float64 numpy reference ``ms_ssim_np`` (see its docstring):

* 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), K1 = 0.01, K2 = 0.03, L = max_val;
* per scale a Gaussian window of size s = min(11, H, W) and sigma = 1.5 s / 11 (centred, so for an
  even s the centre lies between pixels), 'valid' filtering; the 2-D window is the outer product of
  normalised 1-D Gaussians, so it is applied exactly as two 1-D convolutions;
* cs_l, ssim_l are means over batch, space and channels (one value for the whole batch);
* downsampling averages 2x2 blocks (pixels 2k, 2k+1), reflecting the last pixel for odd sizes;
* MS-SSIM = prod_{l<5} cs_l^{w_l} * ssim_5^{w_5}.

Guard: cs_l and ssim_5 are clamped to at least ``MIN_TERM`` = 1e-6 before the fractional powers.
Whenever the terms are >= 1e-6 (always, unless the images are essentially unrelated) the forward value
equals the reference; otherwise the reference is NaN while here the clamped term contributes a finite
value and zero gradient, and the gradients of the other terms stay finite (x^(w-1) is evaluated at
x >= 1e-6).

Numerics (float32): the second moments are computed on images shifted by a per-image, per-channel
constant (the mean of both images). Variances and covariances do not depend on such a shift, but it
avoids most of the cancellation in E[x^2] - E[x]^2 for values around 0..255.

Internally images are laid out as (N*C) x H x W x 1 so that one single-channel conv2d handles any
number of channels and both data formats (CPU conv2d only supports NHWC).
"""
import numpy as np

from ms_ssim_np import WEIGHTS, K1, K2, gaussian_1d, window_params
from tf_helpers import tf

MIN_TERM = 1e-6


def _to_planes(x, data_format):
    """N x H x W x C (or N x C x H x W) -> (N*C) x H x W x 1, with static H, W."""
    if data_format == 'NHWC':
        x = tf.transpose(x, (0, 3, 1, 2))
    elif data_format != 'NCHW':
        raise ValueError('data_format must be NHWC or NCHW, got {}'.format(data_format))
    height, width = x.shape.as_list()[2:]
    if height is None or width is None:
        raise ValueError('ms_ssim needs static spatial shapes, got {}'.format(x.shape))
    return tf.reshape(x, (-1, height, width, 1))


def _spatial_size(planes):
    height, width = planes.shape.as_list()[1:3]
    return height, width


def _gaussian_filter_valid(planes, size, sigma):
    """Separable Gaussian 'valid' filtering: M x H x W x 1 -> M x (H-size+1) x (W-size+1) x 1."""
    g = gaussian_1d(size, sigma).astype(np.float32)
    kernel_h = tf.constant(g.reshape(size, 1, 1, 1))
    kernel_w = tf.constant(g.reshape(1, size, 1, 1))
    out = tf.nn.conv2d(planes, kernel_h, strides=(1, 1, 1, 1), padding='VALID')
    return tf.nn.conv2d(out, kernel_w, strides=(1, 1, 1, 1), padding='VALID')


def _ssim_and_cs(x, y, max_val):
    """Single-scale SSIM and cs, each a scalar mean over all planes and positions.

    x, y: (N*C) x H x W x 1 float32 planes.
    """
    height, width = _spatial_size(x)
    size, sigma = window_params(height, width)
    c1 = (K1 * max_val) ** 2
    c2 = (K2 * max_val) ** 2
    # Shift both images of a plane by the same constant: (co)variances are unchanged, cancellation less.
    shift = tf.stop_gradient(0.5 * (tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True) +
                                    tf.reduce_mean(y, axis=(1, 2, 3), keepdims=True)))
    xs, ys = x - shift, y - shift
    # One conv for all five filtered quantities (stacked along the plane axis).
    stacked = tf.concat([xs, ys, xs * xs, ys * ys, xs * ys], axis=0)
    filtered = _gaussian_filter_valid(stacked, size, sigma)
    mu1s, mu2s, e11, e22, e12 = tf.split(filtered, 5, axis=0)
    sigma11 = e11 - mu1s * mu1s
    sigma22 = e22 - mu2s * mu2s
    sigma12 = e12 - mu1s * mu2s
    mu1, mu2 = mu1s + shift, mu2s + shift
    cs_map = (2. * sigma12 + c2) / (sigma11 + sigma22 + c2)
    ssim_map = (2. * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
    return tf.reduce_mean(ssim_map), tf.reduce_mean(cs_map)


def _downsample(planes):
    """2x2 block average, last pixel reflected for odd sizes: M x H x W x 1 -> M x ceil(H/2) x ceil(W/2) x 1."""
    height, width = _spatial_size(planes)
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        planes = tf.pad(planes, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='SYMMETRIC')
    return tf.nn.avg_pool2d(planes, ksize=2, strides=2, padding='VALID')


def ms_ssim(img1, img2, max_val=255., data_format='NHWC'):
    """MS-SSIM of two float batches (N x H x W x C, or N x C x H x W for 'NCHW'; values 0..max_val).

    Spatial sizes must be static. Returns a scalar float32 tensor, statistics pooled over the batch.
    """
    x = _to_planes(tf.convert_to_tensor(img1, tf.float32), data_format)
    y = _to_planes(tf.convert_to_tensor(img2, tf.float32), data_format)
    x.shape.assert_is_compatible_with(y.shape)
    result = 1.
    num_scales = len(WEIGHTS)
    for level, weight in enumerate(WEIGHTS):
        ssim_l, cs_l = _ssim_and_cs(x, y, max_val)
        term = ssim_l if level == num_scales - 1 else cs_l
        # Guard (see module docstring): no negative base under a fractional power.
        result = result * tf.pow(tf.maximum(term, MIN_TERM), weight)
        if level < num_scales - 1:
            x, y = _downsample(x), _downsample(y)
    return result


def mse(img1, img2):
    """Per-image mean squared error over all pixels and channels: N x ... -> (N,) float32."""
    diff = tf.convert_to_tensor(img1, tf.float32) - tf.convert_to_tensor(img2, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=list(range(1, diff.shape.ndims)))


def psnr(img1, img2, max_val=255.):
    """Per-image PSNR in dB: N x ... -> (N,) float32 (inf for identical images)."""
    return 10. * tf.log(max_val ** 2 / mse(img1, img2)) / np.log(10.)
