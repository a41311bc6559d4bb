#!/usr/bin/env python
"""Packs images into TFRecord files of tf.train.Example, optionally resized (the ``mk_img_rec`` step).

    python make_records.py 'data/kodak/*.png' records/kodak --prefix kodak --per_record 100
    python make_records.py 'photos/**/*.jpg' records/photos --shorter_side 512 --jobs 8

Every Example holds one encoded image under ``--feature_key`` (default ``image/encoded``, what
inputpipeline.py reads); records are ``OUT_DIR/<prefix>-%05d.tfrecord`` with ``--per_record`` images
each. prepare_imagenet.py is a thin layer over this module.

Sources (the first argument): a glob of image files (``**`` recurses), a directory (all images below it,
recursively), or an uncompressed tar. Tars may hold images directly (ILSVRC2012 val) or inner tars of images
(ILSVRC2012 train: 1000 ``nXXXXXXXX.tar``, nested to any depth).

Images
  With ``--shorter_side S`` an image whose shorter side is larger than S is downscaled so that it is exactly
  S (aspect ratio kept): large JPEGs are first reduced in the DCT domain by Pillow's ``draft`` to no less
  than 2x the target, then resampled with Lanczos. Smaller images are kept at their size unless ``--upscale``
  is given, which resizes them up to S (Lanczos) too, so that every image ends with shorter side exactly S
  like ImageMagick's ``-resize SxS^`` (what prepare_imagenet.py does by default). Resized images are
  re-encoded as JPEG at ``--quality`` (default 95; at >= 90 without chroma subsampling, as ImageMagick
  does). Images that need no resizing (or all images, without ``--shorter_side``) are kept byte-for-byte if
  they are RGB JPEGs; anything else (CMYK or grayscale JPEGs, PNGs, also PNGs named .JPEG) becomes an RGB
  JPEG. Every image is decoded fully, so truncated or corrupt files are noticed: such files are reported on
  stderr and in ``OUT_DIR/skipped.txt`` (``name<TAB>reason``) and left out, never fatal.

Order and resuming
  Inputs are sorted by name and then, with ``--order shuffled`` (default), shuffled with ``--seed``: image i
  of that order goes into record i // per_record. (``--order sorted`` keeps e.g. ImageNet's class order,
  which makes each record hold one or two classes only.) The order is fixed by the inputs and the settings,
  so a record file is done once it exists: each is written to a temporary file next to it and renamed when
  complete (file_helpers.atomic_path), and a rerun skips existing record files without touching them (a finished rerun does no image work at all).
  The settings are kept in ``OUT_DIR/<prefix>-manifest.json``; a rerun with different settings or inputs
  is refused instead of mixing two orders. ``--shard I --num_shards N`` writes only the records k with
  k % N == I, so N machines (sharing OUT_DIR or not) split the work; every shard lists all inputs.

Reading tars without unpacking them
  The tar is scanned once, header by header (tarfile seeks over the data of members, and inner tars are
  scanned through a file object on their part of the outer file): for every image the absolute offset of
  its data in the outer tar file (inner tar's ``offset_data`` + member's ``offset_data``) and its size is
  recorded. Workers then read an image with one seek and one read in the outer tar file, which every worker
  opens once, so no worker ever re-scans a tar. The scan of the ~140 GB train tar reads ~1.3M headers;
  its result is cached in ``OUT_DIR/<prefix>-tar-index.jsonl`` (keyed by the tar's name and size), so
  reruns and further shards sharing OUT_DIR skip it. Compressed tars cannot be read this way.

Parallelism
  ``--jobs`` worker processes (Pillow only, no TensorFlow) read and convert images; the main process writes
  the records in order with tf.io.TFRecordWriter (TensorFlow is imported only once there is something to
  write). Workers are started with 'spawn', so they are independent of the parent's threads.
"""
import argparse
import collections
import glob
import hashlib
import io
import json
import multiprocessing
import os
import random
import sys
import tarfile
import time

import file_helpers
import images

FEATURE_KEY_DEFAULT = 'image/encoded'
SKIPPED_FILE = 'skipped.txt'
RECORD_PATTERN = '{}-{:05d}.tfrecord'
_INDEX_VERSION = 1
_MANIFEST_VERSION = 1


class RecordsError(Exception):
    """A problem that ends the run with a message instead of a traceback."""


# An input image: `name` identifies it (sorting, skipped.txt, manifest hash); `ref` is what a worker needs
# to read its bytes: a file path (str), or (tar_path, offset, size) for data inside an uncompressed tar.
Item = collections.namedtuple('Item', ['name', 'ref'])
Stats = collections.namedtuple('Stats', ['num_inputs', 'num_records', 'records_in_shard', 'new_records',
                                         'existing_records', 'written', 'skipped', 'seconds',
                                         'process_seconds'])


def _log(msg):
    print(msg, file=sys.stderr)
    sys.stderr.flush()


# Listing inputs ----------------------------------------------------------------------------------------

def is_tar_source(source):
    return os.path.isfile(source) and (source.lower().endswith('.tar') or tarfile.is_tarfile(source))


def list_inputs(source, index_cache_path=None):
    """All images of `source` (tar file, directory or glob) as Items sorted by name.

    :param index_cache_path: for tar sources, where to cache the scanned index (None: no cache).
    :raises RecordsError: if the source does not exist or holds no images.
    """
    if is_tar_source(source):
        items = list_tar(source, index_cache_path)
    elif os.path.isdir(source):
        items = list_folder(source)
    else:
        items = list_glob(source)
    if not items:
        raise RecordsError('No images ({}) found in {}'.format(' '.join(images.IMAGE_EXTENSIONS), source))
    items.sort(key=lambda item: item.name)
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise RecordsError('{}: image names are not unique'.format(source))
    return items


def list_glob(pattern):
    """Image files matching the glob (``**`` recurses); names are absolute paths."""
    paths = glob.glob(os.path.expanduser(pattern), recursive=True)
    return [Item(os.path.abspath(p), os.path.abspath(p)) for p in paths
            if images.has_image_extension(p) and os.path.isfile(p)]


def list_folder(root):
    """Image files below `root` (recursively, following symlinked files); names are relative paths."""
    items = []
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            path = os.path.join(dirpath, fn)
            if images.has_image_extension(fn) and os.path.isfile(path):
                items.append(Item(os.path.relpath(path, root), os.path.abspath(path)))
    return items


def _scan_tar(fileobj, base_offset, prefix, tar_path, items):
    """Appends the images of the (uncompressed) tar read from `fileobj` to `items`, recursing into inner
    tars. Offsets of members are relative to `fileobj`'s start, which is at `base_offset` in `tar_path`."""
    with tarfile.open(fileobj=fileobj, mode='r:') as tar:
        for member in tar:
            if not member.isreg():
                continue
            name = prefix + member.name
            offset = base_offset + member.offset_data
            if member.name.lower().endswith('.tar'):
                _scan_tar(tar.extractfile(member), offset, name + '/', tar_path, items)
            elif images.has_image_extension(member.name):
                items.append(Item(name, (tar_path, offset, member.size)))
            tar.members = []  # keep memory flat: tarfile would otherwise keep every TarInfo


def _index_key(tar_path):
    return {'version': _INDEX_VERSION, 'tar': os.path.basename(tar_path), 'size': os.path.getsize(tar_path)}


def list_tar(tar_path, index_cache_path=None):
    """Images in an uncompressed tar (with inner tars), as Items with refs (tar_path, offset, size)."""
    tar_path = os.path.abspath(tar_path)
    key = _index_key(tar_path)
    if index_cache_path and os.path.exists(index_cache_path):
        with open(index_cache_path) as f:
            if json.loads(f.readline()) == key:
                items = [Item(name, (tar_path, offset, size)) for name, offset, size in map(json.loads, f)]
                _log('{}: {} images (index from {})'.format(tar_path, len(items), index_cache_path))
                return items
    _log('{}: scanning tar headers (once) ...'.format(tar_path))
    t0 = time.time()
    items = []
    try:
        with open(tar_path, 'rb') as f:
            _scan_tar(f, 0, '', tar_path, items)
    except tarfile.ReadError as e:
        raise RecordsError('{}: cannot read as an uncompressed tar ({}); compressed tars are not supported, '
                           'decompress it first'.format(tar_path, e))
    _log('{}: {} images in {:.1f} s'.format(tar_path, len(items), time.time() - t0))
    if index_cache_path and items:
        with file_helpers.atomic_path(index_cache_path) as tmp, open(tmp, 'w') as f:
            f.write(json.dumps(key) + '\n')
            for item in items:
                f.write(json.dumps([item.name, item.ref[1], item.ref[2]]) + '\n')
    return items


def order_inputs(items, order, seed):
    """`items` (sorted by name) in the order they go into records: 'sorted' or 'shuffled' with `seed`."""
    items = sorted(items, key=lambda item: item.name)
    if order == 'shuffled':
        random.Random(seed).shuffle(items)
    elif order != 'sorted':
        raise ValueError('order must be shuffled or sorted, got {!r}'.format(order))
    return items


# Image work (runs in the workers) -------------------------------------------------------------------

_open_tars = {}


def read_ref(ref):
    """The bytes of an input: a file's content, or a member's data read directly from its tar file."""
    if isinstance(ref, str):
        with open(ref, 'rb') as f:
            return f.read()
    tar_path, offset, size = ref
    f = _open_tars.get(tar_path)
    if f is None:
        f = _open_tars[tar_path] = open(tar_path, 'rb')
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise IOError('tar ends early ({} of {} bytes)'.format(len(data), size))
    return data


def target_size(w, h, shorter_side):
    """(w, h) scaled so that the shorter side is exactly shorter_side, the other side rounded."""
    if w <= h:
        return shorter_side, max(shorter_side, int(round(h * shorter_side / float(w))))
    return max(shorter_side, int(round(w * shorter_side / float(h)))), shorter_side


def convert_image(data, shorter_side=None, quality=95, upscale=False):
    """Encoded image bytes -> RGB JPEG bytes whose shorter side is min(original, shorter_side), or exactly
    shorter_side with `upscale`.

    RGB JPEGs that need no resizing are returned unchanged (after checking that they decode).
    :raises Exception: (various types from Pillow) if the data is not a readable image.
    """
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if w < 1 or h < 1:
        raise ValueError('empty image ({}x{})'.format(w, h))
    size = None
    if shorter_side is not None and min(w, h) > shorter_side:
        size = target_size(w, h, shorter_side)
        if im.format == 'JPEG':
            im.draft(im.mode, (2 * size[0], 2 * size[1]))  # DCT-domain reduction to >= 2x the target
    elif upscale and shorter_side is not None and min(w, h) < shorter_side:
        size = target_size(w, h, shorter_side)
    elif im.format == 'JPEG' and im.mode == 'RGB':
        im.load()  # decode fully, so that truncated/corrupt files are noticed
        return data
    if im.mode != 'RGB':
        im = im.convert('RGB')  # CMYK, L, P, RGBA, ...; loads the image
    if size is not None:
        im = im.resize(size, Image.LANCZOS)
    out = io.BytesIO()
    im.save(out, 'JPEG', quality=quality, subsampling=0 if quality >= 90 else 2)
    return out.getvalue()


_worker_settings = {}


def _init_worker(shorter_side, quality, upscale):
    _worker_settings.update(shorter_side=shorter_side, quality=quality, upscale=upscale)


def _work(ref):
    """-> (jpeg bytes, None) or (None, reason) for an unreadable input."""
    try:
        return convert_image(read_ref(ref), **_worker_settings), None
    except Exception as e:  # Pillow raises many types for broken files
        return None, '{}: {}'.format(type(e).__name__, e).replace('\n', ' ').replace('\t', ' ')


# Records ------------------------------------------------------------------------------------------------

def record_path(out_dir, prefix, k):
    return os.path.join(out_dir, RECORD_PATTERN.format(prefix, k))


def manifest_path(out_dir, prefix):
    return os.path.join(out_dir, '{}-manifest.json'.format(prefix))


def _check_manifest(out_dir, prefix, manifest, num_records):
    """Writes the manifest, or checks that existing records were made with the same settings."""
    path = manifest_path(out_dir, prefix)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != manifest:
            have_records = any(os.path.exists(record_path(out_dir, prefix, k)) for k in range(num_records)) \
                or glob.glob(os.path.join(glob.escape(out_dir), glob.escape(prefix) + '-*.tfrecord'))
            if have_records:
                diff = ', '.join('{}: {} -> {}'.format(k, old.get(k), manifest.get(k))
                                 for k in sorted(set(old) | set(manifest)) if old.get(k) != manifest.get(k))
                raise RecordsError(
                    '{} holds records made from other inputs or with other settings ({}); a rerun must use '
                    'the same inputs and settings. Use another OUT_DIR or delete {}/{}-*.tfrecord and {}'
                    .format(out_dir, diff, out_dir, prefix, path))
        else:
            return
    file_helpers.atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def _append_new_lines(path, lines):
    """Adds those of `lines` that `path` does not hold yet (a redone record repeats its skips)."""
    have = []
    if os.path.exists(path):
        with open(path) as f:
            have = f.readlines()
    known = set(have)
    new = [line for line in lines if line not in known]
    if new:
        file_helpers.atomic_write_bytes(path, ''.join(have + new).encode())


def _make_example_fn(feature_key):
    from tf_helpers import tf  # TensorFlow only in the main process, and only if there is work

    def to_example(data):
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        return tf.train.Example(features=tf.train.Features(feature={feature_key: feature})).SerializeToString()
    return tf, to_example


def write_records(items, out_dir, prefix, per_record, shorter_side=None, quality=95,
                  feature_key=FEATURE_KEY_DEFAULT, jobs=None, shard=0, num_shards=1, order='shuffled', seed=0,
                  progress=True, start_time=None, upscale=False):
    """Converts `items` (any order; they are ordered by `order`/`seed`) into record files in `out_dir`.

    :return: Stats.
    :raises RecordsError: on bad settings, or if `out_dir` has records made with other settings.
    """
    start_time = time.time() if start_time is None else start_time
    if per_record < 1:
        raise RecordsError('--per_record must be >= 1, got {}'.format(per_record))
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise RecordsError('need 0 <= --shard < --num_shards, got {} and {}'.format(shard, num_shards))
    if shorter_side is not None and shorter_side < 1:
        raise RecordsError('--shorter_side must be >= 1, got {}'.format(shorter_side))
    if upscale and shorter_side is None:
        raise RecordsError('--upscale needs --shorter_side (the size to upscale to)')
    if not 1 <= quality <= 100:
        raise RecordsError('--quality must be in 1..100, got {}'.format(quality))
    jobs = jobs or os.cpu_count() or 1
    items = order_inputs(items, order, seed)
    num_records = (len(items) + per_record - 1) // per_record
    os.makedirs(out_dir, exist_ok=True)
    names = '\n'.join(item.name for item in items).encode('utf-8', 'surrogateescape')
    manifest = {'version': _MANIFEST_VERSION, 'prefix': prefix, 'feature_key': feature_key,
                'per_record': per_record, 'shorter_side': shorter_side, 'quality': quality, 'order': order,
                'seed': seed if order == 'shuffled' else None, 'num_inputs': len(items),
                'num_records': num_records, 'inputs_sha1': hashlib.sha1(names).hexdigest()}
    if upscale:
        # Only when set, so that records made before the option existed (never upscaled) still match their
        # manifest, while a rerun that would now upscale is refused instead of mixing two sizings.
        manifest['upscale'] = True
    _check_manifest(out_dir, prefix, manifest, num_records)

    mine = [k for k in range(num_records) if k % num_shards == shard]
    pending = [k for k in mine if not os.path.exists(record_path(out_dir, prefix, k))]
    for k in mine:  # left over by a killed run of this shard
        file_helpers.remove_leftover_temp_files(record_path(out_dir, prefix, k))
    ranges = [(k, k * per_record, min((k + 1) * per_record, len(items))) for k in pending]
    refs = [items[i].ref for _, lo, hi in ranges for i in range(lo, hi)]
    shard_note = ' (shard {} of {}: {} records)'.format(shard, num_shards, len(mine)) if num_shards > 1 else ''
    _log('{} images -> {} record files {}{}; {} done already, {} to write ({} images, {} jobs)'.format(
        len(items), num_records, record_path(out_dir, prefix, 0).replace('00000', '%05d'), shard_note,
        len(mine) - len(pending), len(pending), len(refs), min(jobs, max(1, len(refs)))))

    written = skipped = 0
    t_process = time.time()
    if refs:
        pool = None
        if jobs > 1 and len(refs) > 1:
            pool = multiprocessing.get_context('spawn').Pool(
                min(jobs, len(refs)), initializer=_init_worker, initargs=(shorter_side, quality, upscale))
            chunksize = max(1, min(16, len(refs) // (4 * jobs)))
            results = pool.imap(_work, refs, chunksize)  # in order: records are filled sequentially
        else:
            _init_worker(shorter_side, quality, upscale)
            results = map(_work, refs)
        try:
            from tqdm import tqdm
            tf, to_example = _make_example_fn(feature_key)  # imports TF while the workers start up
            skipped_path = os.path.join(out_dir, SKIPPED_FILE)
            with tqdm(total=len(refs), unit='img', disable=not progress, mininterval=1., smoothing=0.1,
                      dynamic_ncols=True, file=sys.stderr) as bar:
                for k, lo, hi in ranges:
                    path = record_path(out_dir, prefix, k)
                    skipped_lines = []
                    with file_helpers.atomic_path(path) as tmp:
                        with tf.io.TFRecordWriter(tmp) as writer:
                            for i in range(lo, hi):
                                data, reason = next(results)
                                if data is None:
                                    skipped_lines.append('{}\t{}\n'.format(items[i].name, reason))
                                    bar.write('skipping {}: {}'.format(items[i].name, reason), file=sys.stderr)
                                else:
                                    writer.write(to_example(data))
                                bar.update(1)
                        if skipped_lines:  # before the rename, so that an interrupted run loses no line
                            _append_new_lines(skipped_path, skipped_lines)
                    written += hi - lo - len(skipped_lines)
                    skipped += len(skipped_lines)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    end = time.time()
    return Stats(num_inputs=len(items), num_records=num_records, records_in_shard=len(mine),
                 new_records=len(pending), existing_records=len(mine) - len(pending), written=written,
                 skipped=skipped, seconds=end - start_time, process_seconds=end - t_process)


def summary(stats, out_dir):
    rate = stats.written / stats.process_seconds if stats.process_seconds > 0 else 0.
    skipped = ''
    if stats.skipped:
        skipped = ' (see {})'.format(os.path.join(out_dir, SKIPPED_FILE))
    return ('Done: {} images written, {} skipped{}; {} new record files, {} already done ({} in total); '
            '{:.1f} s ({:.1f} s converting), {:.1f} images/s'.format(
                stats.written, stats.skipped, skipped, stats.new_records, stats.existing_records,
                stats.num_records, stats.seconds, stats.process_seconds, rate))


# Command line -------------------------------------------------------------------------------------------

def add_common_args(p, shorter_side_default, per_record_default, shorter_side_help):
    """The options shared by make_records.py and prepare_imagenet.py (each adds its own upscale flag,
    because their defaults differ)."""
    p.add_argument('--per_record', type=int, default=per_record_default,
                   help='images per record file. Default: %(default)s')
    p.add_argument('--shorter_side', type=int, default=shorter_side_default,
                   help='{} Default: {}'.format(shorter_side_help,
                                                shorter_side_default if shorter_side_default else 'keep the size'))
    p.add_argument('--quality', type=int, default=95,
                   help='JPEG quality of re-encoded images. Default: %(default)s')
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='worker processes. Default: the number of CPUs (%(default)s)')
    p.add_argument('--shard', type=int, default=0, help='write only records k with k %% num_shards == shard')
    p.add_argument('--num_shards', type=int, default=1, help='Default: %(default)s')
    p.add_argument('--order', choices=['shuffled', 'sorted'], default='shuffled',
                   help='order of images in the records: shuffled with --seed, or sorted by name. '
                        'Default: %(default)s')
    p.add_argument('--seed', type=int, default=0, help='seed of --order shuffled. Default: %(default)s')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')


def run(source, out_dir, prefix, flags, feature_key=FEATURE_KEY_DEFAULT):
    """Lists `source`, writes the records, prints the summary. :return: Stats."""
    start = time.time()
    os.makedirs(out_dir, exist_ok=True)
    index_cache = os.path.join(out_dir, '{}-tar-index.jsonl'.format(prefix))
    items = list_inputs(source, index_cache_path=index_cache)
    stats = write_records(items, out_dir, prefix, flags.per_record, flags.shorter_side, flags.quality,
                          feature_key, flags.jobs, flags.shard, flags.num_shards, flags.order, flags.seed,
                          progress=not flags.no_progress, start_time=start, upscale=flags.upscale)
    print(summary(stats, out_dir))
    sys.stdout.flush()
    return stats


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', metavar='GLOB', help="glob of images (quote it; ** recurses), a directory or a tar")
    p.add_argument('out_dir', metavar='OUT_DIR')
    p.add_argument('--prefix', default='images', help='records are OUT_DIR/PREFIX-%%05d.tfrecord. '
                   'Default: %(default)s')
    p.add_argument('--feature_key', default=FEATURE_KEY_DEFAULT, help='Default: %(default)s')
    add_common_args(p, shorter_side_default=None, per_record_default=1250,
                    shorter_side_help='downscale images whose shorter side is larger to this (see --upscale).')
    p.add_argument('--upscale', action='store_true',
                   help='with --shorter_side S: also resize images whose shorter side is smaller up to S, so that '
                        'every image has shorter side exactly S (ImageMagick -resize SxS^, the original ImageNet '
                        'recipe). Off by default: a generic tool should not invent pixels, but training crops '
                        'larger than an image\'s shorter side make inputpipeline.py skip that image.')
    return p.parse_args(argv)


def main(argv=None):
    flags = parse_args(argv)
    try:
        run(flags.source, flags.out_dir, flags.prefix, flags, feature_key=flags.feature_key)
    except RecordsError as e:
        print('Error: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
