"""Training input: batches of random crops of images, as a graph-mode tf.data pipeline.

A dataset is named by a spec string (``--dataset_train`` / ``--dataset_test`` of train.py):

* ``imgnet_train`` / ``imgnet_test``: TFRecord files ``$RECORDS_ROOT/train/*.tfrecord`` resp.
  ``$RECORDS_ROOT/val/*.tfrecord`` (``RECORDS_ROOT`` defaults to ``data``). Each record is one
  ``tf.train.Example`` holding the encoded image (JPEG/PNG) under the feature key ``image/encoded``.
* anything else: a glob of image files (or a directory, meaning all images in it); files ending in
  .png / .jpg / .jpeg (any case) are kept.

``input_batch`` returns a float32 tensor of shape [batch_size, crop_h, crop_w, 3] (NHWC, values 0..255)
that yields a new batch every time it is evaluated, forever. Everything per image (reading, decoding,
cropping, flipping) runs inside tf.data in background threads, and batches are prefetched, so a
training step only pays for dequeuing a ready batch.

Images smaller than the crop and unreadable files are skipped with a warning instead of crashing the run:
for file globs by a fast header-only PIL pre-scan at set-up time (so the skipped files can be named),
for TFRecords inside the graph (the records have no names, so they are skipped silently).
"""
import collections
import glob
import os
import sys

from tf_helpers import tf

RECORDS_ROOT_ENV = 'RECORDS_ROOT'
RECORDS_ROOT_DEFAULT = 'data'
IMAGE_FEATURE_KEY = 'image/encoded'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
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
# With more skipped files than this, one summary line is printed instead of one line per file.
_MAX_WARNING_LINES = 10


class DatasetError(ValueError):
    """A dataset spec that cannot be turned into usable training input."""


DatasetSpec = collections.namedtuple('DatasetSpec', ['name', 'kind', 'files', 'num_images'])
DatasetSpec.__doc__ = """A resolved dataset.

name: the spec string it came from. kind: 'records' (TFRecord files of tf.train.Example) or 'files'
(image files). files: sorted list of paths. num_images: number of images, or None if unknown.
"""


def _warn(msg):
    print('inputpipeline: WARNING: ' + msg, file=sys.stderr)
    sys.stderr.flush()


def _records_root():
    return os.environ.get(RECORDS_ROOT_ENV, RECORDS_ROOT_DEFAULT)


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

    pattern = os.path.join(spec, '*') if os.path.isdir(spec) else spec
    matches = glob.glob(os.path.expanduser(pattern))
    files = sorted(p for p in matches
                   if os.path.isfile(p) and os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError('Dataset {!r}: no image files ({}) match the glob {!r} ({} matches in total)'.format(
            spec, '/'.join(IMAGE_EXTENSIONS), pattern, len(matches)))
    return DatasetSpec(name=spec, kind='files', files=files, num_images=len(files))


def iterations_per_epoch(dataset_spec, batch_size):
    """num_images // batch_size, or None if the dataset's size is unknown. Accepts a spec string too."""
    num_images = resolve_dataset(dataset_spec).num_images
    if num_images is None:
        return None
    return num_images // batch_size


def _crop_hw(crop_size):
    """int or (h, w) -> (h, w)."""
    if isinstance(crop_size, int):
        return crop_size, crop_size
    crop_h, crop_w = crop_size
    return int(crop_h), int(crop_w)


def _usable_files(files, crop_h, crop_w):
    """Header-only PIL scan of `files`: returns those that open and are at least crop_h x crop_w.

    Prints a warning naming the skipped files to stderr. Fast: PIL's Image.open reads only the header.
    """
    from PIL import Image  # only needed here; keeps importing this module cheap otherwise
    usable, skipped = [], []
    for path in files:
        try:
            with Image.open(path) as im:
                w, h = im.size
                fmt = im.format
        except Exception as e:  # PIL raises various types for broken files
            skipped.append((path, 'unreadable ({})'.format(type(e).__name__)))
            continue
        if fmt not in _TF_DECODABLE_FORMATS:
            skipped.append((path, 'unsupported format {}'.format(fmt)))
        elif h < crop_h or w < crop_w:
            skipped.append((path, 'too small ({}x{} < crop {}x{})'.format(h, w, crop_h, crop_w)))
        else:
            usable.append(path)
    if len(skipped) <= _MAX_WARNING_LINES:
        for path, why in skipped:
            _warn('skipping {}: {}'.format(path, why))
    else:
        _warn('skipping {} of {} images (unreadable or smaller than the crop {}x{}), e.g. {}'.format(
            len(skipped), len(files), crop_h, crop_w,
            ', '.join('{} ({})'.format(p, why) for p, why in skipped[:5])))
    return usable


def _decode(encoded):
    """Encoded JPEG/PNG/... bytes -> uint8 image of shape [H, W, 3] (grayscale and RGBA become RGB)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _parse_record(record):
    """Serialized tf.train.Example -> encoded image bytes (scalar string)."""
    features = tf.io.parse_single_example(record, {IMAGE_FEATURE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return features[IMAGE_FEATURE_KEY]


def input_batch(dataset, crop_size, batch_size, shuffle=True, seed=666, num_parallel_calls=None, name='train'):
    """Batches of random crops of the images of `dataset`, forever.

    :param dataset: spec string (see module docstring) or DatasetSpec.
    :param crop_size: int or (crop_h, crop_w).
    :param batch_size: images per batch; incomplete batches are dropped, so the shape is static.
    :param shuffle: reshuffle the file list every epoch and shuffle crops in a buffer of 8 * batch_size.
    :param seed: seed of all random ops of the pipeline.
    :param num_parallel_calls: parallelism of decoding; None means tf.data.AUTOTUNE.
    :param name: name scope of the ops.
    :return: float32 tensor of shape [batch_size, crop_h, crop_w, 3], NHWC, values in 0..255.
    :raises DatasetError: if the dataset has no usable images.
    """
    spec = resolve_dataset(dataset)
    crop_h, crop_w = _crop_hw(crop_size)
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    files = spec.files
    if spec.kind == 'files':
        files = _usable_files(files, crop_h, crop_w)
        if not files:
            raise DatasetError('Dataset {!r}: none of its {} images is readable and at least {}x{}'.format(
                spec.name, len(spec.files), crop_h, crop_w))
    else:
        print('inputpipeline: note: {}: records that fail to decode or are smaller than the crop {}x{} '
              'are skipped silently'.format(spec.name, crop_h, crop_w), file=sys.stderr)

    with tf.name_scope(name + '_input'):
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
        if shuffle:
            # Shuffle before repeat, so every epoch sees the files in a new order.
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()

        if spec.kind == 'files':
            ds = ds.map(tf.io.read_file, num_parallel_calls=parallel)
        else:
            # Read several record files at once, so consecutive images come from different files.
            ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                               num_parallel_calls=parallel)
            ds = ds.map(_parse_record, num_parallel_calls=parallel)

        ds = ds.map(_decode, num_parallel_calls=parallel)
        # Files were pre-scanned, but a file can still be broken after a valid header (truncated JPEG);
        # for records this is the only check.
        ds = ds.ignore_errors()
        ds = ds.filter(lambda im: tf.logical_and(tf.shape(im)[0] >= crop_h, tf.shape(im)[1] >= crop_w))

        def crop_and_flip(image):
            image = tf.image.random_crop(image, [crop_h, crop_w, 3], seed=seed + 1)
            return tf.image.random_flip_left_right(image, seed=seed + 2)

        ds = ds.map(crop_and_flip, num_parallel_calls=parallel)
        if shuffle:
            # File-level shuffling leaves consecutive crops correlated for records (images within a file
            # are in a fixed order); a small buffer of crops mixes them without holding many images.
            ds = ds.shuffle(8 * batch_size, seed=seed + 3, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        # Casting inside the pipeline keeps the train step free of input work; uint8 before the cast
        # keeps the per-image buffers small.
        ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=parallel)
        # Prefetch so that decoding the next batches overlaps with the train step.
        ds = ds.prefetch(2)
        batch = tf.data.make_one_shot_iterator(ds).get_next(name='batch')
    batch.set_shape([batch_size, crop_h, crop_w, 3])
    return batch
