"""Loss terms of training_helpers: which reconstruction each logged distortion sees, and the rate hinge."""
import numpy as np
import pytest

import config_parser
import ms_ssim
import training_helpers
from helpers import tiny_configs
from tf_helpers import tf


def _distortions(x, x_out, minimize, is_training):
    ae_config, _ = tiny_configs()
    cfg = config_parser.apply_overrides(ae_config, ['distortion_to_minimize="{}"'.format(minimize)])
    with tf.Graph().as_default(), tf.Session() as sess:
        d = training_helpers.distortions(tf.constant(x, tf.float32), tf.constant(x_out, tf.float32),
                                         cfg, is_training)
        return sess.run(d._asdict()), cfg


def _pair():
    """x is integral; x_out = x + 1.7: truncated 1 (MSE 1), rounded 2 (MSE 4), float MSE 2.89."""
    x = np.random.RandomState(0).randint(0, 200, (2, 16, 16, 3)).astype(np.float32)
    return x, x + 1.7


def _psnr(mse):
    return 10. * np.log10(255. ** 2 / mse)


@pytest.mark.parametrize('is_training', [False, True])
def test_logged_mse_and_psnr_truncate_like_the_original(is_training):
    """Not minimized (or on the test batch): both images cast to int, i.e. truncated. Catches rounding
    (MSE 4) and the float reconstruction (MSE 2.89)."""
    x, x_out = _pair()
    r, _ = _distortions(x, x_out, 'ms_ssim', is_training)
    assert r['mse'] == pytest.approx(1.0, abs=1e-6)
    assert r['psnr'] == pytest.approx(_psnr(1.0), abs=1e-4)


@pytest.mark.parametrize('minimize', ['mse', 'psnr'])
def test_minimized_metric_uses_the_float_reconstruction(minimize):
    """The minimized metric needs gradients: float in training, truncated on the test batch."""
    x, x_out = _pair()
    train, cfg = _distortions(x, x_out, minimize, is_training=True)
    test, _ = _distortions(x, x_out, minimize, is_training=False)
    if minimize == 'mse':
        assert train['mse'] == pytest.approx(1.7 ** 2, rel=1e-5)
        assert train['psnr'] == pytest.approx(_psnr(1.0), abs=1e-4)  # the other one: truncated
        assert train['d_loss_scaled'] == pytest.approx(1.7 ** 2, rel=1e-5)
    else:
        assert train['psnr'] == pytest.approx(_psnr(1.7 ** 2), abs=1e-4)
        assert train['mse'] == pytest.approx(1.0, abs=1e-6)
        assert train['d_loss_scaled'] == pytest.approx(cfg.K_psnr - _psnr(1.7 ** 2), abs=1e-3)
    assert test['mse'] == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_is_computed_on_the_float_reconstruction():
    """As the original (also for the test batch): a sub-integer change of x_out changes MS-SSIM."""
    x = np.full((1, 32, 32, 3), 100., np.float32)
    x[:, ::2] = 140.
    x_out = x + 0.6
    with tf.Graph().as_default(), tf.Session() as sess:
        expected = sess.run(ms_ssim.ms_ssim(tf.constant(x), tf.constant(x_out)))
    r, cfg = _distortions(x, x_out, 'ms_ssim', is_training=False)
    assert r['ms_ssim'] == pytest.approx(expected, abs=1e-7)
    assert r['ms_ssim'] < 1.  # truncation would have given back x exactly, MS-SSIM 1
    assert r['d_loss_scaled'] == pytest.approx(cfg.K_ms_ssim * (1. - expected), rel=1e-5)


def test_identical_images_give_a_finite_psnr():
    x, _ = _pair()
    r, _ = _distortions(x, x, 'psnr', is_training=True)
    assert np.isfinite(r['psnr']) and r['psnr'] > 90.


def test_rate_loss_hinge():
    """H_real = mean bits, H_mask = mean masked bits, pc_loss = beta * max((H_real + H_mask)/2 - H_target, 0)."""
    ae_config, _ = tiny_configs()
    bits = np.array([[1., 3.], [2., 6.]], np.float32)
    heatmap = np.array([[1., 0.], [1., 0.5]], np.float32)
    for H_target, expected_hinge in ((1.0, (3.0 + 1.5) / 2 - 1.0), (10.0, 0.)):
        cfg = config_parser.apply_overrides(ae_config, ['H_target={}'.format(H_target), 'beta=500'])
        with tf.Graph().as_default(), tf.Session() as sess:
            r = sess.run(training_helpers.rate_loss(tf.constant(bits), tf.constant(heatmap), cfg)._asdict())
        assert r['H_real'] == pytest.approx(3.0)
        assert r['H_mask'] == pytest.approx((1. + 2. + 3.) / 4)
        assert r['pc_loss'] == pytest.approx(500. * expected_hinge)
