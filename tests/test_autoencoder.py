"""Autoencoder: shapes, importance map, variable names and shapes of the released checkpoints."""
import os

import numpy as np
import pytest

import autoencoder
import config_parser
import model_graph
from helpers import ROOT, configs, smooth_image, tiny_configs
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


def test_graph_has_the_papers_layer_shapes():
    """Shapes from the paper and the original's layer definitions (not from the golden file): n = 128,
    C = 32, L = 6, 5x5 stride-2 convs at both ends, 3x3 residual convs, transposed kernels [k, k, out, in],
    the context model's 2x3x3 masked convs with 24 filters. Catches a wrong layer in both the graph and
    the golden file (which the test above would accept)."""
    ae_config, pc_config = configs()
    n, C, L = 128, 32, 6
    assert (ae_config.arch_param_n, ae_config.num_chan_bn, ae_config.num_centers) == (n, C, L)
    with tf.Graph().as_default():
        model_graph.build_inference_graph(ae_config, pc_config)
        got = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert got['autoencoder/encoder/centers'] == [L]
    assert got['autoencoder/encoder/h1/weights'] == [5, 5, 3, n // 2]
    assert got['autoencoder/encoder/h2/weights'] == [5, 5, n // 2, n]
    assert got['autoencoder/encoder/to_bn/weights'] == [5, 5, n, C + 1]  # + the importance map channel
    assert got['autoencoder/decoder/from_bn/weights'] == [3, 3, n, C]
    assert got['autoencoder/decoder/h12/weights'] == [5, 5, n // 2, n]
    assert got['autoencoder/decoder/h13/weights'] == [5, 5, 3, n // 2]
    assert got['autoencoder/encoder/res_block_enc_4/enc_4_3/conv2/BatchNorm/moving_variance'] == [n]
    assert got['autoencoder/decoder/dec_after_res/conv1/weights'] == [3, 3, n, n]
    k = pc_config.arch_param__k
    assert k == 24
    assert got['probclass3d/logits/conv3d_conv0_mask/weights'] == [2, 3, 3, 1, k]
    assert got['probclass3d/logits/res1/conv3d_conv2_mask/biases'] == [k]
    assert got['probclass3d/logits/conv3d_conv2_mask/weights'] == [2, 3, 3, k, L]
    # h1, h2, 5 groups x 3 residual blocks x 2 convs, the final residual block, to_bn; and mirrored
    for part in ('encoder', 'decoder'):
        convs = [name for name in got if name.startswith('autoencoder/' + part) and name.endswith('/weights')]
        assert len(convs) == 2 + 5 * 3 * 2 + 2 + 1, part
        assert all(name[:-len('weights')] + 'BatchNorm/gamma' in got for name in convs)


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


def _nchw_convs_supported():
    with tf.Graph().as_default(), tf.Session() as sess:
        try:
            sess.run(tf.nn.conv2d(tf.zeros([1, 3, 8, 8]), tf.zeros([3, 3, 3, 2]), 1, 'SAME', data_format='NCHW'))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def _run_ae(ae_config, data_format, x, values=None):
    """Symbols and reconstruction of x (N x H x W x 3) in a graph of the given layout; weights from
    `values` (name -> array) if given. Returns (outputs, values)."""
    with tf.Graph().as_default():
        ae = autoencoder.CVPR(ae_config, data_format=data_format)
        enc = ae.encode(tf.constant(x, tf.float32), is_training=False)
        x_out = ae.decode(enc.qhard, is_training=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            variables = tf.global_variables()
            if values is None:
                values = {v.op.name: sess.run(v) for v in variables}
            else:
                for v in variables:
                    v.load(values[v.op.name], sess)
            return sess.run({'symbols': enc.symbols, 'x_out': x_out}), values


def test_data_formats_share_variables_and_agree():
    """NCHW and NHWC graphs have the same variables, and with the same weights the same outputs (so
    checkpoints do not depend on the layout). Catches a transpose on the wrong axis in either path."""
    ae_config, _ = tiny_configs()
    names = {}
    for fmt in ('NHWC', 'NCHW'):
        with tf.Graph().as_default():
            ae = autoencoder.CVPR(ae_config, data_format=fmt)
            ae.decode(ae.encode(tf.zeros([1, 32, 32, 3]), is_training=False).qhard, is_training=False)
            names[fmt] = [(v.op.name, v.shape.as_list()) for v in tf.global_variables()]
    assert names['NHWC'] == names['NCHW']
    if not _nchw_convs_supported():
        pytest.skip('this TensorFlow build cannot run NCHW convolutions on the CPU (needs oneDNN or a GPU)')
    x = np.stack([smooth_image(32, 48, seed) for seed in (0, 1)]).astype(np.float32)
    nhwc, values = _run_ae(ae_config, 'NHWC', x)
    nchw, _ = _run_ae(ae_config, 'NCHW', x, values)
    # a random network: some bottleneck values lie near the middle between two centers, where float
    # differences of the two conv implementations can flip the nearest center
    assert np.mean(nhwc['symbols'] != nchw['symbols']) < 0.01
    if np.array_equal(nhwc['symbols'], nchw['symbols']):
        np.testing.assert_allclose(nhwc['x_out'], nchw['x_out'], atol=1e-3)
