#!/usr/bin/env python
"""Training curves from the TensorBoard events of train.py runs: one curve per model, one panel per tag.

    python training_curves.py --curve A 'logs/0101_1200 cpu2@med ...' 'logs/0101_1300 ... RESTORE@...' \\
        --curve B 'logs/...' [--tags test/ms_ssim,test/bpp,test/distance_webp_ms-ssim] [-o curves.png]

A model trained in phases (train.py --restore, which continues the step counter) has one log dir per phase:
give them all after its label, in any order; their events are merged by step (a step logged twice, e.g. by a
run that was interrupted and continued, keeps the later value). Prints the last value of every tag per curve.
"""
import argparse
import glob
import io
import os
import sys

import matplotlib

matplotlib.use('Agg')  # no display
from matplotlib import pyplot as plt  # noqa: E402

import file_helpers  # noqa: E402

DEFAULT_TAGS = 'test/ms_ssim,test/bpp,test/psnr,test/distance_webp_ms-ssim'


def read_scalars(log_dirs, tags):
    """{tag: (steps, values)} of the scalar summaries in the event files of log_dirs, sorted by step; for a
    step logged more than once, the value written last (by wall time) wins."""
    from tf_helpers import tf
    seen = {t: {} for t in tags}
    for d in log_dirs:
        files = sorted(glob.glob(os.path.join(glob.escape(d), 'events.out.tfevents.*')))
        if not files:
            raise ValueError('no TensorBoard events in {}'.format(d))
        for f in files:
            for e in tf.compat.v1.train.summary_iterator(f):
                for v in e.summary.value:
                    if v.tag in seen and v.HasField('simple_value'):
                        old = seen[v.tag].get(e.step)
                        if old is None or e.wall_time >= old[0]:
                            seen[v.tag][e.step] = (e.wall_time, v.simple_value)
    return {t: ([s for s in sorted(vals)], [vals[s][1] for s in sorted(vals)]) for t, vals in seen.items()}


def plot(curves, tags, out_path, title=None):
    """curves: list of (label, {tag: (steps, values)})."""
    fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.4), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for label, series in curves:
            steps, values = series[tag]
            if steps:
                ax.plot(steps, values, marker='.', label=label)
        ax.set_title(tag)
        ax.set_xlabel('step')
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(out_path)[1][1:].lower() or None, dpi=120)
    plt.close(fig)
    file_helpers.atomic_write_bytes(out_path, buf.getvalue())


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--curve', nargs='+', action='append', required=True, metavar=('LABEL', 'LOG_DIR'),
                   help='a label and the log dirs of that model (all its phases)')
    p.add_argument('--tags', default=DEFAULT_TAGS, help='comma-separated scalar tags. Default: %(default)s')
    p.add_argument('-o', '--out', default='training_curves.png', help='PNG or PDF. Default: %(default)s')
    p.add_argument('--title', default=None)
    flags = p.parse_args(args)
    tags = [t for t in flags.tags.split(',') if t]
    curves = []
    for spec in flags.curve:
        if len(spec) < 2:
            p.error('--curve needs a label and at least one log dir, got {}'.format(spec))
        try:
            curves.append((spec[0], read_scalars(spec[1:], tags)))
        except ValueError as e:
            sys.exit('Error: {}'.format(e))
    for label, series in curves:
        last = ', '.join('{} {:.4f} (step {})'.format(t, series[t][1][-1], series[t][0][-1])
                         for t in tags if series[t][0])
        print('{}: {}'.format(label, last or 'none of the tags logged'))
    plot(curves, tags, flags.out, flags.title)
    print('Wrote {}'.format(flags.out))


if __name__ == '__main__':
    main()
