#!/usr/bin/env python
"""What photo-scale coding costs: tiled autoencoder vs the whole image, block coding vs one block.

    python bench/tiling_cost.py [--images DIR] [--size 6mp] [--model LOG_DIR] [--max_memory MB]

On a mosaic of the photos in --images (see bench/codec_scale.py), with the tiles and blocks that
`codec.py` chooses for --max_memory: the fraction of symbols that differ between the tiled and the
whole-image encoder, PSNR and MS-SSIM of the tiled and the whole-image reconstruction (of the same
symbols), and the file size with the chosen blocks against one block for the whole volume. The whole-image
runs need several GB.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import image_codec  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import ms_ssim_np  # noqa: E402
import symbol_coder  # noqa: E402
from codec_scale import SIZES, mosaic, photo_paths  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', default=os.path.join(ROOT, 'samples'))
    p.add_argument('--size', default='6mp', choices=sorted(SIZES))
    p.add_argument('--model', default=None)
    p.add_argument('--max_memory', type=float, default=image_codec.DEFAULT_MAX_MEMORY_MB)
    flags = p.parse_args(argv)
    h, w = SIZES[flags.size]
    img = mosaic(photo_paths(flags.images), h, w)
    model = inference.Model(flags.model or image_codec.default_model_dir())
    plan = image_codec.plan_coding(model, h, w, flags.max_memory)
    print('{} ({}x{}): autoencoder tiles of {} px, decoder tiles of {} symbols, blocks {}x{}'.format(
        flags.size, w, h, plan['ae_core'], plan['dec_core'], *plan['blocks']))
    whole = model.run(images.pad_to_multiple(img), model.g.symbols)[0]
    tiled = image_codec.image_to_symbols(model, img, plan['ae_core'])
    print('symbols differing, tiled vs whole encoder: {} of {} ({:.4%})'.format(
        int(np.sum(tiled != whole)), whole.size, np.mean(tiled != whole)))
    rec_whole = images.to_uint8(model.decode_symbols(tiled))[:h, :w]
    rec_tiled = image_codec.symbols_to_image(model, tiled, h, w, plan['dec_core'])
    for name, rec in (('whole-image decoder', rec_whole), ('tiled decoder', rec_tiled)):
        print('{:>20}: PSNR {:.4f} dB, MS-SSIM {:.6f}'.format(name, ms_ssim_np.psnr(img, rec),
                                                             ms_ssim_np.ms_ssim(img, rec)))
    print('pixels differing, tiled vs whole decoder: {:.4%}, max {} grey levels'.format(
        np.mean(rec_tiled != rec_whole), int(np.abs(rec_tiled.astype(int) - rec_whole).max())))
    sizes = {}
    for blocks in sorted({(1, 1), tuple(plan['blocks'])}):
        sizes[blocks] = len(symbol_coder.encode_blocks(tiled, model.fixed_point_pc, 'fast', blocks))
        print('blocks {}x{}: {} bytes, {:.5f} bpp'.format(blocks[0], blocks[1], sizes[blocks], 8. * sizes[blocks] / (h * w)))
    if len(sizes) == 2:
        print('rate cost of the blocks: {:+.3%}'.format(sizes[tuple(plan['blocks'])] / sizes[(1, 1)] - 1))


if __name__ == '__main__':
    main()
