"""plotter.py and rd_curves.py on generated measures.csv / codec CSVs (no real models or images needed)."""
import csv
import os

import numpy as np
import pytest

import plotter
import rd_curves
from helpers import write_codec_curves

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
    assert 'piecewise-linear (3 points)' in webp  # three models: the method is named in the row
    assert plotter.BD_LINEAR_NOTE in printed
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


@pytest.mark.parametrize('method', [rd_curves.BD_CUBIC, rd_curves.BD_LINEAR])
def test_bd_rate_of_a_uniformly_cheaper_curve_is_exact(method):
    """Every rate x 0.9 at the same quality: log R differs by log 0.9 everywhere, which a cubic least-squares
    fit and linear interpolation both reproduce exactly, so BD-rate = -10 % to rounding."""
    rates = np.array([0.12, 0.25, 0.41, 0.66, 0.93, 1.3])
    metric = np.array([0.901, 0.935, 0.952, 0.968, 0.977, 0.985])
    bd, used, rng = rd_curves.bd_rate(rates, metric, 0.9 * rates, metric, method=method)
    assert used == method and bd == pytest.approx(-10., abs=1e-9)


def test_bd_rate_cubic_is_exact_for_cubic_log_rate():
    """log R is exactly a cubic in the metric on both curves, sampled at different metric values (5 and 4
    points), so the cubic fits are exact and the BD-rate is the closed form. With t = (m - 30) / 10:
    log R_ref = 0.5 + 2 t + 0.3 t^3, log R_test = log R_ref - 0.3 t^2. The overlap is t in [0.2, 1]
    (m 32..40), where the mean of -0.3 t^2 is -0.1 (1 - 0.2^3) / 0.8 = -0.124: BD = exp(-0.124) - 1."""
    def log_rate_ref(t):
        return 0.5 + 2. * t + 0.3 * t ** 3
    t_ref = np.array([0., 0.3, 0.55, 0.7, 1.])
    t_test = np.array([0.2, 0.5, 0.9, 1.2])
    bd, used, rng = rd_curves.bd_rate(np.exp(log_rate_ref(t_ref)), 30. + 10. * t_ref,
                                      np.exp(log_rate_ref(t_test) - 0.3 * t_test ** 2), 30. + 10. * t_test)
    assert used == rd_curves.BD_CUBIC and rng == pytest.approx((32., 40.))
    assert bd == pytest.approx(100. * (np.exp(-0.124) - 1.), abs=1e-9)  # -11.6614...%


def test_bd_rate_piecewise_linear_is_exact_for_piecewise_linear_log_rate():
    """3 points on one curve (the plotter's case), 2 on the other; log R linear between them, so the
    trapezoids are exact: ref integral over m 0..2 = 0.5 + 2 = 2.5, test (-0.5 -> 2.5) = 2, mean
    difference -0.25: BD = exp(-0.25) - 1 = -22.12 %."""
    bd, used, rng = rd_curves.bd_rate(np.exp([0., 1., 3.]), [0., 1., 2.], np.exp([-0.5, 2.5]), [0., 2.])
    assert used == rd_curves.BD_LINEAR and rng == (0., 2.)
    assert bd == pytest.approx(100. * (np.exp(-0.25) - 1.), abs=1e-9)


@pytest.mark.parametrize('ref,test,expected', [
    # "Sample 1" of the Bjontegaard_metric demo (github.com/Anserw/Bjontegaard_metric), kbps / dB
    (([686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42]),
     ([893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24]), 31.397374),
    # "Test 1" of the FAU-LMS bjontegaard package (libx265 presets), kbps / dB
    (([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]),
     ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]), -4.420463),
])
def test_bd_rate_cubic_on_widely_used_example_curves(ref, test, expected):
    """Cross-check, not a published reference: no source states these curves' VCEG-M33 results, the values
    are those of the classic np.polyfit port (log rate, cubic in PSNR, integral over the PSNR overlap),
    which an independent implementation's tests expect too."""
    bd, used, _ = rd_curves.bd_rate(ref[0], ref[1], test[0], test[1])
    assert used == rd_curves.BD_CUBIC and bd == pytest.approx(expected, abs=1e-6)


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
    # images 3 and 4 start above 0.4 bpp; elsewhere the mean of each image's parabola through its 3 points,
    # which a linear interpolation misses by > 1e-4
    np.testing.assert_allclose(g, grid[1:])
    per_image = []
    for i in range(len(IMAGES)):
        bpps = np.array([JOB_BPP[j] + 0.02 * i for j in JOBS])
        per_image.append((np.polyval(np.polyfit(bpps, _msssim(bpps), 2), g),
                          np.interp(g, bpps, _msssim(bpps))))
    np.testing.assert_allclose(v, np.mean([q for q, _ in per_image], axis=0), atol=1e-12)
    assert np.max(np.abs(v - np.mean([lin for _, lin in per_image], axis=0))) > 1e-4


# Distance to a codec (val.py) -------------------------------------------------------------------------------

GRID = rd_curves.DEFAULT_BPP_GRID  # linspace(0.1, 1.4, 50): steps of 1.3 / 49 = 0.0265 bpp


def test_codec_distance_definition(tmp_path):
    # per image linear between its points: img0 has a kink at 0.5 bpp (a quadratic interpolation would bend
    # it), img1 is one line; both cover 0.1..1.3 bpp
    write_codec_curves(tmp_path, 'bpg', 'kodak', {
        'img0': [(0.1, 0.80, 20.8), (0.5, 0.90, 24.), (1.3, 0.94, 30.4)],
        'img1': [(0.1, 0.70, 22.5), (1.3, 0.82, 28.5)]})
    path = rd_curves.codec_dir(str(tmp_path), 'bpg', 'kodak')
    ms = rd_curves.CodecDistance.from_codec_dir(path, 'ms-ssim')
    psnr = rd_curves.CodecDistance.from_codec_dir(path, 'psnr')
    # at 0.3 bpp: img0 0.80 + 0.25 * 0.2 = 0.85, img1 0.70 + 0.1 * 0.2 = 0.72, mean 0.785
    assert ms.distance(0.3, 0.8) == pytest.approx(0.8 - 0.785, abs=1e-12)
    # at 1.0 bpp: img0 0.90 + 0.05 * 0.5 = 0.925, img1 0.79, mean 0.8575: below the codec is negative
    assert ms.distance(1.0, 0.85) == pytest.approx(0.85 - 0.8575, abs=1e-12)
    # psnr: img0 20 + 8 b, img1 22 + 5 b, mean 21 + 6.5 b
    assert psnr.distance(0.3, 25.) == pytest.approx(25. - 22.95, abs=1e-9)
    # the curve spans the grid points covered by the images (0.1 .. grid[45] = 1.2939), not the images' range:
    # 1.295 bpp lies inside both images' curves but beyond the last kept grid point, as in the original
    assert ms.bpp_range == pytest.approx((0.1, GRID[45]))
    assert ms.distance(GRID[45], 0.9) is not None
    for bpp in (0.09, 1.295, 1.35, float('nan')):
        assert ms.distance(bpp, 0.9) is None and psnr.distance(bpp, 30.) is None


@pytest.mark.parametrize('n_full,covered', [(100, True), (99, False)])
def test_codec_distance_coverage_rule(tmp_path, n_full, covered):
    # n_full images over 0.1..1.3 bpp plus one over 0.6..1.3 only, all on the line 0.5 + 0.2 b: 0.3 bpp is
    # covered by 100 of 101 images (> 99 %: kept) or by 99 of 100 (= 99 %: dropped)
    curves = {'full{}'.format(i): [(0.1, 0.52, 20.), (1.3, 0.76, 30.)] for i in range(n_full)}
    curves['short'] = [(0.6, 0.62, 25.), (1.3, 0.76, 30.)]
    write_codec_curves(tmp_path, 'jpeg', 'kodak', curves)
    d = rd_curves.CodecDistance.from_codec_dir(rd_curves.codec_dir(str(tmp_path), 'jpeg', 'kodak'), 'ms-ssim')
    assert d.distance(0.8, 0.7) == pytest.approx(0.7 - 0.66, abs=1e-12)
    if covered:
        assert d.bpp_range[0] == pytest.approx(0.1)
        assert d.distance(0.3, 0.6) == pytest.approx(0.6 - 0.56, abs=1e-12)
    else:
        assert d.bpp_range[0] == pytest.approx(GRID[GRID >= 0.6][0])
        assert d.distance(0.3, 0.6) is None


def test_codec_distances_of_a_dataset(tmp_path):
    line = [(0.1, 0.52, 20.), (1.3, 0.76, 30.)]
    write_codec_curves(tmp_path, 'bpg', 'kodak', {'a': line, 'b': line})
    write_codec_curves(tmp_path, 'webp', 'kodak', {'a': [(0.101, 0.5, 20.), (0.12, 0.6, 21.)]})  # no grid point
    write_codec_curves(tmp_path, 'jpeg', 'other', {'a': line})
    usable, unusable = rd_curves.codec_distances(str(tmp_path), 'kodak')
    assert sorted(usable) == ['bpg'] and sorted(usable['bpg']) == ['ms-ssim', 'psnr']
    assert usable['bpg']['psnr'].distance(0.7, 26.) == pytest.approx(1.)
    assert list(unusable) == ['webp'] and 'fewer than 2 bpps of the grid' in unusable['webp']
    assert rd_curves.codec_distances(str(tmp_path), 'testset') == ({}, {})
    assert rd_curves.codec_distances(str(tmp_path / 'missing'), 'kodak') == ({}, {})
