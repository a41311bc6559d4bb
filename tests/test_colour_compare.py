"""colour_compare.py: YCbCr conversion, per-channel PSNR, WebP at a rate, crops, and the script end to end on
a fake val.py output dir with two small generated images."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import colour_compare
import ms_ssim_np
import other_codecs
from helpers import ROOT, smooth_image


def _ycbcr_by_formula(rgb):
    """The JFIF formulas written out channel by channel, independently of the module's matrix."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                     128 + 0.5 * r - 0.418688 * g - 0.081312 * b], axis=-1)


def _psnr(a, b):
    return 10 * np.log10(255. ** 2 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _webp_bpp(rgb, q, method=6):
    data, decoded = other_codecs._pil_roundtrip(rgb, format='WEBP', quality=q, method=method, lossless=False)
    return 8. * len(data) / (rgb.shape[0] * rgb.shape[1]), decoded


# YCbCr and per-channel PSNR ---------------------------------------------------------------------------------


def test_ycbcr_matches_formulas_and_pillow():
    rgb = np.random.RandomState(0).randint(0, 256, (40, 50, 3)).astype(np.uint8)
    ycc = colour_compare.rgb_to_ycbcr(rgb)
    assert ycc.dtype == np.float64 and ycc.shape == rgb.shape
    np.testing.assert_allclose(ycc, _ycbcr_by_formula(rgb), atol=1e-9)
    # Pillow truncates its fixed-point result (it does not round): ours - Pillow's lies in [0, 1) up to its
    # fixed-point error of ~0.05
    diff = ycc - np.asarray(Image.fromarray(rgb).convert('YCbCr'), dtype=np.float64)
    assert diff.min() > -0.1 and diff.max() < 1.1
    assert abs(diff.mean() - 0.5) < 0.1
    # not rounded: a pure red level 1 has Y = 0.299
    assert colour_compare.rgb_to_ycbcr(np.array([[[1, 0, 0]]], np.uint8))[0, 0, 0] == pytest.approx(0.299)
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None]  # 1 x 256 x 3
    g = colour_compare.rgb_to_ycbcr(grey)
    np.testing.assert_allclose(g[0, :, 0], np.arange(256), atol=1e-9)
    np.testing.assert_allclose(g[0, :, 1:], 128, atol=1e-9)


@pytest.mark.parametrize('channel, diffs', [
    (0, (0.299, -0.168736, 0.5)),  # R only: Cr changes most
    (2, (0.114, 0.5, -0.081312)),  # B only: Cb changes most
])
def test_channel_psnrs_of_a_single_channel_shift(channel, diffs):
    orig = np.clip(smooth_image(32, 48, seed=3), 20, 235)  # room for the shift: no clipping
    rec = orig.copy()
    rec[..., channel] += 10
    got = colour_compare.channel_psnrs(colour_compare.rgb_to_ycbcr(orig), colour_compare.rgb_to_ycbcr(rec))
    # a uniform shift of d in a channel: PSNR = 20 log10(255 / |d|)
    expected = [20 * np.log10(255. / abs(10 * d)) for d in diffs]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_chroma_change_seen_by_chroma_psnr_only():
    # a hue change at (nearly) constant luma, as green eyes turning yellow-orange: Cb, Cr shifted, Y kept
    orig = np.clip(smooth_image(48, 64, seed=1), 40, 215)
    y, cb, cr = np.moveaxis(_ycbcr_by_formula(orig), -1, 0)
    cb, cr = cb - 12, cr + 9
    rec = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                    y + 1.772 * (cb - 128)], axis=-1)
    rec = np.clip(np.round(rec), 0, 255).astype(np.uint8)
    m = colour_compare.quality_measures(orig, rec)
    assert m['psnr_y'] > 45  # only the rounding to uint8
    assert m['psnr_cb'] < 27 and m['psnr_cr'] < 30
    assert m['psnr_cb'] == pytest.approx(_psnr(_ycbcr_by_formula(orig)[..., 1], _ycbcr_by_formula(rec)[..., 1]))
    assert m['psnr_rgb'] == ms_ssim_np.psnr(orig, rec)
    assert m['ms_ssim'] == ms_ssim_np.ms_ssim(orig, rec)


def test_identical_images_give_inf():
    img = smooth_image(24, 32)
    m = colour_compare.quality_measures(img, img.copy())
    assert all(m[k] == float('inf') for k in ('psnr_y', 'psnr_cb', 'psnr_cr', 'psnr_rgb'))
    assert m['ms_ssim'] == pytest.approx(1.0)


# WebP at a rate -----------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def webp_curve():
    img = smooth_image(64, 96, seed=0)
    return img, [_webp_bpp(img, q)[0] for q in range(101)]


def test_webp_at_rate_brackets_the_target(webp_curve, monkeypatch):
    img, bpps = webp_curve
    calls = []
    real_webp = other_codecs._webp
    monkeypatch.setattr(other_codecs, '_webp', lambda rgb, q, method=6: calls.append(q) or real_webp(rgb, q, method))
    targets = [bpps[q] for q in (10, 30, 60, 85)] + [(bpps[q] + bpps[q + 1]) / 2 for q in (5, 40, 90)] + \
              [bpps[100] + 1]
    for target in targets:
        del calls[:]
        r = colour_compare.webp_at_rate(img, target)
        assert not r.above_rate
        assert r.bpp == bpps[r.quality] <= target
        if r.quality < 100:
            assert bpps[r.quality + 1] > target, (target, r.quality)
        assert len(calls) <= 9, calls  # bisection: 0, 100 and 7 halvings, not a scan of 101 qualities
        np.testing.assert_array_equal(r.decoded, _webp_bpp(img, r.quality)[1])
    assert colour_compare.webp_at_rate(img, bpps[100] + 1).quality == 100


def test_webp_below_quality_0_is_flagged(webp_curve):
    img, bpps = webp_curve
    r = colour_compare.webp_at_rate(img, bpps[0] * 0.9)
    assert r.quality == 0 and r.above_rate and r.bpp == bpps[0]


def test_webp_method_is_used(webp_curve):
    img, bpps = webp_curve
    r = colour_compare.webp_at_rate(img, bpps[50], method=0)
    bpp0, decoded0 = _webp_bpp(img, r.quality, method=0)
    assert r.bpp == bpp0 != bpps[r.quality]  # method 0 files differ in size from method 6 ones here
    np.testing.assert_array_equal(r.decoded, decoded0)


# Crops ------------------------------------------------------------------------------------------------------


def test_parse_crop():
    assert colour_compare.parse_crop('kodim23:300,150,192,128') == ('kodim23', 300, 150, 192, 128)
    assert colour_compare.parse_crop('a:b:1,2,3,4') == ('a:b', 1, 2, 3, 4)
    for bad in ('kodim23', 'kodim23:1,2,3', ':1,2,3,4', 'k:1,2,0,4', 'k:-1,2,3,4', 'k:1,2,x,4'):
        with pytest.raises(Exception):
            colour_compare.parse_crop(bad)


def test_crop_panel_layout():
    imgs = [smooth_image(30, 40, seed=s) for s in range(3)]
    crop = colour_compare.Crop('x', 5, 7, 11, 6)
    panel = colour_compare.crop_panel(imgs, crop, scale=2, gap=4)
    assert panel.dtype == np.uint8 and panel.shape == (12, 3 * 22 + 2 * 4, 3)
    for i, img in enumerate(imgs):
        part = panel[:, i * 26:i * 26 + 22]
        np.testing.assert_array_equal(part[::2, ::2], img[7:13, 5:16])
        np.testing.assert_array_equal(part[1::2, 1::2], img[7:13, 5:16])  # nearest neighbour: 2x2 blocks
    assert np.all(panel[:, 22:26] == 255) and np.all(panel[:, 48:52] == 255)


# The script end to end ------------------------------------------------------------------------------------------

SIZES = {'img0': (48, 64), 'img1': (40, 56)}
BPP = {'img0': 0.9, 'img1': 1.3}
BPP_REAL = {'img0': 1.0, 'img1': 1.5}


def _reconstruction(name, orig):
    if name == 'img0':  # a colour shift: more blue
        return np.clip(orig.astype(np.int64) + [0, -4, 15], 0, 255).astype(np.uint8)
    padded = np.pad(orig.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode='edge')  # a 3x3 box blur
    blurred = sum(padded[i:i + orig.shape[0], j:j + orig.shape[1]] for i in range(3) for j in range(3)) / 9
    return np.round(blurred).astype(np.uint8)


def make_val_dir(tmp_path, real_bpp=True):
    """IMAGES dir with img0.png, img1.png and a val.py --save_ours output dir for them -> (val_dir, images_dir)."""
    images_dir = tmp_path / 'tiny'
    val_dir = tmp_path / 'logs' / '0101_1200 tiny'
    (val_dir / 'imgs').mkdir(parents=True)
    images_dir.mkdir()
    header = ['img_name', 'bpp', 'ms-ssim', 'psnr'] + (['bpp_real', 'enc_s', 'dec_s'] if real_bpp else [])
    rows = []
    for i, (name, (h, w)) in enumerate(sorted(SIZES.items())):
        orig = smooth_image(h, w, seed=i)
        rec = _reconstruction(name, orig)
        Image.fromarray(orig).save(str(images_dir / (name + '.png')))
        Image.fromarray(rec).save(str(val_dir / 'imgs' / (name + '.png')))
        rows.append([name + '.png', BPP[name], 0.9, 30.0] + ([BPP_REAL[name], 0.1, 0.1] if real_bpp else []))
    with open(str(val_dir / 'measures.csv'), 'w', newline='') as f:
        csv.writer(f).writerows([header] + rows)
    return val_dir, images_dir


def _read_csv(path):
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_end_to_end(tmp_path, capsys):
    val_dir, images_dir = make_val_dir(tmp_path)
    out = tmp_path / 'out'
    rc = colour_compare.main([str(val_dir), str(images_dir), '--crop', 'img0:4,6,20,10', '-o', str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    header, rows = _read_csv(str(out / 'colour.csv'))
    assert tuple(header) == colour_compare.COLUMNS
    assert [r['img_name'] for r in rows] == ['img0.png', 'img1.png']
    means = {k: [] for k in ('bpp_ours', 'ours_psnr_y', 'ours_psnr_cr', 'webp_psnr_cb', 'bpp_webp')}
    for i, r in enumerate(rows):
        name = r['img_name'][:-4]
        orig = smooth_image(*SIZES[name], seed=i)
        rec = _reconstruction(name, orig)
        bpp_ours = float(r['bpp_ours'])
        assert bpp_ours == BPP_REAL[name]  # bpp_real, not the estimate, when measures.csv has it
        y0, y1 = _ycbcr_by_formula(orig), _ycbcr_by_formula(rec)
        for c, ch in enumerate(('y', 'cb', 'cr')):
            assert float(r['ours_' + 'psnr_' + ch]) == pytest.approx(_psnr(y0[..., c], y1[..., c]), abs=1e-5)
        assert float(r['ours_psnr_rgb']) == pytest.approx(_psnr(orig, rec), abs=1e-5)
        assert float(r['ours_ms_ssim']) == pytest.approx(ms_ssim_np.ms_ssim(orig, rec), abs=1e-5)
        q = int(r['webp_quality'])
        bpp_q, decoded = _webp_bpp(orig, q)
        assert float(r['bpp_webp']) == pytest.approx(bpp_q, abs=1e-6) and bpp_q <= bpp_ours < _webp_bpp(orig, q + 1)[0]
        assert r['webp_above_rate'] == '0'
        w = _ycbcr_by_formula(decoded)
        assert float(r['webp_psnr_cb']) == pytest.approx(_psnr(y0[..., 1], w[..., 1]), abs=1e-5)
        assert float(r['webp_ms_ssim']) == pytest.approx(ms_ssim_np.ms_ssim(orig, decoded), abs=1e-5)
        for k in means:
            means[k].append(float(r[k]))
        if name == 'img0':
            crop_png = np.asarray(Image.open(str(out / 'crop_img0_4_6.png')))
            assert crop_png.shape == (20, 3 * 40 + 2 * colour_compare.CROP_GAP, 3)
            step = 40 + colour_compare.CROP_GAP
            for k, img in enumerate((orig, rec, decoded)):
                np.testing.assert_array_equal(crop_png[::2, k * step:k * step + 40:2], img[6:16, 4:24])
            crop_cr = _psnr(y0[6:16, 4:24, 2], y1[6:16, 4:24, 2])
            caption = [line for line in captured.out.splitlines() if line.startswith('crop_img0_4_6.png')]
            assert len(caption) == 1
            assert '{:.3f} bpp'.format(BPP_REAL['img0']) in caption[0] and '{:.3f} bpp'.format(bpp_q) in caption[0]
            assert '/{:.2f} dB'.format(crop_cr) in caption[0]
    assert sorted(os.listdir(str(out))) == ['colour.csv', 'crop_img0_4_6.png']
    # img0's shift towards blue (Y -0.6, Cb +8.8, Cr +0.5 levels) shows in Cb, hardly in Y and Cr
    assert float(rows[0]['ours_psnr_cb']) < min(float(rows[0]['ours_psnr_y']), float(rows[0]['ours_psnr_cr'])) - 15
    table = [line for line in captured.out.splitlines() if line.startswith('|')]
    assert len(table) == 4 and table[1].startswith('|---')
    ours_cells = [c.strip() for c in table[2].split('|')[1:-1]]
    assert ours_cells[0] == 'ours (0101_1200 tiny)'
    assert ours_cells[1] == '{:.3f}'.format(np.mean(means['bpp_ours']))
    assert ours_cells[2] == '{:.2f}'.format(np.mean(means['ours_psnr_y']))
    assert ours_cells[4] == '{:.2f}'.format(np.mean(means['ours_psnr_cr']))
    webp_cells = [c.strip() for c in table[3].split('|')[1:-1]]
    assert webp_cells[1] == '{:.3f}'.format(np.mean(means['bpp_webp']))
    assert webp_cells[3] == '{:.2f}'.format(np.mean(means['webp_psnr_cb']))
    assert 'colour' in captured.err  # the progress bar


def test_estimated_bpp_and_default_out_dir(tmp_path, capsys):
    val_dir, images_dir = make_val_dir(tmp_path, real_bpp=False)
    assert colour_compare.main([str(val_dir), str(images_dir), '--webp_method', '4']) == 0
    _, rows = _read_csv(str(val_dir / 'colour' / 'colour.csv'))
    assert [float(r['bpp_ours']) for r in rows] == [BPP['img0'], BPP['img1']]
    orig = smooth_image(*SIZES['img0'], seed=0)
    assert float(rows[0]['bpp_webp']) == pytest.approx(_webp_bpp(orig, int(rows[0]['webp_quality']), method=4)[0],
                                                       abs=1e-6)
    assert "bpp (the context model's estimate" in capsys.readouterr().out


def test_only_compares_the_named_images(tmp_path, capsys):
    val_dir, images_dir = make_val_dir(tmp_path)
    (images_dir / 'img0.png').unlink()  # not read: only img1 is compared
    assert colour_compare.main([str(val_dir), str(images_dir), '--only', 'img1', '--webp_method', '4']) == 0
    _, rows = _read_csv(str(val_dir / 'colour' / 'colour.csv'))
    assert [r['img_name'] for r in rows] == ['img1.png']
    assert float(rows[0]['bpp_ours']) == BPP_REAL['img1']  # its own rate, not the first row's
    out = capsys.readouterr().out
    assert 'Means over 1 images' in out
    assert '| {:.3f} |'.format(BPP_REAL['img1']) in out


def _remove(path):
    os.remove(str(path))


def _shrink_rec(val_dir, images_dir):
    p = str(val_dir / 'imgs' / 'img1.png')
    Image.fromarray(np.asarray(Image.open(p))[:-8]).save(p)


@pytest.mark.parametrize('damage, args, message', [
    (lambda v, i: _remove(v / 'measures.csv'), [], 'No measures.csv in'),
    (lambda v, i: _remove(v / 'imgs' / 'img1.png'), [],
     'imgs/img1.png of img1.png (listed in measures.csv): run val.py with --save_ours'),
    (lambda v, i: _remove(i / 'img1.png'), [], 'img1.png: no such file'),
    (lambda v, i: (i / 'img1.png').write_bytes(b'not a png'), [], 'img1.png: not an image'),
    (_shrink_rec, [], 'Size mismatch: original'),
    (None, ['--crop', 'img0:50,0,20,10'], 'outside the image, which is 64x48'),
    (None, ['--crop', 'img1:0,0,4,4', '--crop', 'img0:0,0,64,49'], 'outside the image'),
    (None, ['--crop', 'nope:0,0,4,4'], 'nope: no image of that name'),
    (None, ['--only', 'img1,kodim01'], '--only kodim01: not in measures.csv'),
    (None, ['--only', 'img1', '--crop', 'img0:0,0,4,4'], 'img0: no image of that name'),
], ids=['no-measures', 'missing-reconstruction', 'missing-original', 'unreadable-original', 'size-mismatch',
        'crop-outside', 'crop-outside-height', 'crop-unknown-image', 'only-unknown-image', 'crop-not-in-only'])
def test_errors_are_one_line(tmp_path, capsys, damage, args, message):
    val_dir, images_dir = make_val_dir(tmp_path)
    if damage:
        damage(val_dir, images_dir)
    out = tmp_path / 'out'
    assert colour_compare.main([str(val_dir), str(images_dir), '-o', str(out)] + args) == 1
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith('Error:')]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert 'Traceback' not in err
    assert not (out / 'colour.csv').exists()


def test_bad_crop_spec_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        colour_compare.main([str(tmp_path), str(tmp_path), '--crop', 'img0:1,2,3'])
    assert e.value.code == 2 and 'NAME:X,Y,W,H' in capsys.readouterr().err


def test_import_does_not_import_tensorflow():
    code = 'import sys, colour_compare; print("tensorflow" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'False'
