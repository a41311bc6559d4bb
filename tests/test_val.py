"""val.py on generated images: measures.csv, real bpp, reconstructions, checkpoint selection, dataset
keys, and the distance to classical codecs' curves."""
import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import image_codec
import images
import inference
import ms_ssim_np
import val
from helpers import make_model_dir, smooth_image, write_codec_curves, write_images

JOB = '0101_1200'


@pytest.fixture(autouse=True)
def _no_codec_curves(tmp_path, monkeypatch):
    # the repo's own other_codecs/ must not leak into the tests
    monkeypatch.setenv('OTHER_CODECS_ROOT', str(tmp_path / 'no_codecs'))


def _images(d):
    os.makedirs(d)
    Image.fromarray(smooth_image(32, 40, 0)).save(os.path.join(d, 'a.png'))
    Image.fromarray(smooth_image(27, 45, 1)).save(os.path.join(d, 'b.png'))  # not multiples of 8
    Image.fromarray(smooth_image(24, 24, 2)).convert('RGBA').save(os.path.join(d, 'c.png'))
    return d


def _rows(out_dir, name='measures.csv'):
    with open(os.path.join(out_dir, name)) as f:
        return list(csv.DictReader(f))


def _scalars(out_dir):
    """{tag: [(step, value), ...]} of all TensorBoard event files in out_dir."""
    from tf_helpers import tf
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), 'events.out.tfevents.*'))):
        for event in tf.train.summary_iterator(path):
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def _validated(out_dir):
    with open(os.path.join(out_dir, val.VALIDATED)) as f:
        return json.load(f)


def test_val_writes_measures_and_reconstructions(tmp_path, capsys):
    root = str(tmp_path / 'ckpts')
    log_dir = make_model_dir(root)
    imgs = _images(str(tmp_path / 'myset'))
    assert val.main([root, JOB, imgs, '--save_ours', '--real_bpp']) == 0
    out_dir = os.path.join(root, JOB + ' myset')
    rows = _rows(out_dir)
    assert list(rows[0].keys()) == ['img_name', 'bpp', 'ms-ssim', 'psnr', 'bpp_real', 'enc_s', 'dec_s']
    assert [r['img_name'] for r in rows] == ['a.png', 'b.png', 'c.png']
    model = inference.Model(log_dir)
    try:
        for r in rows:
            orig, _ = images.load_rgb(os.path.join(imgs, r['img_name']))
            h, w = orig.shape[:2]
            # the file val.py measured is what the codec CLI writes for this model and image
            data = image_codec.encode_image(model, orig, 'fast')
            assert r['bpp_real'] == '{:.6f}'.format(8. * len(data) / (h * w))
            bits = model.run(images.pad_to_multiple(orig), model.g.bit_cost)
            estimate = float(np.sum(bits)) / (h * w)  # of the padded volume, over the original pixels
            np.testing.assert_allclose(float(r['bpp']), estimate, rtol=1e-5, atol=1e-6)
            # the file is the 32-byte header plus a payload within a few bytes of the estimate: a wrong pixel
            # count (e.g. the padded one, 32x48 for b.png), a missing header or a lost payload all break this
            payload_bits = float(r['bpp_real']) * h * w - 8 * image_codec.HEADER_BYTES
            assert -8 - 0.01 * estimate * h * w <= payload_bits - estimate * h * w <= 40 + 0.01 * estimate * h * w

            rec = np.asarray(Image.open(os.path.join(out_dir, 'imgs', os.path.splitext(r['img_name'])[0] + '.png')))
            # with --real_bpp the saved reconstruction is the decoded file
            np.testing.assert_array_equal(rec, image_codec.decode_image(model, data))
            np.testing.assert_allclose(float(r['psnr']), ms_ssim_np.psnr(orig, rec), rtol=1e-5)
            np.testing.assert_allclose(float(r['ms-ssim']), ms_ssim_np.ms_ssim(orig, rec), rtol=1e-5)
        # unrounded: the real bpp is exactly the file's bits over the original pixel count
        orig, _ = images.load_rgb(os.path.join(imgs, 'b.png'))
        m, _ = val.measure_image(model, orig, True, 'fast')
        assert m['bpp_real'] == 8. * len(image_codec.encode_image(model, orig, 'fast')) / (27 * 45)
    finally:
        model.close()
    out = capsys.readouterr().out
    assert 'RGBA' in out and 'ckpt 7' in out
    assert _validated(out_dir) == [7]
    # a second run skips the validated checkpoint; --reset redoes it
    assert val.main([root, JOB, imgs]) == 0
    assert 'Nothing to do' in capsys.readouterr().out
    assert val.main([root, JOB, imgs, '--reset', '--how_many', '1']) == 0
    assert [r['img_name'] for r in _rows(out_dir)] == ['a.png']


def test_val_errors_are_clear(tmp_path, capsys):
    root = str(tmp_path / 'ckpts')
    make_model_dir(root)
    make_model_dir(root, name='0101_1201 cvpr@low cvpr@res_shallow')
    imgs = _images(str(tmp_path / 'set'))
    assert val.main([root, '0101_12', imgs]) == 1  # matches two log dirs
    assert 'matches 2 log dirs' in capsys.readouterr().err
    assert val.main([root, '0999', imgs]) == 1
    assert 'matches 0 log dirs' in capsys.readouterr().err
    assert val.main([root, JOB, str(tmp_path / 'none')]) == 1
    assert 'not a directory' in capsys.readouterr().err
    for bad in ('0', '-2', 'x'):
        with pytest.raises(SystemExit):
            val.main([root, JOB, imgs, '--ckpt_step', bad])
        assert 'K must be >= 1, or -1' in capsys.readouterr().err


def test_ckpts_to_validate():
    # the original: all_ckpts[:-1:k] + [all_ckpts[-1]], i.e. counting from the oldest
    steps = [1, 2, 3, 4, 5, 6]
    assert val.ckpts_to_validate(steps, 2, set()) == [1, 3, 5, 6]
    assert val.ckpts_to_validate(steps, 3, set()) == [1, 4, 6]
    assert val.ckpts_to_validate(steps, 1, set()) == steps
    assert val.ckpts_to_validate(steps, -1, set()) == [6]
    assert val.ckpts_to_validate(steps[:5], 2, set()) == [1, 3, 5]
    assert val.ckpts_to_validate(steps, 2, {6, 3}) == [1, 5]
    assert val.ckpts_to_validate([4], 2, set()) == [4]
    assert val.ckpts_to_validate([], 2, set()) == []
    assert val.parse_args(['r', 'j', 'i']).ckpt_step == 2


def test_ckpt_step_on_a_log_dir(tmp_path, monkeypatch, capsys):
    root = str(tmp_path / 'ckpts')
    steps = [10, 20, 30, 40, 50, 60]
    make_model_dir(root, steps=steps)
    imgs = str(tmp_path / 'set')
    write_images(imgs, 1, 16, 16)
    out_dir = os.path.join(root, JOB + ' set')

    def run(*flags):
        assert val.main([root, JOB, imgs] + list(flags)) == 0
        return capsys.readouterr().out

    out = run()  # default --ckpt_step 2
    assert 'validating checkpoints [10, 30, 50, 60]' in out
    assert _validated(out_dir) == [10, 30, 50, 60]
    assert sorted(s for s, _ in _scalars(out_dir)['val/set/avg_bpp']) == [10, 30, 50, 60]
    # measures.csv is the latest checkpoint's, the others keep theirs; each is its own checkpoint's
    assert sorted(os.listdir(out_dir)) == sorted(
        ['measures.csv', 'measures-10.csv', 'measures-30.csv', 'measures-50.csv', val.VALIDATED] +
        [n for n in os.listdir(out_dir) if n.startswith('events.')])
    bpps = [_rows(out_dir, n)[0]['bpp'] for n in ('measures-10.csv', 'measures-30.csv', 'measures-50.csv',
                                                   'measures.csv')]
    assert len(set(bpps)) == 4

    out = run('--reset', '--ckpt_step', '-1')
    assert 'validating checkpoints [60]' in out and _validated(out_dir) == [60]
    out = run('-s', '2')  # the already validated latest one is skipped
    assert 'validating checkpoints [10, 30, 50]' in out and _validated(out_dir) == [10, 30, 50, 60]

    # 1: all of them; a checkpoint deleted after the listing (by a still running training job) is skipped
    # and not marked validated
    for p in glob.glob(os.path.join(glob.escape(root), JOB + ' cvpr@low cvpr@res_shallow', 'ckpts', 'ckpt-20.*')):
        os.remove(p)
    monkeypatch.setattr(val.model_files, 'all_ckpt_steps', lambda ckpt_dir: steps)
    out = run('-s', '1')
    assert 'validating checkpoints [20, 40] (2 of 6 selected' in out
    assert 'Checkpoint disappeared' in out and 'ckpt-20' in out
    assert _validated(out_dir) == [10, 30, 40, 50, 60]


def test_dataset_keys(tmp_path, monkeypatch, capsys):
    val_root = tmp_path / 'val_root'
    kodak = write_images(str(val_root / 'kodak'), 2, 16, 16)
    testset = write_images(str(val_root / 'imagenet_256_train_val_128x128__100'), 3, 16, 16)
    write_images(str(val_root / 'imagenet_256_train_val_128x128__100'), 1, 16, 16, ext='jpg')  # not *.png
    other = write_images(str(val_root / 'other'), 1, 16, 16)
    monkeypatch.setenv('VAL_ROOT', str(val_root))
    # a local folder named like a key does not shadow the key, as in the original
    write_images(str(tmp_path / 'cwd' / 'kodak'), 4, 16, 16)
    monkeypatch.chdir(str(tmp_path / 'cwd'))
    assert val.resolve_images('kodak') == (sorted(kodak), 'kodak')
    assert val.resolve_images('testset') == (sorted(testset), 'testset')
    assert val.resolve_images('other') == (other, 'other')  # any other folder under VAL_ROOT
    assert val.resolve_images('./kodak')[1] == 'kodak' and len(val.resolve_images('./kodak')[0]) == 4

    for p in testset:
        os.remove(p)
    with pytest.raises(val.ValError, match='no PNGs in .*imagenet_256_train_val_128x128__100'):
        val.resolve_images('testset')
    shutil.rmtree(str(val_root / 'imagenet_256_train_val_128x128__100'))
    assert val.main([str(tmp_path), JOB, 'testset']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'VAL_ROOT' in err and 'imagenet_256_train_val_128x128__100' in err
    monkeypatch.delenv('VAL_ROOT')
    monkeypatch.chdir(str(tmp_path))
    with pytest.raises(val.ValError, match=r'\$VAL_ROOT/kodak/\*\.png, but kodak is .*VAL_ROOT=unset'):
        val.resolve_images('kodak')


def test_val_logs_distance_to_each_codec(tmp_path, monkeypatch, capsys):
    root = str(tmp_path / 'ckpts')
    make_model_dir(root)
    val_root = tmp_path / 'val_root'
    write_images(str(val_root / 'imagenet_256_train_val_128x128__100'), 2, 32, 32)
    monkeypatch.setenv('VAL_ROOT', str(val_root))
    codecs_root = tmp_path / 'codecs'
    # bpg: two images with linear curves over 0.05..1.5 bpp, averaged: ms-ssim 0.55 + 0.2 b, psnr 21 + 6 b
    write_codec_curves(codecs_root, 'bpg', 'testset', {
        'img0': [(0.05, 0.5 + 0.3 * 0.05, 20 + 8 * 0.05), (1.5, 0.5 + 0.3 * 1.5, 20 + 8 * 1.5)],
        'img1': [(0.05, 0.6 + 0.1 * 0.05, 22 + 4 * 0.05), (1.5, 0.6 + 0.1 * 1.5, 22 + 4 * 1.5)]})
    # webp's curve lies above the tiny model's rate (< 8 channels * log2(6) / 64 = 0.33 bpp): undefined there
    write_codec_curves(codecs_root, 'webp', 'testset', {
        'img0': [(1.0, 0.9, 30.), (1.5, 0.95, 33.)], 'img1': [(1.0, 0.9, 30.), (1.5, 0.95, 33.)]})
    write_codec_curves(codecs_root, 'jpeg', 'other', {'img0': [(0.05, 0.5, 20.), (1.5, 0.9, 30.)]})

    assert val.main([root, JOB, 'testset', '--other_codecs_root', str(codecs_root)]) == 0
    out = capsys.readouterr().out
    out_dir = os.path.join(root, JOB + ' testset')
    rows = _rows(out_dir)
    bpp, msssim, psnr = (np.mean([float(r[c]) for r in rows]) for c in ('bpp', 'ms-ssim', 'psnr'))
    assert 0.1 < bpp < 1.0
    scalars = _scalars(out_dir)
    assert sorted(t for t in scalars if 'distance' in t) == ['val/testset/distance_bpg_ms-ssim',
                                                             'val/testset/distance_bpg_psnr']
    (step, d_msssim), = scalars['val/testset/distance_bpg_ms-ssim']
    (_, d_psnr), = scalars['val/testset/distance_bpg_psnr']
    assert step == 7
    np.testing.assert_allclose(d_msssim, msssim - (0.55 + 0.2 * bpp), atol=2e-5)
    np.testing.assert_allclose(d_psnr, psnr - (21 + 6 * bpp), atol=1e-3)
    assert 'Distance to bpg: {:.4f} ms-ssim // {:.3f} psnr'.format(d_msssim, d_psnr) in out
    assert 'Distance to webp: n/a, mean bpp' in out and 'Distance to jpeg' not in out

    # no curves for the dataset: no distance scalars, one note ($OTHER_CODECS_ROOT is used without the flag)
    monkeypatch.setenv('OTHER_CODECS_ROOT', str(codecs_root))
    imgs = str(tmp_path / 'plain')
    write_images(imgs, 1, 32, 32)
    assert val.main([root, JOB, imgs]) == 0
    out = capsys.readouterr().out
    assert 'no classical codec curves for \'plain\'' in out and 'Distance to' not in out
    scalars = _scalars(os.path.join(root, JOB + ' plain'))
    assert 'val/plain/avg_bpp' in scalars and not [t for t in scalars if 'distance' in t]
