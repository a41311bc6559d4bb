"""Tests of inputpipeline: dataset resolution, skipping of bad images, batch shapes/values, TFRecords."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from tf_helpers import tf
import inputpipeline
from inputpipeline import DatasetError, DatasetSpec, input_batch, iterations_per_epoch, resolve_dataset

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


def test_resolve_no_match(tmp_path):
    with pytest.raises(DatasetError, match='nothing_here'):
        resolve_dataset(str(tmp_path / 'nothing_here' / '*.png'))
    (tmp_path / 'a.txt').write_text('x')
    with pytest.raises(DatasetError):
        resolve_dataset(str(tmp_path / '*'))
    assert issubclass(DatasetError, ValueError)


def test_input_batch_files(image_dir, capfd):
    with tf.Graph().as_default():
        batch = input_batch(str(image_dir / '*'), crop_size=(32, 32), batch_size=4)
        assert batch.dtype == tf.float32
        assert batch.shape.as_list() == [4, 32, 32, 3]
        err = capfd.readouterr().err
        assert 'small.png' in err and 'corrupt.jpg' in err
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
        with pytest.raises(DatasetError):
            input_batch(str(image_dir / 's*.png'), crop_size=32, batch_size=2)  # only small.png
        with pytest.raises(DatasetError):
            input_batch(str(image_dir / '*'), crop_size=64, batch_size=2)  # all smaller than 64


def test_many_skipped_files_summarised(tmp_path, capfd):
    for i in range(15):
        _noise('RGB', i, size=(8, 8)).save(str(tmp_path / 'tiny{:02d}.png'.format(i)))
    _noise('RGB', 99).save(str(tmp_path / 'big.png'))
    with tf.Graph().as_default():
        input_batch(str(tmp_path / '*.png'), crop_size=32, batch_size=2)
    err = capfd.readouterr().err
    assert len([l for l in err.splitlines() if 'WARNING' in l]) == 1
    assert '15' in err and 'tiny00.png' in err


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
    # a corrupt and a too-small record must be skipped without breaking the pipeline
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
        assert 'skipped silently' in capfd.readouterr().err
        batches = _run(batch, n=4)
    for b in batches:
        assert b.shape == (4, 32, 32, 3) and 0 <= b.min() and b.max() <= 255 and b.std() > 1


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
