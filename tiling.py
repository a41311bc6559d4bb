"""Running the autoencoder on overlapping tiles, so that memory stays bounded for photos of any size.

The encoder and decoder are fully convolutional, so a tile sees the same computation as the whole image
except near its edges, where the whole image would have had more context. Each tile is therefore run
with a margin of context around its core, and only the core's output is kept:

    image (H x W)                 symbols (C x H/8 x W/8)
    +-----+-----+--               a core of T x T pixels <-> T/8 x T/8 symbols; the network sees the core
    |  ...margin...  |            plus up to M pixels (M/8 symbols) on every side that the image has
    |  :  core   :   |
    |  .........     |

Cores start at multiples of 8 pixels (whole symbols), so every stride-2 layer samples the same grid as in
the whole image, and at the image's own borders a tile sees exactly what the whole image sees. What remains
is the context beyond the margin: the encoder's receptive field is ~165 pixels wide (two 5x5/2 convs, 17
3x3 convs at 1/4 scale, a 5x5/2 conv), the decoder's ~15 symbols, but their weights decay fast, so a
margin of 64 pixels / 8 symbols changes few symbols and few pixels (bench/codec_scale.py measures it).

Functions take the network as a callable, so the same tiling serves TensorFlow and any other runtime.
"""
import numpy as np

SUBSAMPLING = 8
ENCODER_MARGIN = 64  # pixels, a multiple of SUBSAMPLING
DECODER_MARGIN = 8   # symbols


def spans(n, core, margin):
    """1-D tiling of 0..n: [(core_start, core_end, context_start, context_end)], cores of `core` (the last
    one shorter) covering 0..n exactly once, contexts extending each core by up to `margin` on both sides."""
    if core < 1 or margin < 0:
        raise ValueError('core must be >= 1 and margin >= 0, got {} and {}'.format(core, margin))
    out = []
    for s in range(0, n, core):
        e = min(n, s + core)
        out.append((s, e, max(0, s - margin), min(n, e + margin)))
    return out


def _padded(tile, multiple):
    """Replicates the bottom/right border to a multiple of `multiple`, as images.pad_to_multiple."""
    ph, pw = (-tile.shape[0]) % multiple, (-tile.shape[1]) % multiple
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode='edge') if ph or pw else tile


def encode_tiled(encode_fn, img, core, margin=ENCODER_MARGIN):
    """Symbols of an H x W x 3 uint8 image, tile by tile.

    :param encode_fn: uint8 h x w x 3 (multiples of 8) -> int symbols (C, h/8, w/8)
    :param core, margin: in pixels, multiples of 8
    :return: int64 (C, ceil(H/8), ceil(W/8))
    """
    if core % SUBSAMPLING or margin % SUBSAMPLING:
        raise ValueError('core and margin must be multiples of {}, got {} and {}'.format(SUBSAMPLING, core, margin))
    h, w = img.shape[:2]
    out = None
    for ys, ye, cys, cye in spans(h, core, margin):
        for xs, xe, cxs, cxe in spans(w, core, margin):
            sym = np.asarray(encode_fn(_padded(img[cys:cye, cxs:cxe], SUBSAMPLING)))
            if out is None:
                out = np.empty((sym.shape[0], _symbols(h), _symbols(w)), np.int64)
            # core in symbols, in the volume and in the tile (starts are multiples of 8)
            y0, x0, ny, nx = ys // SUBSAMPLING, xs // SUBSAMPLING, _symbols(ye - ys), _symbols(xe - xs)
            ty, tx = (ys - cys) // SUBSAMPLING, (xs - cxs) // SUBSAMPLING
            out[:, y0:y0 + ny, x0:x0 + nx] = sym[:, ty:ty + ny, tx:tx + nx]
    return out


def _symbols(pixels):
    return -(-pixels // SUBSAMPLING)


def decode_tiled(decode_fn, symbols, height, width, core, margin=DECODER_MARGIN):
    """The reconstruction of a symbol volume, tile by tile, written into a uint8 image.

    :param decode_fn: int symbols (C, h, w) -> uint8 (8h) x (8w) x 3 (rounded as the codec rounds)
    :param core, margin: in symbols
    :return: uint8 height x width x 3
    """
    _, sh, sw = symbols.shape
    out = np.empty((height, width, 3), np.uint8)
    s = SUBSAMPLING
    for ys, ye, cys, cye in spans(sh, core, margin):
        for xs, xe, cxs, cxe in spans(sw, core, margin):
            rec = decode_fn(symbols[:, cys:cye, cxs:cxe])
            # core in pixels, in the image (cropped to it) and in the tile
            y0, x0, ny, nx = ys * s, xs * s, min(height, ye * s) - ys * s, min(width, xe * s) - xs * s
            ty, tx = (ys - cys) * s, (xs - cxs) * s
            out[y0:y0 + ny, x0:x0 + nx] = rec[ty:ty + ny, tx:tx + nx]
    return out
