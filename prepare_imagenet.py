#!/usr/bin/env python
"""Prepares ImageNet (ILSVRC2012) for training in one command: downscaled JPEGs packed into TFRecords.

    python prepare_imagenet.py ILSVRC2012_img_train.tar data      # -> data/train/train-%05d.tfrecord
    python prepare_imagenet.py ILSVRC2012_img_val.tar data        # -> data/val/val-%05d.tfrecord
    RECORDS_ROOT=data python train.py ae_configs/cvpr/low pc_configs/cvpr/res_shallow

This replaces the original's shell steps (unpack the tars, ImageMagick ``-resize "256x256^"`` with GNU
parallel, ``fjcommon tf_records mk_img_rec`` with 1250 images per record): the tars are read in place (no
unpacking), and like ``-resize "256x256^"`` every image is resized so that its shorter side is exactly 256 px
(Lanczos, re-encoded as JPEG at quality 95): larger ones are downscaled, and the few whose shorter side is
below 256 px are upscaled (``--no_upscale`` keeps those at their size). Images already at 256 px that are RGB
JPEGs are kept byte-for-byte, and ImageNet's odd files (22 CMYK JPEGs, a PNG named .JPEG, grayscale JPEGs)
become RGB JPEGs. Because every image ends at least 256 px, inputpipeline.py never has to skip one for being
smaller than the paper's 160x160 crop. Unreadable files are listed in
``OUT_DIR/<split>/skipped.txt`` and left out. The records are what inputpipeline.py reads as
``imgnet_train`` / ``imgnet_test`` with ``RECORDS_ROOT=OUT_DIR``.

SOURCE is the train tar (1000 inner class tars), the val tar (flat), or a directory of images (searched
recursively, e.g. an already unpacked ImageNet). ``--split`` defaults to ``val`` if SOURCE's name contains
"val", else ``train``.

By default the images are shuffled (seeded) across record files: the original's records followed the class
order, so each held one or two classes. The run can be interrupted and restarted (finished record files are
kept, a finished run is a no-op), and split over machines with ``--shard I --num_shards N``.
Details (tar indexing, resuming, image conversion): see make_records.py, which does the work.
"""
import argparse
import os
import sys

import make_records

IMAGENET_SHORTER_SIDE = 256
IMAGENET_PER_RECORD = 1250
SPLITS = ('train', 'val')


def guess_split(source):
    """'train' or 'val' from the name of the tar (or directory): *val* -> val, anything else -> train."""
    name = os.path.basename(os.path.normpath(source)).lower()
    if 'train' in name:
        return 'train'
    if 'val' in name:
        return 'val'
    return 'train'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', metavar='SOURCE', help='ILSVRC2012 train or val tar, or a directory of images')
    p.add_argument('out_dir', metavar='OUT_DIR', help='records go to OUT_DIR/<split>/<split>-%%05d.tfrecord')
    p.add_argument('--split', choices=SPLITS, default=None,
                   help='Default: guessed from the name of SOURCE (*train* -> train, *val* -> val, else train)')
    make_records.add_common_args(p, shorter_side_default=IMAGENET_SHORTER_SIDE,
                                 per_record_default=IMAGENET_PER_RECORD,
                                 shorter_side_help='resize images so that their shorter side is exactly this '
                                                   '(with --no_upscale, smaller images keep their size).')
    p.add_argument('--no_upscale', dest='upscale', action='store_false',
                   help='keep images whose shorter side is below --shorter_side at their size instead of '
                        'upscaling them (the original upscaled, as ImageMagick "256x256^" does). Upscaled images '
                        'hold no new detail, only interpolated (blurrier) pixels, and take more space; without '
                        'upscaling, images smaller than the training crop are skipped by inputpipeline.py.')
    return p.parse_args(argv)


def prepare(flags):
    """:return: make_records.Stats."""
    split = flags.split or guess_split(flags.source)
    if not os.path.exists(flags.source):
        raise make_records.RecordsError('{} does not exist'.format(flags.source))
    out_dir = os.path.join(flags.out_dir, split)
    print('{} -> {} (split {})'.format(flags.source, out_dir, split), file=sys.stderr)
    return make_records.run(flags.source, out_dir, split, flags)


def main(argv=None):
    flags = parse_args(argv)
    try:
        prepare(flags)
    except make_records.RecordsError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
