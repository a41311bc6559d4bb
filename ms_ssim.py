"""MS-SSIM as a TensorFlow graph op, for the training loss and in-graph summaries (their MSE / PSNR are
training_helpers', the numpy PSNR of evaluation is ms_ssim_np.psnr).

Why it exists: the paper trains with d = 1 - MS-SSIM on 160 x 160 crops, using the authors' own TF
MS-SSIM (imgcomp-cvpr ``code/ms_ssim.py``, ``MultiScaleSSIM``). ``tf.image.ssim_multiscale`` cannot
stand in for it: it rejects 160 x 160 inputs (its 11 x 11 window does not fit the coarsest scale)
and its gradients become NaN for dissimilar images. This op computes the value of that original TF
function, quirks included (float NHWC or NCHW inputs in 0..max_val; NCHW is transposed first):

* 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), K1 = 0.01, K2 = 0.03, L = max_val;
* per scale with images of H x W: size = min(11, H, W), sigma = size * 1.5 / 11, and a normalised
  1-D Gaussian with taps at x = -(size // 2) .. size // 2 -- so 11 taps also when size = 10, and
  always an odd number of taps centred on a pixel;
* blur: both spatial axes are REFLECT-padded (edge pixel not repeated) by total_pad = max(taps - W, 0)
  at top/left and total_pad // 2 at bottom/right, where W is the WIDTH even for the height axis;
  then separable 'valid' filtering along W and along H. At a 160 crop only the coarsest scale
  (10 x 10) is padded: one row on top and one column on the left, giving a single 1 x 1 output;
* mu1, mu2 = blur(x), blur(y); sigma11 = blur(x^2) - mu1^2, sigma22 = blur(y^2) - mu2^2,
  sigma12 = blur(x y) - mu1 mu2; v1 = 2 sigma12 + C2, v2 = sigma11 + sigma22 + C2;
  cs_l = mean(v1 / v2), ssim_l = mean((2 mu1 mu2 + C1) v1 / ((mu1^2 + mu2^2 + C1) v2)), both means
  over batch, space and channels jointly (one value for the whole batch);
* downsampling: REFLECT pad of one row / column at bottom / right, 2-tap average along each axis,
  keep even indices. For an even size that is the 2x2 block average; for an odd size the last
  output is (x[n-1] + x[n-2]) / 2;
* MS-SSIM = prod_{l<5} cs_l^{w_l} * ssim_5^{w_5}.

Where the original fails, this raises ValueError: when the padding (derived from the width) leaves
the height shorter than the window, i.e. the height is the smaller side, even and < 11 at some scale
(e.g. 160 x 176), or when a side of 1 would have to be downsampled (REFLECT-padded). The original also
downsamples once more after the last scale and discards the result (which fails if a side is 1
there); that step is skipped, so such tiny images get a value here.

How it differs from ``ms_ssim_np`` (the port of the numpy/MATLAB MS-SSIM that val.py reports): the
numpy one uses a 2-D ``fspecial`` window of exactly size x size (centred between pixels for an even
size, e.g. 10 x 10 at the coarsest scale of a 160 crop, no padding) instead of this separable window
of 2 * (size // 2) + 1 taps with REFLECT padding, and it downsamples odd sizes by averaging the last
pixel with itself instead of with its neighbour. Both agree where neither quirk applies (all sides
>= 11 and even down to the last scale); on JPEG-degraded 160 x 160 crops they differ by ~5e-5 for a
batch of 30 and up to ~2e-3 for a single crop.

Guard: cs_l and ssim_5 are clamped to at least ``MIN_TERM`` = 1e-6 before the fractional powers.
Whenever the terms are >= 1e-6 (always, unless the images are essentially unrelated) the forward value
is unchanged; otherwise the original is NaN while here the clamped term contributes a finite value
and zero gradient, and the gradients of the other terms stay finite (x^(w-1) is evaluated at
x >= 1e-6).

Numerics (float32): the moments are computed on images shifted by a per-image, per-channel constant
(each image's own plane mean, taken before padding). Padding copies values and the window sums to 1,
so the variances and covariance are exactly those of the unshifted images and mu is recovered by
adding the shift back; but most of the cancellation in E[x^2] - E[x]^2 for values around 0..255 is
avoided.

Internally images are laid out as (N*C) x H x W x 1 so that one single-channel conv2d handles any
number of channels and both data formats (CPU conv2d only supports NHWC).
"""
import numpy as np

from ms_ssim_np import WEIGHTS, K1, K2, FILTER_SIZE, FILTER_SIGMA
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


def _gaussian_taps(height, width):
    """The original's 1-D window at a scale of height x width: odd length, normalised, float64."""
    size = min(FILTER_SIZE, height, width)
    sigma = size * FILTER_SIGMA / FILTER_SIZE
    half = size // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-x * x / (2. * sigma * sigma))
    return g / g.sum()


def _blur_padding(height, width, taps, scale):
    """(before, after) REFLECT padding of both axes, as the original derives it from the width only."""
    total = max(taps - width, 0)
    before, after = total, total // 2  # the original's `total_pad + 1 // 2` is total_pad
    if height + before + after < taps:
        raise ValueError(
            'ms_ssim: at scale {} the images are {} x {}; the {}-tap window gets padding from the width '
            'only and does not fit the height (the original MultiScaleSSIM fails here as well)'
            .format(scale, height, width, taps))
    return before, after


def _gaussian_filter_valid(planes, g):
    """Separable 'valid' filtering with the 1-D window g along W, then H."""
    taps = len(g)
    g = g.astype(np.float32)
    out = tf.nn.conv2d(planes, tf.constant(g.reshape(1, taps, 1, 1)), strides=(1, 1, 1, 1),
                       padding='VALID')
    return tf.nn.conv2d(out, tf.constant(g.reshape(taps, 1, 1, 1)), strides=(1, 1, 1, 1),
                        padding='VALID')


def _ssim_and_cs(x, y, max_val, scale=0):
    """Single-scale SSIM and cs, each a scalar mean over all planes and positions.

    x, y: (N*C) x H x W x 1 float32 planes.
    """
    height, width = _spatial_size(x)
    g = _gaussian_taps(height, width)
    before, after = _blur_padding(height, width, len(g), scale)
    c1 = (K1 * max_val) ** 2
    c2 = (K2 * max_val) ** 2
    # (Co)variances do not depend on constant offsets of either image, so centring each plane on its
    # own mean leaves them unchanged while removing most of the cancellation in E[x^2] - E[x]^2.
    shift1 = tf.stop_gradient(tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True))
    shift2 = tf.stop_gradient(tf.reduce_mean(y, axis=(1, 2, 3), keepdims=True))
    xs, ys = x - shift1, y - shift2
    if before or after:
        # Padding copies pixels, so padding the shifted planes equals shifting the padded ones.
        paddings = ((0, 0), (before, after), (before, after), (0, 0))
        xs = tf.pad(xs, paddings, mode='REFLECT')
        ys = tf.pad(ys, paddings, mode='REFLECT')
    # One conv for all five filtered quantities (stacked along the plane axis).
    stacked = tf.concat([xs, ys, xs * xs, ys * ys, xs * ys], axis=0)
    filtered = _gaussian_filter_valid(stacked, g)
    mu1s, mu2s, e11, e22, e12 = tf.split(filtered, 5, axis=0)
    sigma11 = e11 - mu1s * mu1s
    sigma22 = e22 - mu2s * mu2s
    sigma12 = e12 - mu1s * mu2s
    mu1, mu2 = mu1s + shift1, mu2s + shift2
    v1 = 2. * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    cs_map = v1 / v2
    ssim_map = (2. * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
    return tf.reduce_mean(ssim_map), tf.reduce_mean(cs_map)


def _downsample(planes, scale):
    """The original's REFLECT-padded [0.5, 0.5] blur at stride 2: M x H x W x 1 -> M x ceil(H/2) x ...

    For even sizes the padded row/column never reaches an output, so it is only added for odd ones;
    there the last output averages the last two pixels (REFLECT), not the last one with itself.
    """
    height, width = _spatial_size(planes)
    pad_h, pad_w = height % 2, width % 2
    if (pad_h and height == 1) or (pad_w and width == 1):
        raise ValueError('ms_ssim: at scale {} the images ({} x {}) have a side of 1, which the '
                         "original's REFLECT-padded downsampling cannot handle".format(scale, height, width))
    if pad_h or pad_w:
        planes = tf.pad(planes, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='REFLECT')
    return tf.nn.avg_pool2d(planes, ksize=2, strides=2, padding='VALID')


def ms_ssim(img1, img2, max_val=255., data_format='NHWC'):
    """MS-SSIM of two float batches (N x H x W x C, or N x C x H x W for 'NCHW'; values 0..max_val).

    Spatial sizes must be static. Returns a scalar float32 tensor, statistics pooled over the batch.
    Raises ValueError for sizes where the original MultiScaleSSIM fails (see the module docstring).
    """
    x = _to_planes(tf.convert_to_tensor(img1, tf.float32), data_format)
    y = _to_planes(tf.convert_to_tensor(img2, tf.float32), data_format)
    x.shape.assert_is_compatible_with(y.shape)
    result = 1.
    num_scales = len(WEIGHTS)
    for level, weight in enumerate(WEIGHTS):
        ssim_l, cs_l = _ssim_and_cs(x, y, max_val, scale=level)
        term = ssim_l if level == num_scales - 1 else cs_l
        # Guard (see module docstring): no negative base under a fractional power.
        result = result * tf.pow(tf.maximum(term, MIN_TERM), weight)
        if level < num_scales - 1:
            x, y = _downsample(x, level), _downsample(y, level)
    return result
