"""Tests of inputpipeline: dataset resolution, skipping of bad images (and saying so), batch shapes/values,
TFRecords, the reproducible test batch, NUM_CROPS_PER_IMG / NUM_PREPROCESS_THREADS."""
import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tf_helpers import tf
import inputpipeline
from inputpipeline import (DatasetError, DatasetSpec, SettingsError, env_settings, input_batch, iterations_per_epoch,
                           resolve_dataset)

H, W = 40, 50  # size of the generated images


def _noise(mode, seed, size=(H, W)):
    rng = np.random.RandomState(seed)
    channels = {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]
    arr = rng.randint(0, 256, size=size + (channels,), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


@pytest.fixture
def image_dir(tmp_path):
    """6 RGB images (PNG/JPEG, mixed-case extensions), 1 gray, 1 RGBA, 1 too small, 1 corrupt, 1 txt."""
    names = ['a1.png', 'a2.PNG', 'b1.jpg', 'b2.JPG', 'b3.jpeg', 'b4.JPEG']
    for i, name in enumerate(names):
        fmt = 'PNG' if name.lower().endswith('png') else 'JPEG'
        _noise('RGB', i).save(str(tmp_path / name), format=fmt)
    _noise('L', 10).save(str(tmp_path / 'gray.png'))
    _noise('RGBA', 11).save(str(tmp_path / 'rgba.png'))
    _noise('RGB', 12, size=(10, 10)).save(str(tmp_path / 'small.png'))
    (tmp_path / 'corrupt.jpg').write_bytes(b'this is not a JPEG at all' * 10)
    (tmp_path / 'notes.txt').write_text('not an image')
    return tmp_path


def _run(batch, n=2):
    with tf.Session(graph=batch.graph) as sess:
        return [sess.run(batch) for _ in range(n)]


def test_resolve_files(image_dir):
    spec = resolve_dataset(str(image_dir / '*'))
    assert spec.kind == 'files'
    assert spec.num_images == 10  # 6 RGB + gray + rgba + small + corrupt; not the .txt
    assert spec.files == sorted(spec.files)
    assert not any(f.endswith('.txt') for f in spec.files)
    # a directory means all images in it
    assert resolve_dataset(str(image_dir)).files == spec.files
    assert resolve_dataset(spec) is spec
    assert iterations_per_epoch(spec, 4) == 2
    assert iterations_per_epoch(DatasetSpec('x', 'records', ['r'], None), 4) is None


def test_resolve_several_globs(image_dir, tmp_path):
    """Comma-separated globs are a union: how the README keeps the held-out photos out of training."""
    everything = resolve_dataset(str(image_dir / '*')).files
    names = [os.path.basename(f) for f in everything]
    first, rest = names[:3], names[3:]
    union = resolve_dataset(','.join(str(image_dir / n) for n in first) + ', ' + str(image_dir / rest[0]))
    assert union.files == sorted(str(image_dir / n) for n in first + rest[:1])
    # overlapping globs count each file once
    assert resolve_dataset('{0}/*,{0}/*'.format(image_dir)).files == everything
    # a path holding a comma is one glob
    odd = tmp_path / 'a,b'
    odd.mkdir()
    shutil.copy(everything[0], odd / 'x.png')
    assert resolve_dataset(str(odd)).num_images == 1
    with pytest.raises(DatasetError, match="globs '.*nope1', '.*nope2'"):
        resolve_dataset(str(tmp_path / 'nope1') + ',' + str(tmp_path / 'nope2'))


def test_resolve_no_match(tmp_path):
    with pytest.raises(DatasetError, match='nothing_here'):
        resolve_dataset(str(tmp_path / 'nothing_here' / '*.png'))
    (tmp_path / 'a.txt').write_text('x')
    with pytest.raises(DatasetError, match=r'no image files .* \(1 matches in total\)'):
        resolve_dataset(str(tmp_path / '*'))
    assert issubclass(DatasetError, ValueError)


def test_input_batch_files(image_dir, capfd):
    with tf.Graph().as_default():
        batch = input_batch(str(image_dir / '*'), crop_size=(32, 32), batch_size=4)
        assert batch.dtype == tf.float32
        assert batch.shape.as_list() == [4, 32, 32, 3]
        err = capfd.readouterr().err
        # one line for all skipped files, with the count and the reasons
        assert err.count('inputpipeline:') == 1
        assert 'inputpipeline: train: skipping 2 of 10 images: ' in err
        assert '1 smaller than the 32x32 crop (e.g. small.png 10x10)' in err
        assert '1 unreadable (e.g. corrupt.jpg UnidentifiedImageError)' in err
        assert 'a1.png' not in err and 'gray.png' not in err and 'rgba.png' not in err
        batches = _run(batch, n=5)  # 20 crops of 8 usable images: wraps around epochs
    for b in batches:
        assert b.shape == (4, 32, 32, 3) and b.dtype == np.float32
        assert b.min() >= 0 and b.max() <= 255
        assert b.std() > 1  # not all equal
        assert np.array_equal(b, np.round(b))  # uint8 values cast to float
    assert not np.array_equal(batches[0], batches[1])


def test_gray_and_rgba_become_rgb(image_dir):
    with tf.Graph().as_default():
        gray = input_batch(str(image_dir / 'gray.png'), 16, 2, shuffle=False, num_parallel_calls=1)
        rgba = input_batch(str(image_dir / 'rgba.png'), 16, 2, shuffle=False, num_parallel_calls=1)
        with tf.Session() as sess:
            g, r = sess.run([gray, rgba])
    assert g.shape == r.shape == (2, 16, 16, 3)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    assert not np.array_equal(r[..., 0], r[..., 1])


def test_no_usable_images(image_dir):
    with tf.Graph().as_default():
        with pytest.raises(DatasetError, match='none of its 1 images is readable and at least 32x32'):
            input_batch(str(image_dir / 's*.png'), crop_size=32, batch_size=2)  # only small.png
        with pytest.raises(DatasetError, match='none of its 10 images is readable and at least 64x64'):
            input_batch(str(image_dir / '*'), crop_size=64, batch_size=2)  # all smaller than 64


def test_many_skipped_files_summarised(tmp_path, capfd):
    for i in range(15):
        _noise('RGB', i, size=(8, 8)).save(str(tmp_path / 'tiny{:02d}.png'.format(i)))
    _noise('RGB', 99).save(str(tmp_path / 'big.png'))
    with tf.Graph().as_default():
        input_batch(str(tmp_path / '*.png'), crop_size=32, batch_size=2, name='test')
    err = capfd.readouterr().err
    assert err.splitlines() == ['inputpipeline: test: skipping 15 of 16 images smaller than the 32x32 crop '
                                '(e.g. tiny00.png 8x8, tiny01.png 8x8, tiny02.png 8x8)']


def test_no_message_when_nothing_is_skipped(tmp_path, capfd):
    for i in range(3):
        _noise('RGB', i).save(str(tmp_path / 'ok{}.png'.format(i)))
    with tf.Graph().as_default():
        batch = input_batch(str(tmp_path / '*.png'), crop_size=32, batch_size=2)
        _run(batch, n=3)  # also nothing dropped while reading
    assert 'inputpipeline' not in capfd.readouterr().err


def test_non_square_crop_is_named_width_by_height(tmp_path, capfd):
    _noise('RGB', 0, size=(40, 30)).save(str(tmp_path / 'h40w30.png'))  # 30 wide: too narrow for 32
    _noise('RGB', 1, size=(30, 40)).save(str(tmp_path / 'h30w40.png'))
    with tf.Graph().as_default():
        batch = input_batch(str(tmp_path / '*.png'), crop_size=(24, 32), batch_size=2)  # (h, w)
        assert batch.shape.as_list() == [2, 24, 32, 3]
    assert 'skipping 1 of 2 images smaller than the 32x24 crop (e.g. h40w30.png 30x40)' in capfd.readouterr().err


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def _write_records(path, payloads):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            feature = {'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_records(tmp_path, monkeypatch, capfd):
    (tmp_path / 'train').mkdir()
    payloads = [_png_bytes(_noise('RGB', i)) for i in range(5)]
    _write_records(tmp_path / 'train' / 'part-0.tfrecord', payloads[:3])
    # a corrupt and a too-small record must be skipped without breaking the pipeline, and reported
    # while reading: only the first record file is checked at start
    _write_records(tmp_path / 'train' / 'part-1.tfrecord',
                   payloads[3:] + [b'garbage', _png_bytes(_noise('RGB', 7, size=(8, 8)))])
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path))

    spec = resolve_dataset('imgnet_train')
    assert spec.kind == 'records' and len(spec.files) == 2
    assert spec.num_images == 1281167
    assert iterations_per_epoch('imgnet_train', 8) == 1281167 // 8
    with tf.Graph().as_default():
        batch = input_batch('imgnet_train', crop_size=32, batch_size=4)
        assert batch.shape.as_list() == [4, 32, 32, 3]
        assert capfd.readouterr().err == ''  # the first file is fine
        batches = _run(batch, n=4)
    for b in batches:
        assert b.shape == (4, 32, 32, 3) and 0 <= b.min() and b.max() <= 255 and b.std() > 1
    # The garbage record's drop is noticed at the next image (the small one): one report for both; later
    # reports (the pipeline reads ahead, over several epochs) only at 10, 100, ... drops.
    lines = capfd.readouterr().err.splitlines()
    assert lines[0] == ('inputpipeline: train: dropped 2 images while reading so far: 1 smaller than the 32x32 '
                        'crop, the last 8x8, 1 failed to decode (repeats across epochs included; next report at 10)')
    assert all(line.startswith('inputpipeline: train: dropped 10 images') for line in lines[1:])


def test_records_first_file_is_checked_at_start(tmp_path, monkeypatch, capfd):
    (tmp_path / 'val').mkdir()
    small = _png_bytes(_noise('RGB', 7, size=(20, 30)))
    _write_records(tmp_path / 'val' / 'a.tfrecord', [_png_bytes(_noise('RGB', 0)), small, b'garbage'])
    _write_records(tmp_path / 'val' / 'b.tfrecord', [_png_bytes(_noise('RGB', 1))])
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path))
    with tf.Graph().as_default():
        input_batch('imgnet_test', crop_size=32, batch_size=2, shuffle=False, name='test')
    err = capfd.readouterr().err
    assert err.count('inputpipeline:') == 1
    assert err.startswith('inputpipeline: test: skipping 2 of 3 images in a.tfrecord, the first of 2 record files')
    assert '1 smaller than the 32x32 crop (e.g. record 1: 30x20); 1 unreadable (e.g. record 2: ' in err


def test_records_without_the_image_feature(tmp_path, monkeypatch):
    """Would otherwise drop every record and never yield a batch."""
    (tmp_path / 'train').mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / 'train' / 'x.tfrecord')) as writer:
        feature = {'img': tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png_bytes(_noise('RGB', 0))]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    (tmp_path / 'train' / 'y.tfrecord').write_bytes(b'not a record file at all')
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path))
    with tf.Graph().as_default():
        with pytest.raises(DatasetError, match=r"record 0 of .*x\.tfrecord has no feature 'image/encoded' "
                                               r"\(it has: img\)"):
            input_batch('imgnet_train', crop_size=32, batch_size=2)
    os.remove(str(tmp_path / 'train' / 'x.tfrecord'))
    with tf.Graph().as_default():
        with pytest.raises(DatasetError, match=r'cannot read .*y\.tfrecord \(DataLossError\)'):
            input_batch('imgnet_train', crop_size=32, batch_size=2)


def test_records_missing(tmp_path, monkeypatch):
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path / 'nope'))
    with pytest.raises(DatasetError, match='RECORDS_ROOT') as e:
        resolve_dataset('imgnet_train')
    assert os.path.join('nope', 'train', '*.tfrecord') in str(e.value)
    with pytest.raises(DatasetError, match='RECORDS_ROOT'):
        resolve_dataset('imgnet_test')


def test_imgnet_test_has_unknown_size(tmp_path, monkeypatch):
    (tmp_path / 'val').mkdir()
    _write_records(tmp_path / 'val' / 'v.tfrecord', [_png_bytes(_noise('RGB', 0))])
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path))
    spec = resolve_dataset('imgnet_test')
    assert spec.num_images is None and iterations_per_epoch(spec, 4) is None


def test_default_records_root(monkeypatch):
    monkeypatch.delenv('RECORDS_ROOT', raising=False)
    assert inputpipeline._records_root() == 'data'


def _save_constant(path, colour, size=(H, W)):
    Image.new('RGB', (size[1], size[0]), colour).save(str(path))


def _colours(batch):
    """The colour of every crop of a batch of constant-colour crops."""
    flat = batch.reshape(batch.shape[0], -1, 3)
    assert (flat == flat[:, :1]).all(), 'crops are not constant'
    return [tuple(int(v) for v in c) for c in flat[:, 0]]


def test_test_batch_reads_sorted_files_unshuffled(tmp_path):
    colours = [(20 * i, 250 - 20 * i, 7 * i) for i in range(10)]
    for i in reversed(range(10)):  # created in reverse, so that directory order is not sorted order
        _save_constant(tmp_path / 'c{:02d}.png'.format(i), colours[i])
    _save_constant(tmp_path / 'c02b.png', (1, 2, 3), size=(8, 8))  # skipped, keeps the others in order
    with tf.Graph().as_default():
        batch = input_batch(str(tmp_path / '*.png'), crop_size=32, batch_size=4, shuffle=False, name='test')
        batches = _run(batch, n=3)
    got = [c for b in batches for c in _colours(b)]
    assert got == colours + colours[:2]  # sorted order, wrapping around after the last file


def test_test_batch_reads_record_files_one_after_the_other(tmp_path, monkeypatch):
    """Not interleaved: the first records of the first file (in sorted order) make the first batch."""
    (tmp_path / 'val').mkdir()

    def png(colour):
        return _png_bytes(Image.new('RGB', (W, H), colour))
    _write_records(tmp_path / 'val' / 'val-00001.tfrecord', [png((0, 0, 3)), png((0, 0, 4))])
    _write_records(tmp_path / 'val' / 'val-00000.tfrecord', [png((0, 0, 0)), png((0, 0, 1)), png((0, 0, 2))])
    monkeypatch.setenv('RECORDS_ROOT', str(tmp_path))
    with tf.Graph().as_default():
        batch = input_batch('imgnet_test', crop_size=32, batch_size=4, shuffle=False, name='test')
        first = _run(batch, n=1)[0]
    assert [c[2] for c in _colours(first)] == [0, 1, 2, 3]


def test_test_batch_is_the_same_in_every_run(image_dir):
    """Same files, crops and flips in two fresh graphs, whatever the graph seed (train.py's --seed) and the
    parallelism (the random ops are stateless, seeded by the image's position); another seed gives other
    crops."""
    def test_batches(seed, graph_seed, num_parallel_calls):
        with tf.Graph().as_default():
            tf.set_random_seed(graph_seed)
            batch = input_batch(str(image_dir / '*'), crop_size=24, batch_size=4, shuffle=False, seed=seed,
                                num_parallel_calls=num_parallel_calls, name='test')
            return np.stack(_run(batch, n=3))
    first = test_batches(666, graph_seed=1, num_parallel_calls=4)
    assert np.array_equal(first, test_batches(666, graph_seed=2, num_parallel_calls=1))
    assert not np.array_equal(first, test_batches(1, graph_seed=1, num_parallel_calls=4))


def test_num_crops_per_img_keeps_an_images_crops_together(tmp_path):
    """NUM_CROPS_PER_IMG=2: crops 2k and 2k+1 of a batch come from one image, flipped together."""
    xx = np.tile(np.arange(W, dtype=np.uint8) * 5, (H, 1))
    for i in range(6):
        arr = np.random.RandomState(i).randint(0, 256, (H, W, 3)).astype(np.uint8)
        arr[..., 0] = 40 * i  # names the image
        arr[..., 2] = xx  # increases to the right, decreases in a flipped crop
        Image.fromarray(arr).save(str(tmp_path / 'img{}.png'.format(i)))
    with tf.Graph().as_default():
        batch = input_batch(str(tmp_path / '*.png'), crop_size=24, batch_size=4, num_crops_per_img=2)
        batches = _run(batch, n=6)
    flips, crops_differ = set(), False
    for b in batches:
        ids = b[..., 0]
        assert (ids == ids[:, :1, :1]).all()
        ids = ids[:, 0, 0]
        slopes = np.sign(b[:, 0, 1, 2] - b[:, 0, 0, 2])
        for k in (0, 2):
            assert ids[k] == ids[k + 1]
            assert slopes[k] == slopes[k + 1]
            flips.add(slopes[k])
            crops_differ |= not np.array_equal(b[k], b[k + 1])
    assert flips == {-1, 1}
    assert crops_differ  # two crops of an image, not one crop twice


def test_env_settings(monkeypatch):
    assert env_settings({}) == (1, 4)
    assert env_settings({'NUM_CROPS_PER_IMG': '2', 'NUM_PREPROCESS_THREADS': ' 8 '}) == (2, 8)
    assert env_settings({'NUM_CROPS_PER_IMG': '', 'NUM_PREPROCESS_THREADS': ''}) == (1, 4)  # `export X=`
    for name in ('NUM_CROPS_PER_IMG', 'NUM_PREPROCESS_THREADS'):
        for bad in ('0', '-1', 'two', '1.5'):
            with pytest.raises(SettingsError, match=r"^\${} must be a positive integer, got '{}'$".format(
                    name, re.escape(bad))):
                env_settings({name: bad})
    monkeypatch.setenv('NUM_CROPS_PER_IMG', '3')
    monkeypatch.setenv('NUM_PREPROCESS_THREADS', '2')
    assert env_settings() == (3, 2)
    assert issubclass(SettingsError, ValueError)  # train.py reports it as an error, without traceback


def test_iterations_per_epoch_counts_images_not_crops(image_dir):
    spec = resolve_dataset(str(image_dir / '*'))  # 10 images
    assert iterations_per_epoch(spec, 4, num_crops_per_img=1) == 10 // 4
    assert iterations_per_epoch(spec, 4, num_crops_per_img=2) == 10 // 2
    assert iterations_per_epoch(DatasetSpec('x', 'records', ['r'], None), 4, num_crops_per_img=2) is None
    msg = r'^batch_size 4 is not divisible by NUM_CROPS_PER_IMG=3 \(a batch holds'
    with pytest.raises(SettingsError, match=msg):
        iterations_per_epoch(spec, 4, num_crops_per_img=3)
    with tf.Graph().as_default(), pytest.raises(SettingsError, match=msg):
        input_batch(spec, crop_size=16, batch_size=4, num_crops_per_img=3)
