"""A checkpoint laid out like the authors' released ones (`ckpts/0515_1103 cvpr@low cvpr@res_shallow/
ckpts/ckpt-N`, no config copies) loads: configs from the folder name, every variable by name and shape."""
import os

import numpy as np

import inference
import val
from helpers import ROOT, smooth_image
from tf_helpers import tf


def _write_released_style_checkpoint(log_dir):
    """Variables named and shaped as in tests/golden_variables_cvpr_low.txt, written by a plain Saver
    in a graph that does not use this project's model code."""
    golden = []
    with open(os.path.join(ROOT, 'tests', 'golden_variables_cvpr_low.txt')) as f:
        for line in f:
            if line.strip() and not line.startswith('#'):
                name, shape = line.split()
                golden.append((name, [int(s) for s in shape.split(',')]))
    rng = np.random.RandomState(0)
    with tf.Graph().as_default(), tf.Session() as sess:
        variables = []
        for name, shape in golden:
            if name.endswith('moving_variance') or name.endswith('gamma'):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 0.05, shape)
            variables.append(tf.Variable(value.astype(np.float32), name=name))
        sess.run(tf.global_variables_initializer())
        os.makedirs(os.path.join(log_dir, 'ckpts'))
        tf.train.Saver(variables).save(sess, os.path.join(log_dir, 'ckpts', 'ckpt'), global_step=180000,
                                       write_meta_graph=False)


def test_released_style_checkpoint_loads_and_validates(tmp_path):
    root = str(tmp_path / 'ckpts')
    log_dir = os.path.join(root, '0515_1103 cvpr@low cvpr@res_shallow')
    _write_released_style_checkpoint(log_dir)
    model = inference.Model(log_dir)
    try:
        assert model.step == 180000
        assert model.ae_config.H_target == 0.4 and model.ae_config.num_chan_bn == 32
        assert model.pc_config.arch == 'res_shallow'
    finally:
        model.close()
    imgs = str(tmp_path / 'imgs')
    os.makedirs(imgs)
    from PIL import Image
    Image.fromarray(smooth_image(32, 48)).save(os.path.join(imgs, 'a.png'))
    assert val.main([root, '0515_1103', imgs, '--real_bpp']) == 0
    assert os.path.exists(os.path.join(root, '0515_1103 imgs', 'measures.csv'))
