"""Quantizer: nearest-center forward pass, soft gradient, centers initialization and regularizer."""
import numpy as np

import config_parser
import quantizer
from helpers import configs
from tf_helpers import tf


def _run(x_np, centers_np, sigma=1.):
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.constant(x_np, tf.float32)
        c = tf.constant(centers_np, tf.float32)
        out = quantizer.quantize(x, c, sigma)
        grad_x = tf.gradients(tf.reduce_sum(out.qbar * (1. + np.arange(x_np.size)).reshape(x_np.shape)), x)[0]
        grad_soft = tf.gradients(tf.reduce_sum(out.qsoft * (1. + np.arange(x_np.size)).reshape(x_np.shape)), x)[0]
        return sess.run({'out': out._asdict(), 'g': grad_x, 'gs': grad_soft})


def test_forward_is_nearest_center():
    rng = np.random.RandomState(1)
    centers = np.array([0.9, -1.7, 0.1, 2.3, -0.4, 1.5], np.float32)  # unsorted, like trained ones
    x = rng.uniform(-3, 3, (2, 3, 4, 5)).astype(np.float32)
    r = _run(x, centers)['out']
    expected = np.argmin(np.abs(x[..., None] - centers), axis=-1)
    np.testing.assert_array_equal(r['symbols'], expected)
    np.testing.assert_array_equal(r['qhard'], centers[expected])
    np.testing.assert_allclose(r['qbar'], centers[expected], atol=1e-6)
    assert r['symbols'].dtype == np.int64


def test_soft_assignment_and_gradient_is_soft():
    centers = np.array([-1., 0., 2.], np.float32)
    x = np.array([[0.3, -0.8, 1.4]], np.float32)
    r = _run(x, centers)
    w = np.exp(-(x[..., None] - centers) ** 2)
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(r['out']['qsoft'], (w * centers).sum(-1), rtol=1e-5)
    # the gradient of qbar is the gradient of qsoft, not zero (the hard path has no gradient)
    np.testing.assert_allclose(r['g'], r['gs'], rtol=1e-5)
    assert np.all(np.abs(r['g']) > 0)


def test_centers_init_and_regularizer():
    ae_config, _ = configs()
    with tf.Graph().as_default():
        centers = quantizer.create_centers_variable(ae_config)
        quantizer.create_centers_regularization_term(ae_config, centers)
        reg = tf.losses.get_regularization_loss()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            c, r = sess.run([centers, reg])
    assert c.shape == (6,) and np.all(c >= -2) and np.all(c < 2) and len(set(c.tolist())) == 6
    np.testing.assert_allclose(r, 0.1 * 0.5 * np.sum(c ** 2), rtol=1e-5)
    # op seed 666: the same initial centers in every graph
    with tf.Graph().as_default():
        centers2 = quantizer.create_centers_variable(config_parser.apply_overrides(ae_config, []))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            np.testing.assert_array_equal(sess.run(centers2), c)
