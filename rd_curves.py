"""Rate-distortion curves: reading measured points, averaging them over images, BD-rate.

Shared by ``other_codecs.py`` (which writes the classical codecs' per-image CSVs), ``plotter.py``
(which reads them together with our models' ``measures.csv``), ``val.py`` (which logs the distance of
each validated checkpoint to the codecs' averaged curves, ``CodecDistance``) and their tests.

File layouts
------------
* Classical codecs (written by ``other_codecs.py``, the original repo's layout):
  ``<OTHER_CODECS_ROOT>/<codec>_<dataset>/<image name>_out.csv`` with header ``q,bpp,ssim,msssim,psnr``,
  one row per codec setting (quality, or compression ratio for JPEG2000).
* Our models (written by ``val.py``): ``<LOG_DIR_ROOT>/<job_id> <dataset>/measures.csv`` with header
  ``img_name,bpp,ms-ssim,psnr`` and optionally ``bpp_real,enc_s,dec_s`` (columns are read by name).

Averaging over images (``interp_average``), as in the original ``codec_distance.py``: every image's
(bpp, metric) points are interpolated (linearly, or quadratically for our models when there are >= 3),
evaluated on a bpp grid, and averaged per grid point over the images whose bpp range covers it; a grid
point is kept only if more than 99% of the images cover it (so a curve never mixes different image
subsets along its length; with < 100 images this means *all* images).

BD-rate (Bjontegaard delta rate, ``bd_rate``): the average relative bitrate difference of a test curve
against a reference curve at equal quality, over the overlapping metric interval [lo, hi]:
``BD = exp(1/(hi-lo) * int_lo^hi (log R_test(m) - log R_ref(m)) dm) - 1`` (in %, negative = the test curve
needs fewer bits). log R(m) is a cubic polynomial least-squares fit of log(rate) against the metric
(standard Bjontegaard) when both curves have >= 4 points, else piecewise-linear interpolation.
"""
import csv
import glob
import io
import os

import numpy as np
from scipy import interpolate

import file_helpers
import logdir_helpers

DEFAULT_BPP_GRID = np.linspace(0.1, 1.4, 50)
REQUIRED_COVERAGE = 0.99  # a grid point must be covered by more than this fraction of the images

CODEC_CSV_HEADER = ('q', 'bpp', 'ssim', 'msssim', 'psnr')
CODEC_CSV_SUFFIX = '_out.csv'
# metric name (as in plotter.py / measures.csv) -> column in the codec CSVs
CODEC_METRIC_COLUMNS = {'ms-ssim': 'msssim', 'msssim': 'msssim', 'psnr': 'psnr', 'ssim': 'ssim'}
MEASURES_FILE = 'measures.csv'  # of the latest checkpoint; older ones: older_measures_file(step)
METRICS = ('ms-ssim', 'psnr')


class RDError(Exception):
    """A user-facing error (missing/invalid file); scripts print its message without a traceback."""


# Classical codecs -------------------------------------------------------------------------------------


def codec_measures_path(out_dir, img_name):
    return os.path.join(out_dir, img_name + CODEC_CSV_SUFFIX)


def codec_csv_paths(codec_dir):
    return sorted(glob.glob(os.path.join(glob.escape(codec_dir), '*' + CODEC_CSV_SUFFIX)))


def codec_dir(other_codecs_root, codec, dataset):
    return os.path.join(other_codecs_root, '{}_{}'.format(codec, dataset))


def find_codec_dirs(other_codecs_root, dataset):
    """{codec: dir} for every `<root>/<codec>_<dataset>` folder holding at least one *_out.csv."""
    found = {}
    if not os.path.isdir(other_codecs_root):
        return found
    suffix = '_' + dataset
    for name in sorted(os.listdir(other_codecs_root)):
        path = os.path.join(other_codecs_root, name)
        if name.endswith(suffix) and len(name) > len(suffix) and os.path.isdir(path) and codec_csv_paths(path):
            found[name[:-len(suffix)]] = path
    return found


def read_codec_csv(path, metric):
    """(bpps, values) float64 arrays of one per-image codec CSV, sorted by bpp."""
    column = CODEC_METRIC_COLUMNS[metric]
    rows = _read_csv_columns(path, ('bpp', column))
    bpps = np.array([float(r['bpp']) for r in rows])
    values = np.array([float(r[column]) for r in rows])
    order = np.argsort(bpps, kind='stable')
    return bpps[order], values[order]


def read_codec_dir(codec_dir_path, metric):
    """{image name: (bpps, values)} of all per-image CSVs in a codec folder."""
    return {os.path.basename(p)[:-len(CODEC_CSV_SUFFIX)]: read_codec_csv(p, metric)
            for p in codec_csv_paths(codec_dir_path)}


def write_csv_atomic(path, header, rows):
    """The CSV writer of other_codecs.py and val.py (atomic: a resumed run takes an existing file as done)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(header)
    w.writerows(rows)
    file_helpers.atomic_write_bytes(path, buf.getvalue().encode())


def _read_csv_columns(path, required):
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in required if c not in fields]
            if missing:
                raise RDError('{}: missing column(s) {} (header: {})'.format(
                    path, ', '.join(missing), ','.join(fields)))
            return list(reader)
    except OSError as e:
        raise RDError('Cannot read {}: {}'.format(path, e))


# Our models --------------------------------------------------------------------------------------------


def parse_job_groups(job_ids):
    """'a,b;c' -> [['a', 'b'], ['c']]; '' (or only separators/whitespace) -> []."""
    groups = []
    for group in job_ids.split(';'):
        ids = [j.strip() for j in group.split(',') if j.strip()]
        if ids:
            groups.append(ids)
    return groups


def measures_dir(log_dir_root, job_id, dataset):
    """Where val.py writes the measures of a job on a dataset."""
    return os.path.join(log_dir_root, '{} {}'.format(job_id, dataset))


def older_measures_file(step):
    """The measures of a checkpoint before the latest, next to MEASURES_FILE (the original overwrote it)."""
    return 'measures-{}.csv'.format(step)


def find_measures_file(log_dir_root, job_id, dataset):
    """Path of `<root>/<job_id> <dataset>/measures.csv` (or `<root>/<job_id>* <dataset>/...`); RDError if absent."""
    if not os.path.isdir(log_dir_root):
        raise RDError('LOG_DIR_ROOT does not exist or is not a directory: {}'.format(log_dir_root))
    exact = measures_dir(log_dir_root, job_id, dataset)
    candidates = [exact] if os.path.isdir(exact) else sorted(
        p for p in glob.glob(os.path.join(glob.escape(log_dir_root), glob.escape(job_id) + '* ' + glob.escape(dataset)))
        if os.path.isdir(p))
    if not candidates:
        known = [n for n in os.listdir(log_dir_root) if n.startswith(job_id)]
        if not known:
            hint = '' if logdir_helpers.JOB_ID_RE.fullmatch(job_id) else ' (job ids look like MMDD_HHMM)'
            raise RDError('Unknown job id {!r}: nothing in {} starts with it{}'.format(job_id, log_dir_root, hint))
        raise RDError('Missing measures file {} (job {!r} has no measures for dataset {!r}; run val.py first)'
                      .format(os.path.join(exact, MEASURES_FILE), job_id, dataset))
    if len(candidates) > 1:
        raise RDError('Job id {!r} matches several measures dirs for {!r} in {}: {}'.format(
            job_id, dataset, log_dir_root, ', '.join(map(os.path.basename, candidates))))
    path = os.path.join(candidates[0], MEASURES_FILE)
    if not os.path.isfile(path):
        raise RDError('Missing measures file {} (run val.py first)'.format(path))
    return path


class Measures(object):
    """The per-image rows of one model's measures.csv: `img_names` and float arrays per column."""

    def __init__(self, path, job_id=None):
        self.path = path
        self.job_id = job_id
        rows = _read_csv_columns(path, ('img_name', 'bpp', 'ms-ssim', 'psnr'))
        if not rows:
            raise RDError('{} has no rows'.format(path))
        self.img_names = [r['img_name'] for r in rows]
        self.columns = {}
        for name in rows[0]:
            if name == 'img_name' or name is None:
                continue
            try:
                self.columns[name] = np.array([float(r[name]) for r in rows])
            except (TypeError, ValueError):
                if name in ('bpp', 'ms-ssim', 'psnr'):
                    raise RDError('{}: non-numeric value in column {!r}'.format(path, name))

    def has(self, column):
        return column in self.columns

    def mean(self, column):
        return float(np.mean(self.columns[column]))

    def per_image(self, metric):
        """{img_name: (bpp, value)}."""
        return {n: (float(b), float(v)) for n, b, v in zip(self.img_names, self.columns['bpp'], self.columns[metric])}


# Interpolation and averaging -----------------------------------------------------------------------------


def _unique_sorted(xs, ys):
    """Sorts by x and averages the y of equal x (interp1d needs distinct x)."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    ux, inverse = np.unique(xs, return_inverse=True)
    uy = np.bincount(inverse, weights=ys) / np.bincount(inverse)
    return ux, uy


def interp_average(curves, grid, kind='linear', required_coverage=REQUIRED_COVERAGE):
    """Averages per-image curves on a bpp grid.

    curves: iterable of (bpps, values) per image. Each is interpolated with `kind` ('linear' or
    'quadratic'; quadratic falls back to linear for an image with < 3 distinct bpps) and evaluated at the
    grid points inside its bpp range. Returns (kept_grid, mean_values, counts): only grid points covered
    by more than `required_coverage` of the images are kept.
    """
    grid = np.asarray(grid, dtype=np.float64)
    sums = np.zeros_like(grid)
    counts = np.zeros(grid.shape, np.int64)
    num_images = 0
    for bpps, values in curves:
        x, y = _unique_sorted(bpps, values)
        num_images += 1
        if len(x) < 2:
            continue  # a single point covers no interval
        this_kind = kind if (kind == 'linear' or len(x) >= 3) else 'linear'
        f = interpolate.interp1d(x, y, kind=this_kind)
        inside = (grid >= x[0]) & (grid <= x[-1])
        if inside.any():
            sums[inside] += f(grid[inside])
            counts[inside] += 1
    keep = counts > required_coverage * num_images if num_images else np.zeros(grid.shape, bool)
    return grid[keep], sums[keep] / np.maximum(counts[keep], 1), counts[keep]


def codec_average_curve(codec_dir_path, metric, grid=DEFAULT_BPP_GRID):
    """(grid, mean values) of a codec folder (linear per-image interpolation, coverage rule)."""
    per_image = read_codec_dir(codec_dir_path, metric)
    g, v, _ = interp_average(per_image.values(), grid, kind='linear')
    return g, v


def ours_per_image_curves(measures_list, metric):
    """Per-image (bpps, values) across models, for the images present in every model."""
    per_model = [m.per_image(metric) for m in measures_list]
    common = set(per_model[0])
    for p in per_model[1:]:
        common &= set(p)
    curves = []
    for name in sorted(common):
        pts = [p[name] for p in per_model]
        curves.append((np.array([b for b, _ in pts]), np.array([v for _, v in pts])))
    return curves, sorted(set().union(*per_model) - common)


def ours_interp_curve(measures_list, metric, grid=DEFAULT_BPP_GRID):
    """Averaged curve of our models: quadratic per-image interpolation with >= 3 models, else linear."""
    curves, _ = ours_per_image_curves(measures_list, metric)
    kind = 'quadratic' if len(measures_list) >= 3 else 'linear'
    g, v, _ = interp_average(curves, grid, kind=kind)
    return g, v


def value_at(curve_bpps, curve_values, bpp):
    """Linear interpolation of an (averaged) curve at bpp; NaN outside its range."""
    x, y = _unique_sorted(curve_bpps, curve_values)
    if len(x) == 0 or bpp < x[0] or bpp > x[-1]:
        return float('nan')
    return float(np.interp(bpp, x, y))


# Distance to a codec ---------------------------------------------------------------------------------------


class CodecDistance(object):
    """How far a (bpp, metric value) point lies above a codec's image-averaged curve, as the original's
    codec_distance.py: the curve is the codec's per-image curves averaged on a bpp grid (linear per-image
    interpolation, coverage rule of interp_average), interpolated linearly between the kept grid points.
    distance(bpp, value) = value - codec(bpp), > 0 where the point is better than the codec; undefined
    (None) outside the curve's bpp range, where the original raised ValueError and val.py skipped it.
    """

    def __init__(self, curve_bpps, curve_values, name='codec'):
        self.bpps, self.values = _unique_sorted(curve_bpps, curve_values)
        self.name = name
        if len(self.bpps) < 2:  # the original's interp1d refused such a curve, so val.py logged nothing
            raise RDError('{}: its averaged curve has {} point(s), need >= 2'.format(name, len(self.bpps)))

    @classmethod
    def from_codec_dir(cls, codec_dir_path, metric, grid=DEFAULT_BPP_GRID, name=None):
        name = name or os.path.basename(os.path.normpath(codec_dir_path))
        g, v = codec_average_curve(codec_dir_path, metric, grid)
        if len(g) < 2:
            raise RDError('{}: fewer than 2 bpps of the grid {:g}..{:g} are covered by more than {:g}% of its '
                          'images ({})'.format(name, grid[0], grid[-1], 100 * REQUIRED_COVERAGE, codec_dir_path))
        return cls(g, v, name)

    @property
    def bpp_range(self):
        return float(self.bpps[0]), float(self.bpps[-1])

    def distance(self, bpp, value):
        codec_value = value_at(self.bpps, self.values, bpp)
        if not np.isfinite(codec_value) or not np.isfinite(value):
            return None
        return float(value) - codec_value


def codec_distances(other_codecs_root, dataset, metrics=METRICS, grid=DEFAULT_BPP_GRID):
    """The CodecDistance of every codec other_codecs.py measured on `dataset`, for each metric.

    :return: ({codec: {metric: CodecDistance}}, {codec: why it is unusable}); both empty when the dataset
      has no codec curves under other_codecs_root.
    """
    usable, unusable = {}, {}
    for codec, path in find_codec_dirs(other_codecs_root, dataset).items():
        try:
            usable[codec] = {m: CodecDistance.from_codec_dir(path, m, grid, name=codec) for m in metrics}
        except (RDError, ValueError) as e:  # ValueError: a non-numeric cell in a CSV
            unusable[codec] = str(e)
    return usable, unusable


# BD-rate -------------------------------------------------------------------------------------------------

BD_CUBIC = 'cubic'
BD_LINEAR = 'pw-linear'


def bd_rate(rates_ref, metric_ref, rates_test, metric_test, method='auto'):
    """Bjontegaard delta rate of a test curve against a reference curve, in percent.

    Returns (bd_percent, method_used, (lo, hi)); bd_percent is None when the metric ranges do not overlap
    (or a curve has < 2 points). method: 'auto' (cubic if both curves have >= 4 points, else piecewise
    linear), 'cubic' or 'pw-linear'. Negative = the test curve needs fewer bits for the same quality.
    """
    curves = []
    for rates, metric in ((rates_ref, metric_ref), (rates_test, metric_test)):
        rates = np.asarray(rates, dtype=np.float64)
        metric = np.asarray(metric, dtype=np.float64)
        ok = np.isfinite(rates) & np.isfinite(metric) & (rates > 0)
        curves.append((np.log(rates[ok]), metric[ok]))
    n_min = min(len(np.unique(m)) for _, m in curves)
    if method == 'auto':
        method = BD_CUBIC if n_min >= 4 else BD_LINEAR
    if method not in (BD_CUBIC, BD_LINEAR):
        raise ValueError('Unknown BD method {!r}'.format(method))
    if n_min < 2 or (method == BD_CUBIC and n_min < 4):
        return None, method, None
    lo = max(m.min() for _, m in curves)
    hi = min(m.max() for _, m in curves)
    if not hi > lo:
        return None, method, None
    integrals = []
    for log_r, m in curves:
        if method == BD_CUBIC:
            p = np.polynomial.Polynomial.fit(m, log_r, 3)
            antiderivative = p.integ()
            integrals.append(antiderivative(hi) - antiderivative(lo))
        else:
            x, y = _unique_sorted(m, log_r)
            xs = np.concatenate(([lo], x[(x > lo) & (x < hi)], [hi]))
            integrals.append(np.trapezoid(np.interp(xs, x, y), xs))
    mean_diff = (integrals[1] - integrals[0]) / (hi - lo)
    return float((np.exp(mean_diff) - 1.) * 100.), method, (float(lo), float(hi))


def default_other_codecs_root():
    return os.environ.get('OTHER_CODECS_ROOT') or 'other_codecs'


def load_codec_distances(other_codecs_root, dataset):
    """{codec: {metric: CodecDistance}} of the codecs measured on the dataset (may be empty); says which
    codecs cannot be used and why."""
    usable, unusable = codec_distances(other_codecs_root, dataset)
    for name, why in sorted(unusable.items()):
        print('Note: no distance to {}: {}'.format(name, why))
    if not usable and not unusable:
        print('Note: no classical codec curves for {!r} in {} (run other_codecs.py): no distances logged'.format(
            dataset, os.path.join(other_codecs_root, '<codec>_' + dataset)))
    return usable


def distance_scalars(prefix, means, codec_distances):
    """TensorBoard scalars <prefix>/distance_<codec>_<metric> of a point's distance to every codec, and one
    console line per codec.

    means: {'bpp': .., 'ms-ssim': .., 'psnr': ..}; like the original, val.py passes the means over the
    images, train.py the test batch's values. A metric whose bpp lies outside the codec's averaged curve
    is left out."""
    scalars, lines = {}, []
    for name in sorted(codec_distances):
        d = {m: codec_distances[name][m].distance(means['bpp'], means[m]) for m in METRICS}
        for m, v in d.items():
            if v is not None:
                scalars['{}/distance_{}_{}'.format(prefix, name, m)] = v
        if all(v is None for v in d.values()):
            lo, hi = codec_distances[name]['ms-ssim'].bpp_range
            lines.append('Distance to {}: n/a, mean bpp {:.4f} is outside its curve ({:.3f}..{:.3f} bpp)'.format(
                name, means['bpp'], lo, hi))
        else:
            lines.append('Distance to {}: {} ms-ssim // {} psnr'.format(
                name, 'n/a' if d['ms-ssim'] is None else '{:.4f}'.format(d['ms-ssim']),
                'n/a' if d['psnr'] is None else '{:.3f}'.format(d['psnr'])))
    return scalars, lines
