"""Autoencoder: shapes, importance map, variable names and shapes of the released checkpoints."""
import os

import numpy as np
import pytest

import autoencoder
import config_parser
import model_graph
from helpers import ROOT, configs, tiny_configs
from tf_helpers import tf

GOLDEN = os.path.join(ROOT, 'tests', 'golden_variables_cvpr_low.txt')


def _read_golden():
    out = []
    with open(GOLDEN) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            name, shape = line.split()
            out.append((name, [int(s) for s in shape.split(',')]))
    return out


def test_variable_names_and_shapes_match_released_checkpoints():
    ae_config, pc_config = configs()
    with tf.Graph().as_default():
        model_graph.build_inference_graph(ae_config, pc_config)
        got = [(v.op.name, v.shape.as_list()) for v in tf.global_variables()]
        trainable = sum(int(np.prod(v.shape)) for v in tf.trainable_variables())
    assert sorted(got) == sorted(_read_golden())
    # 35 encoder + 35 decoder convs with BN, 6 centers, the 4-layer context model
    assert trainable == 10039916


def test_golden_file_spot_checks():
    golden = dict((n, s) for n, s in _read_golden())
    assert golden['autoencoder/encoder/centers'] == [6]
    assert golden['autoencoder/encoder/to_bn/weights'] == [5, 5, 128, 33]
    assert golden['autoencoder/decoder/from_bn/weights'] == [3, 3, 128, 32]  # [k, k, out, in]
    assert golden['autoencoder/decoder/h13/weights'] == [5, 5, 3, 64]
    assert golden['autoencoder/encoder/res_block_enc_4/enc_4_3/conv2/BatchNorm/moving_variance'] == [128]
    assert golden['autoencoder/decoder/dec_after_res/conv1/weights'] == [3, 3, 128, 128]
    assert golden['probclass3d/logits/conv3d_conv0_mask/weights'] == [2, 3, 3, 1, 24]
    assert golden['probclass3d/logits/res1/conv3d_conv2_mask/biases'] == [24]
    assert golden['probclass3d/logits/conv3d_conv2_mask/weights'] == [2, 3, 3, 24, 6]
    assert sum(n.endswith('/weights') and n.startswith('autoencoder/encoder') for n in golden) == 35
    assert sum(n.endswith('/weights') and n.startswith('autoencoder/decoder') for n in golden) == 35


@pytest.mark.parametrize('h,w', [(32, 32), (48, 80), (64, 24)])
def test_shapes_for_multiples_of_8(h, w):
    ae_config, pc_config = tiny_configs()
    with tf.Graph().as_default():
        ae = autoencoder.CVPR(ae_config)
        x = tf.placeholder(tf.float32, [2, h, w, 3])
        enc = ae.encode(x, is_training=True)
        x_out = ae.decode(enc.qbar, is_training=True)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            r = sess.run({'q': enc.qbar, 's': enc.symbols, 'hm': enc.heatmap, 'out': x_out},
                         {x: np.random.RandomState(0).uniform(0, 255, (2, h, w, 3))})
    C = ae_config.num_chan_bn
    assert r['q'].shape == r['s'].shape == r['hm'].shape == (2, C, h // 8, w // 8)
    assert r['out'].shape == (2, h, w, 3)
    assert r['out'].min() >= 0 and r['out'].max() <= 255
    assert r['s'].dtype == np.int64 and r['s'].min() >= 0 and r['s'].max() < ae_config.num_centers


def test_importance_mask_formula():
    C = 4
    y = np.array([[[-3., 0., 0.7], [2., 10., -10.]]], np.float32)  # N=1 x h=2 x w=3
    with tf.Graph().as_default(), tf.Session() as sess:
        mask = sess.run(autoencoder.importance_mask(tf.constant(y), C))
    h = C / (1 + np.exp(-y))
    expected = np.clip(h[:, None] - np.arange(C)[None, :, None, None], 0, 1)
    assert mask.shape == (1, C, 2, 3)
    np.testing.assert_allclose(mask, expected, atol=1e-6)
    # channels are switched on in order: the mask is non-increasing along C
    assert np.all(np.diff(mask, axis=1) <= 1e-7)


def test_heatmap_masks_the_bottleneck_and_without_heatmap_there_is_none():
    ae_config, _ = tiny_configs()
    for heatmap in (True, False):
        cfg = config_parser.apply_overrides(ae_config, ['heatmap={}'.format(heatmap)])
        with tf.Graph().as_default():
            ae = autoencoder.CVPR(cfg)
            x = tf.placeholder(tf.float32, [1, 32, 32, 3])
            enc = ae.encode(x, is_training=False)
            assert (enc.heatmap is None) == (not heatmap)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                r = sess.run(enc._asdict() if heatmap else {'z': enc.z}, {x: np.full((1, 32, 32, 3), 100.)})
            assert r['z'].shape == (1, cfg.num_chan_bn, 4, 4)
            if heatmap:
                off = r['heatmap'] == 0
                assert np.all(r['z'][off] == 0)


def test_unknown_arch_is_a_clear_error():
    ae_config, _ = configs(ae='ae_configs/base')
    with pytest.raises(ValueError, match='TwoLayerNet'):
        autoencoder.get_network_cls(ae_config)


def test_data_formats_share_variables_and_agree():
    """NCHW and NHWC graphs have the same variables; where the CPU runs NCHW convs they agree."""
    ae_config, _ = tiny_configs()
    names = {}
    for fmt in ('NHWC', 'NCHW'):
        with tf.Graph().as_default():
            ae = autoencoder.CVPR(ae_config, data_format=fmt)
            ae.decode(ae.encode(tf.zeros([1, 32, 32, 3]), is_training=False).qhard, is_training=False)
            names[fmt] = [(v.op.name, v.shape.as_list()) for v in tf.global_variables()]
    assert names['NHWC'] == names['NCHW']
