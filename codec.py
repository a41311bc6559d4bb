#!/usr/bin/env python
"""Compress images to files and back with a trained model.

    python codec.py encode [MODEL_DIR] IMAGE -o FILE [--coder fast|python] [--blocks RxC] [--max_memory MB]
    python codec.py decode FILE -o IMAGE [--model MODEL_DIR] [--max_memory MB]

MODEL_DIR is a training log dir (the default is the shipped middle model). Without --model, decode uses the
shipped model that encoded the file (found by the fingerprint in the header). The file holds a header
(magic, version, coder, block grid, model fingerprint, image size, payload length, CRC-32) and the
arithmetic-coded symbol volume (format and API: image_codec.py). Decoding with another model than the one
that encoded is refused.
"""
import argparse
import sys
import time

import arithmetic_coding
import file_helpers
import image_codec
import images
from image_codec import CodecError


def _parse_blocks(text):
    try:
        r, c = (int(v) for v in text.lower().split('x'))
        if r < 1 or c < 1 or r > 64 or c > 64:
            raise ValueError
        return r, c
    except ValueError:
        raise argparse.ArgumentTypeError('--blocks takes RxC with 1 <= R, C <= 64, e.g. 2x2; got {!r}'.format(text))


def _positive_mb(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError('--max_memory takes megabytes > 0, got {!r}'.format(text))
    return value


def cmd_encode(flags):
    try:
        img, note = images.load_rgb(flags.image)
    except images.ImageError as e:
        raise CodecError(str(e)) from None
    if note:
        print('Note: {}: {}'.format(flags.image, note), file=sys.stderr)
    model = image_codec.load_model(flags.model_dir)
    t0 = time.time()
    data = image_codec.encode_image(model, img, flags.coder, flags.blocks, flags.max_memory)
    file_helpers.atomic_write_bytes(flags.output, data)
    h, w = img.shape[:2]
    print('{} -> {}: {} bytes, {:.4f} bpp, {:.2f} s'.format(flags.image, flags.output, len(data),
                                                          8. * len(data) / (h * w), time.time() - t0))


def cmd_decode(flags):
    try:
        with open(flags.file, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise CodecError('Cannot read {}: {}'.format(flags.file, e)) from None
    hdr = image_codec.parse_header(data)  # fail fast, before loading a model
    if flags.model:
        model = image_codec.load_model(flags.model)
    else:
        model = image_codec.find_model_for(hdr['fingerprint'])
        print('Model: {} (the one that encoded this file)'.format(model.log_dir), file=sys.stderr)
    t0 = time.time()
    img = image_codec.decode_image(model, data, flags.max_memory)
    images.save_png(flags.output, img)
    print('{} -> {}: {}x{}, {:.2f} s'.format(flags.file, flags.output, img.shape[1], img.shape[0],
                                             time.time() - t0))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    enc = sub.add_parser('encode', help='image -> compressed file')
    enc.add_argument('model_dir', nargs='?', default=None,
                     help='training log dir of the model (default: the shipped middle model)')
    enc.add_argument('image', help='any PIL-readable image')
    enc.add_argument('-o', '--output', required=True, help='compressed file to write')
    enc.add_argument('--coder', choices=arithmetic_coding.CODERS, default=arithmetic_coding.DEFAULT_CODER,
                     help='fast: range coder (constriction); python: the pure-Python reference coder')
    enc.add_argument('--blocks', type=_parse_blocks, default=None, metavar='RxC',
                     help='code RxC tiles of the symbol volume independently, in parallel processes '
                          '(faster on many cores, costs some rate). Default: as many as --max_memory needs '
                          '(1x1 up to a few megapixels)')
    dec = sub.add_parser('decode', help='compressed file -> PNG')
    for sp in (enc, dec):
        sp.add_argument('--max_memory', type=_positive_mb, default=image_codec.DEFAULT_MAX_MEMORY_MB, metavar='MB',
                        help='peak memory to stay under: photos are coded in tiles sized for it. '
                             'Default: %(default)s')
    dec.add_argument('file')
    dec.add_argument('-o', '--output', required=True, help='PNG to write')
    dec.add_argument('--model', default=None,
                     help='model log dir (must be the encoding model; default: the shipped model whose '
                          'fingerprint the file carries)')
    flags = p.parse_args(argv)
    if flags.command == 'encode' and flags.model_dir is None:
        flags.model_dir = image_codec.default_model_dir()
    return flags


def main(argv=None):
    flags = parse_args(argv)
    try:
        (cmd_encode if flags.command == 'encode' else cmd_decode)(flags)
    except CodecError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

