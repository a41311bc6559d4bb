#!/usr/bin/env python
"""Codec speed, rate and exactness on a set of images (default: the 24 Kodak images).

    python bench/codec_speed.py [--model LOG_DIR] [--images DIR] [--how_many N] [--blocks 2x2] [--runtime R]
    python bench/codec_speed.py --cli [--old_tree DIR] [--model LOG_DIR] [--images DIR] [--repeat 3]

--cli: codec.py as a user runs it (whole processes, wall time): `--help`; one image encoded and decoded, split
into start-up (import, model loading: wall time minus the work codec.py reports) and work; all images in one
call (per-image wall time vs the work per image). With --old_tree (a checkout of another commit, e.g.
`git worktree add ../old 377ac28`) the same commands run there too, alternating, and the ratios are printed.
Default model: the shipped middle one (both trees are given its directory).

Without --cli:
Per image: encode seconds (PNG in -> compressed file out) and decode seconds (file in -> PNG out), and
of these the autoencoder's share (its TensorFlow runs) and the symbol coding's (fixed-point context
model + arithmetic coder), so that what is left over is visible; real bpp (whole file) vs the context
model's cross-entropy estimate, and whether decoding gave back exactly the encoded symbols. Then the
pure-Python coder on one image, and block-parallel coding (--blocks) against 1x1 on the first images.
Without --model a random-weights cvpr/low checkpoint is made in bench/out/ (fine for speed and
exactness; rates of a random model mean nothing).
"""
import argparse
import contextlib
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import image_codec  # noqa: E402
import config_parser  # noqa: E402
import fixed_point_pc  # noqa: E402
import images  # noqa: E402
import model_graph  # noqa: E402
import model_files  # noqa: E402
import saver as saver_lib  # noqa: E402
import symbol_coder  # noqa: E402
from tf_helpers import tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_model_dir(out_root):
    """A cvpr/low + res_shallow log dir with randomly initialized weights (made once)."""
    log_dir = os.path.join(out_root, '0000_0000 cvpr@low cvpr@res_shallow')
    if model_files.all_ckpt_steps(os.path.join(log_dir, 'ckpts')):
        return log_dir
    ae, _ = config_parser.parse(os.path.join(ROOT, 'ae_configs/cvpr/low'))
    pc, _ = config_parser.parse(os.path.join(ROOT, 'pc_configs/cvpr/res_shallow'))
    os.makedirs(log_dir, exist_ok=True)
    with tf.Graph().as_default(), tf.Session() as sess:
        model_graph.build_inference_graph(ae, pc)
        sess.run(tf.global_variables_initializer())
        saver_lib.Saver(log_dir).save(sess, 0)
    return log_dir


@contextlib.contextmanager
def _timing(obj, name, totals, key):
    """Adds the seconds spent in obj.name (a module function or a method of an instance) while in the block
    to totals[key]."""
    fn = getattr(obj, name)
    had_own = name in vars(obj)  # a module's function, not an instance's method looked up on its class

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(obj, name, timed)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, name, fn)
        else:
            delattr(obj, name)


def timed_roundtrip(model, path, tmp, coder='fast', blocks=(1, 1)):
    """Whole pipeline both ways, with the autoencoder's and the symbol coding's shares. :return: dict of
    measures"""
    t = dict(enc_ae_s=0., dec_ae_s=0., enc_code_s=0., dec_code_s=0.)
    with _timing(model, 'encode_symbols', t, 'enc_ae_s'), _timing(symbol_coder, 'encode_blocks', t, 'enc_code_s'):
        t0 = time.perf_counter()
        img, _ = images.load_rgb(path)
        data = image_codec.encode_image(model, img, coder, blocks)
        images.atomic_write_bytes(os.path.join(tmp, 'x.cpm'), data)
        enc_s = time.perf_counter() - t0
    with _timing(model, 'decode_symbols', t, 'dec_ae_s'), _timing(symbol_coder, 'decode_blocks', t, 'dec_code_s'):
        t0 = time.perf_counter()
        with open(os.path.join(tmp, 'x.cpm'), 'rb') as f:
            data2 = f.read()
        symbols, hdr = image_codec.decode_symbols(model, data2)
        rec = images.to_uint8(model.decode_symbols(symbols)[:hdr['height'], :hdr['width']])
        images.save_png(os.path.join(tmp, 'x.png'), rec)
        dec_s = time.perf_counter() - t0
    h, w = img.shape[:2]
    symbols = model.encode_symbols(images.pad_to_multiple(img))
    bits = _ideal_bits(model.fixed_point_pc, symbols)
    bits_v2 = _ideal_bits(model.fixed_point_pc.with_frac_bits(fixed_point_pc.V2_FRAC_BITS), symbols)
    return dict(t, enc_s=enc_s, dec_s=dec_s, bytes=len(data), bpp_real=8. * len(data) / (h * w),
                bpp_est=bits / (h * w), bits_est=bits, bits_v2=bits_v2,
                exact=bool(np.array_equal(symbols, model.encode_symbols(images.pad_to_multiple(img)))))


def _ideal_bits(pc, symbols):
    """Cross-entropy of the symbols under a fixed-point context model's logits (what the coder approaches)."""
    logits, syms = pc.logits_in_wave_order(symbols)
    z = logits / 2. ** pc.frac_bits
    z -= z.max(axis=1, keepdims=True)
    logp = z[np.arange(len(syms)), syms] - np.log(np.exp(z).sum(axis=1))
    return float(-logp.sum() / np.log(2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help='log dir of a trained model (default: random-weights cvpr/low)')
    p.add_argument('--images', default=os.path.join(ROOT, '..', 'shared', 'data', 'kodak'))
    p.add_argument('--how_many', type=int, default=None)
    p.add_argument('--blocks', default='2x2', help='block grid to compare with 1x1. Default: %(default)s')
    p.add_argument('--block_images', type=int, default=3, help='images for the block comparison')
    p.add_argument('--runtime', choices=image_codec.RUNTIMES, default='auto', help='Default: %(default)s')
    p.add_argument('--cli', action='store_true', help='time codec.py as whole processes (see above)')
    p.add_argument('--old_tree', help='with --cli: a checkout of another commit to compare with')
    p.add_argument('--repeat', type=int, default=3, help='with --cli: runs per command (medians)')
    flags = p.parse_args()
    paths = sorted(glob.glob(os.path.join(glob.escape(flags.images), '*.png')))[:flags.how_many]
    if not paths:
        sys.exit('No PNGs in {}'.format(flags.images))
    if flags.cli:
        return cli_timings(flags, paths)
    model_dir = flags.model or random_model_dir(os.path.join(ROOT, 'bench', 'out'))
    model = image_codec.load_model(model_dir, flags.runtime)
    print('model: {} (ckpt {}, {}), {} images, {} CPUs'.format(model_dir, model.step, type(model).__name__, len(paths),
                                                             os.cpu_count()))
    tmp = tempfile.mkdtemp()
    timed_roundtrip(model, paths[0], tmp)  # warm-up (graph optimization, BLAS threads)
    rows = []
    print('{:<14} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>6}'.format(
        'image', 'enc s', 'AE', 'coding', 'dec s', 'AE', 'coding', 'bpp real', 'bpp est', 'overhead', 'exact'))
    for path in paths:
        r = timed_roundtrip(model, path, tmp)
        rows.append(r)
        print('{:<14} {:>7.3f} {:>7.3f} {:>7.3f} {:>7.3f} {:>7.3f} {:>7.3f} {:>9.4f} {:>9.4f} {:>7.2f}% {:>6}'.format(
            os.path.basename(path), r['enc_s'], r['enc_ae_s'], r['enc_code_s'], r['dec_s'], r['dec_ae_s'],
            r['dec_code_s'], r['bpp_real'], r['bpp_est'], 100 * (r['bpp_real'] / r['bpp_est'] - 1),
            'yes' if r['exact'] else 'NO'))
    mean = {k: np.mean([r[k] for r in rows]) for k in ('enc_s', 'dec_s', 'bpp_real', 'bpp_est')}
    med = {k: np.median([r[k] for r in rows]) for k in ('enc_s', 'dec_s', 'enc_ae_s', 'dec_ae_s', 'enc_code_s',
                                                         'dec_code_s')}
    payload_over = np.mean([(8 * (r['bytes'] - image_codec.HEADER_BYTES)) / r['bits_est'] - 1 for r in rows])
    print('mean: encode {:.2f} s, decode {:.2f} s, real bpp {:.4f}, estimate {:.4f}; payload bits vs estimate '
          '{:+.3f}%, header {} bytes; exact round trips: {}/{}'.format(
              mean['enc_s'], mean['dec_s'], mean['bpp_real'], mean['bpp_est'], 100 * payload_over,
              image_codec.HEADER_BYTES, sum(r['exact'] for r in rows), len(rows)))
    pc = model.fixed_point_pc
    print('context model at F = {} ({}): estimate {:+.3f}% vs F = {} in float64 (file version 2)'.format(
        pc.frac_bits, pc.dtype, 100 * (sum(r['bits_est'] for r in rows) / sum(r['bits_v2'] for r in rows) - 1),
        fixed_point_pc.V2_FRAC_BITS))
    for side in ('enc', 'dec'):
        rest = med[side + '_s'] - med[side + '_ae_s'] - med[side + '_code_s']
        print('median {}: {:.3f} s = autoencoder {:.3f} s + symbol coding {:.3f} s + the rest (image and file '
              'I/O, header) {:.3f} s'.format('encode' if side == 'enc' else 'decode', med[side + '_s'],
                                              med[side + '_ae_s'], med[side + '_code_s'], rest))

    r = timed_roundtrip(model, paths[0], tmp, coder='python')
    print('pure-Python coder on {}: encode {:.2f} s, decode {:.2f} s, real bpp {:.4f}, exact: {}'.format(
        os.path.basename(paths[0]), r['enc_s'], r['dec_s'], r['bpp_real'], r['exact']))

    blocks = image_codec.parse_blocks(flags.blocks)
    one, many = [], []
    for path in paths[:flags.block_images]:
        one.append(timed_roundtrip(model, path, tmp))
        many.append(timed_roundtrip(model, path, tmp, blocks=blocks))
    f = lambda rs, k: np.mean([r[k] for r in rs])  # noqa: E731
    print('blocks {}x{} vs 1x1 on {} images: encode {:.2f} vs {:.2f} s, decode {:.2f} vs {:.2f} s, '
          'real bpp {:.4f} vs {:.4f} ({:+.2f}% rate), exact: {}'.format(
              blocks[0], blocks[1], len(one), f(many, 'enc_s'), f(one, 'enc_s'), f(many, 'dec_s'), f(one, 'dec_s'),
              f(many, 'bpp_real'), f(one, 'bpp_real'), 100 * (f(many, 'bpp_real') / f(one, 'bpp_real') - 1),
              all(r['exact'] for r in many)))


# codec.py as whole processes -------------------------------------------------------------------------

_WORK_RE = re.compile(r', ([0-9.]+) s$', re.M)  # codec.py's lines end with the seconds of work


def _run_cli(tree, args):
    """(wall seconds, seconds of work codec.py reported) of `python codec.py ARGS` in a checkout."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, 'codec.py'] + args, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit('codec.py {} failed in {}:\n{}'.format(' '.join(args), tree, out.stderr[-2000:]))
    return wall, sum(float(v) for v in _WORK_RE.findall(out.stdout))


def cli_timings(flags, paths):
    model_dir = os.path.abspath(flags.model or image_codec.default_model_dir())
    trees = [('now', ROOT)] + ([('old', os.path.abspath(flags.old_tree))] if flags.old_tree else [])
    tmp = tempfile.mkdtemp()
    one = paths[-1]  # kodim24 with the default images
    print('codec.py wall times (median of {}), model {}, {} CPUs'.format(flags.repeat, model_dir, os.cpu_count()))
    results = {name: {} for name, _ in trees}

    def measure(key, make_args):
        for _ in range(flags.repeat):
            for name, tree in trees:  # alternating, so that load from other processes hits both alike
                results[name].setdefault(key, []).append(_run_cli(tree, make_args(name)))

    measure('help', lambda name: ['--help'])
    measure('encode', lambda name: ['encode', model_dir, one, '-o', os.path.join(tmp, name + '.cpm')])
    measure('decode', lambda name: ['decode', os.path.join(tmp, name + '.cpm'), '-o', os.path.join(tmp, name + '.png'),
                                    '--model', model_dir])
    med = {name: {k: tuple(np.median(np.array(v), axis=0)) for k, v in r.items()} for name, r in results.items()}
    print('{:<6} {:>8} {:>22} {:>22} {:>10}'.format('tree', 'help s', 'encode s (start-up)', 'decode s (start-up)',
                                                  'enc+dec s'))
    for name, _ in trees:
        m = med[name]
        print('{:<6} {:>8.2f} {:>13.2f} ({:>5.2f}) {:>13.2f} ({:>5.2f}) {:>10.2f}'.format(
            name, m['help'][0], m['encode'][0], m['encode'][0] - m['encode'][1], m['decode'][0],
            m['decode'][0] - m['decode'][1], m['encode'][0] + m['decode'][0]))
    if flags.old_tree:
        now, old = med['now'], med['old']
        print('now / old: encode + decode {:.2f}x, help {:.2f}x'.format(
            (now['encode'][0] + now['decode'][0]) / (old['encode'][0] + old['decode'][0]),
            now['help'][0] / old['help'][0]))
    # all images in one call (this tree only: the old CLI takes one file per call)
    out_dir = os.path.join(tmp, 'many')
    enc_wall, enc_work = _run_cli(ROOT, ['encode'] + paths + ['-o', out_dir + '/', '--model', model_dir])
    files = sorted(glob.glob(os.path.join(out_dir, '*.cpm')))
    dec_wall, dec_work = _run_cli(ROOT, ['decode'] + files + ['-o', os.path.join(tmp, 'many_png') + '/', '--model',
                                         model_dir])
    n = len(paths)
    for what, wall, work in (('encode', enc_wall, enc_work), ('decode', dec_wall, dec_work)):
        print('{} images in one call, {}: {:.2f} s wall per image, {:.2f} s work per image ({:.2f}x)'.format(
            n, what, wall / n, work / n, wall / work))


if __name__ == '__main__':
    main()
