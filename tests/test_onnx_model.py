"""The ONNX Runtime path (onnx_export.py, onnx_model.py): the same symbols and files as TensorFlow, the
reconstruction within one grey level, exports checked against their checkpoint, and codec.py without TF."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import codec
import image_codec
import images
import inference
import model_files
import onnx_export
import onnx_model
import saver as saver_lib
from helpers import ROOT, assert_golden_files_decode, golden_files, make_model_dir, smooth_image
from tf_helpers import tf

SHIPPED_MED = image_codec.default_model_dir()
KODAK_SIZE = (512, 768)


def _export(log_dir):
    m = inference.Model(log_dir)
    try:
        onnx_export.export(m)
    finally:
        m.close()
    return log_dir


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny model with its ONNX export."""
    return _export(make_model_dir(tmp_path_factory.mktemp('onnx')))


def _compare(tf_model, ox_model, img):
    """(number of differing symbols, fraction of pixel values that differ by more than one level, max diff)"""
    s_tf, s_ox = tf_model.encode_symbols(img), ox_model.encode_symbols(img)
    assert s_tf.shape == s_ox.shape and s_ox.dtype == np.int64
    r_tf = images.to_uint8(tf_model.decode_symbols(s_tf)).astype(int)
    r_ox = images.to_uint8(ox_model.decode_symbols(s_tf)).astype(int)
    diff = np.abs(r_tf - r_ox)
    return int((s_tf != s_ox).sum()), float(np.mean(diff > 1)), int(diff.max())


@pytest.mark.parametrize('which', ['tiny', 'shipped med'])
def test_symbols_and_reconstruction_match_tensorflow(exported, which):
    """On generated Kodak-size images: symbols identical except where a value ties between two centers
    (float rounding; counted, at most 1 in 10,000), the reconstruction within one level on 99.9 % of values."""
    log_dir = exported if which == 'tiny' else SHIPPED_MED
    tf_model, ox_model = inference.Model(log_dir), onnx_model.OnnxModel(log_dir)
    try:
        assert ox_model.fingerprint == tf_model.fingerprint
        np.testing.assert_array_equal(ox_model.centers, tf_model.centers)
        for seed in range(2):
            img = smooth_image(*KODAK_SIZE, seed=seed)
            n_sym, frac_off, max_diff = _compare(tf_model, ox_model, img)
            print('{} seed {}: {} of {} symbols differ, {:.2e} of values off by > 1 (max {})'.format(
                which, seed, n_sym, tf_model.ae_config.num_chan_bn * 64 * 96, frac_off, max_diff))
            assert n_sym <= tf_model.ae_config.num_chan_bn * 64 * 96 // 10000
            assert frac_off <= 1e-3
    finally:
        tf_model.close()


def test_the_integer_context_model_is_the_same(exported):
    """The frequency tables come from the same integers: files are identical across runtimes."""
    tf_model, ox_model = inference.Model(exported), onnx_model.OnnxModel(exported)
    try:
        for a, b in zip(tf_model.fixed_point_pc.layers, ox_model.fixed_point_pc.layers):
            np.testing.assert_array_equal(a.row_weights, b.row_weights)
            np.testing.assert_array_equal(a.bias, b.bias)
        img = smooth_image(64, 80, seed=3)
        data = image_codec.encode_image(ox_model, img)
        assert data == image_codec.encode_image(tf_model, img)
        # and a file of one runtime decodes to the same symbols in the other
        np.testing.assert_array_equal(image_codec.decode_symbols(tf_model, data)[0],
                                      ox_model.encode_symbols(images.pad_to_multiple(img)))
    finally:
        tf_model.close()


def test_golden_files_decode_on_onnx_runtime():
    """The golden files (tests/test_codec.py) through their model's ONNX export (export format 1, plain
    .onnx files): the recorded symbols, and pixels within one level of the recorded PNGs (made with
    TensorFlow)."""
    assert_golden_files_decode(onnx_model.OnnxModel(golden_files()[1]))


def test_shipped_exports_are_up_to_date():
    """Every shipped model has an export made from its checkpoint (else codec.py falls back to TF)."""
    dirs = [d for d in glob.glob(os.path.join(ROOT, 'ckpts', '*')) if model_files.all_ckpt_steps(
        model_files.ckpt_dir_of(d))]
    assert len(dirs) >= 3
    for d in dirs:
        manifest = onnx_model.read_manifest(d)
        assert manifest['fingerprint'] == model_files.cached_fingerprint(d).hex(), d


def test_stale_or_damaged_exports_fall_back_to_tensorflow(exported, tmp_path, capsys):
    import shutil
    d = str(tmp_path / os.path.basename(exported))
    shutil.copytree(exported, d)
    assert isinstance(image_codec.load_model(d), onnx_model.OnnxModel)
    # a newer checkpoint: the export no longer describes the model
    with tf.Graph().as_default():
        m = inference.Model(d)
        with m.graph.as_default():
            for v in m.graph.get_collection('variables'):
                if v.op.name.endswith('biases'):
                    v.load(np.full(v.shape.as_list(), 0.01), m.sess)
                    break
            saver_lib.Saver(d, var_list=m.graph.get_collection('variables')).save(m.sess, 99)
        m.close()
    with pytest.raises(onnx_model.NotExported, match=r'older than the checkpoint \(step 7 vs 99\).*--onnx_only'):
        onnx_model.read_manifest(d)
    notes = []
    model = image_codec.load_model(d, note=notes.append)
    assert isinstance(model, inference.Model) and model.step == 99
    assert len(notes) == 1 and 'using TensorFlow' in notes[0]
    model.close()
    with pytest.raises(image_codec.CodecError, match='on ONNX Runtime: the ONNX export is older'):
        image_codec.load_model(d, runtime='onnx')
    # re-exported: ONNX again, with the new weights
    _export(d)
    assert onnx_model.OnnxModel(d).step == 99
    # a damaged file is caught by its checksum
    with open(os.path.join(d, 'onnx', onnx_model.DECODER_FILE + onnx_model.GZ_SUFFIX), 'r+b') as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(onnx_model.NotExported, match='does not match its checksum'):
        onnx_model.OnnxModel(d)


def test_exports_of_format_1_are_still_read(exported, tmp_path):
    """Format 1 stored the networks uncompressed (the exports shipped before format 2): the same model, the
    same files; a format-2 export is smaller than its networks."""
    import gzip
    import hashlib
    import shutil
    d = str(tmp_path / os.path.basename(exported))
    shutil.copytree(exported, d)
    onnx_dir = os.path.join(d, onnx_model.ONNX_DIR)
    manifest = json.load(open(os.path.join(onnx_dir, onnx_model.MANIFEST_FILE)))
    assert manifest['format'] == 2
    stored = 0
    for name in (onnx_model.ENCODER_FILE, onnx_model.DECODER_FILE):
        gz = os.path.join(onnx_dir, name + onnx_model.GZ_SUFFIX)
        stored += os.path.getsize(gz)
        data = gzip.decompress(open(gz, 'rb').read())
        stored -= len(data)
        open(os.path.join(onnx_dir, name), 'wb').write(data)
        os.remove(gz)
        del manifest['sha256'][name + onnx_model.GZ_SUFFIX]
        manifest['sha256'][name] = hashlib.sha256(data).hexdigest()
    assert stored < 0
    manifest['format'] = 1
    with open(os.path.join(onnx_dir, onnx_model.MANIFEST_FILE), 'w') as f:
        json.dump(manifest, f)
    img = smooth_image(40, 48)
    old = onnx_model.OnnxModel(d)
    assert image_codec.encode_image(old, img) == image_codec.encode_image(onnx_model.OnnxModel(exported), img)
    # exporting again writes format 2 and leaves no uncompressed copies behind
    _export(d)
    assert sorted(os.listdir(onnx_dir)) == sorted(
        [onnx_model.ENCODER_FILE + onnx_model.GZ_SUFFIX, onnx_model.DECODER_FILE + onnx_model.GZ_SUFFIX,
         onnx_model.CONTEXT_MODEL_FILE, onnx_model.MANIFEST_FILE])


def test_an_export_without_checkpoints_is_used_as_it_is(exported, tmp_path):
    """Shipping only config copies and onnx/ is enough for codec.py."""
    import shutil
    d = str(tmp_path / os.path.basename(exported))
    shutil.copytree(exported, d, ignore=shutil.ignore_patterns(model_files.CKPT_DIR_NAME))
    img = smooth_image(40, 48)
    m = image_codec.load_model(d, runtime='onnx')
    data = image_codec.encode_image(m, img)
    ref = onnx_model.OnnxModel(exported)
    assert data == image_codec.encode_image(ref, img)
    # found by its fingerprint, from the manifest
    assert image_codec.find_model_for(m.fingerprint, root=str(tmp_path), runtime='onnx').log_dir == d


def test_codec_cli_does_not_import_tensorflow(exported, tmp_path):
    img_path = str(tmp_path / 'a.png')
    images.save_png(img_path, smooth_image(40, 56))
    code = ('import sys, codec\n'
            'rc = codec.main(["encode", {0!r}, "-o", {1!r}, "--model", {2!r}])\n'
            'rc += codec.main(["decode", {1!r}, "-o", {3!r}, "--model", {2!r}])\n'
            'print(rc, "tensorflow" in sys.modules)').format(img_path, str(tmp_path / 'a.cpm'), exported,
                                                            str(tmp_path / 'b.png'))
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ['0', 'False'], out.stdout + out.stderr
    assert 'Note:' not in out.stderr


def test_many_files_per_call(exported, tmp_path, capsys):
    """One call codes several files; a bad one is reported, the others are done, the exit status counts."""
    inputs = []
    for i, (h, w) in enumerate([(40, 48), (33, 57), (64, 64)]):
        inputs.append(str(tmp_path / 'img{}.png'.format(i)))
        images.save_png(inputs[-1], smooth_image(h, w, seed=i))
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not a png')
    out_dir = str(tmp_path / 'enc')
    assert codec.main(['encode'] + inputs[:2] + [str(bad), inputs[2], '-o', out_dir, '--model', exported]) == 1
    err = capsys.readouterr().err
    assert 'broken.png' in err and '1 of 4 files failed' in err
    encoded = sorted(glob.glob(os.path.join(out_dir, '*.cpm')))
    assert [os.path.basename(p) for p in encoded] == ['img0.cpm', 'img1.cpm', 'img2.cpm']
    assert not os.path.exists(os.path.join(out_dir, 'broken.cpm'))
    # a damaged file among them: the others still decode, exactly as the single-file path does
    with open(encoded[1], 'r+b') as f:
        f.seek(40)
        f.write(b'\xff\xff')
    dec_dir = str(tmp_path / 'dec')
    assert codec.main(['decode'] + encoded + [str(tmp_path / 'missing.cpm'), '-o', dec_dir + '/', '--model',
                                               exported]) == 2
    err = capsys.readouterr().err
    assert 'checksum' in err and 'missing.cpm' in err and '2 of 4 files failed' in err
    assert sorted(os.listdir(dec_dir)) == ['img0.png', 'img2.png']
    single = str(tmp_path / 'single.png')
    assert codec.main(['decode', encoded[2], '-o', single, '--model', exported]) == 0
    assert open(single, 'rb').read() == open(os.path.join(dec_dir, 'img2.png'), 'rb').read()
    # two inputs that would write the same output: refused before anything is written
    other = tmp_path / 'other'
    other.mkdir()
    images.save_png(str(other / 'img0.png'), smooth_image(16, 16))
    assert codec.main(['encode', inputs[0], str(other / 'img0.png'), '-o', str(tmp_path / 'clash'),
                       '--model', exported]) == 1
    assert 'would both be written to' in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / 'clash'))


def test_without_onnxruntime_the_codec_falls_back_with_a_note(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # makes `import onnxruntime` raise ImportError
    notes = []
    model = image_codec.load_model(exported, note=notes.append)
    try:
        assert isinstance(model, inference.Model)
        assert len(notes) == 1 and 'onnxruntime is not installed' in notes[0] and 'using TensorFlow' in notes[0]
    finally:
        model.close()
    with pytest.raises(image_codec.CodecError, match='onnxruntime is not installed'):
        image_codec.load_model(exported, runtime='onnx')
