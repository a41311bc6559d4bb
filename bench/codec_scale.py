#!/usr/bin/env python
"""How the codec scales with image size: seconds per megapixel and peak memory of `codec.py`.

    python bench/codec_scale.py [--images DIR] [--sizes kodak,6mp,24mp] [--model LOG_DIR] [-- CODEC ARGS]

Inputs are mosaics of the photos in --images (default: samples/), cropped to Kodak size (768 x 512),
6 MP (3072 x 2048) and 24 MP (6000 x 4000), so they hold natural content at every size. Each size is
encoded and decoded with the command-line tool in a child process, as a user runs it; the wall time
(start-up included, printed separately: the time of `codec.py --help`) and the child's peak RSS are
measured. Per size: encode and decode seconds per megapixel, peak RSS, bpp, and the ratio of the time per
megapixel to the Kodak-size one (linear scaling = 1.0).
"""
import argparse
import glob
import os
import subprocess
import sys
import re
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {'kodak': (512, 768), '6mp': (2048, 3072), '24mp': (4000, 6000)}


def mosaic(paths, height, width):
    """Photos laid side by side, row after row (cycling), cropped to height x width."""
    out = np.zeros((height, width, 3), np.uint8)
    photos = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
    y, i = 0, 0
    while y < height:
        x, row_h = 0, 0
        while x < width:
            p = photos[i % len(photos)]
            i += 1
            h, w = min(p.shape[0], height - y), min(p.shape[1], width - x)
            out[y:y + h, x:x + w] = p[:h, :w]
            x += w
            row_h = max(row_h, h)
        y += row_h
    return out


def photo_paths(directory):
    paths = sorted(glob.glob(os.path.join(directory, '*.png')) + glob.glob(os.path.join(directory, '*.jpg')))
    if not paths:
        sys.exit('error: no .png/.jpg photos in {}'.format(directory))
    return paths


def run_child(args):
    """:return: (wall seconds, work seconds as codec.py reports them, peak RSS in MB, exit status, stderr)"""
    t0 = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, 'codec.py')] + args, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.time() - t0
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors='replace'), err.read().decode(errors='replace')
    # codec.py ends its line with the seconds of the work itself (model loaded, file read or written)
    work = re.findall(r'([0-9.]+) s\s*$', text.strip())
    return wall, float(work[-1]) if work else float('nan'), usage.ru_maxrss / 1024., \
        os.waitstatus_to_exitcode(status), errors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', default=os.path.join(ROOT, 'samples'), help='photos for the mosaics')
    p.add_argument('--sizes', default='kodak,6mp,24mp', help='comma list of {}'.format(','.join(SIZES)))
    p.add_argument('--model', default=None, help='model dir (default: the shipped middle model)')
    p.add_argument('codec_args', nargs='*', help='extra arguments for both commands (after --)')
    flags = p.parse_args(argv)
    paths = photo_paths(flags.images)
    sizes = [s.strip() for s in flags.sizes.split(',') if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        sys.exit('bench/codec_scale.py: error: unknown size(s) {}; choose from {}'.format(unknown, list(SIZES)))
    print('start-up (codec.py --help): {:.2f} s'.format(run_child(['--help'])[0]))
    print('wall = whole command; work = what codec.py reports (after start-up and model loading)')
    print('{:>6} {:>10} | {:>7} {:>7} {:>7} {:>8} | {:>7} {:>7} {:>7} {:>8} | {:>7} | {}'.format(
        'size', 'pixels', 'enc wall', 'work', 'work/MP', 'peak MB', 'dec wall', 'work', 'work/MP', 'peak MB', 'bpp',
        'work/MP vs kodak'))
    model = [flags.model] if flags.model else []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in sizes:
            h, w = SIZES[name]
            src, cpm, out = (os.path.join(tmp, name + ext) for ext in ('.png', '.cpm', '.out.png'))
            Image.fromarray(mosaic(paths, h, w)).save(src)
            mp = h * w / 1e6
            enc = run_child(['encode'] + model + [src, '-o', cpm] + flags.codec_args)
            dec = run_child(['decode', cpm, '-o', out] + (['--model'] + model if model else []) + flags.codec_args) \
                if enc[3] == 0 else (float('nan'),) * 3 + (1, '')
            for what, r in (('encode', enc), ('decode', dec)):
                if r[3] != 0:
                    print('{} {} failed (exit {}): {}'.format(name, what, r[3], r[4].strip().splitlines()[-1:]))
            bpp = 8. * os.path.getsize(cpm) / (h * w) if os.path.exists(cpm) else float('nan')
            per_mp = (enc[1] / mp, dec[1] / mp)
            base = base or per_mp
            print('{:>6} {:>10,} | {:7.2f} {:7.2f} {:7.3f} {:8.0f} | {:7.2f} {:7.2f} {:7.3f} {:8.0f} | {:7.4f} | '
                  'enc {:.2f}x, dec {:.2f}x'.format(name, h * w, enc[0], enc[1], per_mp[0], enc[2], dec[0], dec[1],
                                                   per_mp[1], dec[2], bpp, per_mp[0] / base[0], per_mp[1] / base[1]),
                  flush=True)


if __name__ == '__main__':
    main()
