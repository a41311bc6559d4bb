"""Tests for the numpy MS-SSIM/PSNR reference (ms_ssim_np) and the TF op (ms_ssim).

The TF op must give the value of the original imgcomp-cvpr TF ``MultiScaleSSIM``; that computation is
re-derived below in float64 numpy (``_ref_ms_ssim``), independently of ms_ssim.py.
"""
import io
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import ms_ssim as ms_ssim_tf
import ms_ssim_np
from tf_helpers import tf

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
C1 = (0.01 * 255.) ** 2
C2 = (0.03 * 255.) ** 2


def _rng(seed=0):
    return np.random.RandomState(seed)


def _noisy(img, std, seed=1):
    return np.clip(img + _rng(seed).normal(0., std, img.shape), 0., 255.)


def _smooth(shape, seed=0):
    """Smooth image(s) with values in [30, 230], shape N x H x W x C."""
    x = ndimage.gaussian_filter(_rng(seed).rand(*shape) * 255., sigma=(0, 4, 4, 0))
    return (x - x.min()) / (x.max() - x.min()) * 200. + 30.


def _random(shape, seed=0):
    return _rng(seed).rand(*shape) * 255.


def _natural(height, width, seed):
    """A synthetic photo-like RGB image (uint8): smooth shading, a few edges, some texture."""
    rng = _rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    img = ndimage.gaussian_filter(rng.rand(height, width, 3), sigma=(12, 12, 0))
    img = (img - img.min()) / (img.max() - img.min()) * 140. + 50.
    for _ in range(3):  # straight edges at random angles
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * (height + width)
        side = np.cos(angle) * (rows - height / 2.) + np.sin(angle) * (cols - width / 2.) > offset
        img += side[..., None] * rng.uniform(-40., 40., 3)
    texture = np.sin(rows * rng.uniform(0.3, 1.2) + cols * rng.uniform(0.3, 1.2))
    img += 12. * texture[..., None] * (cols / width)[..., None]
    img += ndimage.gaussian_filter(rng.normal(0., 10., (height, width, 3)), sigma=(0.7, 0.7, 0))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _jpeg(img, quality):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert('RGB'))


def _jpeg_pair(num, height, width, qualities=(8, 15, 25, 40), seed=0):
    """Originals and their JPEG round trips, float64 N x H x W x 3 (what the loss sees in training)."""
    orig = [_natural(height, width, seed + i) for i in range(num)]
    dec = [_jpeg(img, qualities[i % len(qualities)]) for i, img in enumerate(orig)]
    return np.stack(orig).astype(np.float64), np.stack(dec).astype(np.float64)


# ---------------------------------------------------------------- float64 re-derivation of the original TF op

def _ref_window(size):
    """1-D Gaussian with taps -(size // 2) .. size // 2 (odd length even for even size)."""
    sigma = size * 1.5 / 11.
    half = size // 2
    g = np.array([math.exp(-k * k / (2. * sigma * sigma)) for k in range(-half, half + 1)])
    return g / g.sum()


def _ref_correlate_valid(img, taps, axis):
    """'valid' 1-D correlation along one axis, by summing shifted slices."""
    n_out = img.shape[axis] - len(taps) + 1
    assert n_out >= 1
    out = np.zeros(img.shape[:axis] + (n_out,) + img.shape[axis + 1:])
    for k, weight in enumerate(taps):
        index = [slice(None)] * img.ndim
        index[axis] = slice(k, k + n_out)
        out += weight * img[tuple(index)]
    return out


def _ref_blur(img):
    _, height, width, _ = img.shape
    g = _ref_window(min(11, height, width))
    total = max(len(g) - width, 0)  # from the width, applied to both axes
    pads = (total, total // 2)
    img = np.pad(img, ((0, 0), pads, pads, (0, 0)), mode='reflect')
    return _ref_correlate_valid(_ref_correlate_valid(img, g, 2), g, 1)


def _ref_downsample(img):
    img = np.pad(img, ((0, 0), (0, 1), (0, 1), (0, 0)), mode='reflect')
    img = _ref_correlate_valid(img, (0.5, 0.5), 2)
    img = _ref_correlate_valid(img, (0.5, 0.5), 1)
    return img[:, ::2, ::2, :]


def _ref_ms_ssim(img1, img2):
    """The original TF MultiScaleSSIM (max_val 255), float64, N x H x W x C."""
    x, y = np.asarray(img1, np.float64), np.asarray(img2, np.float64)
    value = 1.
    for level, weight in enumerate(WEIGHTS):
        mu1, mu2 = _ref_blur(x), _ref_blur(y)
        sigma11 = _ref_blur(x * x) - mu1 * mu1
        sigma22 = _ref_blur(y * y) - mu2 * mu2
        sigma12 = _ref_blur(x * y) - mu1 * mu2
        v1 = 2. * sigma12 + C2
        v2 = sigma11 + sigma22 + C2
        if level < len(WEIGHTS) - 1:
            value *= np.mean(v1 / v2) ** weight
            x, y = _ref_downsample(x), _ref_downsample(y)
        else:
            value *= np.mean((2. * mu1 * mu2 + C1) * v1 / ((mu1 * mu1 + mu2 * mu2 + C1) * v2)) ** weight
    return float(value)


def test_reference_helpers_by_hand():
    """The reference's own building blocks (a wrong reference would make the comparisons moot)."""
    assert len(_ref_window(10)) == 11 and len(_ref_window(5)) == 5  # 2 * (size // 2) + 1 taps
    assert _ref_window(11)[5] == pytest.approx(1. / sum(math.exp(-k * k / 4.5) for k in range(-5, 6)))
    # 10 x 10 at the coarsest scale: top row / left column reflected in, single output
    img = np.arange(100.).reshape(1, 10, 10, 1)
    g = _ref_window(10)
    rows = np.concatenate([[1], np.arange(10)])  # padded row 0 is row 1 (REFLECT)
    expected = sum(g[i] * g[j] * img[0, rows[i], rows[j], 0] for i in range(11) for j in range(11))
    assert _ref_blur(img).shape == (1, 1, 1, 1)
    assert _ref_blur(img)[0, 0, 0, 0] == pytest.approx(expected, rel=1e-14)
    col = np.arange(5.)[None, :, None, None] * np.ones((1, 1, 4, 1))
    np.testing.assert_allclose(_ref_downsample(col)[0, :, 0, 0], [0.5, 2.5, 3.5])


# ---------------------------------------------------------------- numpy reference (ms_ssim_np)

def test_np_identical_is_one():
    img = _rng().randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    assert ms_ssim_np.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim_np.ms_ssim(img[0], img[0]) == pytest.approx(1.0, abs=1e-12)  # H x W x C


def test_np_decreases_with_noise():
    img = _smooth((1, 96, 96, 3))
    values = [ms_ssim_np.ms_ssim(img, _noisy(img, std)) for std in (2., 8., 20., 50.)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1.


def test_np_symmetric():
    a = _smooth((2, 80, 72, 3), seed=3)
    b = _noisy(a, 10.)
    assert ms_ssim_np.ms_ssim(a, b) == pytest.approx(ms_ssim_np.ms_ssim(b, a), abs=1e-12)


def test_np_fspecial_window():
    w = ms_ssim_np.fspecial_gauss(11, 1.5)
    assert w.sum() == pytest.approx(1.)
    # centre of fspecial('gaussian', 11, 1.5) by hand: 1 / (sum_k exp(-k^2 / 4.5))^2, k = -5..5
    assert w[5, 5] == pytest.approx(1. / sum(np.exp(-k * k / 4.5) for k in range(-5, 6)) ** 2)
    assert w[5, 5] == pytest.approx(0.070762, abs=1e-6)
    w10 = ms_ssim_np.fspecial_gauss(10, 1.5 * 10 / 11)  # even size: centre between pixels
    np.testing.assert_allclose(w10, w10[::-1, ::-1])
    assert w10[4, 4] == w10[5, 5] == w10.max()
    g = ms_ssim_np.gaussian_1d(10, 1.5 * 10 / 11)
    np.testing.assert_allclose(np.outer(g, g), w10, atol=1e-15)


def test_np_downsample_pairs_and_odd_reflect():
    x = np.arange(5.)[None, :, None, None] * np.ones((1, 1, 4, 1))
    down = ms_ssim_np.downsample(x)
    assert down.shape == (1, 3, 2, 1)
    np.testing.assert_allclose(down[0, :, 0, 0], [0.5, 2.5, 4.])


def test_np_batch_pooling_and_per_image():
    a = _smooth((2, 64, 64, 1))
    b = _noisy(a, 10.)
    per = ms_ssim_np.ms_ssim_per_image(a, b)
    assert per.shape == (2,)
    assert per[0] == pytest.approx(ms_ssim_np.ms_ssim(a[0], b[0]))


def test_np_shape_mismatch_raises():
    with pytest.raises(ValueError, match='shapes differ'):
        ms_ssim_np.ms_ssim(np.zeros((32, 32, 3)), np.zeros((32, 30, 3)))
    with pytest.raises(ValueError):
        ms_ssim_np.psnr(np.zeros((32, 32)), np.zeros((32, 32)))


def test_np_psnr_known_values():
    a = np.full((16, 16, 3), 100, np.uint8)
    assert ms_ssim_np.psnr(a, a + 1) == pytest.approx(10 * np.log10(255. ** 2), abs=1e-9)
    assert ms_ssim_np.psnr(a, a + 1) == pytest.approx(48.1308, abs=1e-4)
    assert ms_ssim_np.psnr(a, a) == float('inf')


# ---------------------------------------------------------------- TensorFlow op

def _run_tf(a, b, data_format='NHWC'):
    with tf.Graph().as_default():
        value = ms_ssim_tf.ms_ssim(tf.constant(a, tf.float32), tf.constant(b, tf.float32),
                                   data_format=data_format)
        with tf.Session() as sess:
            return float(sess.run(value))


def _value_and_grad(a, b):
    with tf.Graph().as_default():
        x = tf.constant(a, tf.float32)
        y = tf.constant(b, tf.float32)
        value = ms_ssim_tf.ms_ssim(x, y)
        grad, = tf.gradients(value, y)
        with tf.Session() as sess:
            return sess.run([value, grad])


def _luminance(a, b):
    return (2. * a * b + C1) / (a * a + b * b + C1)


def test_tf_identical_is_one():
    a = _random((2, 160, 160, 3))
    assert _run_tf(a, a) == pytest.approx(1.0, abs=1e-6)


CASES = [
    # the training crop size: padded 11-tap window at the coarsest (10 x 10) scale
    ('jpeg_160_batch4', lambda: _jpeg_pair(4, 160, 160)),
    ('noisy_smooth_160_batch4', lambda: (lambda a: (a, _noisy(a, 8.)))(_smooth((4, 160, 160, 3), seed=5))),
    ('noisy_random_160_batch2', lambda: (lambda a: (a, _noisy(a, 25.)))(_random((2, 160, 160, 3), seed=6))),
    # 88,44,22,11,6 x 72,36,18,9,5: odd-size (REFLECT) downsampling in both axes, non-square
    ('jpeg_88x72_batch3', lambda: _jpeg_pair(3, 88, 72, seed=10)),
    # 84,42,21,11,6 x 76,38,19,10,5: odd downsampling, and the 11x10 scale is padded on both axes
    # by the amount the width needs
    ('jpeg_84x76_batch3', lambda: _jpeg_pair(3, 84, 76, seed=20)),
]


@pytest.mark.parametrize('name,make', CASES, ids=[c[0] for c in CASES])
def test_tf_matches_original_definition(name, make):
    """Value = float64 re-derivation of the original TF MS-SSIM (float32 error here ~1e-7).
    Catches the old centred 10-tap window without padding (6e-5 .. 1.7e-3 off), SYMMETRIC instead
    of REFLECT odd-size downsampling (88x72, 84x76), padding at bottom/right instead of top/left,
    padding derived from the height (84x76 then cannot be filtered)."""
    a, b = make()
    assert _run_tf(a, b) == pytest.approx(_ref_ms_ssim(a, b), abs=1e-6)


def test_tf_nchw_equals_nhwc():
    """Catches a wrong transpose for NCHW (e.g. H and W swapped, which matters for 84 x 76)."""
    a, b = _jpeg_pair(2, 84, 76, seed=30)
    nhwc = _run_tf(a, b)
    nchw = _run_tf(a.transpose(0, 3, 1, 2), b.transpose(0, 3, 1, 2), data_format='NCHW')
    assert nchw == pytest.approx(nhwc, abs=1e-7)
    assert nhwc == pytest.approx(_ref_ms_ssim(a, b), abs=1e-6)


def test_tf_equals_numpy_where_definitions_agree():
    """176 x 176: every scale is >= 11 and only even sizes are downsampled, where the original TF
    and the numpy (val.py) definitions coincide. Catches divergent constants/weights between the
    training loss and the evaluation metric."""
    a, b = _jpeg_pair(2, 176, 176, seed=40)
    assert _run_tf(a, b) == pytest.approx(ms_ssim_np.ms_ssim(a, b), abs=1e-6)


def _fd_gradient(a, b, pixels, step=0.01):
    """Central differences of the float64 reference with respect to pixels of the second image."""
    grads = []
    for index in pixels:
        plus, minus = b.copy(), b.copy()
        plus[index] += step
        minus[index] -= step
        grads.append((_ref_ms_ssim(a, plus) - _ref_ms_ssim(a, minus)) / (2. * step))
    return np.array(grads)


def _random_pixels(shape, count, seed):
    rng = _rng(seed)
    return [tuple(rng.randint(0, n) for n in shape) for _ in range(count)]


def _block_directions(shape, block, seed, count):
    """Indicator directions of random block x block patches (one image, one channel each)."""
    rng = _rng(seed)
    for _ in range(count):
        n, c = rng.randint(shape[0]), rng.randint(shape[3])
        r, s = rng.randint(0, shape[1] - block + 1), rng.randint(0, shape[2] - block + 1)
        direction = np.zeros(shape)
        direction[n, r:r + block, s:s + block, c] = 1.
        yield direction


@pytest.mark.parametrize('height,width', [(160, 160), (84, 76)])
def test_tf_gradient_matches_original_definition(height, width):
    """d loss / d reconstruction = the reference's (central differences), relative L2 within 0.1 %
    (float32 gives ~5e-7). Per pixel, and along 16 x 16 patch directions, which weigh the coarse
    scales. Catches the old op's gradient error (centred 10-tap window at the coarsest scale,
    SYMMETRIC odd-size downsampling): at 160 x 160 1.4 % per pixel and 5 % along patches, at
    84 x 76 13 % and 9 %; also padding at bottom/right instead of top/left."""
    a, b = _jpeg_pair(2, height, width, seed=50)
    _, grad = _value_and_grad(a, b)
    pixels = _random_pixels(a.shape, 12, seed=1)
    expected = _fd_gradient(a, b, pixels)
    got = np.array([grad[p] for p in pixels])
    assert np.linalg.norm(got - expected) < 1e-3 * np.linalg.norm(expected), (got, expected)

    step = 0.01
    got, expected = [], []
    for direction in _block_directions(a.shape, 16, seed=2, count=8):
        got.append(np.sum(grad * direction))
        expected.append((_ref_ms_ssim(a, b + step * direction) -
                         _ref_ms_ssim(a, b - step * direction)) / (2. * step))
    got, expected = np.array(got), np.array(expected)
    assert np.linalg.norm(got - expected) < 1e-3 * np.linalg.norm(expected), (got, expected)


# ---------------------------------------------------------------- known answers, computed by hand

def test_known_answer_constant_images():
    """Constant images: all sigmas are 0, so cs_l = C2 / C2 = 1 and only the last level's luminance
    term remains; batch statistics are pooled before the power. MS-SSIM = (mean_i l(a_i, b_i))^0.1333.
    Catches wrong C1 / max_val, a wrong last weight, cs instead of ssim at the last level, mu without
    the shift added back, per-image MS-SSIM averaged instead of pooled (both modules), and float32
    cancellation in E[x^2] - mu^2 without the per-plane shift (2e-5 off)."""
    a = np.empty((2, 160, 160, 3))
    b = np.empty((2, 160, 160, 3))
    a[0], b[0], a[1], b[1] = 100., 130., 40., 200.
    l0 = (2. * 100. * 130. + 6.5025) / (100. ** 2 + 130. ** 2 + 6.5025)
    l1 = (2. * 40. * 200. + 6.5025) / (40. ** 2 + 200. ** 2 + 6.5025)
    expected = (0.5 * (l0 + l1)) ** 0.1333
    assert expected == pytest.approx(0.9491, abs=1e-4)  # 0.67563 ** 0.1333
    assert _run_tf(a, b) == pytest.approx(expected, abs=1e-6)
    assert ms_ssim_np.ms_ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_known_answer_checkerboard_two_levels():
    """x = a + s p, y = b + t p with p = (-1)^(i+j). One 2x2 average makes both constant, so levels
    1..4 contribute cs = 1 and l(a, b) at the last level. At level 0 the window sees p with mean
    +-q^2, q = sum_k g_k (-1)^k, and p^2 = 1: sigma11 = s^2 (1-q^4), sigma22 = t^2 (1-q^4),
    sigma12 = s t (1-q^4). Catches a downsampling that subsamples instead of averaging, a wrong
    level-0 weight, missing mu^2 terms in the variances (both modules), and float32 cancellation
    without the per-plane shift."""
    a, s, b, t = 100., 40., 120., 25.
    g = np.array([math.exp(-k * k / 4.5) for k in range(-5, 6)])
    q = np.sum(g * (-1.) ** np.arange(11)) / np.sum(g)
    r = 1. - q ** 4
    cs0 = (2. * s * t * r + C2) / ((s * s + t * t) * r + C2)
    expected = cs0 ** 0.0448 * _luminance(a, b) ** 0.1333
    p = (-1.) ** np.add.outer(np.arange(160), np.arange(160))
    x = np.broadcast_to((a + s * p)[None, :, :, None], (1, 160, 160, 3))
    y = np.broadcast_to((b + t * p)[None, :, :, None], (1, 160, 160, 3))
    assert _run_tf(x, y) == pytest.approx(expected, abs=2e-6)
    assert ms_ssim_np.ms_ssim(x, y) == pytest.approx(expected, abs=1e-12)


def _shifted_pair(x, delta):
    """y = x + delta: sigma11 = sigma22 = sigma12 everywhere, so every cs_l is exactly 1 and only the
    last level's luminance term (of the blurred coarsest image) remains."""
    x = np.broadcast_to(x[None, :, :, None], (1,) + x.shape + (3,))
    return x, x + delta


def test_known_answer_coarsest_window_160():
    """160 x 160 made of 16 x 16 blocks: the 10 x 10 coarsest image is a + h on row 0 and + k on
    column 1. The original pads one reflected row/column at top/left (padded row 0 = row 1) and
    uses 11 taps at x = -5..5, so the single output is m = a + h g(-4) + k (g(-5) + g(-3)).
    numpy (val.py) uses a centred 10-tap window: m = a + h g10(-4.5) + k g10(-3.5).
    Catches the old centred 10-tap window, SYMMETRIC instead of REFLECT blur padding, padding at
    bottom/right instead of top/left."""
    a, h, k, delta = 30., 150., 60., -25.
    x = np.full((160, 160), a)
    x[:16] += h
    x[:, 16:32] += k
    sigma2 = 2. * (10 * 1.5 / 11) ** 2
    g = {i: math.exp(-i * i / sigma2) for i in range(-5, 6)}
    g = {i: v / sum(g.values()) for i, v in g.items()}
    m = a + h * g[-4] + k * (g[-5] + g[-3])
    assert _run_tf(*_shifted_pair(x, delta)) == pytest.approx(_luminance(m, m + delta) ** 0.1333, abs=1e-6)

    g10 = {i: math.exp(-i * i / sigma2) for i in np.arange(-4.5, 5)}
    g10 = {i: v / sum(g10.values()) for i, v in g10.items()}
    m_np = a + h * g10[-4.5] + k * g10[-3.5]
    expected_np = _luminance(m_np, m_np + delta) ** 0.1333
    assert ms_ssim_np.ms_ssim(*_shifted_pair(x, delta)) == pytest.approx(expected_np, abs=1e-12)


def test_known_answer_odd_downsampling_88x72():
    """88 x 72 made of 8 x 8 blocks: the 11 x 9 scale is a + h on its last row and + k on its last
    column. Downsampling to 6 x 5 averages (x[10] + x[9]) / 2 = a + h/2 into the last row (REFLECT;
    numpy: x[10] with itself, a + h) and likewise a + k/2 into the last column. The 5-tap window
    (sigma 7.5/11) gives a 2 x 1 map: m0 = a + (k/2) G, m1 = a + (h/2 + k/2) G, G = g(+2).
    Catches SYMMETRIC (edge-repeating) odd-size downsampling in the TF op, and a changed numpy one."""
    a, h, k, delta = 30., 110., 100., -25.
    x = np.full((88, 72), a)
    x[80:] += h
    x[:, 64:] += k
    sigma2 = 2. * (5 * 1.5 / 11) ** 2
    big_g = math.exp(-4. / sigma2) / sum(math.exp(-i * i / sigma2) for i in range(-2, 3))
    m0, m1 = a + k / 2. * big_g, a + (h + k) / 2. * big_g
    expected = (0.5 * (_luminance(m0, m0 + delta) + _luminance(m1, m1 + delta))) ** 0.1333
    assert _run_tf(*_shifted_pair(x, delta)) == pytest.approx(expected, abs=1e-6)

    m0, m1 = a + k * big_g, a + (h + k) * big_g
    expected_np = (0.5 * (_luminance(m0, m0 + delta) + _luminance(m1, m1 + delta))) ** 0.1333
    assert ms_ssim_np.ms_ssim(*_shifted_pair(x, delta)) == pytest.approx(expected_np, abs=1e-12)


@pytest.mark.parametrize('height,width,match', [
    (160, 176, 'does not fit the height'),  # 10 x 11 at the last scale: no padding, 11 taps > 10 rows
    (64, 8, 'side of 1'),                   # width 1 at scale 3 cannot be REFLECT-padded
])
def test_tf_impossible_sizes_raise(height, width, match):
    """Where the original MultiScaleSSIM fails, a clear ValueError instead of a made-up value."""
    a = np.zeros((1, height, width, 3), np.float32)
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=match):
            ms_ssim_tf.ms_ssim(a, a)


def test_tf_transposed_size_is_fine():
    """176 x 160 (width the smaller side): the padding derived from the width also fits the height."""
    a, b = _jpeg_pair(1, 176, 160, seed=60)
    assert _run_tf(a, b) == pytest.approx(_ref_ms_ssim(a, b), abs=1e-6)


@pytest.mark.parametrize('kind', ['independent_noise', 'identical', 'anti_correlated'])
def test_tf_gradient_finite(kind):
    a = _random((2, 160, 160, 3), seed=0)
    b = {'independent_noise': _random((2, 160, 160, 3), seed=1),
         'identical': a.copy(),
         'anti_correlated': 255. - a}[kind]  # negative cs at every scale: the guard is active
    value, grad = _value_and_grad(a, b)
    assert np.isfinite(value)
    assert grad.shape == a.shape
    assert np.all(np.isfinite(grad))
    if kind == 'identical':
        assert value == pytest.approx(1., abs=1e-6)
