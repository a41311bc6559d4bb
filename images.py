"""Reading, padding and writing images for val.py, codec.py and other_codecs.py.

`load_rgb` is the one image loader of the project: every caller gets the same pixels from the same file.
What it does with images as users have them:
- EXIF Orientation: applied as viewers show the photo (PIL.ImageOps.exif_transpose).
- 16 bits per sample (grayscale I;16*, 'I', 16-bit RGB(A) PNG and TIFF): v -> round(v * 255 / 65535),
  i.e. round(v / 257), which maps 0..65535 onto 0..255 with equal-width bins. It never looks at the
  image's values, so a dark 16-bit image stays dark. 'I' (32-bit) images are taken as 16-bit data, which
  is what Pillow puts there (16-bit PGM), and clipped to 0..65535.
- 32-bit float ('F'): values taken as 0..255 (Pillow's convention for float images), clipped and rounded.
- Palette, grayscale, 1-bit, CMYK (Pillow's conversion, without color management): converted to RGB.
- Alpha and transparency: dropped (the color under it is kept).
- Animated or multi-frame files (GIF, APNG, WebP, TIFF pages, MPO): the first frame.
Each of these comes with a note that says what was done. Pillow's decompression-bomb guard stays as it
is: images up to Image.MAX_IMAGE_PIXELS (89 MP; a 50 MP photo is far below) load silently, up to twice
that load too (the warning Pillow gives there is not passed on: 100 MP photos exist), beyond that the
image is refused.
"""
import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from file_helpers import atomic_write_bytes

SUBSAMPLING = 8  # of the autoencoder: the network needs sides that are multiples of 8
# What a directory or glob of images is filtered by, everywhere (val.py, other_codecs.py, make_records.py,
# the training input pipeline): files Pillow reads. Compared in lower case.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')

_ORIENTATIONS = {2: 'mirrored left-right', 3: 'rotated 180 degrees', 4: 'mirrored top-bottom',
                 5: 'transposed', 6: 'rotated 90 degrees clockwise', 7: 'transversed',
                 8: 'rotated 90 degrees counter-clockwise'}
# Pillow decodes 16-bit RGB(A) to 8 bits by keeping each sample's high byte (floor(v / 256), up to a level
# off round(v / 257)). Unpacking the same data with the other byte order's unpacker gives the low bytes.
_LOW_BYTES_RAWMODE = {'RGB;16B': 'RGB;16L', 'RGB;16L': 'RGB;16B', 'RGBA;16B': 'RGBA;16L', 'RGBA;16L': 'RGBA;16B'}
# 16-bit gray+alpha PNGs: Pillow has no low-byte unpacker, but 'RGBA' lays the four bytes out as they are.
_RAW_BYTES_RAWMODE = {'LA;16B': 'RGBA'}
_MODE_NOTES = {'L': 'grayscale -> RGB', '1': '1-bit -> RGB', 'P': 'palette -> RGB', 'PA': 'palette -> RGB',
               'LA': 'grayscale -> RGB', 'La': 'grayscale -> RGB', 'CMYK': "CMYK -> RGB (Pillow's conversion)",
               'YCbCr': 'YCbCr -> RGB', 'LAB': 'LAB -> RGB', 'HSV': 'HSV -> RGB'}
_ALPHA_MODES = ('LA', 'La', 'PA', 'RGBA', 'RGBa')
# What Pillow's decoders raise on broken data (PNG chunk errors are SyntaxErrors, cut files EOFError,
# struct.error or IndexError in some plugins).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, IndexError, KeyError, TypeError)


class ImageError(ValueError):
    """An image that cannot be read; one line that names the file and the reason."""

    def __init__(self, path, reason):
        super().__init__('Cannot read image {}: {}'.format(path, reason))
        self.path, self.reason = path, reason

    def __reduce__(self):  # pickles (process pools) with both arguments
        return type(self), (self.path, self.reason)


def load_rgb(path):
    """Reads an image file as uint8 H x W x 3 (see the module doc for what is converted, and how).

    :return: (array, note) where note says what was converted (None for an 8-bit RGB image shown as stored)
    :raises ImageError: for a missing file, a directory, not an image, a truncated or corrupt file, or an
        image beyond Pillow's decompression-bomb limit
    """
    rgb, notes = _guarded(path, _load)
    return rgb, '; '.join(dict.fromkeys(notes)) or None


def check_readable(path):
    """Opens the image and reads its header only, cheaply: the ImageError load_rgb would raise for a missing
    file, a directory, not an image, or an image that is too large (truncated pixel data is found by
    load_rgb only)."""
    def header(p, notes):
        with Image.open(p):
            pass
    _guarded(path, header)


def _guarded(path, read):
    """read(path, notes) with every way of failing turned into an ImageError. :return: (result, notes)"""
    notes = []
    try:
        # Pillow reports damaged metadata as warnings: they become part of the note instead of a stray
        # "UserWarning" on the console; its decompression-bomb warning (89..179 MP) is not passed on.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            result = read(path, notes)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(path, "too large for Pillow's decompression-bomb guard ({})".format(_one_line(e))) from None
    except MemoryError:
        raise ImageError(path, 'not enough memory to decode it') from None
    except IsADirectoryError:
        raise ImageError(path, 'is a directory') from None
    except FileNotFoundError:
        raise ImageError(path, 'no such file') from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, 'not an image, or a format Pillow cannot read') from None
    except OSError as e:
        if e.errno is not None:  # the OS's error (permissions, I/O), not the decoder's
            raise ImageError(path, _one_line(e.strerror or e)) from None
        raise ImageError(path, 'truncated or corrupt file ({})'.format(_one_line(e))) from None
    except _DECODE_ERRORS as e:
        raise ImageError(path, 'corrupt file ({}: {})'.format(type(e).__name__, _one_line(e))) from None
    return result, notes + [_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _one_line(e):
    return ' '.join(str(e).split())


def _load(path, notes):
    with Image.open(path) as im:
        rawmodes = {_rawmode(t) for t in getattr(im, 'tile', ())}  # known before load() only
        rawmode = rawmodes.pop() if len(rawmodes) == 1 else None
        im.load()
        transparency = 'transparency' in im.info
        orientation = _orientation(im)
        frame = ImageOps.exif_transpose(im) if orientation else im
        if orientation:
            notes.append('{} as its EXIF Orientation ({}) says'.format(_ORIENTATIONS[orientation], orientation))
        rgb, what = _to_rgb(frame, path, rawmode, orientation, transparency)
        if what:
            notes.append(what)
        # counted last: a damaged later frame must not make the first one unreadable
        try:
            frames = getattr(im, 'n_frames', 1)
        except _DECODE_ERRORS:
            frames = 0
        if frames != 1:
            notes.append('{} ({}): the first frame'.format(
                '{} frames'.format(frames) if frames else 'several frames', im.format))
    return rgb


def _rawmode(tile):
    args = tile[3]
    if isinstance(args, str):
        return args
    return args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else None


def _orientation(im):
    try:
        o = im.getexif().get(0x0112)
    except _DECODE_ERRORS:  # damaged EXIF must not make the pixels unreadable
        return None
    return o if o in _ORIENTATIONS else None


def _to_rgb(im, path, rawmode, orientation, transparency):
    """:return: (uint8 H x W x 3, note or None); im is the loaded (and oriented) first frame."""
    mode = im.mode
    dropped = ' (alpha dropped)' if mode in _ALPHA_MODES else ' (transparency dropped)' if transparency else ''
    if rawmode in _LOW_BYTES_RAWMODE or rawmode in _RAW_BYTES_RAWMODE:
        second = np.asarray(_redecode(path, _LOW_BYTES_RAWMODE.get(rawmode) or _RAW_BYTES_RAWMODE[rawmode],
                                      orientation)).astype(np.uint32)
        if rawmode in _RAW_BYTES_RAWMODE:  # gray high byte, gray low byte, alpha high, alpha low
            v = np.repeat((second[..., 0] << 8 | second[..., 1])[..., None], 3, axis=2)
            what = '16-bit grayscale -> 8-bit RGB'
        else:
            v = np.asarray(im).astype(np.uint32)[..., :3] << 8 | second[..., :3]
            what = '16-bit RGB -> 8-bit'
        return _from_16bit(v), what + dropped
    if mode == 'RGB':
        return np.asarray(im), (('RGB' + dropped) if dropped else None)
    if mode.startswith('I;16') or mode == 'I':
        v = np.asarray(im).astype(np.int64)
        clipped = mode == 'I' and (v.min() < 0 or v.max() > 65535)
        gray = _from_16bit(np.clip(v, 0, 65535))
        return np.repeat(gray[..., None], 3, axis=2), '16-bit grayscale -> 8-bit RGB{}{}'.format(
            ' (values outside 0..65535 clipped)' if clipped else '', dropped)
    if mode == 'F':
        gray = np.clip(np.rint(np.nan_to_num(np.asarray(im), nan=0.)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), \
            '32-bit float grayscale -> 8-bit RGB (values taken as 0..255, clipped)' + dropped
    try:
        rgb = np.asarray(im.convert('RGB'))
    except ValueError:
        raise ImageError(path, 'image mode {} cannot be converted to RGB'.format(mode)) from None
    what = _MODE_NOTES.get(mode, '{} -> RGB'.format(mode))
    if mode in ('P', 'PA') and transparency:
        what = 'palette with transparency -> RGB'
    return rgb, what + dropped


def _from_16bit(v):
    # round(v * 255 / 65535) = round(v / 257); v / 257 is never halfway between two integers
    return ((v + 128) // 257).astype(np.uint8)


def _redecode(path, rawmode, orientation):
    """The first frame of path decoded again, unpacked with rawmode instead of the plugin's."""
    with Image.open(path) as im:
        im.tile = [t._replace(args=_with_rawmode(t[3], rawmode)) if hasattr(t, '_replace')
                   else tuple(t[:3]) + (_with_rawmode(t[3], rawmode),) for t in im.tile]
        im.load()
        return ImageOps.exif_transpose(im) if orientation else im.copy()


def _with_rawmode(args, rawmode):
    return rawmode if isinstance(args, str) else (rawmode,) + tuple(args[1:])


def pad_to_multiple(img, multiple=SUBSAMPLING):
    """Pads H x W x 3 at the bottom and right by replicating the border, so that both sides are
    multiples of `multiple` (the border costs few bits and does not ring into the image)."""
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode='edge')


def to_uint8(x):
    """Rounds a float reconstruction in [0, 255] to uint8 (the original truncated)."""
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def has_image_extension(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


# zlib level of decoded images: Pillow's default (6) took longer than decoding the symbols of a Kodak image
# (0.46 s against 0.10 s at level 1 for a reconstruction, files 12 % larger); figures kept in git use SMALL_PNG.
FAST_PNG = 1
SMALL_PNG = 9


def save_png(path, img, compress_level=FAST_PNG):
    """Writes uint8 H x W x 3 as PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='PNG', compress_level=compress_level)
    atomic_write_bytes(path, buf.getvalue())
