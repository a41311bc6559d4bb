"""recipes/widen_bottleneck.py: a model with a k times wider bottleneck that reconstructs as its source."""
import os
import sys

import numpy as np
import pytest

import model_files
import model_graph
import saver as saver_lib
from helpers import ROOT, make_model_dir, smooth_image
from tf_helpers import tf

sys.path.insert(0, os.path.join(ROOT, 'recipes'))
import widen_bottleneck  # noqa: E402


def _run(log_dir, image, skip=()):
    """Symbols, importance mask and reconstruction of `image` by a log dir's latest checkpoint."""
    ae_config, pc_config = model_files.load_configs(log_dir)
    ckpt_dir = model_files.ckpt_dir_of(log_dir)
    with tf.Graph().as_default():
        g = model_graph.build_inference_graph(ae_config, pc_config)
        with tf.Session() as sess:
            saver_lib.restore(sess, model_files.ckpt_path(ckpt_dir, model_files.select_ckpt_step(ckpt_dir)), skip)
            fetches = [g.symbols, g.x_out, g.heatmap if g.heatmap is not None else g.symbols]
            return sess.run(fetches, {g.x: image})


@pytest.mark.parametrize('heatmap', [False, True])
def test_widened_model_reconstructs_as_its_source(tmp_path, heatmap):
    """C = 8 -> 16. Without the importance map the reconstruction is the source's (the new channels have zero
    decoder weights); with it, source channel c is wide channel 2c wherever the source's mask is 0 or 1, and
    the reconstruction stays far closer to the source's than with the bottleneck layers initialized anew
    (what the recipe did before)."""
    src = make_model_dir(tmp_path, ae_overrides=['heatmap={}'.format(heatmap)])
    dst = widen_bottleneck.widen(src, os.path.join(str(tmp_path), '0101_1300 wide'), 16)
    assert model_files.load_configs(dst)[0].num_chan_bn == 16
    image = smooth_image(48, 64)
    sym_src, x_src, mask_src = _run(src, image)
    sym_dst, x_dst, mask_dst = _run(dst, image)
    assert sym_dst.shape == (1, 16) + sym_src.shape[2:]
    err = np.abs(x_dst - x_src).mean()
    if not heatmap:
        np.testing.assert_array_equal(sym_dst[:, ::2], sym_src)
        assert err < 1e-3
        return
    saturated = (mask_src == 0) | (mask_src == 1)
    assert saturated.mean() > 0.5  # the check below covers most of the volume
    np.testing.assert_array_equal(mask_dst[:, ::2][saturated], mask_src[saturated])
    np.testing.assert_array_equal(sym_dst[:, ::2][saturated], sym_src[saturated])
    # the new channels open where their source neighbour does (sigmoid(m) * 16 > 2c + 1)
    assert np.all(mask_dst[:, 1::2][mask_src == 0] == 0)
    _, x_anew, _ = _run(dst, image, skip=('to_bn', 'from_bn/weights'))
    assert err < 0.2 * np.abs(x_anew - x_src).mean()


def test_widened_checkpoint_keeps_step_and_drops_slots_of_widened_variables():
    rng = np.random.RandomState(0)
    variables = {'autoencoder/encoder/to_bn/weights': rng.normal(size=(5, 5, 4, 3)).astype(np.float32),
                 'autoencoder/encoder/to_bn/weights/Adam_AE': np.ones((5, 5, 4, 3), np.float32),
                 'autoencoder/encoder/to_bn/BatchNorm/gamma': np.array([2., 3., 4.], np.float32),
                 'autoencoder/encoder/to_bn/BatchNorm/moving_variance': np.array([5., 6., 7.], np.float32),
                 'autoencoder/decoder/from_bn/weights': rng.normal(size=(3, 3, 4, 2)).astype(np.float32),
                 'autoencoder/decoder/h1/weights': np.ones((3, 3, 4, 4), np.float32),
                 'autoencoder/decoder/h1/weights/Adam_AE': np.ones((3, 3, 4, 4), np.float32),
                 'global_step': np.array(1234)}
    wide = widen_bottleneck.widen_variables(variables, 3)
    assert 'autoencoder/encoder/to_bn/weights/Adam_AE' not in wide
    assert wide['autoencoder/decoder/h1/weights/Adam_AE'] is variables['autoencoder/decoder/h1/weights/Adam_AE']
    assert wide['global_step'] == 1234
    # heatmap channel 0 stays, source channels 1, 2 go to 1, 4; the new ones get batch norm's initial values
    np.testing.assert_array_equal(wide['autoencoder/encoder/to_bn/BatchNorm/gamma'], [2, 3, 1, 1, 4, 1, 1])
    np.testing.assert_array_equal(wide['autoencoder/encoder/to_bn/BatchNorm/moving_variance'],
                                  [5, 6, 1, 1, 7, 1, 1])
    w = wide['autoencoder/encoder/to_bn/weights']
    np.testing.assert_array_equal(w[..., [0, 1, 4]], variables['autoencoder/encoder/to_bn/weights'])
    assert np.abs(w[..., [2, 3, 5, 6]]).min() > 0  # fresh weights, not zeros
    d = wide['autoencoder/decoder/from_bn/weights']
    assert d.shape == (3, 3, 4, 6)
    np.testing.assert_array_equal(d[..., [0, 3]], variables['autoencoder/decoder/from_bn/weights'])
    assert not d[..., [1, 2, 4, 5]].any()
    with pytest.raises(ValueError):
        widen_bottleneck.widen_variables(variables, 1.5)
