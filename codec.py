#!/usr/bin/env python
"""Compress images to files and back with a trained model.

    python codec.py encode [MODEL_DIR] IMAGE -o FILE.cpm
    python codec.py encode IMAGE [IMAGE ...] -o OUT_DIR/ [--model MODEL_DIR]
    python codec.py decode FILE.cpm -o IMAGE.png
    python codec.py decode FILE [FILE ...] -o OUT_DIR/ [--model MODEL_DIR]
    options: [--coder fast|python] [--blocks RxC] [--max_memory MB] [--runtime auto|onnx|tensorflow]

The model is loaded once per call (the default is the shipped middle model; without --model, decode uses
the shipped model that encoded each file, found by the fingerprint in its header). With several inputs, or
an -o that is a directory or ends in '/', outputs go into that directory as <name>.cpm / <name>.png. A file
that fails is reported and the others are still done; the exit status is the number of failures (at most
100), 0 if all went well. Outputs are written atomically: a failure never leaves a partial file.

Models run on ONNX Runtime when their dir holds an export made by export_model.py (onnx/; the shipped
models do), which starts in well under a second; otherwise on TensorFlow (~10 s to start), with a note.

The file holds a header (magic, version, coder, block grid, model fingerprint, image size, payload length,
CRC-32) and the arithmetic-coded symbol volume (format and API: image_codec.py). Decoding with another model
than the one that encoded is refused.
"""
import argparse
import os
import sys
import time

import arithmetic_coding
import file_helpers
import image_codec
import images
from image_codec import CodecError

ENCODED_EXTENSION = '.cpm'
MAX_EXIT_STATUS = 100


def _parse_blocks(text):
    try:
        return image_codec.parse_blocks(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError('--blocks: {}'.format(e))


def _positive_mb(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError('--max_memory takes megabytes > 0, got {!r}'.format(text))
    return value


class _Models(object):
    """Models loaded once per call: the given one, or for decode one per fingerprint found in the files."""

    def __init__(self, flags, say):
        self.flags = flags
        self._say = say
        self._given = None
        self._by_fingerprint = {}

    def given(self):
        """The model of --model (or the default one), loaded on first use."""
        if self._given is None:
            self._given = image_codec.load_model(self.flags.model, self.flags.runtime)
        return self._given

    def for_fingerprint(self, fingerprint):
        """The shipped model that encoded a file (the search, and its failure, happen once per fingerprint)."""
        if fingerprint not in self._by_fingerprint:
            try:
                model = image_codec.find_model_for(fingerprint, runtime=self.flags.runtime)
                self._say('Model: {} (the one that encoded this file)'.format(model.log_dir))
            except CodecError as e:
                model = e
            self._by_fingerprint[fingerprint] = model
        found = self._by_fingerprint[fingerprint]
        if isinstance(found, CodecError):
            raise found
        return found


def encode_one(models, path, out_path, flags):
    """:return: the line to print"""
    try:
        img, note = images.load_rgb(path)
    except images.ImageError as e:
        raise CodecError(str(e)) from None
    if note:
        print('Note: {}: {}'.format(path, note), file=sys.stderr)
    model = models.given()
    t0 = time.time()
    data = image_codec.encode_image(model, img, flags.coder, flags.blocks, flags.max_memory)
    _write(out_path, data)
    h, w = img.shape[:2]
    return '{} -> {}: {} bytes, {:.4f} bpp, {:.2f} s'.format(path, out_path, len(data), 8. * len(data) / (h * w),
                                                           time.time() - t0)


def decode_one(models, path, out_path, flags):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise CodecError('Cannot read {}: {}'.format(path, e.strerror or e)) from None
    hdr = image_codec.parse_header(data)  # fail fast, before loading a model
    model = models.given() if flags.model else models.for_fingerprint(hdr['fingerprint'])
    t0 = time.time()
    img = image_codec.decode_image(model, data, flags.max_memory)
    try:
        images.save_png(out_path, img)
    except OSError as e:
        raise CodecError('Cannot write {}: {}'.format(out_path, e.strerror or e)) from None
    return '{} -> {}: {}x{}, {:.2f} s'.format(path, out_path, img.shape[1], img.shape[0], time.time() - t0)


def _write(path, data):
    try:
        file_helpers.atomic_write_bytes(path, data)
    except OSError as e:
        raise CodecError('Cannot write {}: {}'.format(path, e.strerror or e)) from None


def output_paths(inputs, output, extension):
    """Output path per input: `output` itself for one input (unless it is a directory or ends in '/'), else
    OUT_DIR/<input name without extension><extension>. CodecError if two inputs would write the same file."""
    as_dir = len(inputs) > 1 or output.endswith(('/', os.sep)) or os.path.isdir(output)
    if not as_dir:
        return [output]
    if os.path.exists(output) and not os.path.isdir(output):
        raise CodecError('-o {}: with several inputs, -o names a directory, but this is a file'.format(output))
    paths = [os.path.join(output, os.path.splitext(os.path.basename(p))[0] + extension) for p in inputs]
    seen = {}
    for inp, out in zip(inputs, paths):
        if out in seen:
            raise CodecError('{} and {} would both be written to {}: rename one, or code them in separate '
                             'calls'.format(seen[out], inp, out))
        seen[out] = inp
    return paths


def run(flags):
    """Codes every input; :return: the number of failures."""
    encode = flags.command == 'encode'
    outputs = output_paths(flags.inputs, flags.output, ENCODED_EXTENSION if encode else '.png')
    out_dir = os.path.dirname(outputs[0]) if len(outputs) == 1 else flags.output
    if out_dir and not os.path.isdir(out_dir):
        try:
            os.makedirs(out_dir)
        except OSError as e:
            raise CodecError('Cannot create the output directory {}: {}'.format(out_dir, e.strerror or e)) from None
    progress = _progress(len(flags.inputs))
    models = _Models(flags, lambda line: progress.write(line, sys.stderr))
    if flags.model:
        models.given()  # a model that cannot be loaded fails the call, not each file
    one = encode_one if encode else decode_one
    failed = []
    for inp, out in zip(flags.inputs, outputs):
        try:
            line = one(models, inp, out, flags)
        except CodecError as e:
            if len(flags.inputs) == 1:
                raise
            failed.append(inp)
            progress.write('Error: {}: {}'.format(inp, e), sys.stderr)
        else:
            progress.write(line, sys.stdout)
        progress.update()
    progress.close()
    if failed:
        print('Error: {} of {} files failed: {}'.format(len(failed), len(flags.inputs), ', '.join(failed)),
              file=sys.stderr)
    return len(failed)


def _progress(total):
    """A progress bar on stderr for several files (its write() prints above it)."""
    if total > 1:
        from tqdm import tqdm
        bar = tqdm(total=total, unit='file', file=sys.stderr, dynamic_ncols=True)
        bar.write = lambda line, file: tqdm.write(line, file=file)
        return bar
    return _NoProgress()


class _NoProgress(object):
    def write(self, line, file):
        print(line, file=file)

    def update(self):
        pass

    def close(self):
        pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    enc = sub.add_parser('encode', help='images -> compressed files')
    enc.add_argument('inputs', nargs='+', metavar='IMAGE',
                     help='any PIL-readable images; a model dir as the first of them is the model (old usage)')
    enc.add_argument('--coder', choices=arithmetic_coding.CODERS, default=arithmetic_coding.DEFAULT_CODER,
                     help='fast: range coder (constriction); python: the pure-Python reference coder')
    enc.add_argument('--blocks', type=_parse_blocks, default=None, metavar='RxC',
                     help='code RxC tiles of the symbol volume independently, in parallel processes '
                          '(faster on many cores, costs some rate). Default: as many as --max_memory needs '
                          '(1x1 up to a few megapixels)')
    dec = sub.add_parser('decode', help='compressed files -> PNGs')
    dec.add_argument('inputs', nargs='+', metavar='FILE', help='files written by codec.py encode')
    for sp, what in ((enc, 'compressed file'), (dec, 'PNG')):
        sp.add_argument('-o', '--output', required=True,
                        help='{} to write; with several inputs (or ending in /) the directory for them'.format(what))
        sp.add_argument('--model', default=None,
                        help='model dir (a training log dir or an export). Default: {}'.format(
                            'the shipped middle model' if sp is enc else
                            'the shipped model whose fingerprint the file carries (must be the encoding model)'))
        sp.add_argument('--max_memory', type=_positive_mb, default=image_codec.DEFAULT_MAX_MEMORY_MB, metavar='MB',
                        help='peak memory to stay under: photos are coded in tiles sized for it. '
                             'Default: %(default)s')
        sp.add_argument('--runtime', choices=image_codec.RUNTIMES, default='auto',
                        help='auto: ONNX Runtime if the model dir has an up-to-date export, else TensorFlow. '
                             'Default: %(default)s')
    flags = p.parse_args(argv)
    if flags.command == 'encode':
        if len(flags.inputs) > 1 and os.path.isdir(flags.inputs[0]):
            if flags.model:
                p.error('a model dir ({}) and --model {}: give one'.format(flags.inputs[0], flags.model))
            flags.model = flags.inputs.pop(0)
        if flags.model is None:
            flags.model = image_codec.default_model_dir()
    return flags


def main(argv=None):
    flags = parse_args(argv)
    try:
        failures = run(flags)
    except CodecError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return min(failures, MAX_EXIT_STATUS)


if __name__ == '__main__':
    sys.exit(main())
