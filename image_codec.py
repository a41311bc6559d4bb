"""The codec's file format and its API: images to compressed files and back with a trained model.

Used by codec.py (the command line), val.py (--real_bpp) and bench/. Importing it does not import
TensorFlow: models are loaded by `load_model` and `find_model_for`, on ONNX Runtime when they have been
exported for it (onnx_model.py), else on TensorFlow (inference.py).

The file: a 33-byte header, then the arithmetic-coded symbol volume (symbol_coder: the fixed-point context
model's frequency tables, one block or R x C independently coded blocks). Header, little-endian:

    magic 'CPMC' | version u8 | coder u8 | block rows u8 | block cols u8 | context model F u8 |
    model fingerprint 8 bytes | height u32 | width u32 | payload length u32 | CRC-32 u32

Version 3 (written): the context model's fractional bits F are in the header (fixed_point_pc: float32 at
F < 14). Version 2 (still read): 32 bytes, no F field, the context model at F = 14 in float64. Since
version 2 the CRC-32 covers the header fields before it and the payload; version 1 (still read): the
payload only. Every field is validated before anything is allocated (CodecError, one line).
"""
import glob
import os
import struct
import sys
import zlib

import arithmetic_coding
import fixed_point_pc
import images
import model_files
import onnx_model
import symbol_coder
import tiling

MAGIC = b'CPMC'  # Conditional Probability Models Codec
# 1: the CRC-32 covers the payload only; 2: it covers the header (all fields before it) and the payload,
# so that a damaged size field cannot decode to an image of the wrong size; 3: the context model's F.
VERSION = 3
_HEADER_V2 = struct.Struct('<4sBBBB8sIIII')  # magic, version, coder, block rows, block cols, fingerprint,
#                                              height, width, payload length, crc32 (versions 1 and 2)
_HEADER_V3 = struct.Struct('<4sBBBBB8sIIII')  # ... block cols, F, fingerprint, ...
_HEADERS = {1: _HEADER_V2, 2: _HEADER_V2, 3: _HEADER_V3}
HEADER_BYTES = _HEADER_V3.size
# Refused before anything is allocated: a side beyond JPEG's limit, or more pixels than any photo has.
MAX_SIDE = 65535
MAX_PIXELS = 1 << 29
_CODER_IDS = {'fast': 0, 'python': 1}
SHIPPED_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ckpts')


def shipped_model_dirs(rate='*'):
    """The shipped model dirs (ckpts/<job id> cpu@<rate> ... or cpu2@<rate> ...), sorted by job id."""
    return sorted(d for d in glob.glob(os.path.join(glob.escape(SHIPPED_MODELS), '* cpu*@{} *'.format(rate)))
                  if os.path.isdir(d))


def default_model_dir():
    """The shipped middle-rate model (the latest job id)."""
    matches = shipped_model_dirs('med')
    return matches[-1] if matches else os.path.join(SHIPPED_MODELS, '<no shipped cpu@med model>')


class CodecError(Exception):
    """A file that cannot be decoded, or bad arguments: reported without a traceback."""


def _symbol_grid(height, width):
    """(rows, cols) of the symbol volume of an image: one symbol per 8 x 8 pixels, rounded up."""
    return -(-height // images.SUBSAMPLING), -(-width // images.SUBSAMPLING)


def symbol_volume_shape(model, height, width):
    return (model.ae_config.num_chan_bn,) + _symbol_grid(height, width)


# Memory planning ------------------------------------------------------------------------------------
# Photos of any size are coded with bounded memory: the autoencoder runs on overlapping tiles
# (tiling.py) and the symbol volume is coded in independent blocks, each in its own worker process, so
# that the fixed-point context model's grids exist for one block per worker at a time. Below: what they
# cost, measured on the shipped models (bench/codec_scale.py checks the resulting peaks).

DEFAULT_MAX_MEMORY_MB = 2000
# The autoencoder's peak memory for a tile, per pixel and per filter n of the model, is the model's
# (encoder, decoder) attribute AE_BYTES_PER_PIXEL_PER_FILTER: it depends on the runtime.
# fixed-point context model, per symbol (c, y, x) of a block being encoded: 1300 with the float64 model of
# file version 2; float32 (version 3) needs 0.69x of float64's (peak RSS of a 32x192x256 volume: 516 vs
# 749 bytes per position in the coder alone; the rest is the worker process and the block's tables)
_PC_BYTES_PER_POSITION = 900
_AE_CORES = (4096, 3072, 2048, 1536, 1024, 768, 512, 256)  # pixels, largest first


def _rss_mb():
    """Resident memory of this process now (Linux), or 0 where /proc is missing."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2. ** 20
    except (OSError, ValueError, IndexError):
        return 0.


def _workers():
    return max(1, min(2, os.cpu_count() or 1))


def plan_coding(model, height, width, max_memory_mb=DEFAULT_MAX_MEMORY_MB, blocks=None):
    """How to code an image within max_memory_mb (the peak of this process and its workers).

    :return: dict(ae_core=pixels per encoder tile side, dec_core=symbols per decoder tile side,
      blocks=(rows, cols) of independently coded symbol blocks, or the given `blocks`)
    """
    free = max_memory_mb - _rss_mb() - 6. * height * width / 2. ** 20  # the image in and out, uint8
    if free <= 0:
        raise CodecError('--max_memory {:.0f} MB is too small: the model and the image alone take {:.0f} MB'
                         .format(max_memory_mb, max_memory_mb - free))
    # the autoencoder runs before (encoder) or after (decoder) the coding, in this process: it may use all
    # that is free
    enc_core, dec_core = (
        next((c for c in _AE_CORES if (c + 2 * margin) ** 2 * per_filter * model.ae_config.arch_param_n
              <= free * 2. ** 20), _AE_CORES[-1])
        for per_filter, margin in zip(model.AE_BYTES_PER_PIXEL_PER_FILTER,
                                      (tiling.ENCODER_MARGIN, tiling.DECODER_MARGIN * images.SUBSAMPLING)))
    C, sh, sw = symbol_volume_shape(model, height, width)
    if blocks is None:
        per_block = free * 2. ** 20 / _workers() / _PC_BYTES_PER_POSITION / C  # grid positions per block
        side = max(8, int(per_block ** 0.5))
        blocks = (min(MAX_BLOCKS_PER_SIDE, -(-sh // side)), min(MAX_BLOCKS_PER_SIDE, -(-sw // side)))
    return dict(ae_core=enc_core, dec_core=dec_core // images.SUBSAMPLING, blocks=blocks)


MAX_BLOCKS_PER_SIDE = 64


def parse_blocks(text):
    """'RxC' -> (R, C); ValueError unless 1 <= R, C <= MAX_BLOCKS_PER_SIDE."""
    try:
        r, c = (int(v) for v in text.lower().split('x'))
    except ValueError:
        r = c = 0
    if not (1 <= r <= MAX_BLOCKS_PER_SIDE and 1 <= c <= MAX_BLOCKS_PER_SIDE):
        raise ValueError('takes RxC with 1 <= R, C <= {}, e.g. 2x2; got {!r}'.format(MAX_BLOCKS_PER_SIDE, text))
    return r, c


def _check_blocks(blocks, h, w):
    grid = _symbol_grid(h, w)
    if blocks[0] > grid[0] or blocks[1] > grid[1]:
        raise CodecError('--blocks {}x{} is more than the {}x{} symbol grid of a {}x{} image (one symbol per '
                         '{} x {} pixels)'.format(blocks[0], blocks[1], grid[0], grid[1], w, h,
                                                  images.SUBSAMPLING, images.SUBSAMPLING))


def image_to_symbols(model, img, ae_core):
    """int64 (C, ceil(H/8), ceil(W/8)): the encoder on overlapping tiles (one tile if the image fits)."""
    return tiling.encode_tiled(model.encode_symbols, img, ae_core)


def symbols_to_image(model, symbols, height, width, dec_core):
    """uint8 height x width x 3: the decoder on overlapping tiles (one tile if the volume fits)."""
    return tiling.decode_tiled(lambda s: images.to_uint8(model.decode_symbols(s)), symbols, height, width,
                               dec_core)


def encode_image(model, img, coder=arithmetic_coding.DEFAULT_CODER, blocks=None, max_memory_mb=DEFAULT_MAX_MEMORY_MB):
    """uint8 H x W x 3 -> file bytes. blocks=None: as many as the memory budget needs (1x1 for photos of a
    few megapixels)."""
    h, w = img.shape[:2]
    if blocks is not None:
        _check_blocks(blocks, h, w)
    plan = plan_coding(model, h, w, max_memory_mb, blocks)
    blocks = plan['blocks']
    return encode_symbol_volume(model, image_to_symbols(model, img, plan['ae_core']), h, w, coder, blocks)


def encode_symbol_volume(model, symbols, height, width, coder=arithmetic_coding.DEFAULT_CODER, blocks=(1, 1)):
    """The file of an image's symbol volume int (C, h, w) (h, w = the image's size / 8, rounded up)."""
    pc = model.fixed_point_pc
    payload = symbol_coder.encode_blocks(symbols, pc, coder, blocks)
    header = _HEADER_V3.pack(MAGIC, VERSION, _CODER_IDS[coder], blocks[0], blocks[1], pc.frac_bits,
                             model.fingerprint, height, width, len(payload), 0)[:-4]
    return header + struct.pack('<I', zlib.crc32(payload, zlib.crc32(header))) + payload


def parse_header(data):
    """:return: dict of the header fields and the payload; CodecError for anything malformed."""
    if len(data) < 5:
        raise CodecError('Not a compressed image: {} bytes, shorter than any header'.format(len(data)))
    if data[:4] != MAGIC:
        raise CodecError('Not a compressed image of this codec (magic {!r}, expected {!r})'.format(data[:4], MAGIC))
    version = data[4]
    if version not in _HEADERS:
        raise CodecError('Unsupported file version {} (this codec reads versions {})'.format(
            version, ', '.join(map(str, sorted(_HEADERS)))))
    header = _HEADERS[version]
    if len(data) < header.size:
        raise CodecError('Not a compressed image: {} bytes, shorter than the {}-byte header'.format(
            len(data), header.size))
    fields = list(header.unpack_from(data))
    frac_bits = fields.pop(5) if version >= 3 else fixed_point_pc.V2_FRAC_BITS
    _, _, coder_id, rows, cols, fingerprint, h, w, n, crc = fields
    payload = data[header.size:]
    if len(payload) != n:
        raise CodecError('Truncated or padded file: payload has {} bytes, the header says {}'.format(
            len(payload), n))
    covered = zlib.crc32(data[:header.size - 4]) if version >= 2 else 0
    if zlib.crc32(payload, covered) != crc:
        raise CodecError('Corrupt file: checksum mismatch ({})'.format(
            'header or payload' if version >= 2 else 'payload'))
    # Checked after the CRC too: a version-1 file's header is not covered by it.
    coders = {v: k for k, v in _CODER_IDS.items()}
    if coder_id not in coders:
        raise CodecError('Corrupt header: unknown coder id {}'.format(coder_id))
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise CodecError('Corrupt header: image size {}x{} is outside 1..{} per side / {} pixels'.format(
            w, h, MAX_SIDE, MAX_PIXELS))
    grid = _symbol_grid(h, w)
    if not (1 <= rows <= grid[0] and 1 <= cols <= grid[1]):
        raise CodecError('Corrupt header: a {}x{} block grid does not fit the {}x{} symbol grid'.format(
            rows, cols, *grid))
    if not fixed_point_pc.MIN_FLOAT32_FRAC_BITS <= frac_bits <= fixed_point_pc.V2_FRAC_BITS:
        raise CodecError('Corrupt header: context model precision F = {} is outside {}..{}'.format(
            frac_bits, fixed_point_pc.MIN_FLOAT32_FRAC_BITS, fixed_point_pc.V2_FRAC_BITS))
    return dict(version=version, coder=coders[coder_id], blocks=(rows, cols), frac_bits=frac_bits,
                fingerprint=fingerprint, height=h, width=w, payload=payload)


def decode_symbols(model, data):
    """file bytes -> (int64 symbols (C, h, w), header dict)."""
    hdr = parse_header(data)
    if hdr['fingerprint'] != model.fingerprint:
        raise CodecError('This file was encoded with a different model (fingerprint {}, the model {} has {})'
                         .format(hdr['fingerprint'].hex(), model.log_dir, model.fingerprint.hex()))
    shape = symbol_volume_shape(model, hdr['height'], hdr['width'])
    try:
        pc = model.fixed_point_pc.with_frac_bits(hdr['frac_bits'])
    except ValueError as e:
        raise CodecError('Corrupt header or another model: {}'.format(e)) from None
    try:
        symbols = symbol_coder.decode_blocks(hdr['payload'], shape, pc, hdr['coder'], hdr['blocks'])
    except ValueError as e:
        raise CodecError('Corrupt bitstream: {}'.format(e)) from None
    return symbols, hdr


def decode_image(model, data, max_memory_mb=DEFAULT_MAX_MEMORY_MB):
    """file bytes -> uint8 H x W x 3."""
    symbols, hdr = decode_symbols(model, data)
    plan = plan_coding(model, hdr['height'], hdr['width'], max_memory_mb, hdr['blocks'])
    return symbols_to_image(model, symbols, hdr['height'], hdr['width'], plan['dec_core'])



# Models ----------------------------------------------------------------------------------------------
# A model runs on ONNX Runtime when its dir holds an up-to-date export (onnx_model.py: starts in well under
# a second), else on TensorFlow (inference.py: ~10 s to import and build).

RUNTIMES = ('auto', 'onnx', 'tensorflow')


def _say(note):
    print('Note: ' + note, file=sys.stderr)


def load_model(model_dir, runtime='auto', note=_say):
    """The model of a log dir: OnnxModel if it has a usable ONNX export (runtime 'auto' or 'onnx'), else
    inference.Model (TensorFlow; with 'auto', after a one-line note through `note` saying why).

    :raises CodecError: with the reason if it cannot be loaded (with 'onnx': if it has no usable export).
    """
    if not os.path.isdir(model_dir):
        raise CodecError('Cannot load model {}: no such directory'.format(model_dir))
    if runtime in ('auto', 'onnx'):
        try:
            return onnx_model.OnnxModel(model_dir)
        except onnx_model.NotExported as e:
            if runtime == 'onnx':
                raise CodecError('Cannot load model {} on ONNX Runtime: {}'.format(model_dir, e)) from None
            note('{}: {}; using TensorFlow (slower to start)'.format(model_dir, e))
        except (model_files.ModelError, ValueError) as e:
            raise CodecError('Cannot load model {}: {}'.format(model_dir, e)) from None
    import inference  # TensorFlow: only when it is needed
    try:
        return inference.Model(model_dir)
    except (model_files.ModelError, ValueError) as e:
        raise CodecError('Cannot load model {}: {}'.format(model_dir, e)) from None


def _known_fingerprint(model_dir, runtime):
    """The fingerprint of a model dir without loading it (its ONNX manifest, else the cache next to its
    checkpoint), or None."""
    if runtime != 'tensorflow':
        try:
            return bytes.fromhex(onnx_model.read_manifest(model_dir)['fingerprint'])
        except onnx_model.NotExported:
            pass
    return model_files.cached_fingerprint(model_dir)


def find_model_for(fingerprint, root=None, runtime='auto', note=_say):
    """The model in root (default: the shipped models) whose fingerprint is the given one, loaded.

    Fingerprints are known without loading a model from ONNX manifests and from caches next to each model's
    checkpoint (model_files.cached_fingerprint), so usually only the matching model is loaded. They only rule
    models out: the model returned is one whose fingerprint, as loaded, matches; and before giving up, the
    models ruled out are loaded too, in case a manifest or cache predates a change of the code. CodecError
    naming the models tried if none matches.
    """
    root = root or SHIPPED_MODELS
    try:
        names = sorted(os.listdir(root))
    except OSError:
        names = []
    # not val.py's output dirs
    dirs = [os.path.join(root, n) for n in names if _is_model_dir(os.path.join(root, n))]
    if not dirs:
        raise CodecError('No --model given, and no models (log dirs with checkpoints or an ONNX export) in {}'
                         .format(root))
    # most files come from the default model: without caches, it is the one worth loading first
    default = os.path.normpath(default_model_dir())
    dirs.sort(key=lambda d: os.path.normpath(d) != default)
    tried = {}

    def load_if_it_matches(d):
        try:
            model = load_model(d, runtime, note=lambda _: None)
        # CodecError, or TF's errors on damaged checkpoints: a broken model must not hide the others
        except Exception as e:
            tried[d] = 'cannot load: {}'.format(' '.join(str(e).split()))
            return None
        if hasattr(model, 'sess'):
            model_files.save_fingerprint(model.log_dir, model.step, model.fingerprint)
        tried[d] = 'fingerprint {}'.format(model.fingerprint.hex())
        if model.fingerprint == fingerprint:
            return model
        model.close()
        return None

    ruled_out = []
    for d in dirs:
        known = _known_fingerprint(d, runtime)
        if known is not None and known != fingerprint:
            ruled_out.append(d)
            tried[d] = 'fingerprint {}'.format(known.hex())
            continue
        model = load_if_it_matches(d)
        if model is not None:
            return model
    for d in ruled_out:
        model = load_if_it_matches(d)
        if model is not None:
            return model
    raise CodecError('No model in {} encoded this file (fingerprint {}); tried {}. Give the model that did with '
                     '--model'.format(root, fingerprint.hex(), ', '.join(
                         '{!r} ({})'.format(os.path.basename(d), tried[d]) for d in sorted(tried))))


def _is_model_dir(d):
    return bool(model_files.all_ckpt_steps(model_files.ckpt_dir_of(d))) or \
        os.path.isfile(os.path.join(d, onnx_model.ONNX_DIR, onnx_model.MANIFEST_FILE))
