"""Fixed-point context model: agrees with the TF model, is causal in wave order, and the wavefront
decoder reproduces the encoder's logits exactly."""
import numpy as np
import pytest

import fixed_point_pc
import probclass
from helpers import configs
from tf_helpers import tf

CENTERS = np.array([0.9, -1.7, 0.1, 2.3, -0.4, 1.5], np.float32)


def _random_symbols(shape, seed):
    rng = np.random.RandomState(seed)
    return np.clip(np.round(rng.randn(*shape).cumsum(-1) / 3 + 2.5), 0, 5).astype(np.int64)


@pytest.fixture(scope='module')
def models():
    """A randomly initialized TF context model (random biases too) and its fixed-point twin."""
    _, pc_config = configs()
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        pc = probclass.ResShallow(pc_config, len(CENTERS))
        q = tf.placeholder(tf.float32, [1, None, None, None])
        logits = pc.logits(q, pad_value=float(CENTERS[0]))
        sess = tf.Session()
        sess.run(tf.global_variables_initializer())
        for v in pc.variables():
            if 'biases' in v.name:
                v.load(rng.uniform(-0.3, 0.3, v.shape.as_list()), sess)
        fp = fixed_point_pc.FixedPointContextModel.from_session(sess, pc, CENTERS, CENTERS[0])
    yield fp, (lambda s: sess.run(logits, {q: CENTERS[s][None]})[0])
    sess.close()


def test_fixed_point_matches_float_model(models):
    fp, tf_logits = models
    sym = _random_symbols((6, 7, 9), 1)
    got = fp.logits(sym) / 2. ** fixed_point_pc.FRAC_BITS
    assert got.shape == (6, 7, 9, len(CENTERS))
    np.testing.assert_allclose(got, tf_logits(sym), atol=2e-3)


@pytest.mark.parametrize('seed', range(4))
def test_logits_depend_only_on_earlier_waves(models, seed):
    """The schedule's claim: the logits at p depend only on symbols with a smaller wave index
    T = 4c + 2y + x (and within the (5, 9, 9) causal field)."""
    fp, _ = models
    shape = (5, 6, 7)
    rng = np.random.RandomState(seed)
    sym = _random_symbols(shape, seed)
    base = fp.logits(sym)
    num_changed = 0
    for _ in range(6):
        q = tuple(rng.randint(0, n) for n in shape)
        sym2 = sym.copy()
        sym2[q] = (sym2[q] + 1 + rng.randint(0, 5)) % 6
        changed = np.any(fp.logits(sym2) != base, axis=-1)
        c, y, x = np.nonzero(changed)
        t_q = 4 * q[0] + 2 * q[1] + q[2]
        assert np.all(4 * c + 2 * y + x > t_q)
        assert np.all((c >= q[0]) & (c - q[0] <= 4) & (np.abs(y - q[1]) <= 4) & (np.abs(x - q[2]) <= 4))
        num_changed += changed.sum()
    assert num_changed > 0  # symbols do matter


@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 2, 5), (6, 7, 9), (32, 3, 4)])
def test_wavefront_decoder_reproduces_encoder_logits(models, shape):
    """Decode with the true symbols fed back and garbage in all undecoded positions: every wave's
    logits equal the encoder's (one-pass) logits exactly."""
    fp, _ = models
    sym = _random_symbols(shape, 3)
    enc_logits, ordered = fp.logits_in_wave_order(sym)
    got, pos = [], [0]

    def decode_fn(logits):
        got.append(logits)
        n = len(logits)
        out = ordered[pos[0]:pos[0] + n]
        pos[0] += n
        return out

    garbage = np.random.RandomState(9).randint(0, 6, shape)
    dec = fp.decode_waves(shape, decode_fn, undecoded=garbage)
    np.testing.assert_array_equal(dec, sym)
    np.testing.assert_array_equal(np.concatenate(got), enc_logits)


def test_wave_order_is_a_permutation():
    c, y, x = fixed_point_pc.wave_order((3, 4, 5))
    assert len(set(zip(c, y, x))) == 60
    t = 4 * c + 2 * y + x
    assert np.all(np.diff(t) >= 0)
