"""tiling: cores cover the image exactly once, tiles agree with the whole image wherever the network's
receptive field fits in the margin, and the real autoencoder tiled stays close to the whole image."""
import numpy as np
import pytest

import tiling
from helpers import smooth_image


@pytest.mark.parametrize('n,core,margin', [(1, 8, 0), (100, 32, 8), (64, 64, 16), (65, 16, 24)])
def test_spans_cover_once(n, core, margin):
    covered = np.zeros(n, int)
    for s, e, cs, ce in tiling.spans(n, core, margin):
        covered[s:e] += 1
        assert 0 <= cs <= s < e <= ce <= n and s - cs <= margin and ce - e <= margin
        assert (cs == 0 or s - cs == margin) and (ce == n or ce - e == margin)
    assert np.all(covered == 1)


def _local_encoder(radius):
    """A stand-in network whose symbol at (y, x) depends on the pixels within `radius` symbols (a box
    average of 8x8 block means), with zero padding at the image border like SAME convs."""
    def encode(img):
        blocks = img.astype(np.int64).reshape(img.shape[0] // 8, 8, img.shape[1] // 8, 8, 3).sum(axis=(1, 3, 4))
        padded = np.pad(blocks, radius)
        h, w = blocks.shape
        acc = sum(padded[dy:dy + h, dx:dx + w] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1))
        return np.stack([acc % 6, (acc // 7) % 6])
    return encode


def _local_decoder(radius):
    def decode(symbols):
        padded = np.pad(symbols.sum(axis=0), radius)
        h, w = symbols.shape[1:]
        acc = sum(padded[dy:dy + h, dx:dx + w] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1))
        img = np.repeat(np.repeat((acc * 7) % 256, 8, axis=0), 8, axis=1).astype(np.uint8)
        return np.repeat(img[..., None], 3, axis=2) + np.arange(3, dtype=np.uint8)
    return decode


@pytest.mark.parametrize('h,w', [(83, 100), (64, 64), (20, 150)])
def test_tiles_equal_the_whole_image_when_the_margin_covers_the_receptive_field(h, w):
    """Catches a core cropped from the wrong offset of its tile, a tile grid not aligned to symbols, and
    padding applied per tile differently from the whole image."""
    img = smooth_image(h, w, seed=h)
    enc = _local_encoder(radius=2)
    whole = enc(tiling._padded(img, 8))
    tiled = tiling.encode_tiled(enc, img, core=24, margin=16)
    np.testing.assert_array_equal(tiled, whole)
    dec = _local_decoder(radius=1)
    whole_img = dec(whole)[:h, :w]
    np.testing.assert_array_equal(tiling.decode_tiled(dec, whole, h, w, core=3, margin=1), whole_img)


def test_a_margin_smaller_than_the_receptive_field_changes_the_result():
    """The tiles really see only their context (else the previous test would prove nothing)."""
    img = smooth_image(80, 80, seed=1)
    enc = _local_encoder(radius=2)
    assert not np.array_equal(tiling.encode_tiled(enc, img, core=16, margin=8), enc(img))


def test_core_and_margin_must_be_whole_symbols():
    with pytest.raises(ValueError, match='multiples of 8'):
        tiling.encode_tiled(_local_encoder(1), smooth_image(16, 16), core=12, margin=8)


def test_real_autoencoder_tiled_is_close_to_whole(tmp_path):
    """The tiny model (random weights): tiled symbols equal the whole image's almost everywhere and the
    tiled reconstruction of the same symbols is within a grey level or two of the whole one."""
    import images
    import inference
    from helpers import make_model_dir
    model = inference.Model(make_model_dir(tmp_path))
    try:
        img = smooth_image(96, 136, seed=4)
        whole = model.run(images.pad_to_multiple(img), model.g.symbols)[0]
        tiled = tiling.encode_tiled(lambda t: model.run(t, model.g.symbols)[0], img, core=32, margin=64)
        assert tiled.shape == whole.shape
        assert np.mean(tiled != whole) < 0.01

        def decode(sym):
            return images.to_uint8(model.decode_symbols(sym))
        ref = decode(whole)[:96, :136]
        rec = tiling.decode_tiled(decode, whole, 96, 136, core=4, margin=8)
        diff = np.abs(rec.astype(int) - ref)
        assert diff.max() <= 2 and np.mean(diff > 0) < 0.01
    finally:
        model.close()
