#!/usr/bin/env python
"""Evaluates trained models on a set of images: bpp, MS-SSIM, PSNR, and optionally real bitstreams.

    python val.py LOG_DIR_ROOT JOB_IDS IMAGES [--save_ours] [--real_bpp] [--how_many N]
                  [--ckpt_step K] [--reset] [--coder fast|python]

JOB_IDS: comma-separated ids (e.g. 0515_1103,0515_1309), each the start of exactly one log dir in
LOG_DIR_ROOT. IMAGES: a directory of PNGs, an escaped glob of any PIL-readable images, or a dataset
key such as `kodak` (= $VAL_ROOT/kodak/*.png). Results go to `<LOG_DIR_ROOT>/<job_id> <dataset>/`:
measures.csv (img_name,bpp,ms-ssim,psnr[,bpp_real,enc_s,dec_s]), imgs/ with --save_ours, and
TensorBoard scalars of the means. bpp is the context model's cross-entropy estimate; with --real_bpp
every image is also compressed to a real file (the whole file counts) and decoded, which must give
back exactly the same symbols.
"""
import argparse
import csv
import glob
import io
import json
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

import codec
import images
import inference
import logdir_helpers
import ms_ssim_np
import saver as saver_lib

MEASURES = 'measures.csv'
VALIDATED = 'validated_ckpts.json'
_IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.gif')


class ValError(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('log_dir_root', help='directory holding the training log dirs (e.g. ckpts)')
    p.add_argument('job_ids', help='comma-separated job ids (leading MMDD_HHMM of the log dirs)')
    p.add_argument('images', help='directory of PNGs, escaped glob of images, or a key under $VAL_ROOT')
    p.add_argument('--save_ours', '-o', action='store_true', help='save reconstructions to imgs/ as PNG')
    p.add_argument('--real_bpp', action='store_true',
                   help='also encode every image to a real bitstream, decode it, check it is exact, '
                        'and report real bpp and encode/decode seconds')
    p.add_argument('--how_many', type=int, default=None, help='only the first N images (sorted)')
    p.add_argument('--ckpt_step', '-s', type=int, default=-1,
                   help='also validate every K-th older checkpoint; -1: only the latest. Default: -1')
    p.add_argument('--reset', action='store_true', help='forget earlier results in the output dir')
    p.add_argument('--coder', choices=['fast', 'python'], default='fast',
                   help='entropy coder for --real_bpp: fast (range coder) or python (reference)')
    return p.parse_args(argv)


# Images ------------------------------------------------------------------------------------------------

def resolve_images(spec):
    """:return: (sorted image paths, dataset name)"""
    val_root = os.environ.get('VAL_ROOT', '')
    if os.path.isdir(spec):
        paths = glob.glob(os.path.join(glob.escape(spec), '*.png')) + \
            glob.glob(os.path.join(glob.escape(spec), '*.PNG'))
        name = os.path.basename(os.path.normpath(spec))
    elif any(ch in spec for ch in '*?['):
        paths = [p for p in glob.glob(spec) if p.lower().endswith(_IMAGE_EXTS)]
        name = [part for part in spec.split(os.sep) if part][-1].replace('*', '').strip('._-') or \
            os.path.basename(os.path.dirname(spec))
        if not name or any(ch in name for ch in '?['):
            name = os.path.basename(os.path.dirname(spec.rstrip(os.sep))) or 'images'
    elif val_root and os.path.isdir(os.path.join(val_root, spec)):
        return resolve_images(os.path.join(val_root, spec))[0], spec
    elif os.path.isfile(spec):
        paths, name = [spec], os.path.splitext(os.path.basename(spec))[0]
    else:
        raise ValError('IMAGES {!r} is not a directory, a glob with matches, an image file, or a dataset '
                       'key under $VAL_ROOT ({})'.format(spec, val_root or 'unset'))
    if not paths:
        raise ValError('No images found for {!r}'.format(spec))
    return sorted(set(paths)), name


# Output dir bookkeeping ------------------------------------------------------------------------------

def out_dir_of(log_dir_root, job_id, dataset):
    return os.path.join(log_dir_root, '{} {}'.format(job_id, dataset))


def read_validated(out_dir):
    try:
        with open(os.path.join(out_dir, VALIDATED)) as f:
            return set(json.load(f))
    except (OSError, ValueError):
        return set()


def write_validated(out_dir, steps):
    images.atomic_write_bytes(os.path.join(out_dir, VALIDATED), json.dumps(sorted(steps)).encode())


def ckpts_to_validate(all_steps, ckpt_step, done):
    """The latest step plus every ckpt_step-th older one (counting back from the latest), minus done."""
    if not all_steps:
        return []
    chosen = [all_steps[-1]]
    if ckpt_step and ckpt_step > 0:
        chosen = all_steps[::-1][::ckpt_step][::-1]
        if chosen[-1] != all_steps[-1]:
            chosen.append(all_steps[-1])
    return [s for s in chosen if s not in done]


def write_measures(path, rows, columns):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c] if isinstance(r[c], str) else '{:.6f}'.format(r[c]) for c in columns])
    images.atomic_write_bytes(path, buf.getvalue().encode())


def log_means(out_dir, dataset, step, means):
    from tf_helpers import tf
    writer = tf.summary.FileWriter(out_dir)
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag='val/{}/avg_{}'.format(dataset, k), simple_value=v)
                                         for k, v in means.items()]), step)
    writer.close()


# Measuring -------------------------------------------------------------------------------------------

def measure_image(model, img, real_bpp, coder):
    """:return: (measures dict, uint8 reconstruction H x W x 3)"""
    h, w = img.shape[:2]
    r = model.run(images.pad_to_multiple(img), {'x_out': model.g.x_out, 'bits': model.g.bit_cost,
                                                'symbols': model.g.symbols})
    rec = images.to_uint8(r['x_out'][0, :h, :w])
    m = {'bpp': float(np.sum(r['bits'])) / (h * w),
         'ms-ssim': ms_ssim_np.ms_ssim(img, rec),
         'psnr': ms_ssim_np.psnr(img, rec)}
    if real_bpp:
        t0 = time.time()
        data = codec.encode_image(model, img, coder)
        m['enc_s'] = time.time() - t0
        t0 = time.time()
        symbols, _ = codec.decode_symbols(model, data)
        decoded = images.to_uint8(model.decode_symbols(symbols)[:h, :w])
        m['dec_s'] = time.time() - t0
        if not np.array_equal(symbols, r['symbols'][0]):
            raise ValError('Decoded symbols differ from the encoded ones')
        m['bpp_real'] = 8. * len(data) / (h * w)
        rec = decoded  # what a user of the file gets
    return m, rec


def validate_ckpt(model, paths, out_dir, dataset, flags, is_latest):
    columns = ['img_name', 'bpp', 'ms-ssim', 'psnr'] + (['bpp_real', 'enc_s', 'dec_s'] if flags.real_bpp else [])
    rows = []
    bar = tqdm(paths, desc='ckpt {}'.format(model.step), unit='img', file=sys.stdout, dynamic_ncols=True)
    for path in bar:
        img, note = images.load_rgb(path)
        if note:
            tqdm.write('Note: {}: {}'.format(os.path.basename(path), note))
        m, rec = measure_image(model, img, flags.real_bpp, flags.coder)
        name = os.path.splitext(os.path.basename(path))[0]
        rows.append(dict(m, img_name=os.path.basename(path)))
        if flags.save_ours and is_latest:
            images.save_png(os.path.join(out_dir, 'imgs', name + '.png'), rec)
        bar.set_postfix_str(_means_text(rows, columns))
    bar.close()
    means = {c: float(np.mean([r[c] for r in rows])) for c in columns[1:]}
    target = MEASURES if is_latest else 'measures-{}.csv'.format(model.step)
    write_measures(os.path.join(out_dir, target), rows, columns)
    log_means(out_dir, dataset, model.step, {k.replace('-', '_'): v for k, v in means.items()})
    print('{} ckpt {} on {} ({} images): {}'.format(os.path.basename(model.log_dir), model.step, dataset,
                                                   len(rows), _means_text(rows, columns)))
    return means


def _means_text(rows, columns):
    fmt = {'bpp': 'bpp {:.4f}', 'ms-ssim': 'ms-ssim {:.4f}', 'psnr': 'psnr {:.2f}', 'bpp_real': 'real bpp {:.4f}',
           'enc_s': 'enc {:.2f}s', 'dec_s': 'dec {:.2f}s'}
    return ', '.join(fmt[c].format(np.mean([r[c] for r in rows])) for c in columns[1:])


def validate_job(log_dir_root, job_id, paths, dataset, flags):
    log_dir = logdir_helpers.find_log_dir(log_dir_root, job_id)
    out_dir = out_dir_of(log_dir_root, job_id, dataset)
    if flags.reset and os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    all_steps = saver_lib.all_ckpt_steps(saver_lib.ckpt_dir_of(log_dir))
    if not all_steps:
        raise ValError('No checkpoints in {}'.format(saver_lib.ckpt_dir_of(log_dir)))
    done = read_validated(out_dir)
    todo = ckpts_to_validate(all_steps, flags.ckpt_step, done)
    print('{}: validating {} checkpoint(s) {} -> {}'.format(job_id, len(todo), todo, out_dir))
    if not todo:
        print('Nothing to do: all selected checkpoints were validated (use --reset to redo)')
        return
    model = inference.Model(log_dir, ckpt_step=todo[0])
    try:
        for step in todo:
            if step != model.step:
                model.restore(step)
            validate_ckpt(model, paths, out_dir, dataset, flags, is_latest=(step == all_steps[-1]))
            done.add(step)
            write_validated(out_dir, done)
    finally:
        model.close()


def main(argv=None):
    flags = parse_args(argv)
    try:
        if not os.path.isdir(flags.log_dir_root):
            raise ValError('LOG_DIR_ROOT {} is not a directory'.format(flags.log_dir_root))
        paths, dataset = resolve_images(flags.images)
        if flags.how_many:
            paths = paths[:flags.how_many]
        job_ids = [j.strip() for j in flags.job_ids.replace(';', ',').split(',') if j.strip()]
        if not job_ids:
            raise ValError('No job ids given')
        for job_id in job_ids:
            validate_job(flags.log_dir_root, job_id, paths, dataset, flags)
    except (ValError, codec.CodecError, images.ImageError, inference.ModelError, ValueError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
