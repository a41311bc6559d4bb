"""plotter.py and rd_curves.py on generated measures.csv / codec CSVs (no real models or images needed)."""
import csv
import os

import numpy as np
import pytest

import plotter
import rd_curves

JOBS = ('0515_1103', '0515_1309', '0515_1310')
IMAGES = ['img{}'.format(i) for i in range(5)]
# per job: per-image bpp = base + 0.02 * i, ms-ssim = 1 - 0.05 * exp(-3 bpp), psnr = 25 + 10 bpp
JOB_BPP = {'0515_1103': 0.35, '0515_1309': 0.65, '0515_1310': 1.0}


def _msssim(bpp):
    return 1. - 0.05 * np.exp(-3. * np.asarray(bpp))


def _psnr(bpp):
    return 25. + 10. * np.asarray(bpp)


def _job_rows(job):
    rows = []
    for i, name in enumerate(IMAGES):
        bpp = JOB_BPP[job] + 0.02 * i
        rows.append((name, bpp, float(_msssim(bpp)), float(_psnr(bpp)), bpp + 0.001))
    return rows


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def setup(tmp_path):
    log_root = tmp_path / 'logs'
    for job in JOBS:
        os.makedirs(str(log_root / '{} cvpr@low cvpr@res_shallow'.format(job)))
        header = ['img_name', 'bpp', 'ms-ssim', 'psnr'] + (['bpp_real'] if job == JOBS[0] else [])
        rows = [r if job == JOBS[0] else r[:4] for r in _job_rows(job)]
        _write_csv(str(log_root / '{} kodak'.format(job) / 'measures.csv'), header, rows)
    codec_root = tmp_path / 'other_codecs'
    # two codecs, each image's curve = ours at (factor * bpp), over 0.05 .. 2 bpp
    for codec, factor in (('jpeg', 2.0), ('webp', 1.25)):
        for i, name in enumerate(IMAGES):
            bpps = np.linspace(0.05 + 0.01 * i, 2.0, 12)
            rows = [(q, b, 0.9, float(_msssim(b / factor)), float(_psnr(b / factor)))
                    for q, b in enumerate(bpps)]
            _write_csv(str(codec_root / '{}_kodak'.format(codec) / '{}_out.csv'.format(name)),
                       rd_curves.CODEC_CSV_HEADER, rows)
    return str(log_root), str(codec_root), tmp_path


def _is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('style', [['mean'], ['interp'], ['mean', 'interp']])
def test_plot_both_styles(setup, capsys, style):
    log_root, codec_root, tmp = setup
    out = str(tmp / 'out' / 'plot.png')
    rc = plotter.main([log_root, ','.join(JOBS), 'kodak', '--style'] + style +
                      ['--ids', 'A', 'B', 'C', '--paper_plot', '--latex', '-o', out, '--pdf',
                       '--other_codecs_root', codec_root])
    assert rc == 0
    assert os.path.isfile(out) and _is_png(out)
    assert os.path.isfile(out[:-4] + '.pdf')
    printed = capsys.readouterr().out
    for job in JOBS:
        rows = _job_rows(job)
        line = next(l for l in printed.splitlines() if job in l)
        assert '{:.4f}'.format(np.mean([r[1] for r in rows])) in line
        assert '{:.4f}'.format(np.mean([r[2] for r in rows])) in line
        assert '{:.2f}'.format(np.mean([r[3] for r in rows])) in line
    # bpp_real column for the job that has one
    line = next(l for l in printed.splitlines() if JOBS[0] in l)
    assert '{:.4f}'.format(np.mean([r[4] for r in _job_rows(JOBS[0])])) in line
    # ids by increasing bpp
    assert [l.split()[2] for l in printed.splitlines() if any(j in l for j in JOBS)] == ['A', 'B', 'C']
    # BD-rate rows for each codec, ours vs webp: webp needs 1.25x the bits -> ours ~ -20%
    bd_lines = [l for l in printed.splitlines() if l.startswith('Ours') and '%' in l]
    assert len(bd_lines) == 2
    webp = next(l for l in bd_lines if 'WebP' in l)
    assert abs(float(webp.split()[2].rstrip('%')) + 20.) < 1.5
    assert 'pw-linear' in webp
    assert any(l.startswith(plotter.LABEL_FIG1) for l in printed.splitlines())


def test_codecs_only_and_groups(setup, capsys):
    log_root, codec_root, tmp = setup
    out = str(tmp / 'codecs_only.png')
    assert plotter.main(['/does/not/exist', '', 'kodak', '-o', out, '--other_codecs_root', codec_root,
                         '--metric', 'psnr', '--paper_plot', '--at_bpp', '0.5,1.0']) == 0
    assert _is_png(out)
    printed = capsys.readouterr().out
    assert 'not drawn for psnr' in printed
    # PSNR@0.5 of webp's average = psnr(0.5 / 1.25) (linear pieces of a linear function: exact)
    webp = next(l for l in printed.splitlines() if l.startswith('WebP'))
    assert '{:.2f}'.format(float(_psnr(0.4))) in webp.split()
    out2 = str(tmp / 'groups.png')
    assert plotter.main([log_root, '{},{};{}'.format(*JOBS), 'kodak', '-o', out2,
                         '--other_codecs_root', codec_root, '--style', 'interp', 'mean']) == 0
    assert _is_png(out2)
    printed = capsys.readouterr().out
    assert 'Ours (1)' in printed and 'Ours (2)' in printed
    # a single model with the (default) interp style: drawn as its mean point
    assert plotter.main([log_root, JOBS[0], 'kodak', '-o', out2, '--other_codecs_root', codec_root]) == 0
    assert 'interp needs >= 2 models' in capsys.readouterr().out


def test_missing_codec_folder_is_skipped(setup, capsys):
    log_root, codec_root, tmp = setup
    out = str(tmp / 'p.png')
    rc = plotter.main([log_root, ','.join(JOBS), 'kodak', '-o', out, '--other_codecs_root', codec_root,
                       '--codecs', 'jpeg,bpg'])
    assert rc == 0 and _is_png(out)
    printed = capsys.readouterr().out
    assert 'Skipping codec bpg' in printed
    # no codecs at all is fine too
    out2 = str(tmp / 'p2.png')
    assert plotter.main([log_root, ','.join(JOBS), 'kodak', '-o', out2,
                         '--other_codecs_root', str(tmp / 'nothing_here')]) == 0
    assert _is_png(out2)
    assert 'No classical codec measurements' in capsys.readouterr().out


def test_missing_measures_is_a_clear_error(setup, capsys):
    log_root, codec_root, tmp = setup
    missing = os.path.join(log_root, '{} kodak'.format(JOBS[1]), 'measures.csv')
    os.remove(missing)
    rc = plotter.main([log_root, ','.join(JOBS), 'kodak', '-o', str(tmp / 'x.png'),
                       '--other_codecs_root', codec_root])
    assert rc != 0
    err = capsys.readouterr().err
    assert missing in err and 'Traceback' not in err
    assert not os.path.exists(str(tmp / 'x.png'))
    # unknown job id, missing LOG_DIR_ROOT
    assert plotter.main([log_root, '0101_0000', 'kodak']) != 0
    assert 'Unknown job id' in capsys.readouterr().err
    assert plotter.main([str(tmp / 'nope'), JOBS[0], 'kodak']) != 0
    assert 'LOG_DIR_ROOT' in capsys.readouterr().err
    # a job whose log dir exists but that has no measures for this dataset
    assert plotter.main([log_root, JOBS[0], 'otherset']) != 0
    assert 'measures.csv' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plotter.main([log_root, JOBS[0], 'kodak', '--x_range', '1.2'])
    assert 'x_range' in capsys.readouterr().err


def test_measures_dir_with_longer_name(tmp_path):
    os.makedirs(str(tmp_path / '0515_1103 extra kodak'))
    path = str(tmp_path / '0515_1103 extra kodak' / 'measures.csv')
    _write_csv(path, ['img_name', 'bpp', 'ms-ssim', 'psnr'], [('a', 0.1, 0.9, 30.)])
    assert rd_curves.find_measures_file(str(tmp_path), '0515_1103', 'kodak') == path


def _ref_curve(n):
    metric = np.linspace(0.90, 0.99, n)
    rates = 0.05 * np.exp(40. * (metric - 0.9)) + 0.02 * np.sin(10 * metric)  # some monotone-ish curve
    return np.abs(rates) + 0.05, metric


@pytest.mark.parametrize('n,method,expected_method', [
    (10, 'auto', rd_curves.BD_CUBIC),
    (10, 'cubic', rd_curves.BD_CUBIC),
    (10, 'pw-linear', rd_curves.BD_LINEAR),
    (3, 'auto', rd_curves.BD_LINEAR),
])
def test_bd_rate_known_factor(n, method, expected_method):
    rates, metric = _ref_curve(n)
    bd, used, rng = rd_curves.bd_rate(rates, metric, 0.8 * rates, metric, method=method)
    assert used == expected_method
    assert abs(bd - (-20.)) < 0.5
    assert rng == pytest.approx((metric.min(), metric.max()))
    bd, _, _ = rd_curves.bd_rate(rates, metric, 1.25 * rates, metric, method=method)
    assert abs(bd - 25.) < 0.5


def test_bd_rate_partial_and_empty_overlap():
    rates, metric = _ref_curve(20)
    # the test curve only covers the upper half of the metric range; both at factor 0.8
    bd, _, rng = rd_curves.bd_rate(rates, metric, 0.8 * rates[10:], metric[10:])
    assert abs(bd + 20.) < 0.5 and rng[0] == pytest.approx(metric[10])
    bd, _, rng = rd_curves.bd_rate(rates[:5], metric[:5], rates[10:], metric[10:])
    assert bd is None and rng is None
    table = plotter.bd_table([('Ours', rates[10:], metric[10:])], {'jpeg': (rates[:5], metric[:5])}, 'ms-ssim')
    assert 'n/a' in table


def test_interp_coverage_rule():
    grid = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    curves = [(np.array([0.1, 0.5]), np.array([1., 5.])),
              (np.array([0.1, 0.5]), np.array([2., 6.])),
              (np.array([0.15, 0.35]), np.array([0., 2.]))]  # covers only 0.2 and 0.3
    g, v, counts = rd_curves.interp_average(curves, grid)
    np.testing.assert_allclose(g, [0.2, 0.3])
    np.testing.assert_allclose(v, [(2. + 3. + 0.5) / 3, (3. + 4. + 1.5) / 3])
    assert list(counts) == [3, 3]
    # a lower required coverage keeps the points covered by 2 of 3 images, averaged over those two
    g, v, _ = rd_curves.interp_average(curves, grid, required_coverage=0.5)
    np.testing.assert_allclose(g, grid)
    np.testing.assert_allclose(v[[0, 4]], [1.5, 5.5])


def test_ours_interp_is_quadratic_with_three_models(setup):
    log_root, _, _ = setup
    ms = [rd_curves.Measures(rd_curves.find_measures_file(log_root, j, 'kodak'), j) for j in JOBS]
    grid = np.linspace(0.4, 1.0, 7)
    g, v = rd_curves.ours_interp_curve(ms, 'psnr', grid)
    np.testing.assert_allclose(v, _psnr(g), atol=1e-9)  # psnr is linear in bpp: any interpolation is exact
    g, v = rd_curves.ours_interp_curve(ms, 'ms-ssim', grid)
    assert np.all(np.abs(v - _msssim(g)) < 1e-3)
