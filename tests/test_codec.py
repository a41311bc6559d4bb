"""image_codec.py and image_codec.py: exact round trips through both coders, block coding, the file format's error cases."""
import os
import stat
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import codec
import fixed_point_pc
import image_codec
import images
import inference
import model_files
import symbol_coder
from helpers import assert_golden_files_decode, golden_files, make_model_dir, smooth_image


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    m = inference.Model(make_model_dir(tmp_path_factory.mktemp('model')))
    yield m
    m.close()


def _encoder_side(model, img):
    """(symbols, reconstruction) as the encoder sees them: the graph's decoder on its own qhard, cropped and
    rounded as the codec does."""
    h, w = img.shape[:2]
    r = model.run(images.pad_to_multiple(img), {'symbols': model.g.symbols, 'x_out': model.g.x_out})
    return r['symbols'][0], images.to_uint8(r['x_out'][0, :h, :w])


@pytest.mark.parametrize('coder', ['fast', 'python'])
@pytest.mark.parametrize('h,w', [(32, 48), (37, 29)])
def test_image_round_trip_is_exact(model, coder, h, w):
    img = smooth_image(h, w, seed=h)
    data = image_codec.encode_image(model, img, coder)
    symbols, hdr = image_codec.decode_symbols(model, data)
    expected_symbols, expected_img = _encoder_side(model, img)
    np.testing.assert_array_equal(symbols, expected_symbols)
    assert (hdr['height'], hdr['width'], hdr['coder']) == (h, w, coder)
    # identical symbols must give identical pixels: a decoder that used other centers, another crop, or
    # truncation instead of rounding would differ
    out = image_codec.decode_image(model, data)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected_img)
    assert len(data) == image_codec.HEADER_BYTES + len(hdr['payload'])


@pytest.mark.parametrize('coder', ['fast', 'python'])
def test_random_volumes_round_trip(model, coder):
    rng = np.random.RandomState(0)
    for shape in [(8, 1, 1), (8, 3, 7), (8, 6, 5)]:
        sym = rng.randint(0, 6, shape)
        data = symbol_coder.encode_symbols(sym, model.fixed_point_pc, coder)
        np.testing.assert_array_equal(symbol_coder.decode_symbols(data, shape, model.fixed_point_pc, coder), sym)


def test_blocks_round_trip(model):
    # a one-pass evaluation large enough to start the parent's thread pool first: forked block
    # workers must not inherit it (they would wait forever on its threads)
    model.fixed_point_pc.logits(np.zeros((8, 24, 24), np.int64))
    sym = np.random.RandomState(1).randint(0, 6, (8, 40, 41))  # tiles big enough to use the pool
    data = symbol_coder.encode_blocks(sym, model.fixed_point_pc, "fast", (2, 2))
    np.testing.assert_array_equal(symbol_coder.decode_blocks(data, sym.shape, model.fixed_point_pc, "fast", (2, 2)),
                                  sym)
    with pytest.raises(ValueError):
        symbol_coder.tile_slices(2, 9, (3, 1))


def test_real_bits_close_to_ideal(model):
    sym = np.random.RandomState(2).randint(0, 6, (8, 12, 12))
    data = symbol_coder.encode_symbols(sym, model.fixed_point_pc, 'fast')
    ideal = symbol_coder.ideal_bits(sym, model.fixed_point_pc)
    # two-sided: a stream well below the ideal length cannot hold the symbols (a coder that drops some
    # would still pass a one-sided bound)
    assert ideal * 0.99 - 8 <= 8 * len(data) <= ideal * 1.01 + 96


def _encoded(model, tmp_path):
    img = smooth_image(24, 40, seed=5)
    return image_codec.encode_image(model, img)


@pytest.mark.parametrize('mutate,message', [
    (lambda d: d[:10], 'shorter than'),
    (lambda d: d[:-3], 'Truncated'),
    (lambda d: d + b'xx', 'Truncated or padded'),
    (lambda d: b'GIF8' + d[4:], 'Not a compressed image'),
    (lambda d: d[:4] + bytes([99]) + d[5:], 'version'),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0x55]), 'checksum'),
    (lambda d: d[:17] + bytes([d[17] ^ 1]) + d[18:], 'checksum'),  # height: covered by the checksum
    (lambda d: d[:8] + bytes([d[8] ^ 1]) + d[9:], 'checksum'),  # the context model's F, too
])
def test_bad_files_are_rejected(model, tmp_path, mutate, message):
    data = mutate(_encoded(model, tmp_path))
    with pytest.raises(image_codec.CodecError, match=message):
        image_codec.decode_image(model, data)


def test_other_model_is_refused(model, tmp_path):
    data = _encoded(model, tmp_path)
    other = inference.Model(make_model_dir(tmp_path, seed=1))
    try:
        assert other.fingerprint != model.fingerprint
        with pytest.raises(image_codec.CodecError, match='different model'):
            image_codec.decode_image(other, data)
    finally:
        other.close()


def test_cli_round_trip_and_errors(model, tmp_path, capsys):
    img_path = os.path.join(str(tmp_path), 'in.png')
    Image.fromarray(smooth_image(30, 44, seed=3)).convert('L').save(img_path)  # grayscale input
    f = os.path.join(str(tmp_path), 'x.cpm')
    out = os.path.join(str(tmp_path), 'out.png')
    assert codec.main(['encode', model.log_dir, img_path, '-o', f]) == 0
    assert 'grayscale' in capsys.readouterr().err
    assert codec.main(['decode', f, '-o', out, '--model', model.log_dir]) == 0
    gray_as_rgb = np.asarray(Image.open(img_path).convert('RGB'))
    np.testing.assert_array_equal(np.asarray(Image.open(out)), _encoder_side(model, gray_as_rgb)[1])
    # a corrupt file: clear error, non-zero exit, no output written
    with open(f, 'rb') as fh:
        data = fh.read()
    bad = os.path.join(str(tmp_path), 'bad.cpm')
    with open(bad, 'wb') as fh:
        fh.write(data[:len(data) // 2])
    out2 = os.path.join(str(tmp_path), 'out2.png')
    assert codec.main(['decode', bad, '-o', out2, '--model', model.log_dir]) == 1
    err = capsys.readouterr().err
    assert 'Error:' in err and 'Traceback' not in err and not os.path.exists(out2)
    assert codec.main(['encode', model.log_dir, os.path.join(str(tmp_path), 'nope.png'), '-o', f]) == 1
    assert codec.main(['decode', f, '-o', out2, '--model', os.path.join(str(tmp_path), 'nomodel')]) == 1
    assert 'Cannot load model' in capsys.readouterr().err


def _reference_output(model, data):
    return image_codec.decode_image(model, data)


def test_every_damaged_file_fails_cleanly_or_decodes_exactly(model):
    """Every bit of the header flipped, bits at many payload offsets flipped, the file cut at many lengths:
    each is a CodecError with a one-line message, or decodes to exactly the original output. Catches a
    size field that decodes to an image of the wrong size, and any exception other than CodecError."""
    data = _encoded(model, None)
    expected = _reference_output(model, data)
    rng = np.random.RandomState(0)
    payload_bits = 8 * (len(data) - image_codec.HEADER_BYTES)
    flips = list(range(8 * image_codec.HEADER_BYTES)) + sorted(
        8 * image_codec.HEADER_BYTES + rng.choice(payload_bits, min(payload_bits, 64), replace=False))
    damaged = [data[:b // 8] + bytes([data[b // 8] ^ (1 << (b % 8))]) + data[b // 8 + 1:] for b in flips]
    damaged += [data[:n] for n in range(0, len(data), max(1, len(data) // 40))]
    refused = 0
    for d in damaged:
        try:
            out = image_codec.decode_image(model, d)
        except image_codec.CodecError as e:
            assert '\n' not in str(e) and str(e)
            refused += 1
            continue
        np.testing.assert_array_equal(out, expected)
    assert refused == len(damaged)  # with the CRC over header and payload, every single-bit flip is caught


_V3 = '<4sBBBBB8sIIII'
_V2 = '<4sBBBB8sIIII'  # versions 1 and 2: no F field


def _legacy_file(model, monkeypatch, version, **fields):
    """A file as versions 1 and 2 wrote them: the context model at F = 14 (float64), the 32-byte header
    without F, the CRC over the payload (1) or header and payload (2); fields by name replace header fields."""
    with monkeypatch.context() as m:
        m.setattr(model, 'fixed_point_pc', model.fixed_point_pc.with_frac_bits(fixed_point_pc.V2_FRAC_BITS))
        data = _encoded(model, None)
    names = ['magic', 'version', 'coder', 'rows', 'cols', 'frac_bits', 'fingerprint', 'height', 'width', 'n', 'crc']
    f = dict(zip(names, struct.unpack_from(_V3, data)), version=version, **fields)
    assert f.pop('frac_bits') == fixed_point_pc.V2_FRAC_BITS
    payload = data[struct.calcsize(_V3):]
    head = struct.pack(_V2, *[f[k] for k in names if k != 'frac_bits'])[:-4]
    crc = zlib.crc32(payload, zlib.crc32(head) if version >= 2 else 0)
    return head + struct.pack('<I', crc) + payload


def test_huge_size_is_refused_before_allocating(model, monkeypatch):
    """A version-1 file (CRC over the payload only) whose height says 2**31: refused from the header,
    not 'Unable to allocate'."""
    v1 = _legacy_file(model, monkeypatch, 1, height=1 << 31)
    with pytest.raises(image_codec.CodecError, match='image size'):
        image_codec.decode_image(model, v1)


@pytest.mark.parametrize('version', [1, 2])
def test_version_1_and_2_files_still_decode(model, monkeypatch, version):
    """Files written before the header held F (version 2, F = 14 in float64) or was covered by the
    checksum (version 1) decode to the same image as today's version 3 file (F = 8 in float32): the
    symbols are the same, only their coding differs."""
    old = _legacy_file(model, monkeypatch, version)
    data = _encoded(model, None)
    assert data[4] == 3 and data[8] < fixed_point_pc.V2_FRAC_BITS and old[32:] != data[33:]
    np.testing.assert_array_equal(image_codec.decode_image(model, old), _reference_output(model, data))


def _with_frac_bits(data, frac_bits):
    """A version-3 file with another F and a valid checksum."""
    f = list(struct.unpack_from(_V3, data))
    f[5] = frac_bits
    payload = data[struct.calcsize(_V3):]
    head = struct.pack(_V3, *f)[:-4]
    return head + struct.pack('<I', zlib.crc32(payload, zlib.crc32(head))) + payload


def test_a_precision_the_model_cannot_have_is_refused(model):
    data = _encoded(model, None)
    F = data[8]
    with pytest.raises(image_codec.CodecError, match='precision F = 3 is outside'):
        image_codec.decode_image(model, _with_frac_bits(data, 3))
    with pytest.raises(image_codec.CodecError, match='another model: F = {}'.format(F + 1)):
        image_codec.decode_image(model, _with_frac_bits(data, F + 1))  # F is the largest exact one


def test_blocks_larger_than_the_symbol_grid_are_refused(model):
    img = smooth_image(24, 40, seed=5)  # symbol grid 3 x 5
    with pytest.raises(image_codec.CodecError, match='more than the 3x5 symbol grid'):
        image_codec.encode_image(model, img, blocks=(4, 1))
    data = image_codec.encode_image(model, img, blocks=(3, 5))
    np.testing.assert_array_equal(image_codec.decode_image(model, data), _reference_output(model, image_codec.encode_image(model, img)))


def test_written_files_get_the_users_umask(model, tmp_path):
    old = os.umask(0o022)
    try:
        path = str(tmp_path / 'out.png')
        images.save_png(path, smooth_image(8, 8))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.umask(0o077)
        images.save_png(path, smooth_image(8, 8))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)


def test_golden_files_decode_identically_on_this_machine():
    """Files encoded by the cpu@med model shipped before (tests/golden_files/model; fast coder, Python coder,
    2x2 blocks; file versions 2 and 3, i.e. the context model in float64 at F = 14 and in float32 at F = 8)
    decode to the recorded symbols on any machine: the file format and the fixed-point context model are
    exact. The pixels come from TensorFlow's float decoder, whose last bit depends on the CPU's kernels, so
    they are compared with the recorded PNG to within one grey level on 99.9 % of the values (bit-identical
    here)."""
    golden, model_dir = golden_files()
    assert {w['version'] for w in golden['files'].values()} == {2, 3}
    m = inference.Model(model_dir)
    try:
        assert_golden_files_decode(m)
    finally:
        m.close()


# decode without --model: the model is found by the file's fingerprint -------------------------------------

MODEL_NAME = '0101_1200 cvpr@low cvpr@res_shallow'  # the `model` fixture's
OTHER_NAMES = ('0101_1100 cvpr@low cvpr@res_shallow', '0101_1300 cvpr@low cvpr@res_shallow')


@pytest.fixture(scope='module')
def other_models(tmp_path_factory):
    """Two models other than `model` (other weights), made once."""
    root = tmp_path_factory.mktemp('others')
    return [make_model_dir(root, name=name, seed=seed) for name, seed in zip(OTHER_NAMES, (1, 2))]


def _models_root(tmp_path, log_dirs):
    """A directory like ckpts/: copies of the model dirs, next to a val.py output dir and a stray file."""
    import shutil
    root = tmp_path / 'models'
    root.mkdir()
    for d in log_dirs:
        shutil.copytree(d, str(root / os.path.basename(d)))
    (root / '0101_1200 kodak').mkdir()
    (root / '0101_1200 kodak' / 'measures.csv').write_text('img_name,bpp\n')
    (root / 'README').write_text('models\n')
    return str(root)


def _counting_model_loads(monkeypatch):
    loaded = []
    real = inference.Model

    def model(log_dir, *args, **kwargs):
        loaded.append(os.path.basename(log_dir))
        return real(log_dir, *args, **kwargs)
    monkeypatch.setattr(inference, 'Model', model)
    return loaded


def _write_encoded(model, tmp_path):
    data = _encoded(model, None)
    path = str(tmp_path / 'x.cpm')
    with open(path, 'wb') as f:
        f.write(data)
    return path, data


def test_decode_finds_the_files_model_among_several(model, other_models, tmp_path, monkeypatch, capsys):
    """The model is found among three, the output is what that model decodes, and the second time the
    cached fingerprints rule the other models out without loading them (only the file's model is loaded)."""
    root = _models_root(tmp_path, [model.log_dir] + other_models)
    monkeypatch.setattr(image_codec, 'SHIPPED_MODELS', root)
    f, data = _write_encoded(model, tmp_path)
    out = str(tmp_path / 'out.png')
    loaded = _counting_model_loads(monkeypatch)
    assert codec.main(['decode', f, '-o', out]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), _reference_output(model, data))
    assert MODEL_NAME in capsys.readouterr().err
    assert loaded == [OTHER_NAMES[0], MODEL_NAME]  # in order, up to the match
    for name in loaded:
        assert os.path.isfile(os.path.join(root, name, 'ckpts', model_files.FINGERPRINT_CACHE))
    del loaded[:]
    os.remove(out)
    assert codec.main(['decode', f, '-o', out]) == 0
    assert loaded == [MODEL_NAME]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), _reference_output(model, data))


def test_decode_without_a_matching_model_names_the_models_tried(model, other_models, tmp_path, monkeypatch,
                                                                 capsys):
    root = _models_root(tmp_path, other_models)
    broken = os.path.join(root, 'broken', 'ckpts')
    os.makedirs(broken)
    open(os.path.join(broken, 'ckpt-5.index'), 'w').close()
    monkeypatch.setattr(image_codec, 'SHIPPED_MODELS', root)
    f, data = _write_encoded(model, tmp_path)
    out = str(tmp_path / 'out.png')
    for _ in range(2):  # without and with cached fingerprints
        assert codec.main(['decode', f, '-o', out]) == 1
        err = capsys.readouterr().err
        assert err.startswith('Error: No model in') and err.count('\n') == 1 and not os.path.exists(out)
        assert model.fingerprint.hex() in err
        for name in OTHER_NAMES:
            assert repr(name) in err
        assert "'broken' (cannot load" in err and 'kodak' not in err
    with pytest.raises(image_codec.CodecError, match='no models'):
        image_codec.find_model_for(model.fingerprint, str(tmp_path / 'empty'))


def test_decode_with_model_uses_it_directly(model, tmp_path, monkeypatch):
    def no_search(*args):
        raise AssertionError('searched although --model was given')
    monkeypatch.setattr(image_codec, 'find_model_for', no_search)
    f, data = _write_encoded(model, tmp_path)
    out = str(tmp_path / 'out.png')
    assert codec.main(['decode', f, '-o', out, '--model', model.log_dir]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), _reference_output(model, data))


def test_fingerprint_cache_is_a_hint_only(model, other_models, tmp_path):
    """A cache that claims the file's fingerprint for another model does not make that model decode it; a
    cache that claims another fingerprint for the file's model (older code) does not hide it; a changed
    checkpoint makes the cache stale."""
    import json
    root = _models_root(tmp_path, [model.log_dir, other_models[0]])
    for d in (MODEL_NAME, OTHER_NAMES[0]):
        m = inference.Model(os.path.join(root, d))
        model_files.save_fingerprint(m.log_dir, m.step, m.fingerprint)
        assert model_files.cached_fingerprint(os.path.join(root, d)) == m.fingerprint
        m.close()

    def claim(name, fingerprint):
        path = os.path.join(root, name, 'ckpts', model_files.FINGERPRINT_CACHE)
        with open(path) as f:
            saved = json.load(f)
        with open(path, 'w') as f:
            json.dump(dict(saved, fingerprint=fingerprint.hex()), f)
    claim(OTHER_NAMES[0], model.fingerprint)
    claim(MODEL_NAME, b'\0' * 8)
    found = image_codec.find_model_for(model.fingerprint, root)
    try:
        assert found.fingerprint == model.fingerprint and os.path.basename(found.log_dir) == MODEL_NAME
    finally:
        found.close()
    assert model_files.cached_fingerprint(os.path.join(root, MODEL_NAME)) == model.fingerprint  # rewritten
    data_file = [n for n in os.listdir(os.path.join(root, MODEL_NAME, 'ckpts')) if '.data-' in n][0]
    with open(os.path.join(root, MODEL_NAME, 'ckpts', data_file), 'r+b') as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    assert model_files.cached_fingerprint(os.path.join(root, MODEL_NAME)) is None


def test_blocks_argument(capsys):
    assert image_codec.parse_blocks('2x3') == (2, 3) and image_codec.parse_blocks('64X1') == (64, 1)
    for bad in ('0x1', '65x1', 'ax2', '2', '2x2x2', ''):
        with pytest.raises(ValueError, match='RxC'):
            image_codec.parse_blocks(bad)
    with pytest.raises(SystemExit) as e:
        codec.main(['encode', 'x.png', '-o', 'x.cpm', '--blocks', '3'])
    assert e.value.code == 2 and "--blocks: takes RxC" in capsys.readouterr().err


class _FakeModel(object):
    """What plan_coding reads of a model."""
    class ae_config(object):
        num_chan_bn = 32
        arch_param_n = 48
    AE_BYTES_PER_PIXEL_PER_FILTER = (1.5, 5.0)


def test_memory_plan_keeps_the_context_model_within_the_budget(monkeypatch):
    """The blocks coded at once (one per worker) fit the budget left after the model and the image; a big
    budget gives one block (the whole-image codec); a budget below the image itself is a clear error."""
    monkeypatch.setattr(image_codec, '_rss_mb', lambda: 300.)
    h, w = 4000, 6000
    C, sh, sw = image_codec.symbol_volume_shape(_FakeModel, h, w)
    for budget in (600, 1000, 2000, 8000):
        plan = image_codec.plan_coding(_FakeModel, h, w, budget)
        rows, cols = plan['blocks']
        block_positions = C * -(-sh // rows) * -(-sw // cols)
        free = budget - 300. - 6. * h * w / 2. ** 20
        assert block_positions * image_codec._PC_BYTES_PER_POSITION * image_codec._workers() <= free * 2. ** 20 * 1.1
    assert image_codec.plan_coding(_FakeModel, 512, 768, 2000)['blocks'] == (1, 1)
    with pytest.raises(image_codec.CodecError, match='too small'):
        image_codec.plan_coding(_FakeModel, h, w, 400)
