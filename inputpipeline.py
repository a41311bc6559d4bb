"""Training input: batches of random crops of images, as a graph-mode tf.data pipeline.

A dataset is named by a spec string (``--dataset_train`` / ``--dataset_test`` of train.py):

* ``imgnet_train`` / ``imgnet_test``: TFRecord files ``$RECORDS_ROOT/train/*.tfrecord`` resp.
  ``$RECORDS_ROOT/val/*.tfrecord`` (``RECORDS_ROOT`` defaults to ``data``). Each record is one
  ``tf.train.Example`` holding the encoded image (JPEG/PNG) under the feature key ``image/encoded``.
* anything else: a glob of image files (or a directory, meaning all images in it), or several separated by
  commas (their union: e.g. the training photos without the held-out ones,
  ``'train/bsds500_t*,train/imagenet_*'``); files with one of images.IMAGE_EXTENSIONS (any case) are kept, and those in a format TensorFlow cannot decode (TIFF, PPM)
  are reported and skipped like unreadable ones.

``input_batch`` returns a float32 tensor of shape [batch_size, crop_h, crop_w, 3] (NHWC, values 0..255)
that yields a new batch every time it is evaluated, forever. Everything per image (reading, decoding,
cropping, flipping) runs inside tf.data in background threads, and batches are prefetched, so a
training step only pays for dequeuing a ready batch.

Like the original's ``constants.py``, two environment variables tune the pipeline (read by ``env_settings``):
``NUM_CROPS_PER_IMG`` (default 1): crops taken from every image; a batch then holds
batch_size // NUM_CROPS_PER_IMG images with that many crops each, next to each other and flipped together.
``NUM_PREPROCESS_THREADS`` (default 4): images read, decoded and cropped in parallel.

The test pipeline (``shuffle=False``) reads the files in sorted order, record files one after the other, and
seeds its crops and flips with 666 (the original's op seed): the sequence of test batches is the same in
every run. Crops and flips use stateless random ops seeded by the image's position in the stream, so the
result does not depend on which thread handles which image.

Images smaller than the crop and unreadable files are skipped, and always said so on stderr (sizes there are
width x height, crops too):

* file globs: a header-only PIL scan at set-up time finds them (cheap, PIL reads only the header), and one
  line says how many were skipped and why, naming a few.
* TFRecords: their sizes are only known by reading them, so at set-up time only the first record file (in
  sorted order) is checked the same way; the others are checked while training: the first, 10th, 100th, ...
  dropped image is reported with the counts so far. prepare_imagenet.py makes every image's shorter side
  at least 256 by default, so with its records and crops up to 256 nothing is dropped.
"""
import collections
import glob
import io
import os
import sys
import threading

import images
from tf_helpers import tf

RECORDS_ROOT_ENV = 'RECORDS_ROOT'
RECORDS_ROOT_DEFAULT = 'data'
NUM_CROPS_PER_IMG_ENV = 'NUM_CROPS_PER_IMG'
NUM_PREPROCESS_THREADS_ENV = 'NUM_PREPROCESS_THREADS'
# The defaults of the original's constants.py.
NUM_CROPS_PER_IMG_DEFAULT = 1
NUM_PREPROCESS_THREADS_DEFAULT = 4
# The original seeded the crops, flips and queue of its (unshuffled) pipelines with this op seed.
TEST_SEED = 666
IMAGE_FEATURE_KEY = 'image/encoded'
# Size of the ImageNet train set; hard-coded because counting records would mean reading all of them,
# and the number is only needed for the epoch length of the LR schedule.
IMGNET_TRAIN_NUM_IMAGES = 1281167
# name -> (sub-directory of $RECORDS_ROOT, num_images)
_RECORD_DATASETS = {
    'imgnet_train': ('train', IMGNET_TRAIN_NUM_IMAGES),
    'imgnet_test': ('val', None),
}
# Formats PIL may recognise that tf.io.decode_image can decode (with channels=3).
_TF_DECODABLE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'WEBP')
# Skipped files named per reason in the start-up line; the count covers the rest.
_MAX_EXAMPLES = 3


class DatasetError(ValueError):
    """A dataset spec that cannot be turned into usable training input."""


class SettingsError(ValueError):
    """Bad NUM_CROPS_PER_IMG / NUM_PREPROCESS_THREADS, or a batch size they do not fit."""


DatasetSpec = collections.namedtuple('DatasetSpec', ['name', 'kind', 'files', 'num_images'])
DatasetSpec.__doc__ = """A resolved dataset.

name: the spec string it came from. kind: 'records' (TFRecord files of tf.train.Example) or 'files'
(image files). files: sorted list of paths. num_images: number of images, or None if unknown.
"""

EnvSettings = collections.namedtuple('EnvSettings', ['num_crops_per_img', 'num_preprocess_threads'])


def _say(msg):
    print('inputpipeline: ' + msg, file=sys.stderr)
    sys.stderr.flush()


def _records_root():
    return os.environ.get(RECORDS_ROOT_ENV, RECORDS_ROOT_DEFAULT)


def _positive_int_env(environ, name, default):
    raw = environ.get(name, '')
    if not raw.strip():  # unset or empty (`export NAME=` clears it in a shell)
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError('${} must be a positive integer, got {!r}'.format(name, raw))
    return value


def env_settings(environ=None):
    """NUM_CROPS_PER_IMG and NUM_PREPROCESS_THREADS from the environment (the only place they are read).

    :raises SettingsError: if one is set to something else than a positive integer.
    """
    environ = os.environ if environ is None else environ
    return EnvSettings(
        num_crops_per_img=_positive_int_env(environ, NUM_CROPS_PER_IMG_ENV, NUM_CROPS_PER_IMG_DEFAULT),
        num_preprocess_threads=_positive_int_env(environ, NUM_PREPROCESS_THREADS_ENV,
                                                 NUM_PREPROCESS_THREADS_DEFAULT))


def images_per_batch(batch_size, num_crops_per_img):
    """batch_size // num_crops_per_img. :raises SettingsError: unless num_crops_per_img divides batch_size."""
    if num_crops_per_img < 1 or batch_size % num_crops_per_img != 0:
        raise SettingsError('batch_size {} is not divisible by {}={} (a batch holds batch_size // {} images '
                            'with {} crops each)'.format(batch_size, NUM_CROPS_PER_IMG_ENV, num_crops_per_img,
                                                         NUM_CROPS_PER_IMG_ENV, NUM_CROPS_PER_IMG_ENV))
    return batch_size // num_crops_per_img


def resolve_dataset(spec):
    """Turns a dataset spec string (or an already resolved DatasetSpec) into a DatasetSpec.

    :raises DatasetError: if nothing usable matches the spec.
    """
    if isinstance(spec, DatasetSpec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise DatasetError('Dataset spec must be a non-empty string, got {!r}'.format(spec))

    if spec in _RECORD_DATASETS:
        sub_dir, num_images = _RECORD_DATASETS[spec]
        root = _records_root()
        pattern = os.path.join(root, sub_dir, '*.tfrecord')
        files = sorted(glob.glob(pattern))
        if not files:
            raise DatasetError(
                'Dataset {}: no TFRecord files match {} (${}={!r}; set ${} to the directory containing '
                '{}/*.tfrecord)'.format(spec, pattern, RECORDS_ROOT_ENV, root, RECORDS_ROOT_ENV, sub_dir))
        return DatasetSpec(name=spec, kind='records', files=files, num_images=num_images)

    patterns = [os.path.join(p, '*') if os.path.isdir(p) else p for p in _split_globs(spec)]
    matches = set()
    for pattern in patterns:
        matches.update(glob.glob(os.path.expanduser(pattern)))
    files = sorted(p for p in matches
                   if os.path.isfile(p) and images.has_image_extension(p))
    if not files:
        raise DatasetError('Dataset {!r}: no image files ({}) match the glob{} {} ({} matches in total)'.format(
            spec, '/'.join(images.IMAGE_EXTENSIONS), 's' if len(patterns) > 1 else '',
            ', '.join(repr(p) for p in patterns), len(matches)))
    return DatasetSpec(name=spec, kind='files', files=files, num_images=len(files))


def _split_globs(spec):
    """'a,b' -> ['a', 'b'] (empty parts dropped); a spec naming an existing path is one glob even if it
    holds a comma."""
    if os.path.exists(os.path.expanduser(spec)):
        return [spec]
    return [p.strip() for p in spec.split(',') if p.strip()] or [spec]


def iterations_per_epoch(dataset_spec, batch_size, num_crops_per_img=1):
    """num_images // (batch_size // num_crops_per_img) (the original's formula: an epoch sees every image
    once, and a batch holds batch_size // num_crops_per_img images), or None if the dataset's size is
    unknown. Accepts a spec string too.

    :raises SettingsError: unless num_crops_per_img divides batch_size.
    """
    per_batch = images_per_batch(batch_size, num_crops_per_img)
    num_images = resolve_dataset(dataset_spec).num_images
    if num_images is None:
        return None
    return num_images // per_batch


def _crop_hw(crop_size):
    """int or (h, w) -> (h, w)."""
    if isinstance(crop_size, int):
        return crop_size, crop_size
    crop_h, crop_w = crop_size
    return int(crop_h), int(crop_w)


def _header_problem(fileobj, crop_h, crop_w):
    """None if the image in `fileobj` can be decoded by TF and holds a crop_h x crop_w crop, else
    (reason, detail). Reads only the header."""
    from PIL import Image  # only needed here; keeps importing this module cheap otherwise
    try:
        with Image.open(fileobj) as im:
            w, h = im.size
            fmt = im.format
    except Exception as e:  # PIL raises various types for broken files
        return 'unreadable', type(e).__name__
    if fmt not in _TF_DECODABLE_FORMATS:
        return 'in a format TensorFlow cannot decode', fmt
    if h < crop_h or w < crop_w:
        return 'smaller than the {}x{} crop'.format(crop_w, crop_h), '{}x{}'.format(w, h)
    return None


def _skip_line(name, problems, total, what):
    """One line saying how many of `total` images are skipped and why; problems: [(label, reason, detail)]."""
    by_reason = collections.OrderedDict()
    for label, reason, detail in problems:
        by_reason.setdefault(reason, []).append('{} {}'.format(label, detail))
    parts = ['{}{} (e.g. {})'.format('' if len(by_reason) == 1 else '{:,} '.format(len(examples)), reason,
                                     ', '.join(examples[:_MAX_EXAMPLES]))
             for reason, examples in by_reason.items()]
    return '{}: skipping {:,} of {:,} {}{}{}'.format(name, len(problems), total, what,
                                                     ' ' if len(by_reason) == 1 else ': ', '; '.join(parts))


def _usable_files(files, crop_h, crop_w, name):
    """The `files` that open and are at least crop_h x crop_w; says on stderr how many others are skipped."""
    usable, problems = [], []
    for path in files:
        problem = _header_problem(path, crop_h, crop_w)
        if problem is None:
            usable.append(path)
        else:
            problems.append((os.path.basename(path),) + problem)
    if problems:
        _say(_skip_line(name, problems, len(files), 'images'))
    return usable


def _check_first_record_file(spec, crop_h, crop_w, name):
    """Checks the images of the first record file like _usable_files checks files; the others are only
    checked while reading (_DropReporter), because reading all of ImageNet at start-up would take minutes.

    :raises DatasetError: if the file is corrupt or its records lack the image feature (the pipeline would
        otherwise drop every record and never produce a batch).
    """
    from google.protobuf.message import DecodeError
    path = spec.files[0]
    problems, total = [], 0
    try:
        for i, serialized in enumerate(tf.io.tf_record_iterator(path)):
            feature = tf.train.Example.FromString(serialized).features.feature
            if IMAGE_FEATURE_KEY not in feature:
                raise DatasetError('Dataset {}: record {} of {} has no feature {!r} (it has: {})'.format(
                    spec.name, i, path, IMAGE_FEATURE_KEY, ', '.join(sorted(feature)) or 'none'))
            total += 1
            encoded = feature[IMAGE_FEATURE_KEY].bytes_list.value[0]
            problem = _header_problem(io.BytesIO(encoded), crop_h, crop_w)
            if problem is not None:
                problems.append(('record {}:'.format(i),) + problem)
    except (tf.errors.OpError, DecodeError) as e:  # a truncated file, or records that are no Examples
        raise DatasetError('Dataset {}: cannot read {} ({}); is it a record file made by make_records.py?'.format(
            spec.name, path, type(e).__name__))
    if problems:
        what = 'images in {}, the first of {:,} record files (the only one checked at start; skips in the ' \
               'others are reported as they happen),'.format(os.path.basename(path), len(spec.files))
        _say(_skip_line(name, problems, total, what))


class _DropReporter(object):
    """Counts the images the running pipeline drops (smaller than the crop, or failing to decode) and says so
    at the 1st, 10th, 100th, ... drop, so that nothing is dropped silently without flooding the log. Runs
    inside tf.py_function, for dropped images only."""

    def __init__(self, name, crop_h, crop_w):
        self._name, self._crop_h, self._crop_w = name, crop_h, crop_w
        self._lock = threading.Lock()
        self.small = self.unreadable = 0
        self._next_report = 1

    def __call__(self, h, w, num_failed_before):
        """:return: whether the h x w image is kept (num_failed_before images before it failed to decode)."""
        h, w, failed = int(h), int(w), int(num_failed_before)
        keep = h >= self._crop_h and w >= self._crop_w
        msg = None
        with self._lock:
            self.unreadable += failed
            self.small += not keep
            total = self.small + self.unreadable
            if total >= self._next_report:
                while self._next_report <= total:
                    self._next_report *= 10
                last = '' if keep else ', the last {}x{}'.format(w, h)
                msg = ('{}: dropped {:,} images while reading so far: {:,} smaller than the {}x{} crop{}, {:,} '
                       'failed to decode (repeats across epochs included; next report at {:,})'.format(
                           self._name, total, self.small, self._crop_w, self._crop_h, last, self.unreadable,
                           self._next_report))
        if msg:
            _say(msg)
        return keep


def _decode(encoded):
    """Encoded JPEG/PNG/... bytes -> uint8 image of shape [H, W, 3] (grayscale and RGBA become RGB)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _parse_record(record):
    """Serialized tf.train.Example -> encoded image bytes (scalar string)."""
    features = tf.io.parse_single_example(record, {IMAGE_FEATURE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return features[IMAGE_FEATURE_KEY]


def _crop_stack(image, index, crop_h, crop_w, num_crops, seed):
    """num_crops random crops of `image` stacked to [num_crops, crop_h, crop_w, 3], all flipped left-right
    together with probability 1/2 (as the original's preprocessing).

    The seeds are (seed, a number derived from the image's index in the stream), different for every crop,
    flip and image; stateless ops make the result independent of which parallel call runs first.
    """
    first = index * (num_crops + 1)

    def seed_at(k):
        return tf.stack([tf.constant(seed, tf.int64), first + k])

    # + 1: a crop may start at every offset up to and including size - crop
    num_offsets = tf.cast(tf.shape(image)[:2], tf.int64) - tf.constant([crop_h - 1, crop_w - 1], tf.int64)
    crops = []
    for k in range(num_crops):
        # full-range int64 draws modulo the number of offsets: the bias is below 2^-40
        draws = tf.random.stateless_uniform([2], seed_at(k), minval=None, maxval=None, dtype=tf.int64)
        offset = tf.cast(tf.math.floormod(draws, num_offsets), tf.int32)
        crops.append(tf.slice(image, tf.concat([offset, [0]], axis=0), [crop_h, crop_w, 3]))
    stack = tf.stack(crops)
    flip = tf.random.stateless_uniform([], seed_at(num_crops)) < 0.5
    return tf.cond(flip, lambda: tf.reverse(stack, axis=[2]), lambda: stack)


def _shard_files(spec, shard):
    """Every count-th file from index on: whole files per worker, so no two workers read the same image."""
    index, count = shard
    if not 0 <= index < count:
        raise DatasetError('Shard {} of {} does not exist'.format(index, count))
    if len(spec.files) < count:
        raise DatasetError('Dataset {}: {} {} cannot be shared among {} workers (each reads its own files); '
                           'use at least as many files as workers{}'.format(
                               spec.name, len(spec.files), 'record files' if spec.kind == 'records' else 'images',
                               count, ' (make_records.py writes smaller record files with --per_record)'
                               if spec.kind == 'records' else ''))
    return spec.files[index::count]


def input_batch(dataset, crop_size, batch_size, shuffle=True, seed=TEST_SEED, num_parallel_calls=None,
                num_crops_per_img=1, name='train', shard=None):
    """Batches of random crops of the images of `dataset`, forever.

    :param dataset: spec string (see module docstring) or DatasetSpec.
    :param crop_size: int or (crop_h, crop_w).
    :param batch_size: crops per batch; incomplete batches are dropped, so the shape is static.
    :param shuffle: True: reshuffle the file list every epoch, read 8 record files at once, and shuffle the
        images' crop stacks in a buffer of 8 * batch_size crops. False (the test batch): files in sorted
        order, record files one after the other, no shuffling.
    :param seed: seed of all random ops of the pipeline (crops, flips and the shuffling).
    :param num_parallel_calls: images read, decoded and cropped in parallel; None means tf.data.AUTOTUNE.
    :param num_crops_per_img: crops per image; they are consecutive in the batch and flipped together.
    :param name: name scope of the ops and name of the pipeline in messages.
    :param shard: (index, count): read only the files (image files or record files) index, index + count, ...
        of the sorted list, this worker's share in distributed training; None: all.
    :return: float32 tensor of shape [batch_size, crop_h, crop_w, 3], NHWC, values in 0..255.
    :raises DatasetError: if the dataset has no usable images.
    :raises SettingsError: unless num_crops_per_img divides batch_size.
    """
    spec = resolve_dataset(dataset)
    crop_h, crop_w = _crop_hw(crop_size)
    num_images_per_batch = images_per_batch(batch_size, num_crops_per_img)
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    files = spec.files
    if shard is not None:
        files = _shard_files(spec, shard)
    if spec.kind == 'files':
        files = _usable_files(files, crop_h, crop_w, name)
        if not files:
            raise DatasetError('Dataset {!r}: none of its {} images is readable and at least {}x{}'.format(
                spec.name, len(spec.files), crop_w, crop_h))
    else:
        _check_first_record_file(spec._replace(files=files), crop_h, crop_w, name)
    reporter = _DropReporter(name, crop_h, crop_w)

    def keep(index, num_failed_before, image):
        shape = tf.shape(image)
        ok = tf.logical_and(tf.logical_and(shape[0] >= crop_h, shape[1] >= crop_w), tf.equal(num_failed_before, 0))
        # The Python reporter only runs for the rare images that are dropped or follow a dropped one.
        return tf.cond(ok, lambda: tf.constant(True), lambda: tf.reshape(
            tf.py_function(reporter, [shape[0], shape[1], num_failed_before], tf.bool), []))

    with tf.name_scope(name + '_input'):
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
        if shuffle:
            # Shuffle before repeat, so every epoch sees the files in a new order.
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()

        if spec.kind == 'files':
            ds = ds.map(tf.io.read_file, num_parallel_calls=parallel)
        elif shuffle:
            # Read several record files at once, so consecutive images come from different files.
            ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                               num_parallel_calls=parallel)
        else:
            ds = ds.flat_map(tf.data.TFRecordDataset)
        if spec.kind == 'records':
            ds = ds.map(_parse_record, num_parallel_calls=parallel)

        # Numbered before anything can be dropped: the number seeds the image's crops, and a gap in the
        # numbers after ignore_errors counts the images that failed to decode (for files, ones broken after
        # a valid header, e.g. truncated JPEGs).
        ds = ds.enumerate()
        ds = ds.map(lambda index, encoded: (index, _decode(encoded)), num_parallel_calls=parallel)
        ds = ds.ignore_errors()
        ds = ds.scan(tf.constant(-1, tf.int64),
                     lambda last, element: (element[0], (element[0], element[0] - last - 1, element[1])))
        ds = ds.filter(keep)
        ds = ds.map(lambda index, _, image: _crop_stack(image, index, crop_h, crop_w, num_crops_per_img, seed),
                    num_parallel_calls=parallel)
        if shuffle:
            # File-level shuffling leaves consecutive crops correlated for records (images within a file
            # are in a fixed order); a small buffer mixes them without holding many images. Whole stacks are
            # shuffled, so an image's crops stay next to each other.
            ds = ds.shuffle(8 * num_images_per_batch, seed=seed + 3, reshuffle_each_iteration=True)
        # batch_size is a multiple of num_crops_per_img, so every batch holds whole stacks.
        ds = ds.unbatch()
        ds = ds.batch(batch_size, drop_remainder=True)
        # Casting inside the pipeline keeps the train step free of input work; uint8 before the cast
        # keeps the per-image buffers small.
        ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=parallel)
        # Prefetch so that decoding the next batches overlaps with the train step.
        ds = ds.prefetch(2)
        batch = tf.data.make_one_shot_iterator(ds).get_next(name='batch')
    batch.set_shape([batch_size, crop_h, crop_w, 3])
    return batch
