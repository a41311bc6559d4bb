#!/usr/bin/env python
"""Codec speed, rate and exactness on a set of images (default: the 24 Kodak images).

    python bench/codec_speed.py [--model LOG_DIR] [--images DIR] [--how_many N] [--blocks 2x2]

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
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import codec  # noqa: E402  (its --blocks parser)
import image_codec  # noqa: E402
import config_parser  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import model_graph  # noqa: E402
import saver as saver_lib  # noqa: E402
import symbol_coder  # noqa: E402
from tf_helpers import tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_model_dir(out_root):
    """A cvpr/low + res_shallow log dir with randomly initialized weights (made once)."""
    log_dir = os.path.join(out_root, '0000_0000 cvpr@low cvpr@res_shallow')
    if saver_lib.all_ckpt_steps(os.path.join(log_dir, 'ckpts')):
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
    with _timing(model, 'run', t, 'enc_ae_s'), _timing(symbol_coder, 'encode_blocks', t, 'enc_code_s'):
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
    r = model.run(images.pad_to_multiple(img), {'bits': model.g.bit_cost, 'symbols': model.g.symbols})
    return dict(t, enc_s=enc_s, dec_s=dec_s, bytes=len(data), bpp_real=8. * len(data) / (h * w),
                bpp_est=float(r['bits'].sum()) / (h * w), exact=bool(np.array_equal(symbols, r['symbols'][0])),
                bits_est=float(r['bits'].sum()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help='log dir of a trained model (default: random-weights cvpr/low)')
    p.add_argument('--images', default=os.path.join(ROOT, '..', 'shared', 'data', 'kodak'))
    p.add_argument('--how_many', type=int, default=None)
    p.add_argument('--blocks', default='2x2', help='block grid to compare with 1x1. Default: %(default)s')
    p.add_argument('--block_images', type=int, default=3, help='images for the block comparison')
    flags = p.parse_args()
    paths = sorted(glob.glob(os.path.join(glob.escape(flags.images), '*.png')))[:flags.how_many]
    if not paths:
        sys.exit('No PNGs in {}'.format(flags.images))
    model_dir = flags.model or random_model_dir(os.path.join(ROOT, 'bench', 'out'))
    model = inference.Model(model_dir)
    print('model: {} (ckpt {}), {} images, {} CPUs'.format(model_dir, model.step, len(paths), os.cpu_count()))
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
    for side in ('enc', 'dec'):
        rest = med[side + '_s'] - med[side + '_ae_s'] - med[side + '_code_s']
        print('median {}: {:.3f} s = autoencoder {:.3f} s + symbol coding {:.3f} s + the rest (image and file '
              'I/O, header) {:.3f} s'.format('encode' if side == 'enc' else 'decode', med[side + '_s'],
                                              med[side + '_ae_s'], med[side + '_code_s'], rest))

    r = timed_roundtrip(model, paths[0], tmp, coder='python')
    print('pure-Python coder on {}: encode {:.2f} s, decode {:.2f} s, real bpp {:.4f}, exact: {}'.format(
        os.path.basename(paths[0]), r['enc_s'], r['dec_s'], r['bpp_real'], r['exact']))

    blocks = codec._parse_blocks(flags.blocks)
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


if __name__ == '__main__':
    main()
