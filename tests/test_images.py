"""images.load_rgb, the one image loader of val.py, codec.py and other_codecs.py: images as users have them
(EXIF-rotated photos, 16-bit, palette, alpha, CMYK, float, animated, broken files), each built on the fly."""
import argparse
import os
import struct
import types
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import images
from helpers import smooth_image


def _round_16_to_8(v):
    return np.floor(np.asarray(v, np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


def _png16(samples, color_type):
    """A 16-bit PNG (color type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA) with every row Sub-filtered, which
    Pillow cannot write: the unfiltering must use the 2 bytes per sample of the file."""
    h, w = samples.shape[:2]
    rows = np.frombuffer(samples.astype('>u2').tobytes(), np.uint8).reshape(h, -1).astype(np.int32)
    bpp = rows.shape[1] // w
    filtered = rows.copy()
    filtered[:, bpp:] = (rows[:, bpp:] - rows[:, :-bpp]) % 256
    raw = b''.join(b'\x01' + r.astype(np.uint8).tobytes() for r in filtered)

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, color_type, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def _tiff16_rgb(samples, little_endian):
    """An uncompressed 16-bit RGB TIFF (Pillow cannot write one)."""
    h, w, _ = samples.shape
    e = '<' if little_endian else '>'
    data = samples.astype(e + 'u2').tobytes()
    n = 10
    bps_offset = 8 + 2 + n * 12 + 4
    data_offset = bps_offset + 6

    def entry(tag, kind, count, value):
        packed = struct.pack(e + 'HH', value, 0) if kind == 3 and count == 1 else struct.pack(e + 'I', value)
        return struct.pack(e + 'HHI', tag, kind, count) + packed
    entries = [entry(256, 3, 1, w), entry(257, 3, 1, h), entry(258, 3, 3, bps_offset), entry(259, 3, 1, 1),
               entry(262, 3, 1, 2), entry(273, 4, 1, data_offset), entry(277, 3, 1, 3), entry(278, 3, 1, h),
               entry(279, 4, 1, len(data)), entry(284, 3, 1, 1)]
    return ((b'II*\x00' if little_endian else b'MM\x00*') + struct.pack(e + 'I', 8) + struct.pack(e + 'H', n) +
            b''.join(entries) + struct.pack(e + 'I', 0) + struct.pack(e + 'HHH', 16, 16, 16) + data)


def _write(tmp_path, name, data):
    path = str(tmp_path / name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _exif_jpeg(tmp_path, orientation, h=24, w=40):
    path = str(tmp_path / 'photo_{}.jpg'.format(orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(smooth_image(h, w, seed=orientation)).save(path, quality=95, exif=exif)
    return path


# EXIF orientation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('orientation,show', [
    (6, lambda a: np.rot90(a, -1)),            # stored lying on its side: shown turned 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),
    (3, lambda a: a[::-1, ::-1]),
    (2, lambda a: a[:, ::-1]),
    (5, lambda a: np.transpose(a, (1, 0, 2))),
])
def test_exif_orientation_is_applied_as_viewers_show_it(tmp_path, orientation, show):
    """A phone photo stored sideways with its Orientation tag: the loaded pixels are the stored ones turned as
    the tag says (a loader that ignores the tag, or turns the wrong way, gives another array)."""
    path = _exif_jpeg(tmp_path, orientation)
    with Image.open(path) as im:
        stored = np.asarray(im.convert('RGB'))  # Pillow itself does not apply the tag
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, show(stored))
    assert 'EXIF Orientation ({})'.format(orientation) in note
    if orientation in (5, 6, 8):
        assert rgb.shape == (40, 24, 3)


def test_plain_rgb_has_no_note(tmp_path):
    path = str(tmp_path / 'plain.png')
    img = smooth_image(10, 12)
    Image.fromarray(img).save(path)
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, img)
    assert note is None and rgb.dtype == np.uint8


# 16 bits ------------------------------------------------------------------------------------------------

# values where round(v / 257) and the high byte (v >> 8, what Pillow keeps for RGB) differ, and the ends
VALUES_16 = np.array([0, 128, 129, 255, 385, 386, 4000, 32767, 32768, 65278, 65407, 65535])


def test_16bit_grayscale_png_is_rounded_not_shifted(tmp_path):
    path = str(tmp_path / 'gray16.png')
    Image.fromarray(VALUES_16.reshape(3, 4).astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith('I;16') or im.mode == 'I'  # 'I' in older Pillow
    rgb, note = images.load_rgb(path)
    expected = _round_16_to_8(VALUES_16.reshape(3, 4))
    assert list(expected.ravel()[:6]) == [0, 0, 1, 1, 1, 2]
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    assert '16-bit' in note


def test_dark_16bit_image_is_still_scaled(tmp_path):
    """The old bug: a 16-bit image whose maximum is <= 255 was passed through as if it were 8-bit, so a dark
    16-bit photo came out 257 times too bright."""
    values = np.array([[0, 100, 200, 255]], np.uint16)
    path = str(tmp_path / 'dark16.png')
    Image.fromarray(values).save(path)
    rgb, _ = images.load_rgb(path)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 0, 1, 1]])


def test_32bit_I_image_is_taken_as_16bit_and_clipped(tmp_path):
    values = np.array([[0, 200, 386, 65535, 70000, -5]], np.int32)
    path = str(tmp_path / 'int32.tif')
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == 'I'
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 2, 255, 255, 0]])
    assert 'clipped' in note


@pytest.mark.parametrize('color_type,channels', [(2, 3), (6, 4), (4, 2)])
def test_16bit_color_png_is_rounded(tmp_path, color_type, channels):
    """16-bit RGB, RGBA and gray+alpha PNGs, which Pillow reads as 8-bit by keeping the high byte: the loader
    gives round(v * 255 / 65535) from the full 16 bits."""
    rng = np.random.RandomState(color_type)
    samples = rng.randint(0, 65536, (6, 5, channels))
    samples[0, :, 0] = VALUES_16[:5]
    path = _write(tmp_path, 'c{}.png'.format(color_type), _png16(samples, color_type))
    rgb, note = images.load_rgb(path)
    color = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=2)
    expected = _round_16_to_8(color)
    assert np.any(expected != color >> 8)  # the high byte alone would not pass
    np.testing.assert_array_equal(rgb, expected)
    assert '16-bit' in note and (('alpha dropped' in note) == (channels in (2, 4)))


@pytest.mark.parametrize('magic,channels', [(b'P5', 1), (b'P6', 3)])
def test_16bit_pgm_and_ppm_are_rounded(tmp_path, magic, channels):
    samples = np.tile(VALUES_16, channels).reshape(3, 4, channels)
    header = magic + b' 4 3 65535\n'
    path = _write(tmp_path, 'x.p{}m'.format('g' if channels == 1 else 'p'), header + samples.astype('>u2').tobytes())
    rgb, _ = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, np.broadcast_to(_round_16_to_8(samples), (3, 4, 3)))


@pytest.mark.parametrize('little_endian', [True, False])
def test_16bit_rgb_tiff_is_rounded(tmp_path, little_endian):
    samples = np.random.RandomState(3).randint(0, 65536, (4, 7, 3))
    samples[0, :5, 1] = VALUES_16[:5]
    path = _write(tmp_path, 'rgb16.tif', _tiff16_rgb(samples, little_endian))
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, _round_16_to_8(samples))
    assert '16-bit RGB' in note


def test_16bit_png_with_exif_orientation(tmp_path):
    """The low bytes come from a second decoding: it must be turned like the first."""
    samples = np.random.RandomState(4).randint(0, 65536, (3, 5, 3))
    data = _png16(samples, 2)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif_data = exif.tobytes()
    exif_chunk = struct.pack('>I', len(exif_data)) + b'eXIf' + exif_data + struct.pack(
        '>I', zlib.crc32(b'eXIf' + exif_data))
    iend = data.rindex(b'IEND') - 4
    path = _write(tmp_path, 'rot16.png', data[:iend] + exif_chunk + data[iend:])
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, np.rot90(_round_16_to_8(samples), -1))
    assert 'EXIF' in note


# Other modes -----------------------------------------------------------------------------------------------

def _saved(tmp_path, im, name, **kwargs):
    path = str(tmp_path / name)
    im.save(path, **kwargs)
    return path


def test_palette_and_grayscale_and_1bit(tmp_path):
    img = smooth_image(16, 20)
    pal = Image.fromarray(img).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
    cases = [
        (_saved(tmp_path, pal, 'pal.png'), 'palette -> RGB'),
        (_saved(tmp_path, pal, 'pal_t.png', transparency=3), 'palette with transparency -> RGB (transparency dropped)'),
        (_saved(tmp_path, pal, 'pal_t.gif', transparency=3), 'palette with transparency'),
        (_saved(tmp_path, Image.fromarray(img).convert('L'), 'gray.png'), 'grayscale -> RGB'),
        (_saved(tmp_path, Image.fromarray(img).convert('1'), 'bw.png'), '1-bit -> RGB'),
    ]
    for path, what in cases:
        rgb, note = images.load_rgb(path)
        with Image.open(path) as im:
            np.testing.assert_array_equal(rgb, np.asarray(im.convert('RGB')), err_msg=path)
        assert what in note, (path, note)
        assert rgb.shape == (16, 20, 3) and rgb.dtype == np.uint8


def test_alpha_is_dropped_keeping_the_color_under_it(tmp_path):
    img = smooth_image(8, 9)
    alpha = np.full((8, 9), 255, np.uint8)
    alpha[:4] = 0  # fully transparent: the color stays what it is, not black or white
    rgba = _saved(tmp_path, Image.fromarray(np.dstack([img, alpha])), 'rgba.png')
    la = _saved(tmp_path, Image.fromarray(np.dstack([img[..., 0], alpha]), 'LA'), 'la.png')
    rgb, note = images.load_rgb(rgba)
    np.testing.assert_array_equal(rgb, img)
    assert 'alpha dropped' in note
    rgb, note = images.load_rgb(la)
    np.testing.assert_array_equal(rgb, np.repeat(img[..., :1], 3, axis=2))
    assert 'grayscale' in note and 'alpha dropped' in note


def test_cmyk_uses_pillows_conversion(tmp_path):
    cmyk = Image.fromarray(smooth_image(8, 10)).convert('CMYK')
    for path in (_saved(tmp_path, cmyk, 'c.jpg', quality=95), _saved(tmp_path, cmyk, 'c.tif')):
        rgb, note = images.load_rgb(path)
        with Image.open(path) as im:
            assert im.mode == 'CMYK'
            np.testing.assert_array_equal(rgb, np.asarray(im.convert('RGB')))
        assert 'CMYK' in note


def test_float_image_is_taken_as_0_to_255(tmp_path):
    values = np.array([[-3, 0.4, 0.6, 100.2, 254.7, 300, np.nan]], np.float32)
    path = _saved(tmp_path, Image.fromarray(values), 'f.tif')
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 0, 1, 100, 255, 255, 0]])
    assert 'float' in note


@pytest.mark.parametrize('fmt,kwargs', [('gif', {}), ('png', {}), ('webp', {'lossless': True})])
def test_animated_image_gives_its_first_frame(tmp_path, fmt, kwargs):
    frames = [smooth_image(12, 14, seed=s) for s in range(3)]
    if fmt == 'gif':  # GIF is paletted: one palette for all, so the first frame's colors are exact
        frames = [np.asarray(Image.fromarray(f).quantize(32, dither=Image.Dither.NONE).convert('RGB'))
                  for f in frames]
    path = str(tmp_path / 'anim.{}'.format(fmt))
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=100, loop=0, **kwargs)
    with Image.open(path) as im:
        assert im.n_frames == 3
        first = np.asarray(im.convert('RGB'))
    rgb, note = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, first)
    if fmt != 'gif':
        np.testing.assert_array_equal(rgb, frames[0])
    assert '3 frames' in note and 'first frame' in note


# What cannot be read ----------------------------------------------------------------------------------------

def _png_bytes(h=32, w=32):
    import io
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (h, w, 3)).astype(np.uint8)).save(buf, 'PNG')
    return buf.getvalue()


def _jpeg_bytes():
    import io
    buf = io.BytesIO()
    Image.fromarray(smooth_image(64, 64)).save(buf, 'JPEG')
    return buf.getvalue()


@pytest.mark.parametrize('make,reason', [
    (lambda d: _write(d, 'text.png', b'just some text, not an image'), 'not an image'),
    (lambda d: _write(d, 'empty.jpg', b''), 'not an image'),
    (lambda d: _write(d, 'cut.png', _png_bytes()[:1500]), 'truncated'),
    (lambda d: _write(d, 'cut.jpg', _jpeg_bytes()[:600]), 'truncated'),
    (lambda d: str(d / 'missing.png'), 'no such file'),
    (lambda d: str(d), 'is a directory'),
])
def test_unreadable_files_give_a_one_line_error(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(images.ImageError) as e:
        images.load_rgb(path)
    message = str(e.value)
    assert reason in message and path in message and '\n' not in message, message
    assert e.value.reason in message and e.value.path == path


def test_check_readable_reads_headers_only(tmp_path):
    images.check_readable(_write(tmp_path, 'cut.png', _png_bytes()[:1500]))  # pixels are not decoded
    for path in (_write(tmp_path, 't.png', b'text'), str(tmp_path / 'missing.png')):
        with pytest.raises(images.ImageError):
            images.check_readable(path)


def test_decompression_bomb_limit(tmp_path, monkeypatch, recwarn):
    """Pillow's limit is kept (89 MP; twice that refused): between the two an image loads without Pillow's
    warning, beyond them it is a clear error. Scaled down by lowering the limit."""
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
    ok = _saved(tmp_path, Image.fromarray(smooth_image(40, 40)), 'ok.png')      # 1600 pixels
    big = _saved(tmp_path, Image.fromarray(smooth_image(50, 50)), 'big.png')    # 2500 pixels
    assert images.load_rgb(ok)[0].shape == (40, 40, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    for read in (images.load_rgb, images.check_readable):
        with pytest.raises(images.ImageError, match='decompression-bomb'):
            read(big)


def test_50_megapixel_photo_loads(tmp_path):
    path = _saved(tmp_path, Image.new('1', (7072, 7072), 1), 'big.png')  # 50.0 MP, a tiny file
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        rgb, note = images.load_rgb(path)
    assert rgb.shape == (7072, 7072, 3) and rgb[-1, -1, 0] == 255 and note == '1-bit -> RGB'


def test_damaged_metadata_becomes_part_of_the_note(tmp_path, recwarn):
    """Pillow's warnings about the file (here a corrupt EXIF block) are reported in the note, not as stray
    Python warnings, and the pixels still load."""
    path = _exif_jpeg(tmp_path, 1)
    with open(path, 'rb') as f:
        data = f.read()
    at = data.index(b'Exif\x00\x00') + 6 + 8  # the first IFD: say it has 300 entries, far past the block
    path = _write(tmp_path, 'bad_exif.jpg', data[:at] + struct.pack('<H', 300) + data[at + 2:])
    rgb, note = images.load_rgb(path)
    assert rgb.shape == (24, 40, 3) and 'EXIF' in note
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


# One loader for every caller -------------------------------------------------------------------------------

def test_val_codec_and_other_codecs_load_the_same_pixels(tmp_path, monkeypatch, capsys):
    """An EXIF-rotated JPEG and a dark 16-bit PNG through each program's own path: all give load_rgb's
    array (other_codecs.py had its own loader that scaled 16-bit images differently and ignored EXIF)."""
    import codec
    import image_codec
    import other_codecs
    import val
    assert not hasattr(other_codecs, 'load_rgb')
    gray16 = str(tmp_path / 'dark16.png')
    Image.fromarray((np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint16)).save(gray16)
    for path in (_exif_jpeg(tmp_path, 6, h=48, w=64), gray16):
        expected, _ = images.load_rgb(path)
        seen = {}

        def fake_encode(model, img, *args, **kwargs):
            seen['codec'] = img
            return b'x'
        monkeypatch.setattr(image_codec, 'load_model', lambda *args, **kwargs: None)
        monkeypatch.setattr(image_codec, 'encode_image', fake_encode)
        assert codec.main(['encode', path, '-o', str(tmp_path / 'out.cpm'), '--model', 'some_model']) == 0

        def fake_jpeg(rgb, q):
            seen['other_codecs'] = rgb
            return b'x' * 100, rgb
        monkeypatch.setitem(other_codecs.ENCODERS, 'jpeg', fake_jpeg)
        status, _, note = other_codecs.measure_image('jpeg', path, str(tmp_path / 'm.csv'), [50])
        assert status == 'ok' and note

        def fake_measure(model, img, real_bpp, coder):
            seen['val'] = img
            return {'bpp': 1., 'ms-ssim': 1., 'psnr': 40.}, img
        monkeypatch.setattr(val, 'measure_image', fake_measure)
        monkeypatch.setattr(val, 'log_scalars', lambda *args: None)
        flags = argparse.Namespace(real_bpp=False, coder='fast', save_ours=False)
        val.validate_ckpt(types.SimpleNamespace(step=1, log_dir='model'), [path], str(tmp_path / 'v'), 'd', flags,
                          is_latest=True, writer=None)
        assert sorted(seen) == ['codec', 'other_codecs', 'val']
        for who, img in seen.items():
            np.testing.assert_array_equal(img, expected, err_msg='{} on {}'.format(who, path))
    err = capsys.readouterr().err
    assert 'EXIF Orientation (6)' in err and '16-bit' in err  # codec.py says what it converted


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """images.save_png and every other writer go through file_helpers.atomic_path."""
    import file_helpers
    path = str(tmp_path / 'x.png')
    images.save_png(path, np.zeros((4, 4, 3), np.uint8))
    before = open(path, 'rb').read()
    with pytest.raises(RuntimeError):
        with file_helpers.atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half')
            raise RuntimeError('killed')
    assert open(path, 'rb').read() == before and sorted(os.listdir(str(tmp_path))) == ['x.png']
    open(str(tmp_path / '.x.png.k1ll3d.tmp'), 'w').close()  # what SIGKILL would leave
    assert file_helpers.remove_leftover_temp_files(path) == [str(tmp_path / '.x.png.k1ll3d.tmp')]
    assert sorted(os.listdir(str(tmp_path))) == ['x.png']
