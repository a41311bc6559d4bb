"""Reading, padding and writing images for val.py and codec.py."""
import os
import tempfile

import numpy as np
from PIL import Image

SUBSAMPLING = 8  # of the autoencoder: the network needs sides that are multiples of 8


class ImageError(ValueError):
    pass


def load_rgb(path):
    """Reads any PIL-readable image as uint8 H x W x 3.

    :return: (array, note) where note says what was converted (None for 8-bit RGB input)
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == 'RGB':
                return np.asarray(im), None
            if mode in ('I;16', 'I;16B', 'I;16L', 'I'):
                # 16-bit grayscale: keep the 8 most significant bits
                a = np.asarray(im).astype(np.uint32)
                a = (a >> 8) if a.max() > 255 else a
                return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2), '16-bit grayscale -> 8-bit RGB'
            note = {'L': 'grayscale -> RGB', 'LA': 'grayscale+alpha -> RGB (alpha dropped)',
                    'RGBA': 'RGBA -> RGB (alpha dropped)', 'P': 'palette -> RGB', 'CMYK': 'CMYK -> RGB',
                    '1': '1-bit -> RGB'}.get(mode, '{} -> RGB'.format(mode))
            return np.asarray(im.convert('RGB')), note
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError('Cannot read image {}: {}'.format(path, e)) from None


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


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    """Writes data to path via a temporary file in the same directory, so that a crash never leaves a
    partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(path, img):
    """Writes uint8 H x W x 3 as PNG, atomically."""
    import io
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='PNG')
    atomic_write_bytes(path, buf.getvalue())
