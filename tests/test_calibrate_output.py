"""recipes/calibrate_output.py: the reconstructions' mean level brought to the images' by the last batch-norm
offset, nothing else changed."""
import os
import sys

import numpy as np

import inference
from helpers import ROOT, make_model_dir, write_images
from tf_helpers import tf

sys.path.insert(0, os.path.join(ROOT, 'recipes'))
import calibrate_output  # noqa: E402


def test_level_shift_zeroes_the_mean_error_despite_clipping():
    """Outputs 20 too dark, some far below 0 before clipping: the shift is more than 20 where clipping keeps
    those at 0, exactly 20 elsewhere, and the clipped, shifted outputs have zero mean error."""
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)
    out = img.astype(np.float32) - 20.
    out[:4, :, 0] = -300.  # clipped to 0 whatever the shift: only the others can move the mean
    pairs = [(out, img)]
    shifts = calibrate_output.level_shift(pairs)
    np.testing.assert_allclose(calibrate_output.mean_error(pairs, shifts), 0., atol=1e-3)
    assert shifts[0] > 20.5 and abs(shifts[1] - 20.) < 1e-3 and abs(shifts[2] - 20.) < 1e-3


def _mean_error(log_dir, paths):
    """Per channel mean of reconstruction - image, the model loaded anew from log_dir."""
    model = inference.Model(log_dir)
    try:
        return calibrate_output.mean_error(calibrate_output.unclipped_outputs(model, paths))
    finally:
        model.close()


def test_calibrated_model_has_zero_mean_error_and_otherwise_the_same_variables(tmp_path):
    src = make_model_dir(tmp_path)
    imgs = str(tmp_path / 'imgs')
    write_images(imgs, 3, 40, 56)
    paths = calibrate_output.sample_images(os.path.join(imgs, '*'), 10)
    dst = os.path.join(str(tmp_path), 'calibrated', os.path.basename(src))
    before, after = calibrate_output.calibrate(src, dst, os.path.join(imgs, '*'))
    assert np.abs(before).max() > 1. and np.abs(after).max() < 1e-2
    # measured anew with the written model: the level is the images'
    np.testing.assert_allclose(_mean_error(src, paths), before, atol=1e-3)
    np.testing.assert_allclose(_mean_error(dst, paths), 0., atol=0.05)
    # only the offset differs; step and every other variable (optimizer slots included) as in the source
    src_ckpt = tf.train.latest_checkpoint(os.path.join(src, 'ckpts'))
    dst_ckpt = tf.train.latest_checkpoint(os.path.join(dst, 'ckpts'))
    assert os.path.basename(src_ckpt) == os.path.basename(dst_ckpt)
    names = [n for n, _ in tf.train.list_variables(src_ckpt)]
    assert names == [n for n, _ in tf.train.list_variables(dst_ckpt)]
    for n in names:
        a, b = tf.train.load_variable(src_ckpt, n), tf.train.load_variable(dst_ckpt, n)
        assert np.array_equal(a, b) == (n != calibrate_output.BETA), n
