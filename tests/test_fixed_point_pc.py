"""Fixed-point context model: agrees with the TF model, is causal in wave order, the wavefront decoder
reproduces the encoder's logits exactly, the logits are those of the previous implementation, and the
codec core imports without TensorFlow."""
import concurrent.futures
import hashlib
import subprocess
import sys

import numpy as np
import pytest

import arithmetic_coding
import fixed_point_kernel
import fixed_point_pc
import pc_geometry
import probclass
import symbol_coder
from helpers import ROOT, configs, golden_files, smooth_image
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


@pytest.mark.parametrize('frac_bits, atol', [(fixed_point_pc.V2_FRAC_BITS, 2e-3), (None, 0.1)])
def test_fixed_point_matches_float_model(models, frac_bits, atol):
    """Within the rounding of weights and activations to 2**-F (F = 8 for the chosen float32 model)."""
    fp, tf_logits = models
    fp = fp.with_frac_bits(frac_bits or fp.frac_bits)
    sym = _random_symbols((6, 7, 9), 1)
    got = fp.logits(sym) / 2. ** fp.frac_bits
    assert got.shape == (6, 7, 9, len(CENTERS))
    np.testing.assert_allclose(got, tf_logits(sym), atol=atol)


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
    decode_fn, got = _replaying_decoder(ordered)
    garbage = np.random.RandomState(9).randint(0, 6, shape)
    dec = fp.decode_waves(shape, decode_fn, undecoded=garbage)
    np.testing.assert_array_equal(dec, sym)
    np.testing.assert_array_equal(np.concatenate(got), enc_logits)


def _replaying_decoder(ordered):
    """A decode_fn for decode_waves that hands back the true symbols (in wave order) and records the logits
    it was given: (decode_fn, list of the logits of every wave)."""
    got, pos = [], [0]

    def decode_fn(logits):
        got.append(logits)
        pos[0] += len(logits)
        return ordered[pos[0] - len(logits):pos[0]]
    return decode_fn, got


def test_wave_order_is_a_permutation():
    c, y, x = fixed_point_pc.wave_order((3, 4, 5))
    assert len(set(zip(c, y, x))) == 60
    t = 4 * c + 2 * y + x
    assert np.all(np.diff(t) >= 0)


# TF-free pins and exactness of the schedule --------------------------------------------------------------

def _numpy_weights(seed=1234, k=8):
    """Fixed random weights (glorot-like) and biases of a context model, made without TensorFlow."""
    rng = np.random.RandomState(seed)
    ws, bs = [], []
    for n_in, n_out in [(1, k), (k, k), (k, k), (k, len(CENTERS))]:
        a = np.sqrt(6. / (18 * n_in + 18 * n_out))
        ws.append(rng.uniform(-a, a, (2, 3, 3, n_in, n_out)).astype(np.float32))
        bs.append(rng.uniform(-0.3, 0.3, n_out).astype(np.float32))
    return ws, bs


def _numpy_model(seed=1234, k=8, frac_bits=None):
    return fixed_point_pc.FixedPointContextModel(*_numpy_weights(seed, k), CENTERS, CENTERS[0], frac_bits=frac_bits)


def _integer_reference_logits(fp, symbols):
    """The fixed-point model's definition in int64 arithmetic, one tap at a time: each layer's output at
    scale 2**F is floor((sum w * a + b) / 2**F), then the residual, relu and the clamp. Independent of the
    float evaluation, so any rounding there (float32 beyond 2**24, a wrong bound) shows up."""
    F, lim, P = fp.frac_bits, int(fp._lim), fixed_point_pc._Grid.PAD
    C, h, w = symbols.shape
    src = np.full((C + P, h + 2 * P, w + 2 * P, 1), int(fp.pad_q), np.int64)
    src[P:, P:P + h, P:P + w, 0] = fp.center_values.astype(np.int64)[symbols]
    outputs = []
    for li, layer in enumerate(fp.layers):
        m = P - 1 - li  # the box of layer li starts m positions before the volume, as in _Grid.box
        n_in = src.shape[-1]
        wt = layer.weights.astype(np.int64).reshape(len(layer.taps), n_in, -1)
        out = np.zeros((C + m, h + 2 * m, w + 2 * m, wt.shape[-1]), np.int64)
        for (dc, dy, dx), wk in zip(layer.taps, wt):
            c0, y0, x0 = P - m + dc, P - m + dy, P - m + dx  # src index of the box's first position, shifted
            out += src[c0:c0 + C + m, y0:y0 + h + 2 * m, x0:x0 + w + 2 * m] @ wk
        out = (out + layer.bias.astype(np.int64)) >> F  # floor division by 2**F
        if layer.residual is not None:
            r = outputs[layer.residual]
            k = li - layer.residual
            out += r[k:, k:r.shape[1] - k, k:r.shape[2] - k]
        out = np.clip(out, 0 if layer.relu else -lim, lim)
        outputs.append(out)
        # the next layer's box is one position smaller on each side: src keeps this layer's full box and
        # an origin of P - m, so re-pad it into the grid frame
        src = np.zeros((C + P, h + 2 * P, w + 2 * P, out.shape[-1]), np.int64)
        src[P - m:, P - m:P + h + m, P - m:P + w + m] = out
    return outputs[-1]


def _uniform_symbols(shape, seed, L=6):
    return np.random.RandomState(seed).randint(0, L, shape)


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a, '<i8').tobytes()).hexdigest()[:16]


# Computed with the implementation before the im2col/wave-parts rewrite (one product per tap): the logits,
# and therefore the tables and the bitstream, must not change, so that files written before still decode.
PINNED_RANDOM_MODEL = {
    (4, 5, 6): ('161c6f51f5d2e95c', 'bf0b19eedebbf92a'),
    (1, 3, 8): ('6bb8ac5dacf1fc2f', '2e3bb26196cbe523'),
    (3, 1, 1): ('f08c4b1caedaa3a1', '6a8acbb4e75719d6'),
}
PINNED_GOLDEN_MED = ('f167a7fb33b6f4ef', 'ebeb7fbc10e66406')  # the golden files' model; shape (32, 5, 7), seed 7


@pytest.mark.parametrize('shape', sorted(PINNED_RANDOM_MODEL))
def test_logits_and_tables_pinned(shape):
    """Format version 2 (F = 14, float64): files written before still decode."""
    fp = _numpy_model(frac_bits=fixed_point_pc.V2_FRAC_BITS)
    logits = fp.logits(_uniform_symbols(shape, 5)).astype(np.int64)
    freqs = arithmetic_coding.freqs_from_int_logits(logits, fp.frac_bits)
    assert (_digest(logits), _digest(freqs)) == PINNED_RANDOM_MODEL[shape]


@pytest.mark.parametrize('frac_bits', [None, fixed_point_pc.V2_FRAC_BITS])
@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 2, 5), (6, 7, 9), (2, 9, 4)])
def test_logits_equal_the_integer_definition(shape, frac_bits):
    """Both precisions (float32 at the chosen F, float64 at F = 14) give exactly the integers of the
    definition, with weights scaled up so that activations reach the clamp."""
    ws, bs = _numpy_weights(seed=3)
    for scale in (1., 4.):
        fp = fixed_point_pc.FixedPointContextModel([w * scale for w in ws], bs, CENTERS, CENTERS[0],
                                                   frac_bits=frac_bits)
        sym = _uniform_symbols(shape, 6)
        want = _integer_reference_logits(fp, sym)
        np.testing.assert_array_equal(fp.logits(sym).astype(np.int64), want)
    assert fp.dtype == (np.float64 if frac_bits else np.float32)


def test_float32_precision_is_chosen_from_the_weights():
    """The shipped-like model gets a float32 F with a clamp of at least MIN_CLAMP; weights too large for
    any float32 F fall back to the float64 F = 14 of format version 2; an F that cannot be exact is refused."""
    ws, bs = _numpy_weights()
    fp = fixed_point_pc.FixedPointContextModel(ws, bs, CENTERS, CENTERS[0])
    assert fixed_point_pc.MIN_FLOAT32_FRAC_BITS <= fp.frac_bits < fixed_point_pc.V2_FRAC_BITS
    assert fp.dtype == np.float32 and fp.max_activation >= fixed_point_pc.MIN_CLAMP
    with pytest.raises(ValueError, match='float32 clamp'):
        fp.with_frac_bits(fp.frac_bits + 1)  # the largest F was chosen: one more leaves too small a clamp
    big = fixed_point_pc.FixedPointContextModel([w * 2. ** 8 for w in ws], bs, CENTERS, CENTERS[0])
    assert big.frac_bits == fixed_point_pc.V2_FRAC_BITS and big.dtype == np.float64


def _use_kernel(monkeypatch, kernel):
    """kernel=True: the decoder's compiled layer step (skips the test where it cannot be built); False: numpy."""
    if kernel and fixed_point_kernel.load() is None:
        pytest.skip('no compiled kernel here: {}'.format(fixed_point_kernel.last_error()))
    if not kernel:
        monkeypatch.setattr(fixed_point_kernel, 'load', lambda: None)


@pytest.mark.parametrize('kernel', [True, False])
@pytest.mark.parametrize('frac_bits', [None, fixed_point_pc.V2_FRAC_BITS])
@pytest.mark.parametrize('split', [None, 1, 40])
@pytest.mark.parametrize('shape', [(1, 1, 1), (1, 4, 9), (6, 1, 5), (5, 7, 1), (2, 9, 4), (7, 3, 11), (3, 17, 13)])
def test_decoder_waves_reproduce_encoder_logits(monkeypatch, shape, split, frac_bits, kernel):
    """Encoder (all positions, row blocks) and decoder (wavefronts, in one part or cut in two parts run in
    two threads; numpy or the compiled kernel, which serves float32 only) give identical integer logits, with
    garbage in the undecoded positions; small encoder blocks make the encoder's thread pool and block edges
    matter too."""
    _use_kernel(monkeypatch, kernel)
    monkeypatch.setattr(fixed_point_pc, '_DECODER_THREADS', split is not None)
    monkeypatch.setattr(fixed_point_pc, '_DECODER_SPLIT', split or 1)
    monkeypatch.setattr(fixed_point_pc, '_ENCODER_BLOCK', 16)
    fp = _numpy_model(frac_bits=frac_bits)
    sym = _uniform_symbols(shape, 11)
    enc_logits, ordered = fp.logits_in_wave_order(sym)
    decode_fn, got = _replaying_decoder(ordered)
    garbage = np.random.RandomState(2).randint(0, 6, shape)
    np.testing.assert_array_equal(fp.decode_waves(shape, decode_fn, undecoded=garbage), sym)
    assert all(g.dtype == np.int64 for g in got)
    np.testing.assert_array_equal(np.concatenate(got), enc_logits)


@pytest.mark.parametrize('kernel', [True, False])
def test_decoder_reaches_the_clamp_like_the_encoder(monkeypatch, kernel):
    """Weights scaled up so that activations are clamped (and relu'd and residual-added at the limit): the
    decoder's wave logits still equal the encoder's, on both decoder paths."""
    _use_kernel(monkeypatch, kernel)
    monkeypatch.setattr(fixed_point_pc, '_DECODER_SPLIT', 8)
    ws, bs = _numpy_weights(seed=3)
    fp = fixed_point_pc.FixedPointContextModel([w * 4. for w in ws], bs, CENTERS, CENTERS[0])
    assert fp.dtype == np.float32
    sym = _uniform_symbols((4, 9, 11), 5)
    grid_out = fp._logits_on_grid(fixed_point_pc._Grid(sym.shape, fp.dtype), sym)
    assert np.abs(grid_out).max() == fp._lim  # the clamp is reached
    enc_logits, ordered = fp.logits_in_wave_order(sym)
    decode_fn, got = _replaying_decoder(ordered)
    np.testing.assert_array_equal(fp.decode_waves(sym.shape, decode_fn, undecoded=np.zeros_like(sym)), sym)
    np.testing.assert_array_equal(np.concatenate(got), enc_logits)


def test_busy_core_watch_rests_then_tries_the_second_thread_again():
    """A window where the worker never started: the next WINDOW * REST split waves run in one thread, then
    the pool is tried again; a worker that starts late on an idle core (waits 1.5x the first part) or a
    single slow wave does not make it rest."""
    W, R = fixed_point_pc._BusyCoreWatch.WINDOW, fixed_point_pc._BusyCoreWatch.REST
    watch = fixed_point_pc._BusyCoreWatch()
    for _ in range(3 * W):
        assert not watch.one_thread()
        watch.add(1e-4, 1.5e-4, False)
    for i in range(W):
        assert not watch.one_thread()
        watch.add(1e-4, 1e-3 if i == 0 else 1e-4, False)  # one slow wave within a window is not a busy core
    for i in range(W):
        assert not watch.one_thread()
        watch.add(1e-4, 1e-4, i % 3 != 0)  # most never started
    assert [watch.one_thread() for _ in range(W * R)] == [True] * (W * R)
    assert not watch.one_thread()


class _IdlePool(object):
    """A pool whose workers never start a submitted task: the decoder must run the second parts itself."""

    def submit(self, fn, *args):
        return concurrent.futures.Future()

    def map(self, fn, items):  # the encoder's blocks, in this thread
        return [fn(item) for item in items]


@pytest.mark.parametrize('kernel', [True, False])
def test_decoder_runs_parts_itself_when_no_worker_starts(monkeypatch, kernel):
    """Also the whole symbol_coder round trip on both paths (numpy or compiled layers and tables)."""
    _use_kernel(monkeypatch, kernel)
    monkeypatch.setattr(fixed_point_pc, '_DECODER_SPLIT', 1)
    monkeypatch.setattr(fixed_point_pc, '_thread_pool', _IdlePool)
    fp = _numpy_model()
    sym = _uniform_symbols((3, 10, 8), 12)
    data = symbol_coder.encode_symbols(sym, fp)
    np.testing.assert_array_equal(symbol_coder.decode_symbols(data, sym.shape, fp), sym)


def test_wave_parts_cut_every_layer_at_the_same_position():
    """A position's layers must all be in the same part of its wave (the parts run concurrently)."""
    shape = (4, 12, 10)
    waves = fixed_point_pc._wave_schedule(shape, 4, 8)
    assert any(len(parts) == 2 for parts, _ in waves)
    seen = set()
    for parts, _ in waves:
        owner = {}
        for p, part in enumerate(parts):
            for li, idx in part:
                for i in idx.tolist():
                    assert owner.setdefault(i, p) == p
                    seen.add((li, i))
    grid = fixed_point_pc._Grid(shape)
    assert len(seen) == sum(len(grid.box_coordinates(li)[0]) for li in range(4))  # every position once


def test_core_imports_without_tensorflow():
    code = ('import sys; import arithmetic_coding, arithmetic_coding.fast_coder, arithmetic_coding.python_coder, '
            'pc_geometry, fixed_point_pc, symbol_coder; '
            'assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if "tensorflow" in m)[:3]')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)


def test_probclass_uses_the_shared_masks():
    assert probclass.first_mask is pc_geometry.first_mask and probclass.other_mask is pc_geometry.other_mask
    assert probclass.ResShallow.LAYER_SCOPES == pc_geometry.RES_SHALLOW_LAYER_SCOPES
    assert probclass.SCOPE == pc_geometry.SCOPE


@pytest.fixture(scope='module')
def shipped_med():
    import image_codec
    import inference
    model = inference.Model(image_codec.default_model_dir())
    yield model
    model.close()


def test_golden_model_logits_pinned():
    """The golden files' model at format version 2's F = 14 (the version-3 files are pinned by the golden
    files themselves)."""
    import inference
    model = inference.Model(golden_files()[1])
    try:
        fp = model.fixed_point_pc.with_frac_bits(fixed_point_pc.V2_FRAC_BITS)
        logits = fp.logits(_uniform_symbols((32, 5, 7), 7)).astype(np.int64)
    finally:
        model.close()
    freqs = arithmetic_coding.freqs_from_int_logits(logits, fp.frac_bits)
    assert (_digest(logits), _digest(freqs)) == PINNED_GOLDEN_MED


def test_shipped_model_round_trip(shipped_med):
    import images
    sym = shipped_med.run(images.pad_to_multiple(smooth_image(72, 104, seed=4)), shipped_med.g.symbols)[0]
    data = symbol_coder.encode_symbols(sym, shipped_med.fixed_point_pc)
    np.testing.assert_array_equal(symbol_coder.decode_symbols(data, sym.shape, shipped_med.fixed_point_pc), sym)


def test_clamped_activations_stay_integers_and_exact():
    """Weights so large that activations hit the clamp: the clamp must be an integer (a fractional one
    feeds non-integers into the next sums, whose rounding then depends on the summation order), and
    encoder and decoder still agree."""
    ws, bs = _numpy_weights(seed=5)
    big = fixed_point_pc.FixedPointContextModel([w * 2. ** 12 for w in ws], bs, CENTERS, CENTERS[0])
    assert big.frac_bits == fixed_point_pc.V2_FRAC_BITS  # too large for float32
    assert big.max_activation < 2. ** 20  # the exactness bound, not the default, sets the clamp
    sym = _uniform_symbols((3, 8, 9), 4)
    logits = big.logits(sym)
    assert np.all(logits == np.floor(logits))
    assert np.any(logits == big.max_activation * 2. ** big.frac_bits // 1)  # clamped somewhere
    enc_logits, ordered = big.logits_in_wave_order(sym)
    decode_fn, got = _replaying_decoder(ordered)
    big.decode_waves(sym.shape, decode_fn)
    np.testing.assert_array_equal(np.concatenate(got), enc_logits)
