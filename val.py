#!/usr/bin/env python
"""Evaluates trained models on a set of images: bpp, MS-SSIM, PSNR, and optionally real bitstreams.

    python val.py LOG_DIR_ROOT JOB_IDS IMAGES [--save_ours] [--real_bpp] [--how_many N]
                  [--ckpt_step K] [--reset] [--coder fast|python] [--other_codecs_root DIR]

JOB_IDS: comma-separated ids (e.g. 0515_1103,0515_1309), each the start of exactly one log dir in
LOG_DIR_ROOT. IMAGES: a dataset key, `kodak` (= $VAL_ROOT/kodak/*.png) or `testset`
(= $VAL_ROOT/imagenet_256_train_val_128x128__100/*.png), as in the original, or any other folder name
under $VAL_ROOT; a directory of PNGs; or an escaped glob of any PIL-readable images.
Checkpoints: every K-th one counting from the oldest, plus always the latest (default K=2; 1: all;
-1: only the latest); those listed in the output dir's validated_ckpts.json are skipped.
Results go to `<LOG_DIR_ROOT>/<job_id> <dataset>/`: measures.csv (img_name,bpp,ms-ssim,psnr
[,bpp_real,enc_s,dec_s]), imgs/ with --save_ours, and TensorBoard scalars of the means. bpp is the
context model's cross-entropy estimate; with --real_bpp every image is also compressed to a real file
(the whole file counts) and decoded, which must give back exactly the same symbols.
If other_codecs.py measured classical codecs on the dataset (`<OTHER_CODECS_ROOT>/<codec>_<dataset>/`),
the distance to each codec's image-averaged curve at our mean bpp is printed and logged as
`val/<dataset>/distance_<codec>_ms-ssim` and `..._psnr` (our mean minus the codec's; > 0 = better).
"""
import argparse
import glob
import json
import os
import shutil
import sys
import time
import uuid

import numpy as np
from tqdm import tqdm

import arithmetic_coding
import file_helpers
import image_codec
import images
import inference
import logdir_helpers
import model_files
import ms_ssim_np
import rd_curves

VALIDATED = 'validated_ckpts.json'
# The original's fixed dataset keys: key -> folder of PNGs under $VAL_ROOT. They take precedence over a
# local folder of the same name, as there.
KNOWN_DATASETS = {
    'kodak': 'kodak',
    'testset': 'imagenet_256_train_val_128x128__100',
}


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
    p.add_argument('--ckpt_step', '-s', type=_ckpt_step, default=2,
                   help='validate every K-th checkpoint (counting from the oldest) plus always the latest; '
                        '1: all, -1: only the latest. Default: 2')
    p.add_argument('--reset', action='store_true', help='forget earlier results in the output dir')
    p.add_argument('--coder', choices=arithmetic_coding.CODERS, default=arithmetic_coding.DEFAULT_CODER,
                   help='entropy coder for --real_bpp: fast (range coder) or python (reference)')
    p.add_argument('--other_codecs_root', default=None,
                   help='where other_codecs.py wrote the codec curves (default: $OTHER_CODECS_ROOT, '
                        'else other_codecs)')
    return p.parse_args(argv)


def _ckpt_step(text):
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1 and k != -1:
        raise argparse.ArgumentTypeError('K must be >= 1, or -1 for only the latest checkpoint; got {!r}'.format(text))
    return k


# Images ------------------------------------------------------------------------------------------------

def _pngs_in(directory):
    return glob.glob(os.path.join(glob.escape(directory), '*.png')) + \
        glob.glob(os.path.join(glob.escape(directory), '*.PNG'))


def resolve_images(spec):
    """:return: (sorted image paths, dataset name)"""
    val_root = os.environ.get('VAL_ROOT', '')
    if spec in KNOWN_DATASETS:
        directory = os.path.join(val_root, KNOWN_DATASETS[spec])
        if not os.path.isdir(directory):
            raise ValError('Dataset {!r} is $VAL_ROOT/{}/*.png, but {} is not a directory (VAL_ROOT={})'.format(
                spec, KNOWN_DATASETS[spec], directory, repr(val_root) if val_root else 'unset'))
        paths = _pngs_in(directory)
        if not paths:
            raise ValError('Dataset {!r}: no PNGs in {} (VAL_ROOT={!r})'.format(spec, directory, val_root))
        return sorted(set(paths)), spec
    if os.path.isdir(spec):
        paths = _pngs_in(spec)
        name = os.path.basename(os.path.normpath(spec))
    elif any(ch in spec for ch in '*?['):
        paths = [p for p in glob.glob(spec) if images.has_image_extension(p)]
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

def read_validated(out_dir):
    try:
        with open(os.path.join(out_dir, VALIDATED)) as f:
            return set(json.load(f))
    except (OSError, ValueError):
        return set()


def write_validated(out_dir, steps):
    file_helpers.atomic_write_bytes(os.path.join(out_dir, VALIDATED), json.dumps(sorted(steps)).encode())


def select_ckpts(all_steps, ckpt_step):
    """Every ckpt_step-th of the sorted steps, counting from the oldest, plus always the latest; -1: only
    the latest. The original's all_ckpts[:-1:ckpt_step] + [all_ckpts[-1]]: with steps 1..6 and K=2 that
    is 1, 3, 5, 6 (not 2, 4, 6)."""
    if not all_steps:
        return []
    return (list(all_steps[:-1:ckpt_step]) if ckpt_step > 0 else []) + [all_steps[-1]]


def ckpts_to_validate(all_steps, ckpt_step, done):
    """select_ckpts minus the steps validated earlier, ascending."""
    return [s for s in select_ckpts(all_steps, ckpt_step) if s not in done]


def write_measures(path, rows, columns):
    rd_curves.write_csv_atomic(path, columns, [[r[c] if isinstance(r[c], str) else '{:.6f}'.format(r[c])
                                                for c in columns] for r in rows])


def event_writer(out_dir):
    """A TensorBoard writer with a unique file name: the default name only has a one-second timestamp, so a
    second writer in the same second (e.g. a quick second run) would overwrite the first's scalars."""
    from tf_helpers import tf
    return tf.summary.FileWriter(out_dir, filename_suffix='.val-{}'.format(uuid.uuid4().hex[:12]))


def log_scalars(writer, step, scalars):
    """scalars: {full TensorBoard tag: value}, written at the checkpoint's step."""
    from tf_helpers import tf
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]), step)
    writer.flush()


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
        data = image_codec.encode_image(model, img, coder)
        m['enc_s'] = time.time() - t0
        t0 = time.time()
        symbols, _ = image_codec.decode_symbols(model, data)
        decoded = images.to_uint8(model.decode_symbols(symbols)[:h, :w])
        m['dec_s'] = time.time() - t0
        if not np.array_equal(symbols, r['symbols'][0]):
            raise ValError('Decoded symbols differ from the encoded ones')
        m['bpp_real'] = 8. * len(data) / (h * w)
        rec = decoded  # what a user of the file gets
    return m, rec


def validate_ckpt(model, paths, out_dir, dataset, flags, is_latest, writer, codec_distances=None):
    columns = ['img_name', 'bpp', 'ms-ssim', 'psnr'] + (['bpp_real', 'enc_s', 'dec_s'] if flags.real_bpp else [])
    rows = []
    bar = tqdm(paths, desc='ckpt {}'.format(model.step), unit='img', file=sys.stderr, dynamic_ncols=True)
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
    target = rd_curves.MEASURES_FILE if is_latest else rd_curves.older_measures_file(model.step)
    write_measures(os.path.join(out_dir, target), rows, columns)
    scalars = {'val/{}/avg_{}'.format(dataset, k.replace('-', '_')): v for k, v in means.items()}
    dist_scalars, dist_lines = rd_curves.distance_scalars('val/' + dataset, means, codec_distances or {})
    scalars.update(dist_scalars)
    log_scalars(writer, model.step, scalars)
    print('{} ckpt {} on {} ({} images): {}'.format(os.path.basename(model.log_dir), model.step, dataset,
                                                   len(rows), _means_text(rows, columns)))
    for line in dist_lines:
        print(line)
    return means


def _means_text(rows, columns):
    fmt = {'bpp': 'bpp {:.4f}', 'ms-ssim': 'ms-ssim {:.4f}', 'psnr': 'psnr {:.2f}', 'bpp_real': 'real bpp {:.4f}',
           'enc_s': 'enc {:.2f}s', 'dec_s': 'dec {:.2f}s'}
    return ', '.join(fmt[c].format(np.mean([r[c] for r in rows])) for c in columns[1:])


def validate_job(log_dir_root, job_id, paths, dataset, flags, codec_distances=None):
    log_dir = logdir_helpers.find_log_dir(log_dir_root, job_id)
    out_dir = rd_curves.measures_dir(log_dir_root, job_id, dataset)
    if flags.reset and os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    all_steps = model_files.all_ckpt_steps(model_files.ckpt_dir_of(log_dir))
    if not all_steps:
        raise ValError('No checkpoints in {}'.format(model_files.ckpt_dir_of(log_dir)))
    done = read_validated(out_dir)
    selected = select_ckpts(all_steps, flags.ckpt_step)
    todo = [s for s in selected if s not in done]
    print('{}: validating checkpoints {} ({} of {} selected not yet validated, {} in total, --ckpt_step {}) -> {}'
          .format(job_id, todo, len(todo), len(selected), len(all_steps), flags.ckpt_step, out_dir))
    if not todo:
        print('Nothing to do: all selected checkpoints were validated (use --reset to redo)')
        return
    ckpt_dir = model_files.ckpt_dir_of(log_dir)
    model = None
    writer = event_writer(out_dir)
    try:
        for step in todo:
            # a training job that is still running deletes old checkpoints (max_to_keep)
            if not os.path.isfile(model_files.ckpt_path(ckpt_dir, step) + '.index'):
                print('Checkpoint disappeared: {}'.format(model_files.ckpt_path(ckpt_dir, step)))
                continue
            if model is None:
                model = inference.Model(log_dir, ckpt_step=step)
            elif step != model.step:
                model.restore(step)
            validate_ckpt(model, paths, out_dir, dataset, flags, is_latest=(step == all_steps[-1]), writer=writer,
                          codec_distances=codec_distances)
            done.add(step)
            write_validated(out_dir, done)
    finally:
        writer.close()
        if model is not None:
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
        other_codecs_root = flags.other_codecs_root or rd_curves.default_other_codecs_root()
        codec_distances = rd_curves.load_codec_distances(other_codecs_root, dataset)
        for job_id in job_ids:
            validate_job(flags.log_dir_root, job_id, paths, dataset, flags, codec_distances)
    except (ValError, image_codec.CodecError, images.ImageError, model_files.ModelError, ValueError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
