"""other_codecs.py on two small generated images with reduced grids."""
import csv
import io
import os
import stat
import sys

import numpy as np
import pytest
from PIL import Image, features

import other_codecs
import rd_curves
from helpers import smooth_image

JPEG_QS = [10, 50, 90]
QUALITIES = ['jpeg={}'.format(','.join(map(str, JPEG_QS))), 'jpeg444=20,80', 'webp=20,80', 'jpeg2000=96,24',
             'avif=20,60']


@pytest.fixture
def images(tmp_path):
    d = tmp_path / 'tinyset'
    d.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(str(d / 'im{}.png'.format(i)))
    return d


def _read(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _codecs():
    return ['jpeg', 'jpeg444', 'webp', 'jpeg2000'] + (['avif'] if features.check('avif') else [])


def test_csvs_bpp_and_metrics(images, tmp_path, capsys):
    out = str(tmp_path / 'oc')
    rc = other_codecs.main([str(images), '--out', out, '--jobs', '2', '--codecs', ','.join(_codecs())]
                           + ['--qualities=' + q for q in QUALITIES])
    assert rc == 0
    grids = other_codecs.parse_qualities(QUALITIES)
    for codec in _codecs():
        for i in range(2):
            path = os.path.join(out, '{}_tinyset'.format(codec), 'im{}_out.csv'.format(i))
            header, rows = _read(path)
            assert tuple(header) == rd_curves.CODEC_CSV_HEADER
            assert [float(r[0]) for r in rows] == grids[codec]
            vals = np.array(rows, dtype=np.float64)
            assert np.all(vals[:, 1] > 0) and np.all((vals[:, 2:4] > 0) & (vals[:, 2:4] <= 1))
            assert np.all(vals[:, 4] > 10)
            assert np.all(np.diff(vals[:, 1]) > 0), (codec, vals)  # higher quality -> more bits
    # bpp = 8 * whole file bytes / pixels, against an independent Pillow encode
    _, rows = _read(os.path.join(out, 'jpeg_tinyset', 'im0_out.csv'))
    buf = io.BytesIO()
    Image.open(str(images / 'im0.png')).convert('RGB').save(buf, format='JPEG', quality=50)
    assert float(rows[1][1]) == pytest.approx(8. * len(buf.getvalue()) / (64 * 48), abs=1e-6)
    # MS-SSIM (and PSNR) increase with quality for JPEG
    msssim = [float(r[3]) for r in rows]
    assert msssim == sorted(msssim) and msssim[0] < msssim[-1]
    # JPEG 4:4:4 and the metrics themselves: recompute one point
    _, rows444 = _read(os.path.join(out, 'jpeg444_tinyset', 'im1_out.csv'))
    img = np.asarray(Image.open(str(images / 'im1.png')).convert('RGB'))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=80, subsampling=0)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    import ms_ssim_np
    assert float(rows444[1][3]) == pytest.approx(ms_ssim_np.ms_ssim(img, dec), abs=2e-6)
    assert float(rows444[1][4]) == pytest.approx(ms_ssim_np.psnr(img, dec), abs=2e-4)


def test_second_run_skips_and_unreadable_image(images, tmp_path, capsys):
    out = str(tmp_path / 'oc')
    args = [str(images), '--out', out, '--jobs', '1', '--codecs', 'jpeg', '--qualities', 'jpeg=30,70']
    (images / 'broken.png').write_bytes(b'not an image at all')
    assert other_codecs.main(args) == 0
    printed = capsys.readouterr().out
    assert 'Skipping unreadable image' in printed and 'broken.png' in printed
    csv_dir = os.path.join(out, 'jpeg_tinyset')
    assert sorted(os.listdir(csv_dir)) == ['im0_out.csv', 'im1_out.csv']  # no temp files left either
    mtimes = {p: os.stat(os.path.join(csv_dir, p)).st_mtime_ns for p in os.listdir(csv_dir)}
    assert other_codecs.main(args) == 0
    assert '0 of 2 images to do' in capsys.readouterr().out
    assert mtimes == {p: os.stat(os.path.join(csv_dir, p)).st_mtime_ns for p in os.listdir(csv_dir)}
    # a removed CSV is redone, the other one is kept
    os.remove(os.path.join(csv_dir, 'im1_out.csv'))
    assert other_codecs.main(args) == 0
    assert '1 of 2 images to do' in capsys.readouterr().out
    assert os.stat(os.path.join(csv_dir, 'im0_out.csv')).st_mtime_ns == mtimes['im0_out.csv']


def test_glob_dataset_name_and_env_root(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('OTHER_CODECS_ROOT', str(tmp_path / 'env_root'))
    pattern = os.path.join(str(images), 'im1.*')
    assert other_codecs.dataset_name_from(pattern) == 'tinyset'
    assert other_codecs.dataset_name_from(str(images) + os.sep) == 'tinyset'
    assert other_codecs.dataset_name_from('some/imgs/*/*.jpg') == 'imgs'
    assert other_codecs.main([pattern, '--codecs', 'jpeg', '--qualities', 'jpeg=50', '--jobs', '1',
                              '--dataset', 'mine']) == 0
    assert os.listdir(str(tmp_path / 'env_root' / 'jpeg_mine')) == ['im1_out.csv']


def test_missing_external_codec_is_skipped(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('PATH', str(tmp_path / 'empty_bin'))
    assert other_codecs.main([str(images), '--out', str(tmp_path / 'oc'), '--codecs', 'bpg,kakadu,jpeg',
                              '--qualities', 'jpeg=50', '--jobs', '1']) == 0
    printed = capsys.readouterr().out
    assert 'Skipping codec bpg' in printed and 'Skipping codec kakadu' in printed
    assert not os.path.exists(str(tmp_path / 'oc' / 'bpg_tinyset'))


def test_external_codec_plumbing_with_fake_bpg(images, tmp_path, monkeypatch):
    """Fake bpgenc/bpgdec that just copy the PNG: checks the command lines and file handling."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    script = ('#!{}\nimport shutil, sys\na = sys.argv[1:]\n'
              'assert "-o" in a\nout = a[a.index("-o") + 1]\n'
              '{}\nshutil.copyfile(a[-1], out)\n')
    for name, check in (('bpgenc', 'assert a[:4] == ["-q", a[1], "-f", "444"] and int(a[1]) >= 0'),
                        ('bpgdec', 'assert a[-1].endswith(".bpg")')):
        p = bindir / name
        p.write_text(script.format(sys.executable, check))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', str(bindir) + os.pathsep + os.environ.get('PATH', ''))
    out = str(tmp_path / 'oc')
    assert other_codecs.main([str(images), '--out', out, '--codecs', 'bpg', '--qualities', 'bpg=30,40',
                              '--jobs', '1']) == 0
    header, rows = _read(os.path.join(out, 'bpg_tinyset', 'im0_out.csv'))
    assert [r[0] for r in rows] == ['30', '40']
    png_bytes = os.path.getsize(str(images / 'im0.png'))
    assert float(rows[0][1]) == pytest.approx(8. * png_bytes / (64 * 48), rel=0.2)  # re-saved PNG, ~same size
    assert float(rows[0][3]) == pytest.approx(1.0) and rows[0][4] == 'inf'


def test_images_are_read_by_the_shared_loader(images, tmp_path, capsys):
    """An RGBA image is measured (alpha dropped) with its note printed once, not once per codec; an image
    whose header is fine but whose pixels are cut off is reported per codec with the loader's reason, and the
    run goes on."""
    rgba = np.dstack([smooth_image(48, 64, seed=7), np.full((48, 64), 128, np.uint8)])
    Image.fromarray(rgba).save(str(images / 'alpha.png'))
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 64, 3)).astype(np.uint8)).save(buf, 'PNG')
    (images / 'cut.png').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    out = str(tmp_path / 'oc')
    assert other_codecs.main([str(images), '--out', out, '--jobs', '2', '--codecs', 'jpeg,webp',
                              '--qualities', 'jpeg=50', '--qualities', 'webp=50']) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert printed.count('alpha.png: RGBA -> RGB (alpha dropped)') == 1
    assert printed.count('Skipping unreadable image {}: truncated'.format(images / 'cut.png')) == 2
    for codec in ('jpeg', 'webp'):
        assert sorted(os.listdir(os.path.join(out, codec + '_tinyset'))) == ['alpha_out.csv', 'im0_out.csv',
                                                                              'im1_out.csv']
    _, rows = _read(os.path.join(out, 'jpeg_tinyset', 'alpha_out.csv'))
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, format='JPEG', quality=50)
    assert float(rows[0][1]) == pytest.approx(8. * len(buf.getvalue()) / (64 * 48), abs=1e-6)
