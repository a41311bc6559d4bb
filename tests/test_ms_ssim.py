"""Tests for the numpy MS-SSIM/PSNR reference (ms_ssim_np) and the TF op (ms_ssim)."""
import numpy as np
import pytest
from scipy import ndimage

import ms_ssim as ms_ssim_tf
import ms_ssim_np
from tf_helpers import tf


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


# ---------------------------------------------------------------- numpy reference

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


def test_tf_identical_is_one():
    a = _random((2, 160, 160, 3))
    assert _run_tf(a, a) == pytest.approx(1.0, abs=1e-6)


CASES = [
    ('random_160_batch2', lambda: _random((2, 160, 160, 3)), 20.),
    ('smooth_160_batch2', lambda: _smooth((2, 160, 160, 3)), 5.),
    ('random_64x96', lambda: _random((1, 64, 96, 3)), 20.),
    ('smooth_64x96', lambda: _smooth((1, 64, 96, 3)), 5.),
    ('smooth_odd_37x53_gray', lambda: _smooth((3, 37, 53, 1)), 5.),
]


@pytest.mark.parametrize('name,make,std', CASES, ids=[c[0] for c in CASES])
def test_tf_matches_numpy(name, make, std):
    a = make()
    b = _noisy(a, std)
    expected = ms_ssim_np.ms_ssim(a, b)
    assert _run_tf(a, b) == pytest.approx(expected, abs=1e-4)


def test_tf_nchw_matches_numpy():
    a = _smooth((2, 64, 96, 3))
    b = _noisy(a, 8.)
    expected = ms_ssim_np.ms_ssim(a, b)
    got = _run_tf(a.transpose(0, 3, 1, 2), b.transpose(0, 3, 1, 2), data_format='NCHW')
    assert got == pytest.approx(expected, abs=1e-4)


def _value_and_grad(a, b):
    with tf.Graph().as_default():
        x = tf.constant(a, tf.float32)
        y = tf.constant(b, tf.float32)
        value = ms_ssim_tf.ms_ssim(x, y)
        grad, = tf.gradients(value, y)
        with tf.Session() as sess:
            return sess.run([value, grad])


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


def test_tf_psnr_and_mse():
    a = np.full((2, 8, 8, 3), 100., np.float32)
    b = a + np.array([1., 2.], np.float32)[:, None, None, None]
    with tf.Graph().as_default():
        p, m = ms_ssim_tf.psnr(a, b), ms_ssim_tf.mse(a, b)
        with tf.Session() as sess:
            p, m = sess.run([p, m])
    np.testing.assert_allclose(m, [1., 4.])
    np.testing.assert_allclose(p, [ms_ssim_np.psnr(a[0], b[0]), ms_ssim_np.psnr(a[1], b[1])], atol=1e-4)
