#!/usr/bin/env python
"""Rate-distortion points of classical codecs on a set of images, for plotter.py.

    python other_codecs.py IMAGES [--codecs jpeg,jpeg444,webp,jpeg2000,avif] [--out OTHER_CODECS_ROOT]
                                  [--jobs N] [--dataset NAME] [--qualities CODEC=Q1,Q2,...]

IMAGES is a directory of images or an (escaped) glob of PIL-readable images; every image is read as val.py
and codec.py read it (images.load_rgb: EXIF orientation applied, 16-bit scaled by 255/65535, alpha dropped,
...) and compressed at a grid of settings per codec:

* jpeg:      Pillow JPEG, 4:2:0 chroma subsampling (Pillow's default), quality grid;
* jpeg444:   Pillow JPEG without chroma subsampling (subsampling=0), quality grid;
* webp:      Pillow WebP (lossy, method=6 = slowest/best), quality grid;
* jpeg2000:  Pillow/OpenJPEG, irreversible 9/7 wavelet + multiple component (colour) transform, one
             quality layer with quality_mode='rates'; the grid is of compression ratios (vs. 24 bpp RGB),
             i.e. target bpp = 24 / ratio. (Pillow's defaults, reversible 5/3 and no colour transform,
             are far worse at low rates; the colour transform alone is worth several dB.) The file is a
             raw J2K codestream (no JP2 container);
* avif:      Pillow AVIF (libavif, needs PIL.features.check('avif')), 4:4:4, speed 6, quality grid;
* bpg:       `bpgenc -q Q -f 444` / `bpgdec` if both are on the PATH (grid of quantisers Q, lower = better);
* kakadu:    `kdu_compress -rate B -no_weights` / `kdu_expand` if both are on the PATH (grid of target bpp B).

A codec that is unavailable is skipped with a note. The compressed bytes are decoded again (in memory
with Pillow, via temp files for the external tools) and compared with the RGB input using ms_ssim_np
(the same MS-SSIM and PSNR as val.py); `ssim` is the single-scale SSIM (ms_ssim_np.ssim_and_cs at full
resolution).

bpp = 8 * (size of the whole compressed file in bytes) / (number of pixels), i.e. *including* all headers
and container overhead (the original repo excluded headers for JPEG, WebP and Kakadu, which favours the
codecs slightly at low rates; on a 768x512 Kodak image 100 header bytes are ~0.002 bpp).

Output, per image and codec (the original repo's layout and column names), written atomically:
    <OUT>/<codec>_<dataset>/<image name without extension>_out.csv   with header  q,bpp,ssim,msssim,psnr
one row per grid setting (q = quality, compression ratio for jpeg2000, target bpp for kakadu, quantiser
for bpg). OUT defaults to $OTHER_CODECS_ROOT, else `other_codecs`; the dataset name defaults to the last
path component of the image directory. Images whose CSV exists already are skipped, so an interrupted run
can be resumed; unreadable images are reported and skipped.
"""
import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from PIL import Image, features
from tqdm import tqdm

import images as images_lib
import ms_ssim_np
import rd_curves

# Grids chosen so that the per-image curves span ~0.05 (or the codec's minimum) to >= 1.5 bpp on Kodak for
# every image (the averaging in plotter.py keeps only bpps covered by all images), with steps of <~0.15 bpp
# below 1.4 bpp (linear interpolation between the points).
GRIDS = {
    'jpeg': [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 21, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95],
    'jpeg444': [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 21, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90,
                95],
    'webp': [0, 1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 88, 90, 92, 95, 100],
    # compression ratios; 24 / ratio = target bpp: 0.05 0.075 0.1 0.15 0.2 0.25 0.3 0.375 0.43 0.5 0.6 0.71
    # 0.8 0.89 1 1.09 1.2 1.33 1.5 1.71 2 2.53
    'jpeg2000': [480, 320, 240, 160, 120, 96, 80, 64, 56, 48, 40, 34, 30, 27, 24, 22, 20, 18, 16, 14, 12, 9.5],
    'avif': [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90],
    'bpg': [51, 48, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19],
    'kakadu': [0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.05, 1.2, 1.5, 1.75, 2.0, 2.5],
}
ALL_CODECS = ('jpeg', 'jpeg444', 'webp', 'jpeg2000', 'avif', 'bpg', 'kakadu')
AVIF_SPEED = 6


# Encoders: (rgb uint8 HxWx3, setting) -> (compressed bytes, decoded rgb uint8 HxWx3) -----------------------


def _pil_roundtrip(rgb, **save_kwargs):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, **save_kwargs)  # fromarray: no metadata/ICC profile gets embedded
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as dec:
        return data, np.asarray(dec.convert('RGB'))


def _jpeg(rgb, q):
    return _pil_roundtrip(rgb, format='JPEG', quality=int(q), subsampling=2)


def _jpeg444(rgb, q):
    return _pil_roundtrip(rgb, format='JPEG', quality=int(q), subsampling=0)


def _webp(rgb, q, method=6):
    return _pil_roundtrip(rgb, format='WEBP', quality=int(q), method=int(method), lossless=False)


def _jpeg2000(rgb, ratio):
    h, w = rgb.shape[:2]
    # OpenJPEG needs every resolution level to be >= 1 pixel: at most floor(log2(min side)) + 1 levels
    num_resolutions = int(min(6, np.floor(np.log2(min(h, w))) + 1))
    return _pil_roundtrip(rgb, format='JPEG2000', no_jp2=True, irreversible=True, mct=1,
                          quality_mode='rates', quality_layers=[float(ratio)], num_resolutions=num_resolutions)


def _avif(rgb, q):
    # max_threads=1: images already run in parallel processes
    return _pil_roundtrip(rgb, format='AVIF', quality=int(q), subsampling='4:4:4', speed=AVIF_SPEED,
                          max_threads=1)


def _run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError('{} failed ({}): {}'.format(cmd[0], proc.returncode,
                                                        proc.stdout.decode(errors='replace')[-500:]))


def _external_roundtrip(rgb, in_ext, out_ext, dec_ext, encode_cmd, decode_cmd):
    with tempfile.TemporaryDirectory(prefix='other_codecs_') as tmp:
        src = os.path.join(tmp, 'in' + in_ext)
        enc = os.path.join(tmp, 'enc' + out_ext)
        dec = os.path.join(tmp, 'dec' + dec_ext)
        Image.fromarray(rgb).save(src)
        _run(encode_cmd(src, enc))
        _run(decode_cmd(enc, dec))
        with open(enc, 'rb') as f:
            data = f.read()
        with Image.open(dec) as d:
            return data, np.asarray(d.convert('RGB'))


def _bpg(rgb, q):
    return _external_roundtrip(
        rgb, '.png', '.bpg', '.png',
        lambda src, enc: ['bpgenc', '-q', str(int(q)), '-f', '444', '-o', enc, src],
        lambda enc, dec: ['bpgdec', '-o', dec, enc])


def _kakadu(rgb, target_bpp):
    return _external_roundtrip(
        rgb, '.ppm', '.j2c', '.ppm',
        lambda src, enc: ['kdu_compress', '-i', src, '-o', enc, '-rate', str(target_bpp), '-no_weights'],
        lambda enc, dec: ['kdu_expand', '-i', enc, '-o', dec])


ENCODERS = {'jpeg': _jpeg, 'jpeg444': _jpeg444, 'webp': _webp, 'jpeg2000': _jpeg2000, 'avif': _avif,
            'bpg': _bpg, 'kakadu': _kakadu}


def codec_unavailable_reason(codec):
    """None if the codec can be used here, else a short reason."""
    pil_feature = {'jpeg': 'jpg', 'jpeg444': 'jpg', 'webp': 'webp', 'jpeg2000': 'jpg_2000', 'avif': 'avif'}
    tools = {'bpg': ('bpgenc', 'bpgdec'), 'kakadu': ('kdu_compress', 'kdu_expand')}
    if codec in pil_feature:
        if not features.check(pil_feature[codec]):
            return 'Pillow has no {} support (PIL.features.check({!r}) is False)'.format(codec, pil_feature[codec])
        return None
    if codec in tools:
        missing = [t for t in tools[codec] if shutil.which(t) is None]
        return '{} not on the PATH'.format(', '.join(missing)) if missing else None
    return 'unknown codec (known: {})'.format(', '.join(ALL_CODECS))


# Measuring ------------------------------------------------------------------------------------------------


def measure_point(rgb, decoded, num_bytes):
    """(bpp, ssim, msssim, psnr) of one decoded image; bpp = 8 * whole file bytes / pixels."""
    if decoded.shape != rgb.shape:
        raise RuntimeError('decoded shape {} != input shape {}'.format(decoded.shape, rgb.shape))
    bpp = 8. * num_bytes / (rgb.shape[0] * rgb.shape[1])
    ssim, _ = ms_ssim_np.ssim_and_cs(rgb[None].astype(np.float64), decoded[None].astype(np.float64))
    msssim = ms_ssim_np.ms_ssim(rgb, decoded)
    psnr = ms_ssim_np.psnr(rgb, decoded)
    return bpp, ssim, msssim, psnr


def _fmt(x, digits):
    return repr(x) if not np.isfinite(x) else '{:.{}f}'.format(x, digits)


def measure_image(codec, img_path, out_csv, grid):
    """Compresses one image at every grid setting and writes its CSV.

    :return: (status 'ok' or 'error', CSV path or message, what reading the image converted or None)
    """
    try:
        rgb, note = images_lib.load_rgb(img_path)
    except images_lib.ImageError as e:
        return 'error', 'Skipping unreadable image {}: {}'.format(img_path, e.reason), None
    rows = []
    try:
        for q in grid:
            data, decoded = ENCODERS[codec](rgb, q)
            bpp, ssim, msssim, psnr = measure_point(rgb, decoded, len(data))
            rows.append(['{:g}'.format(q), _fmt(bpp, 6), _fmt(ssim, 6), _fmt(msssim, 6), _fmt(psnr, 4)])
    except Exception as e:  # noqa: BLE001 - report, keep going with the other images
        return 'error', '{} failed on {} (setting {}): {}: {}'.format(codec, img_path, q, type(e).__name__, e), note
    rd_curves.write_csv_atomic(out_csv, rd_curves.CODEC_CSV_HEADER, rows)
    return 'ok', out_csv, note


def _measure_task(args):
    return measure_image(*args)


# Inputs ---------------------------------------------------------------------------------------------------


def _has_magic(s):
    return any(c in s for c in '*?[')


def list_images(images):
    """Sorted image paths from a directory (by extension) or a glob (every match that is a file)."""
    if os.path.isdir(images):
        return sorted(p for p in glob.glob(os.path.join(glob.escape(images), '*'))
                      if os.path.isfile(p) and images_lib.has_image_extension(p))
    if _has_magic(images):
        return sorted(p for p in glob.glob(images) if os.path.isfile(p))
    if os.path.isfile(images):
        return [images]
    return []


def dataset_name_from(images):
    """kodak for ../data/kodak, ../data/kodak/, ../data/kodak/*.png, some/imgs/\\*/\\*.jpg -> imgs."""
    if os.path.isdir(images):
        return os.path.basename(os.path.normpath(os.path.abspath(images)))
    parts = os.path.normpath(images).split(os.sep)
    static = []
    for part in parts[:-1]:  # the last component is the file (pattern)
        if _has_magic(part):
            break
        static.append(part)
    base = os.path.basename(os.path.abspath(os.sep.join(static) or '.'))
    return base or 'images'


def parse_qualities(specs):
    """['jpeg=10,50', 'webp=75'] -> {'jpeg': [10., 50.], 'webp': [75.]}."""
    grids = {}
    for spec in specs or []:
        for part in spec.split(';'):
            if not part.strip():
                continue
            codec, sep, values = part.partition('=')
            if not sep:
                raise ValueError('expected CODEC=Q1,Q2,..., got {!r}'.format(part))
            grids[codec.strip()] = [float(v) for v in values.split(',') if v.strip()]
    return grids


def run(images, codecs=ALL_CODECS, out_root=None, jobs=None, dataset=None, grids=None, log=print):
    """Measures all images for all available codecs (jobs: worker processes, None: one per CPU).
    Returns {codec: number of CSVs written}."""
    out_root = out_root or rd_curves.default_other_codecs_root()
    jobs = jobs or os.cpu_count() or 1
    dataset = dataset or dataset_name_from(images)
    grids = dict(GRIDS, **(grids or {}))
    paths = list_images(images)
    if not paths:
        raise rd_curves.RDError('No images found for {!r}'.format(images))
    readable = []
    for p in paths:  # header check once here, so an unreadable image is reported once, not per codec
        try:
            images_lib.check_readable(p)
            readable.append(p)
        except images_lib.ImageError as e:
            log('Skipping unreadable image {}: {}'.format(p, e.reason))
    paths = readable
    tasks = []
    for codec in codecs:
        reason = codec_unavailable_reason(codec)
        if reason:
            log('Skipping codec {}: {}'.format(codec, reason))
            continue
        out_dir = rd_curves.codec_dir(out_root, codec, dataset)
        os.makedirs(out_dir, exist_ok=True)
        todo = 0
        for p in paths:
            out_csv = rd_curves.codec_measures_path(out_dir, os.path.splitext(os.path.basename(p))[0])
            if os.path.exists(out_csv):
                continue
            tasks.append((codec, p, out_csv, list(grids[codec])))
            todo += 1
        log('{}: {} of {} images to do -> {}'.format(codec, todo, len(paths), out_dir))
    written = {}
    progress = tqdm(total=len(tasks), unit='img', file=sys.stderr, disable=not tasks)
    say = progress.write if log is print else log  # above the bar while it is drawn

    noted = set()

    def done(result, codec, img_path):
        status, msg, note = result
        if note and img_path not in noted:  # once per image, not once per codec
            noted.add(img_path)
            say('Note: {}: {}'.format(img_path, note))
        if status == 'ok':
            written[codec] = written.get(codec, 0) + 1
        else:
            say(msg)
        progress.update(1)

    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            done(_measure_task(t), t[0], t[1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_measure_task, t): t for t in tasks}
            for fut in as_completed(futures):
                done(fut.result(), futures[fut][0], futures[fut][1])
    progress.close()
    return written


def main(argv=None):
    p = argparse.ArgumentParser(
        description='Measure classical codecs (JPEG, JPEG 4:4:4, WebP, JPEG2000, AVIF; BPG and Kakadu if '
                    'installed) on a set of images. bpp = 8 * whole compressed file bytes (headers '
                    'included) / pixels.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Writes OUT/<codec>_<dataset>/<image>_out.csv with header q,bpp,ssim,msssim,psnr.')
    p.add_argument('images', help='directory of images, or an (escaped) glob of PIL-readable images')
    p.add_argument('--codecs', default=','.join(ALL_CODECS),
                   help='comma-separated subset of {} (default: all; unavailable ones are skipped)'
                   .format(','.join(ALL_CODECS)))
    p.add_argument('--out', help='OTHER_CODECS_ROOT (default: $OTHER_CODECS_ROOT, else other_codecs)')
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='parallel worker processes. Default: the number of CPUs (%(default)s)')
    p.add_argument('--dataset', help='dataset name for the output folders (default: last path component '
                                     'of the image directory)')
    p.add_argument('--qualities', action='append', metavar='CODEC=Q1,Q2,...',
                   help='override the grid of a codec (repeatable), e.g. --qualities jpeg=10,50,90')
    flags = p.parse_args(argv)
    codecs = [c.strip() for c in flags.codecs.split(',') if c.strip()]
    unknown = [c for c in codecs if c not in ALL_CODECS]
    if unknown:
        p.error('unknown codec(s) {}; choose from {}'.format(', '.join(unknown), ', '.join(ALL_CODECS)))
    try:
        grids = parse_qualities(flags.qualities)
    except ValueError as e:
        p.error('--qualities: {}'.format(e))
    bad = [c for c in grids if c not in ALL_CODECS]
    if bad:
        p.error('--qualities: unknown codec(s) {}'.format(', '.join(bad)))
    start = time.time()
    try:
        written = run(flags.images, codecs, flags.out, flags.jobs, flags.dataset, grids)
    except rd_curves.RDError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    print('Wrote {} CSV(s) ({}) in {:.1f}s'.format(
        sum(written.values()), ', '.join('{}: {}'.format(k, v) for k, v in sorted(written.items())) or '-',
        time.time() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
