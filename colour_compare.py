#!/usr/bin/env python
"""Colour fidelity of one model's reconstructions against WebP at the same rate, image by image.

    python colour_compare.py VAL_OUT_DIR IMAGES [--only NAME,...] [--crop NAME:X,Y,W,H ...] [-o OUT_DIR]
        [--webp_method 6]

MS-SSIM on RGB barely sees hue: a model can turn green eyes yellow-orange where WebP at the same rate keeps
them. This script reports luma and chroma PSNR separately, for our model and for WebP at the same rate.

VAL_OUT_DIR is an output dir of val.py run with --save_ours (and preferably --real_bpp): it holds
measures.csv (img_name,bpp,ms-ssim,psnr[,bpp_real,enc_s,dec_s]) and imgs/<name without extension>.png, our
reconstructions. IMAGES is the directory of the originals, `IMAGES/<img_name>`. The rate of ours is
bpp_real (the whole file) when measures.csv has it, else bpp (the context model's estimate).

Per image (every image of measures.csv, or those --only names, without extension, e.g. kodim01,kodim23):
* WebP at the same rate: Pillow WebP, lossy, --webp_method (default 6, as other_codecs.py), at the integer
  quality 0..100 found by bisection whose bpp (8 * whole file bytes / pixels) is the largest not above
  ours; if even quality 0 is above ours, quality 0 is taken and flagged (column webp_above_rate = 1).
* PSNR (peak 255) of Y, Cb and Cr (ITU-R BT.601 full range, the JPEG/JFIF convention, in float64 from the
  uint8 RGB images, not rounded), of RGB, and MS-SSIM on RGB, for ours and for WebP. Identical channels
  give PSNR inf (as ms_ssim_np.psnr).
* Crops: every --crop whose NAME is the image name without extension (e.g. kodim23:300,150,192,128: x, y of
  the top-left corner, width, height, in pixels) is written as OUT_DIR/crop_<NAME>_<X>_<Y>.png: original |
  ours | WebP, each scaled up 2x (nearest neighbour), with a white gap between them; a caption line with
  both bpps and the Y/Cb/Cr PSNR of the crop is printed.

Output: OUT_DIR/colour.csv (one row per image; OUT_DIR defaults to VAL_OUT_DIR/colour) and, on stdout, the
means over the images as a Markdown table for the README.
"""
import argparse
import collections
import os
import sys

import numpy as np
from PIL import Image, features
from tqdm import tqdm

import images
import ms_ssim_np
import other_codecs
import rd_curves

DEFAULT_WEBP_METHOD = 6  # other_codecs.py's setting: the comparison uses the same WebP as the RD curves
MAX_QUALITY = 100
CROP_SCALE = 2
CROP_GAP = 4  # white pixels between the panels (in the scaled-up image)
OUT_SUBDIR = 'colour'
CSV_NAME = 'colour.csv'
RECONSTRUCTIONS_SUBDIR = 'imgs'  # where val.py --save_ours writes them

# ITU-R BT.601 full range (JPEG/JFIF): rows give Y, Cb, Cr from R, G, B; Cb and Cr are offset by 128.
YCBCR_MATRIX = np.array([[0.299, 0.587, 0.114],
                         [-0.168736, -0.331264, 0.5],
                         [0.5, -0.418688, -0.081312]])
YCBCR_OFFSET = np.array([0., 128., 128.])

METRICS = ('psnr_y', 'psnr_cb', 'psnr_cr', 'psnr_rgb', 'ms_ssim')
COLUMNS = (('img_name', 'bpp_ours', 'bpp_webp', 'webp_quality', 'webp_above_rate')
           + tuple('ours_' + m for m in METRICS) + tuple('webp_' + m for m in METRICS))

Crop = collections.namedtuple('Crop', 'name x y w h')
# quality: int; bpp: float; decoded: uint8 H x W x 3; above_rate: True if even quality 0 exceeds the target
WebPAtRate = collections.namedtuple('WebPAtRate', 'quality bpp decoded above_rate')


class ColourError(Exception):
    """A user-facing error: main prints it as one line, without a traceback."""


# Colour and metrics --------------------------------------------------------------------------------------


def rgb_to_ycbcr(rgb):
    """RGB (uint8 or float, ... x 3, values 0..255) -> float64 YCbCr of the same shape, not rounded
    (Pillow's convert('YCbCr') truncates to uint8, which would add up to 1 level of error to the PSNRs)."""
    return np.asarray(rgb, dtype=np.float64) @ YCBCR_MATRIX.T + YCBCR_OFFSET


def channel_psnrs(ycc1, ycc2):
    """PSNR (peak 255) of each channel of two float64 H x W x 3 images -> tuple of 3 floats (inf where a
    channel is identical)."""
    return tuple(ms_ssim_np.psnr(ycc1[..., c:c + 1], ycc2[..., c:c + 1]) for c in range(3))


def quality_measures(original, rec):
    """{metric: float} for METRICS of a reconstruction; both uint8 H x W x 3."""
    y, cb, cr = channel_psnrs(rgb_to_ycbcr(original), rgb_to_ycbcr(rec))
    return {'psnr_y': y, 'psnr_cb': cb, 'psnr_cr': cr, 'psnr_rgb': ms_ssim_np.psnr(original, rec),
            'ms_ssim': ms_ssim_np.ms_ssim(original, rec)}


def bpp_of(num_bytes, shape):
    """8 * bytes / pixels of a file holding an image of shape H x W (x C)."""
    return 8. * num_bytes / (shape[0] * shape[1])


# WebP at a rate ----------------------------------------------------------------------------------------


def webp_at_rate(rgb, target_bpp, method=DEFAULT_WEBP_METHOD):
    """WebP of uint8 H x W x 3 at the highest quality whose bpp is not above target_bpp -> WebPAtRate.

    Bisection on the integer quality 0..100, keeping bpp(lo) <= target < bpp(hi): about 9 encodes instead of
    101. WebP's bpp is monotone in the quality only nearly (on small images it can drop by ~1% from one
    quality to the next), so the quality q returned always has bpp(q) <= target and, for q < 100,
    bpp(q + 1) > target, but a higher quality a few steps up may also fit under the target. If even quality
    0 is above the target, quality 0 is returned with above_rate=True.
    """
    cache = {}

    def at(q):
        if q not in cache:
            data, decoded = other_codecs._webp(rgb, q, method)  # the RD curves' WebP
            cache[q] = WebPAtRate(q, bpp_of(len(data), rgb.shape), decoded, False)
        return cache[q]

    if at(0).bpp > target_bpp:
        return at(0)._replace(above_rate=True)
    if at(MAX_QUALITY).bpp <= target_bpp:
        return at(MAX_QUALITY)
    lo, hi = 0, MAX_QUALITY
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).bpp <= target_bpp:
            lo = mid
        else:
            hi = mid
    return at(lo)


# Crops ------------------------------------------------------------------------------------------------


def parse_crop(text):
    """'kodim23:300,150,192,128' -> Crop(name, x, y, w, h); argparse type (ValueError -> usage error)."""
    name, sep, box = text.rpartition(':')
    try:
        x, y, w, h = (int(v) for v in box.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected NAME:X,Y,W,H with integers, got {!r}'.format(text)) from None
    if not sep or not name:
        raise argparse.ArgumentTypeError('expected NAME:X,Y,W,H, got {!r}'.format(text))
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError('need X, Y >= 0 and W, H > 0, got {!r}'.format(text))
    return Crop(name, x, y, w, h)


def crop_file_name(crop):
    return 'crop_{}_{}_{}.png'.format(crop.name, crop.x, crop.y)


def check_crop(crop, height, width):
    """ColourError if the crop does not lie inside an image of height x width."""
    if crop.x + crop.w > width or crop.y + crop.h > height:
        raise ColourError('Crop {}:{},{},{},{} (x {}..{}, y {}..{}) is outside the image, which is {}x{} (WxH)'
                          .format(crop.name, crop.x, crop.y, crop.w, crop.h, crop.x, crop.x + crop.w - 1,
                                  crop.y, crop.y + crop.h - 1, width, height))


def crop_region(img, crop):
    """The crop of an H x W (x C) array: h x w (x C), a view."""
    return img[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w]


def crop_panel(full_images, crop, scale=CROP_SCALE, gap=CROP_GAP):
    """The crop of each uint8 H x W x 3 image, scaled up by `scale` (nearest neighbour), side by side with
    `gap` white columns between them -> uint8 (scale h) x (n scale w + (n - 1) gap) x 3."""
    panels = []
    for i, img in enumerate(full_images):
        if i:
            panels.append(np.full((crop.h * scale, gap, 3), 255, np.uint8))
        panels.append(np.repeat(np.repeat(crop_region(img, crop), scale, axis=0), scale, axis=1))
    return np.concatenate(panels, axis=1)


def _ycc_text(psnrs):
    return '/'.join('{:.2f}'.format(p) for p in psnrs)


def crop_caption(crop, bpp_ours, ycc_orig, ycc_ours, webp, ycc_webp):
    """One line: the crop file, both bpps, the Y/Cb/Cr PSNR of the crop region (ycc_*: float64 H x W x 3)."""
    def psnrs(ycc):
        return channel_psnrs(crop_region(ycc_orig, crop), crop_region(ycc, crop))
    return ('{} ({} x={} y={} {}x{}; original | ours | WebP): ours {:.3f} bpp, Y/Cb/Cr PSNR {} dB | '
            'WebP q{} {:.3f} bpp{}, Y/Cb/Cr PSNR {} dB'.format(
                crop_file_name(crop), crop.name, crop.x, crop.y, crop.w, crop.h, bpp_ours,
                _ycc_text(psnrs(ycc_ours)), webp.quality, webp.bpp,
                ' (above ours even at quality 0)' if webp.above_rate else '', _ycc_text(psnrs(ycc_webp))))


# Inputs ------------------------------------------------------------------------------------------------


def reconstruction_path(val_out_dir, img_name):
    """Where val.py --save_ours wrote the reconstruction of img_name (e.g. kodim01.png)."""
    return os.path.join(val_out_dir, RECONSTRUCTIONS_SUBDIR, os.path.splitext(img_name)[0] + '.png')


def read_measures(val_out_dir):
    """(rd_curves.Measures, name of the rate column: 'bpp_real' if present, else 'bpp')."""
    path = os.path.join(val_out_dir, rd_curves.MEASURES_FILE)
    if not os.path.isfile(path):
        raise ColourError('No {} in {} (expected an output dir of val.py run with --save_ours)'.format(
            rd_curves.MEASURES_FILE, val_out_dir))
    measures = rd_curves.Measures(path)
    return measures, ('bpp_real' if measures.has('bpp_real') else 'bpp')


def _first_names(names, count=10):
    """The first `count` of names, sorted, for an error message."""
    return ', '.join(sorted(names)[:count]) + (', ...' if len(names) > count else '')


def select_images(names, only):
    """Indices into names (image file names, in measures.csv's order) of the images to compare: all, or those
    whose name without extension is in only (a list; every one must be there)."""
    if not only:
        return list(range(len(names)))
    stems = [os.path.splitext(n)[0] for n in names]
    missing = [o for o in only if o not in stems]
    if missing:
        raise ColourError('--only {}: not in {} (names without extension: {})'.format(
            ', '.join(missing), rd_curves.MEASURES_FILE, _first_names(stems)))
    return [i for i, s in enumerate(stems) if s in only]


def _image_size(path):
    """(height, width) from the header of a readable image file."""
    images.check_readable(path)
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def check_inputs(val_out_dir, images_dir, names, crops):
    """Everything that can be checked cheaply, before the slow per-image work: the reconstructions and the
    originals exist, every crop names an image and lies inside it, no two crops write the same file.
    :return: [(img_name, original path, reconstruction path)]"""
    if not os.path.isdir(images_dir):
        raise ColourError('IMAGES {} is not a directory'.format(images_dir))
    jobs = []
    sizes = {}
    for name in names:
        rec_path = reconstruction_path(val_out_dir, name)
        if not os.path.isfile(rec_path):
            raise ColourError('Missing reconstruction {} of {} (listed in {}): run val.py with --save_ours'
                              .format(rec_path, name, rd_curves.MEASURES_FILE))
        orig_path = os.path.join(images_dir, name)
        images.check_readable(orig_path)
        sizes[os.path.splitext(name)[0]] = _image_size(rec_path)
        jobs.append((name, orig_path, rec_path))
    seen = set()
    for crop in crops:
        if crop.name not in sizes:
            raise ColourError('--crop {}: no image of that name in {} (names without extension: {})'.format(
                crop.name, rd_curves.MEASURES_FILE, _first_names(sizes)))
        check_crop(crop, *sizes[crop.name])
        if crop_file_name(crop) in seen:
            raise ColourError('Two crops of {} start at x={} y={}: both would be {}'.format(
                crop.name, crop.x, crop.y, crop_file_name(crop)))
        seen.add(crop_file_name(crop))
    return jobs


def load_pair(orig_path, rec_path):
    """(original, reconstruction), uint8 H x W x 3 each, with the same shape; notes about the original's
    conversion go to stderr."""
    original, note = images.load_rgb(orig_path)
    if note:
        tqdm.write('Note: {}: {}'.format(orig_path, note), file=sys.stderr)
    rec, _ = images.load_rgb(rec_path)
    if original.shape != rec.shape:
        raise ColourError('Size mismatch: original {} is {}x{} but reconstruction {} is {}x{} (WxH)'.format(
            orig_path, original.shape[1], original.shape[0], rec_path, rec.shape[1], rec.shape[0]))
    return original, rec


# Per image and summary ----------------------------------------------------------------------------------


def compare_image(img_name, original, rec, bpp_ours, method=DEFAULT_WEBP_METHOD):
    """(CSV row dict with COLUMNS as keys, WebPAtRate) for one image; original, rec uint8 H x W x 3."""
    webp = webp_at_rate(original, bpp_ours, method)
    row = {'img_name': img_name, 'bpp_ours': bpp_ours, 'bpp_webp': webp.bpp, 'webp_quality': webp.quality,
           'webp_above_rate': int(webp.above_rate)}
    for who, img in (('ours', rec), ('webp', webp.decoded)):
        row.update({'{}_{}'.format(who, k): v for k, v in quality_measures(original, img).items()})
    return row, webp


def write_csv(path, rows):
    def fmt(v):
        return '{:.6f}'.format(v) if isinstance(v, float) else str(v)
    rd_curves.write_csv_atomic(path, COLUMNS, [[fmt(r[c]) for c in COLUMNS] for r in rows])


def means_table(rows, ours_label):
    """The means over the rows as a Markdown table (ours vs WebP): bpp, Y / Cb / Cr / RGB PSNR, MS-SSIM."""
    def mean(column):
        return float(np.mean([r[column] for r in rows]))
    lines = ['| codec | bpp | Y PSNR [dB] | Cb PSNR [dB] | Cr PSNR [dB] | RGB PSNR [dB] | MS-SSIM (RGB) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for label, who in ((ours_label, 'ours'), ('WebP, same rate', 'webp')):
        lines.append('| {} | {:.3f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.4f} |'.format(
            label, mean('bpp_' + who), *(mean('{}_{}'.format(who, m)) for m in METRICS)))
    return '\n'.join(lines)


def run(val_out_dir, images_dir, crops=(), out_dir=None, method=DEFAULT_WEBP_METHOD, only=None):
    """Compares every image of val_out_dir's measures.csv (or those named in only, without extension); writes
    colour.csv and the crops, prints the crop captions and the means table. :return: the CSV rows"""
    if not features.check('webp'):
        raise ColourError("Pillow has no WebP support (PIL.features.check('webp') is False)")
    out_dir = out_dir or os.path.join(val_out_dir, OUT_SUBDIR)
    measures, rate_column = read_measures(val_out_dir)
    chosen = select_images(measures.img_names, only)
    jobs = check_inputs(val_out_dir, images_dir, [measures.img_names[i] for i in chosen], crops)
    bpps = [measures.columns[rate_column][i] for i in chosen]
    print('Rate of ours: {}'.format('bpp_real (whole file)' if rate_column == 'bpp_real' else
                                    "bpp (the context model's estimate; val.py --real_bpp gives real files)"))
    rows = []
    bar = tqdm(jobs, desc='colour', unit='img', file=sys.stderr, dynamic_ncols=True)
    for (name, orig_path, rec_path), bpp_ours in zip(bar, bpps):
        original, rec = load_pair(orig_path, rec_path)
        row, webp = compare_image(name, original, rec, float(bpp_ours), method)
        rows.append(row)
        if webp.above_rate:
            tqdm.write('Note: {}: WebP at quality 0 needs {:.4f} bpp, more than ours ({:.4f}); taking quality 0'
                       .format(name, webp.bpp, bpp_ours), file=sys.stderr)
        stem = os.path.splitext(name)[0]
        for crop in (c for c in crops if c.name == stem):
            check_crop(crop, *original.shape[:2])  # the early check read a header, which ignores EXIF orientation
            panel = crop_panel([original, rec, webp.decoded], crop)
            # for the README, in git: small files
            images.save_png(os.path.join(out_dir, crop_file_name(crop)), panel, images.SMALL_PNG)
            tqdm.write(crop_caption(crop, float(bpp_ours), rgb_to_ycbcr(original), rgb_to_ycbcr(rec), webp,
                                    rgb_to_ycbcr(webp.decoded)), file=sys.stdout)
    bar.close()
    csv_path = os.path.join(out_dir, CSV_NAME)
    write_csv(csv_path, rows)
    qualities = [r['webp_quality'] for r in rows]
    above = sum(r['webp_above_rate'] for r in rows)
    print('\nMeans over {} images of {} (rate of ours: {}); WebP lossy, method {}, quality {}..{} per image{}:\n'
          .format(len(rows), val_out_dir, rate_column, method, min(qualities), max(qualities),
                  ', {} image(s) above our rate even at quality 0'.format(above) if above else ''))
    print(means_table(rows, 'ours ({})'.format(os.path.basename(os.path.normpath(val_out_dir)))))
    print('\nWrote {}'.format(csv_path))
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('val_out_dir', metavar='VAL_OUT_DIR',
                   help='output dir of val.py --save_ours: measures.csv and imgs/<name>.png')
    p.add_argument('images', metavar='IMAGES', help='directory of the original images (IMAGES/<img_name>)')
    p.add_argument('--only', type=lambda t: [n for n in t.split(',') if n], metavar='NAME,...',
                   help='compare only these images (names without extension, comma-separated), e.g. '
                        'kodim01,kodim03,kodim05,kodim14,kodim20,kodim23; default: all of measures.csv')
    p.add_argument('--crop', action='append', type=parse_crop, default=[], metavar='NAME:X,Y,W,H',
                   help='write original | ours | WebP of this region of image NAME (without extension) to '
                        'OUT_DIR/crop_NAME_X_Y.png; repeatable')
    p.add_argument('-o', '--out_dir', metavar='OUT_DIR', help='default: VAL_OUT_DIR/{}'.format(OUT_SUBDIR))
    p.add_argument('--webp_method', type=int, default=DEFAULT_WEBP_METHOD, choices=range(7), metavar='0..6',
                   help='WebP encoder effort (default %(default)s, slowest/best, as other_codecs.py)')
    return p.parse_args(argv)


def main(argv=None):
    flags = parse_args(argv)
    try:
        run(flags.val_out_dir, flags.images, flags.crop, flags.out_dir, flags.webp_method, flags.only)
    except (ColourError, rd_curves.RDError, images.ImageError) as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
