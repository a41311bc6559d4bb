#!/usr/bin/env python
"""Rate-distortion plot of our models against classical codecs (and the paper's Fig. 1), plus a table.

    python plotter.py LOG_DIR_ROOT JOB_IDS DATASET [--style mean|interp ...] [--ids A B C] [--latex]
                      [--paper_plot] [--metric ms-ssim|psnr] [--x_range 0,1.2] [--y_range 0.85,1.0]
                      [-o PATH] [--pdf] [--other_codecs_root DIR] [--codecs jpeg,webp] [--at_bpp 0.37,0.677]

e.g. `python plotter.py ../ckpts 0515_1103,0515_1309,0515_1310 kodak --style mean --ids A B C --latex`.

* JOB_IDS: comma-separated job ids (`MMDD_HHMM`); `;` separates groups, each drawn as its own curve.
  An empty JOB_IDS ('') plots only the codecs (and --paper_plot). Each job's per-image measures are read
  from `<LOG_DIR_ROOT>/<job_id> <DATASET>/measures.csv` (written by val.py).
* --style mean: one point per model (mean bpp, mean metric over the images), connected per group and
  labelled with --ids (in order of increasing bpp, group after group). --style interp: per-image curves
  (quadratic with >= 3 models, else linear) averaged on a bpp grid (see rd_curves.interp_average).
* Classical codecs: every `<OTHER_CODECS_ROOT>/<codec>_<DATASET>/*_out.csv` folder (other_codecs.py),
  averaged on the grid with linear per-image interpolation. OTHER_CODECS_ROOT: --other_codecs_root, else
  $OTHER_CODECS_ROOT, else `other_codecs`.
* The bpp grid is np.linspace(0.1, 1.4, 50), or np.linspace(max(lo, 0.02), hi, 50) for an explicit
  --x_range lo,hi.
* Printed: per model mean bpp (and bpp_real if val.py wrote it), MS-SSIM and PSNR; per curve of ours (and
  Fig. 1 with --paper_plot) the BD-rate against each codec's averaged curve in the plotted metric (see
  rd_curves.bd_rate); each codec's averaged MS-SSIM / PSNR at the bpps of --at_bpp (default: the mean
  bpps of our models).
"""
import argparse
import io
import os
import shutil
import sys

import matplotlib

matplotlib.use('Agg')  # no display
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402

import file_helpers  # noqa: E402
import rd_curves  # noqa: E402

# bpp -> MS-SSIM on Kodak of the paper's Fig. 1 curve (from the original repository's README).
CVPR_FIG1 = [
    (0.1265306, 0.9289356),
    (0.1530612, 0.9417454),
    (0.1795918, 0.9497924),
    (0.2061224, 0.9553684),
    (0.2326531, 0.9598574),
    (0.2591837, 0.9636625),
    (0.2857143, 0.9668663),
    (0.3122449, 0.9695684),
    (0.3387755, 0.9718446),
    (0.3653061, 0.9738012),
    (0.3918367, 0.9755308),
    (0.4183673, 0.9770696),
    (0.4448980, 0.9784622),
    (0.4714286, 0.9797252),
    (0.4979592, 0.9808753),
    (0.5244898, 0.9819255),
    (0.5510204, 0.9828875),
    (0.5775510, 0.9837722),
    (0.6040816, 0.9845877),
    (0.6306122, 0.9853407),
    (0.6571429, 0.9860362),
    (0.6836735, 0.9866768),
    (0.7102041, 0.9872690),
    (0.7367347, 0.9878184),
    (0.7632653, 0.9883268),
    (0.7897959, 0.9887977),
    (0.8163265, 0.9892346),
    (0.8428571, 0.9896379)]

TITLES = {'kodak': 'Kodak', 'u100': 'Urban100', 'b100': 'B100', 'rf100': 'ImageNetVal', 'testset': 'TestSet'}
METRIC_NAMES = {'ms-ssim': 'MS-SSIM', 'psnr': 'PSNR'}
DEFAULT_Y_RANGES = {'ms-ssim': (0.85, 1.0), 'psnr': (22., 40.)}
DEFAULT_X_RANGE = (0., 1.2)
LABEL_FIG1 = 'Fig. 1 (paper)'

# codec -> (label, color, dashes, legend priority (higher = listed first))
CODEC_STYLES = {
    'bpg': ('BPG', 'tab:purple', (), 7),
    'avif': ('AVIF', 'tab:red', (), 6.5),
    'kakadu': ('JPEG2000 (Kakadu)', 'tab:green', (5, 1), 5.5),
    'jpeg2000': ('JPEG2000', 'tab:green', (), 5),
    'webp': ('WebP', 'tab:orange', (), 2),
    'jpeg444': ('JPEG 4:4:4', 'tab:blue', (5, 1), 1.5),
    'jpeg': ('JPEG', 'tab:blue', (), 1),
}
OURS_COLORS = ('0', '0.5', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan')


def _range(s):
    try:
        lo, hi = (float(v) for v in s.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected LO,HI (two numbers), got {!r}'.format(s))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError('expected LO < HI, got {!r}'.format(s))
    return lo, hi


def _floats(s):
    try:
        return [float(v) for v in s.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated numbers, got {!r}'.format(s))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('log_dir_root', help='directory containing the log dirs and `<job_id> <dataset>` dirs')
    p.add_argument('job_ids', help="comma-separated job ids; ';' separates curves; '' for codecs only")
    p.add_argument('dataset', help='dataset name as used by val.py / other_codecs.py, e.g. kodak')
    p.add_argument('--style', nargs='+', default=['interp'], choices=['interp', 'mean'])
    p.add_argument('--ids', nargs='+', help='labels for the mean points (in order of increasing bpp)')
    p.add_argument('--latex', action='store_true', help='render text with TeX (falls back to mathtext '
                                                         'if latex is not installed)')
    p.add_argument('--paper_plot', action='store_true', help="draw the paper's Fig. 1 curve (MS-SSIM on Kodak)")
    p.add_argument('--metric', default='ms-ssim', choices=sorted(METRIC_NAMES))
    p.add_argument('--x_range', type=_range, help='LO,HI of the bpp axis (default 0,1.2)')
    p.add_argument('--y_range', type=_range, help='LO,HI of the metric axis (default 0.85,1.0 for '
                                                  'ms-ssim, 22,40 for psnr)')
    p.add_argument('-o', '--output_path', help='PNG path (default plot_<Dataset>_<metric>.png)')
    p.add_argument('--pdf', action='store_true', help='also write a PDF next to the PNG')
    p.add_argument('--other_codecs_root', help='default: $OTHER_CODECS_ROOT, else other_codecs')
    p.add_argument('--codecs', help='comma-separated codecs to draw (default: all found)')
    p.add_argument('--at_bpp', type=_floats, help='print the codec curves at these bpps, e.g. 0.37,0.677 '
                                                  '(default: the mean bpps of our models)')
    return p.parse_args(argv)


def bpp_grid(x_range_flag):
    if x_range_flag is None:
        return rd_curves.DEFAULT_BPP_GRID
    lo, hi = x_range_flag
    return np.linspace(max(lo, 0.02), hi, 50)


def load_models(log_dir_root, job_ids, dataset):
    """[[Measures, ...] per group]; raises rd_curves.RDError."""
    groups = rd_curves.parse_job_groups(job_ids)
    if groups and not os.path.isdir(log_dir_root):
        raise rd_curves.RDError('LOG_DIR_ROOT does not exist or is not a directory: {}'.format(log_dir_root))
    return [[rd_curves.Measures(rd_curves.find_measures_file(log_dir_root, j, dataset), j) for j in group]
            for group in groups]


def load_codecs(root, dataset, wanted, log):
    """{codec: codec dir} for the codecs to draw; prints a message for each one that is missing."""
    found = rd_curves.find_codec_dirs(root, dataset)
    names = wanted if wanted else sorted(set(found) | set(CODEC_STYLES), key=_codec_priority, reverse=True)
    dirs = {codec: found[codec] for codec in names if codec in found}
    missing = [codec for codec in names if codec not in found]
    if wanted:
        for codec in missing:
            log('Skipping codec {}: no measurements in {} (run other_codecs.py)'.format(
                codec, rd_curves.codec_dir(root, codec, dataset)))
    elif missing and dirs:
        log('Skipping codecs without measurements in {}: {}'.format(
            rd_curves.codec_dir(root, '<codec>', dataset), ', '.join(missing)))
    if not dirs:
        log('No classical codec measurements for {!r} under {}'.format(dataset, root))
    return dirs


def _codec_priority(codec):
    return CODEC_STYLES.get(codec, (None, None, None, 0))[3]


def _codec_label(codec):
    return CODEC_STYLES[codec][0] if codec in CODEC_STYLES else codec


def _tex_escape(s):
    for c in '_&%#$':
        s = s.replace(c, '\\' + c)
    return s


def _setup_text(use_latex, log):
    plt.rcdefaults()
    if use_latex and shutil.which('latex'):
        plt.rc('text', usetex=True)
        plt.rc('font', family='serif', serif=['Computer Modern Roman'])
        return True
    if use_latex:
        log('Warning: --latex given but `latex` is not on the PATH; using mathtext instead')
    plt.rc('font', family='serif')
    plt.rc('mathtext', fontset='cm')
    return False


def curve_labels(groups, ids):
    """Per group (legend label, [id label per model, in the group's order] or Nones)."""
    labels = []
    ids = list(ids or [])
    for i, group in enumerate(groups):
        order = sorted(range(len(group)), key=lambda k: group[k].mean('bpp'))
        model_ids = [None] * len(group)
        for k in order:
            if ids:
                model_ids[k] = ids.pop(0)
        labels.append(('Ours' if len(groups) == 1 else 'Ours ({})'.format(i + 1), model_ids))
    return labels


def make_plot(flags, groups, codec_curves, labels, output_path, log):
    usetex = _setup_text(flags.latex, log)
    esc = _tex_escape if usetex else (lambda s: s)
    metric = flags.metric
    priorities = {}
    fig = plt.figure(figsize=(6, 6))
    ax = plt.gca()

    for codec, (g, v) in codec_curves.items():
        if len(g) == 0:
            continue
        label, color, dashes, prio = CODEC_STYLES.get(codec, (codec, '0.5', (), 0))
        ax.plot(g, v, label=esc(label), color=color, linewidth=1.5, dashes=dashes)
        priorities[esc(label)] = prio

    grid = bpp_grid(flags.x_range)
    for i, (group, (label, model_ids)) in enumerate(zip(groups, labels)):
        color = OURS_COLORS[i % len(OURS_COLORS)]
        prio = 10 - 0.01 * i
        if 'interp' in flags.style and len(group) < 2:
            log('Note: {}: interp needs >= 2 models; drawing the mean point instead'.format(label))
        if 'interp' in flags.style and len(group) >= 2:
            g, v = rd_curves.ours_interp_curve(group, metric, grid)
            interp_label = label if 'mean' not in flags.style else label + ' (interp.)'
            ax.plot(g, v, label=esc(interp_label), color=color, linewidth=3 if i == 0 else 2)
            priorities[esc(interp_label)] = prio - 0.005
        if 'mean' in flags.style or len(group) < 2:
            pts = sorted((m.mean('bpp'), m.mean(metric), mid) for m, mid in zip(group, model_ids))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker='x', markersize=8, markeredgewidth=2, color=color, linewidth=1,
                    label=esc(label), zorder=10)
            priorities[esc(label)] = prio
            x_span = (flags.x_range or DEFAULT_X_RANGE)[1] - (flags.x_range or DEFAULT_X_RANGE)[0]
            for x, y, mid in pts:
                if mid is not None:
                    ax.annotate(esc(mid), (x + 0.03 * x_span, y), horizontalalignment='left',
                                verticalalignment='center', zorder=11)

    if flags.paper_plot and metric == 'ms-ssim' and flags.dataset.lower() == 'kodak':
        xs, ys = zip(*CVPR_FIG1)
        ax.plot(xs, ys, label=esc(LABEL_FIG1), color='0', linewidth=2, dashes=(4, 2))
        priorities[esc(LABEL_FIG1)] = 11

    ax.set_title('{} on {}'.format(METRIC_NAMES[metric], TITLES.get(flags.dataset.lower(), flags.dataset)))
    ax.set_xlabel('bpp')
    ax.set_ylabel(METRIC_NAMES[metric] + (' [dB]' if metric == 'psnr' else ''))
    handles, leg_labels = ax.get_legend_handles_labels()
    if handles:
        pairs = sorted(zip(leg_labels, handles), key=lambda t: -priorities.get(t[0], 0))
        ax.legend([h for _, h in pairs], [lab for lab, _ in pairs], loc='lower right', prop={'size': 11},
                  fancybox=True, framealpha=0.7)
    ax.minorticks_on()
    ax.yaxis.set_minor_locator(ticker.AutoMinorLocator(2))
    ax.yaxis.grid(True, which='both', color='0.85', linestyle='-')
    ax.xaxis.grid(True, which='major', color='0.85', linestyle='-')
    ax.set_axisbelow(True)
    ax.set_xlim(flags.x_range or DEFAULT_X_RANGE)
    ax.set_ylim(flags.y_range or DEFAULT_Y_RANGES[metric])

    outputs = [output_path] + ([os.path.splitext(output_path)[0] + '.pdf'] if flags.pdf else [])
    for out in outputs:
        buf = io.BytesIO()
        try:
            # the format from the name, as savefig(path) would; None: matplotlib's default (PNG)
            fig.savefig(buf, format=os.path.splitext(out)[1][1:].lower() or None, bbox_inches='tight', dpi=150)
        except (RuntimeError, OSError) as e:
            if not usetex:
                raise
            log('Warning: TeX rendering failed ({}); retrying with mathtext'.format(str(e).splitlines()[0]))
            plt.close(fig)
            flags.latex = False
            return make_plot(flags, groups, codec_curves, labels, output_path, log)
        file_helpers.atomic_write_bytes(out, buf.getvalue())
        log('Saved {}'.format(out))
    plt.close(fig)
    return outputs


# Tables ---------------------------------------------------------------------------------------------------


def _fmt_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: '  '.join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return '\n'.join([line(header)] + [line(r) for r in rows])


def models_table(groups, labels):
    has_real = any(m.has('bpp_real') for g in groups for m in g)
    header = ['curve', 'job_id', 'id', 'images', 'bpp'] + (['bpp_real'] if has_real else []) + ['MS-SSIM', 'PSNR']
    rows = []
    for group, (label, model_ids) in zip(groups, labels):
        for m, mid in sorted(zip(group, model_ids), key=lambda t: t[0].mean('bpp')):
            row = [label, m.job_id, mid or '-', len(m.img_names), '{:.4f}'.format(m.mean('bpp'))]
            if has_real:
                row.append('{:.4f}'.format(m.mean('bpp_real')) if m.has('bpp_real') else '-')
            row += ['{:.4f}'.format(m.mean('ms-ssim')), '{:.2f}'.format(m.mean('psnr'))]
            rows.append(row)
    return _fmt_table(header, rows)


BD_LINEAR_NOTE = ('piecewise-linear: a curve has fewer than the 4 points that the standard Bjontegaard cubic fit '
                  'of log(bpp) against the metric needs, so log(bpp) is interpolated linearly between its points '
                  '(not comparable digit for digit with cubic BD-rates)')


def _bd_method_text(method, num_points):
    return 'cubic fit' if method == rd_curves.BD_CUBIC else 'piecewise-linear ({} points)'.format(num_points)


def bd_table(test_curves, codec_curves, metric):
    """test_curves: [(label, bpps, values)]; codec_curves: {codec: (grid, values)}. The table, and under it
    what piecewise-linear means if a row used it."""
    header = ['curve', 'vs codec', 'BD-rate', 'method', 'points (ours/codec)', '{} range'.format(METRIC_NAMES[metric])]
    rows = []
    methods = set()
    for label, bpps, values in test_curves:
        for codec, (g, v) in codec_curves.items():
            bd, method, rng = rd_curves.bd_rate(g, v, bpps, values)
            methods.add(method)
            rows.append([label, _codec_label(codec), 'n/a' if bd is None else '{:+.1f}%'.format(bd),
                         _bd_method_text(method, min(len(bpps), len(g))), '{}/{}'.format(len(bpps), len(g)),
                         '-' if rng is None else '{:.4g}..{:.4g}'.format(*rng)])
    return _fmt_table(header, rows) + ('\n' + BD_LINEAR_NOTE if rd_curves.BD_LINEAR in methods else '')


def at_bpp_table(codec_dirs, bpps):
    header = ['codec'] + ['MS-SSIM@{:g}'.format(b) for b in bpps] + ['PSNR@{:g}'.format(b) for b in bpps]
    rows = []
    for codec, d in codec_dirs.items():
        row = [_codec_label(codec)]
        for metric, fmt in (('ms-ssim', '{:.4f}'), ('psnr', '{:.2f}')):
            per_image = rd_curves.read_codec_dir(d, metric)
            g, v, _ = rd_curves.interp_average(per_image.values(), np.asarray(bpps), kind='linear')
            got = dict(zip(np.round(g, 9), v))
            row += [fmt.format(got[b]) if b in got else 'n/a' for b in np.round(bpps, 9)]
        rows.append(row)
    return _fmt_table(header, rows)


def main(argv=None):
    flags = parse_args(argv)
    log = print
    if flags.ids and 'mean' not in flags.style:
        log('Note: --ids only label the points of --style mean')
    num_models = sum(len(g) for g in rd_curves.parse_job_groups(flags.job_ids))
    if flags.ids and len(flags.ids) != num_models:
        log('Warning: {} --ids for {} models'.format(len(flags.ids), num_models))
    try:
        groups = load_models(flags.log_dir_root, flags.job_ids, flags.dataset)
    except rd_curves.RDError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    for group in groups:
        _, missing = rd_curves.ours_per_image_curves(group, flags.metric)
        if missing:
            log('Warning: {} image(s) not measured for every model of {} (left out of interp): {}'.format(
                len(missing), ','.join(m.job_id for m in group), ', '.join(missing[:5])))
    if flags.paper_plot and (flags.metric != 'ms-ssim' or flags.dataset.lower() != 'kodak'):
        log('Warning: --paper_plot: the Fig. 1 curve is MS-SSIM on Kodak; not drawn for {} on {}'.format(
            flags.metric, flags.dataset))
    root = flags.other_codecs_root or rd_curves.default_other_codecs_root()
    wanted = [c.strip() for c in flags.codecs.split(',') if c.strip()] if flags.codecs else None
    codec_dirs = load_codecs(root, flags.dataset, wanted, log)
    grid = bpp_grid(flags.x_range)
    codec_curves = {}
    for codec, d in list(codec_dirs.items()):
        try:
            g, v = rd_curves.codec_average_curve(d, flags.metric, grid)
        except rd_curves.RDError as e:
            log('Skipping codec {}: {}'.format(codec, e))
            del codec_dirs[codec]
            continue
        if len(g) == 0:
            log('Note: codec {}: no bpp of the grid is covered by > 99% of its images'.format(codec))
        codec_curves[codec] = (g, v)

    labels = curve_labels(groups, flags.ids)
    output_path = flags.output_path or 'plot_{}_{}.png'.format(
        TITLES.get(flags.dataset.lower(), flags.dataset), flags.metric)
    make_plot(flags, groups, codec_curves, labels, output_path, log)

    if groups:
        log('\nOur models on {} ({}):'.format(flags.dataset, flags.log_dir_root))
        log(models_table(groups, labels))
    test_curves = [(label, [m.mean('bpp') for m in g], [m.mean(flags.metric) for m in g])
                   for g, (label, _) in zip(groups, labels)]
    if flags.paper_plot and flags.metric == 'ms-ssim' and flags.dataset.lower() == 'kodak':
        test_curves.append((LABEL_FIG1, [b for b, _ in CVPR_FIG1], [v for _, v in CVPR_FIG1]))
    if test_curves and codec_curves:
        log('\nBD-rate in {} vs the codecs\' averaged curves (negative = fewer bits than the codec):'.format(
            METRIC_NAMES[flags.metric]))
        log(bd_table(test_curves, codec_curves, flags.metric))
    at_bpp = flags.at_bpp or sorted(m.mean('bpp') for g in groups for m in g)
    if at_bpp and codec_dirs:
        log('\nCodecs (averaged over images) at given bpp:')
        log(at_bpp_table(codec_dirs, at_bpp))
    return 0


if __name__ == '__main__':
    sys.exit(main())
