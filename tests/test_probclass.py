"""Context model: output shape, causality (receptive field), bit cost = -log2 softmax."""
import numpy as np
import pytest

import probclass
from helpers import configs
from tf_helpers import tf

L = 6


def _logits_fn(pc_config, shape, seed=0):
    """Returns f(q) -> logits for a randomly initialized context model (random biases too)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        pc = probclass.ResShallow(pc_config, L)
        q = tf.placeholder(tf.float32, shape)
        logits = pc.logits(q, pad_value=0.5)
        sess = tf.Session()
        sess.run(tf.global_variables_initializer())
        rng = np.random.RandomState(seed)
        for v in pc.variables():  # non-zero biases so that nothing is trivially constant
            if 'biases' in v.name:
                v.load(rng.uniform(-0.1, 0.1, v.shape.as_list()), sess)
    return lambda q_np: sess.run(logits, {q: q_np})


def test_shape_and_receptive_field_constants():
    _, pc_config = configs()
    pc = probclass.ResShallow(pc_config, L)
    assert pc.context_size == 9 and pc.context_shape == (5, 9, 9) and pc.pad == 4
    f = _logits_fn(pc_config, [2, 5, 6, 7])
    out = f(np.random.RandomState(0).randn(2, 5, 6, 7))
    assert out.shape == (2, 5, 6, 7, L)
    assert np.all(out >= 0)  # ReLU on the logits, as in the released model


def test_masks():
    first, other = probclass.first_mask(3), probclass.other_mask(3)
    assert first.shape == other.shape == (2, 3, 3)
    assert np.all(first[0] == 1) and np.all(other[0] == 1)
    np.testing.assert_array_equal(first[1], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(other[1], [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize('pos', [(0, 0, 0), (2, 3, 4), (4, 5, 6), (1, 0, 6), (3, 5, 0)])
def test_causality(pos):
    """Changing symbol (c, y, x) changes only logits of later positions in (channel, row, column) order,
    and only within the (5, 9, 9) receptive field."""
    _, pc_config = configs()
    C, H, W = 5, 6, 7
    f = _logits_fn(pc_config, [1, C, H, W], seed=1)
    rng = np.random.RandomState(2)
    q = rng.choice([-1.5, -0.5, 0.3, 1.1], size=(1, C, H, W))
    q2 = q.copy()
    q2[(0,) + pos] += 2.
    changed = np.any(np.abs(f(q) - f(q2)) > 1e-6, axis=-1)[0]
    c0, y0, x0 = pos
    for c in range(C):
        for y in range(H):
            for x in range(W):
                later = (c, y, x) > pos
                in_field = 0 <= c - c0 <= 4 and (abs(y - y0) <= 4) and abs(x - x0) <= 4
                if changed[c, y, x]:
                    assert later and in_field, (pos, (c, y, x))
    # the very next channel at the same position does see it
    if c0 + 1 < C:
        assert changed[c0 + 1, y0, x0]


def test_bitcost_is_minus_log2_softmax():
    _, pc_config = configs()
    rng = np.random.RandomState(3)
    with tf.Graph().as_default(), tf.Session() as sess:
        pc = probclass.ResShallow(pc_config, L)
        q = tf.constant(rng.randn(1, 3, 4, 5), tf.float32)
        symbols = tf.constant(rng.randint(0, L, (1, 3, 4, 5)), tf.int64)
        bc = pc.bitcost(q, symbols, pad_value=0.)
        logits = pc.logits(q, pad_value=0.)
        sess.run(tf.global_variables_initializer())
        bc_np, logits_np, s_np = sess.run([bc, logits, symbols])
    logp = logits_np - np.log(np.exp(logits_np).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, s_np[..., None], -1)[..., 0] / np.log(2)
    np.testing.assert_allclose(bc_np, expected, rtol=1e-5, atol=1e-6)
    assert bc_np.shape == (1, 3, 4, 5)
