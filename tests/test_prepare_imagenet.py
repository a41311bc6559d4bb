"""prepare_imagenet.py / make_records.py on a miniature ImageNet (train tar of class tars, flat val tar,
folder tree): record names and counts, RGB JPEGs at the right size (small images upscaled by default, as
the original's ImageMagick "256x256^"), odd and corrupt files, resuming, sharding, order, and train.py
reading the records."""
import glob
import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import make_records
import prepare_imagenet
from helpers import ROOT, TINY_AE_OVERRIDES, TINY_PC_OVERRIDES, smooth_image

S = 64  # --shorter_side in the tests
# (class, number of images, (w, h)); 24 plain images, 6 odd or small ones added below: 30 inputs
CLASSES = [('n01440764', 8, (300, 200)), ('n01443537', 8, (150, 180)), ('n01484850', 8, (100, 400))]


def _jpeg(arr, mode='RGB', fmt='JPEG'):
    out = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(out, fmt, quality=90)
    return out.getvalue()


def _train_members():
    """{class: {member name: bytes}}: 10 files per class, among them the odd ones and one corrupt file."""
    classes = {}
    seed = 0
    for wnid, n, (w, h) in CLASSES:
        files = {}
        for i in range(n):
            seed += 1
            files['{}_{}.JPEG'.format(wnid, i)] = _jpeg(smooth_image(h, w, seed))
        classes[wnid] = files
    a, b, c = (classes[wnid] for wnid, _, _ in CLASSES)
    a['n01440764_cmyk.JPEG'] = _jpeg(smooth_image(120, 90, 100), mode='CMYK')
    a['n01440764_small.JPEG'] = _jpeg(smooth_image(60, 50, 101))  # below the target: upscaled
    b['n01443537_png.JPEG'] = _jpeg(smooth_image(100, 130, 102), fmt='PNG')  # PNG named .JPEG
    b['n01443537_smallgray.JPEG'] = _jpeg(smooth_image(40, 70, 103), mode='L')  # small and grayscale
    c['n01484850_gray.JPEG'] = _jpeg(smooth_image(200, 90, 104), mode='L')
    c['n01484850_corrupt.JPEG'] = _jpeg(smooth_image(100, 100, 105))[:300]  # truncated
    return classes


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _sizes_of(data):
    with Image.open(io.BytesIO(data)) as im:
        return im.size


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    """The miniature: train tar, val tar, folder tree, and the expected output sizes per image name."""
    d = tmp_path_factory.mktemp('mini')
    classes = _train_members()
    train_tar = str(d / 'ILSVRC2012_img_train.tar')
    with tarfile.open(train_tar, 'w') as outer:
        for wnid, files in classes.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode='w') as t:
                for name, data in sorted(files.items()):
                    _add(t, name, data)
            _add(outer, wnid + '.tar', inner.getvalue())
    val_tar = str(d / 'ILSVRC2012_img_val.tar')
    with tarfile.open(val_tar, 'w') as t:
        for i in range(10):
            _add(t, 'ILSVRC2012_val_{:08d}.JPEG'.format(i + 1), _jpeg(smooth_image(90 + 10 * i, 120, 200 + i)))
    tree = d / 'tree'
    for i in range(6):
        sub = tree / 'sub{}'.format(i % 2) / ('deeper' if i % 3 == 0 else '')
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(70 + i, 80, 300 + i)).save(str(sub / 'img{}.png'.format(i)))
    originals = {'{}.tar/{}'.format(wnid, name): data for wnid, files in classes.items()
                 for name, data in files.items()}
    return dict(dir=d, train_tar=train_tar, val_tar=val_tar, tree=str(tree), originals=originals)


def _read_records(paths, key='image/encoded'):
    from tf_helpers import tf
    images = []
    for path in paths:
        for rec in tf.io.tf_record_iterator(path):
            images.append(tf.train.Example.FromString(rec).features.feature[key].bytes_list.value[0])
    return images


def _prepare(source, out, *extra):
    argv = [source, str(out), '--shorter_side', str(S), '--per_record', '8', '--no_progress'] + list(extra)
    if '--jobs' not in extra:
        argv += ['--jobs', '1']
    flags = prepare_imagenet.parse_args(argv)
    return prepare_imagenet.prepare(flags)


def _expected_size(w, h):
    """prepare_imagenet's default: shorter side exactly S, like ImageMagick's -resize SxS^."""
    return make_records.target_size(w, h, S)


def test_tar_index_reads_members_directly(mini, tmp_path):
    cache = str(tmp_path / 'index.jsonl')
    items = make_records.list_inputs(mini['train_tar'], index_cache_path=cache)
    assert [it.name for it in items] == sorted(mini['originals'])
    for it in items:
        assert make_records.read_ref(it.ref) == mini['originals'][it.name]
    assert make_records.list_inputs(mini['train_tar'], index_cache_path=cache) == items  # from the cache


def test_train_tar(mini, tmp_path, capsys):
    out = tmp_path / 'out'
    stats = _prepare(mini['train_tar'], out, '--jobs', '2')  # split guessed from the name
    files = sorted(glob.glob(str(out / 'train' / '*.tfrecord')))
    assert [os.path.basename(f) for f in files] == ['train-{:05d}.tfrecord'.format(k) for k in range(4)]
    assert (stats.written, stats.skipped, stats.new_records) == (29, 1, 4)
    assert 'Done: 29 images written, 1 skipped' in capsys.readouterr().out
    skipped = (out / 'train' / 'skipped.txt').read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith('n01484850.tar/n01484850_corrupt.JPEG\t')

    images = _read_records(files)
    assert len(images) == 29
    expected = sorted(_expected_size(*_sizes_of(data)) for name, data in mini['originals'].items()
                      if 'corrupt' not in name)
    sizes = []
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == 'JPEG' and im.mode == 'RGB'
            sizes.append(im.size)
    assert sorted(sizes) == expected
    assert all(min(size) == S for size in sizes)
    # shuffled (default): the first record is not just the first class
    first = _read_records(files[:1])
    assert len({_sizes_of(d) for d in first}) > 1


def test_rerun_does_no_work_and_resumes(mini, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    _prepare(mini['train_tar'], out)
    files = sorted(glob.glob(str(out / 'train' / '*.tfrecord')))
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    contents = [open(f, 'rb').read() for f in files]

    def no_image_work(*args, **kwargs):
        raise AssertionError('image work on a rerun')
    monkeypatch.setattr(make_records, 'convert_image', no_image_work)
    stats = _prepare(mini['train_tar'], out)
    assert (stats.new_records, stats.existing_records, stats.written) == (0, 4, 0)
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    monkeypatch.undo()

    # a killed run: one record missing, the temporary file of its atomic write left over
    os.remove(files[2])
    leftover = os.path.join(os.path.dirname(files[2]), '.{}.k1ll3d.tmp'.format(os.path.basename(files[2])))
    open(leftover, 'w').close()
    stats = _prepare(mini['train_tar'], out)
    assert stats.new_records == 1
    assert [open(f, 'rb').read() for f in files] == contents
    assert not glob.glob(str(out / 'train' / '*.tmp')) + glob.glob(str(out / 'train' / '.*.tmp'))
    assert [os.stat(f).st_mtime_ns for f in files[:2]] == mtimes[:2]
    assert len((out / 'train' / 'skipped.txt').read_text().splitlines()) == 1

    # other settings in the same OUT_DIR are refused instead of mixing orders
    with pytest.raises(make_records.RecordsError, match='per_record'):
        prepare_imagenet.prepare(prepare_imagenet.parse_args(
            [mini['train_tar'], str(out), '--shorter_side', str(S), '--per_record', '5', '--jobs', '1']))


def test_shards_split_the_records(mini, tmp_path):
    full, sharded = tmp_path / 'full', tmp_path / 'sharded'
    _prepare(mini['train_tar'], full)
    s0 = _prepare(mini['train_tar'], sharded, '--shard', '0', '--num_shards', '2')
    names0 = sorted(os.listdir(str(sharded / 'train')))
    s1 = _prepare(mini['train_tar'], sharded, '--shard', '1', '--num_shards', '2')
    assert (s0.new_records, s1.new_records, s1.existing_records) == (2, 2, 0)
    assert [n for n in names0 if n.endswith('.tfrecord')] == ['train-00000.tfrecord', 'train-00002.tfrecord']
    for k in range(4):
        name = 'train-{:05d}.tfrecord'.format(k)
        assert (full / 'train' / name).read_bytes() == (sharded / 'train' / name).read_bytes()


def test_sorted_order_is_deterministic(mini, tmp_path):
    a = _prepare(mini['train_tar'], tmp_path / 'a', '--order', 'sorted')
    _prepare(mini['train_tar'], tmp_path / 'b', '--order', 'sorted', '--jobs', '2')
    assert a.new_records == 4
    for k in range(4):
        name = 'train-{:05d}.tfrecord'.format(k)
        assert (tmp_path / 'a' / 'train' / name).read_bytes() == (tmp_path / 'b' / 'train' / name).read_bytes()
    # sorted: the first record holds the first class, in name order
    first = _read_records([str(tmp_path / 'a' / 'train' / 'train-00000.tfrecord')])
    expected = [make_records.convert_image(mini['originals']['n01440764.tar/n01440764_{}.JPEG'.format(i)], S)
                for i in range(8)]
    assert first == expected
    # shuffled orders depend on the seed
    _prepare(mini['train_tar'], tmp_path / 'c', '--seed', '1')
    _prepare(mini['train_tar'], tmp_path / 'd', '--seed', '2')
    first_c, first_d = (_read_records([str(tmp_path / d / 'train' / 'train-00000.tfrecord')]) for d in 'cd')
    assert first_c != first_d


def test_val_tar(mini, tmp_path):
    out = tmp_path / 'out'
    stats = _prepare(mini['val_tar'], out)
    assert sorted(os.listdir(str(out / 'val'))) == ['val-00000.tfrecord', 'val-00001.tfrecord',
                                                    'val-manifest.json', 'val-tar-index.jsonl']
    assert (stats.written, stats.skipped) == (10, 0)
    sizes = sorted(_sizes_of(d) for d in _read_records(sorted(glob.glob(str(out / 'val' / '*.tfrecord')))))
    assert sizes == sorted(_expected_size(120, 90 + 10 * i) for i in range(10))


def test_folder_tree(mini, tmp_path):
    out = tmp_path / 'out'
    stats = _prepare(mini['tree'], out)  # no train/val in the name: train
    assert (stats.written, stats.new_records) == (6, 1)
    images = _read_records(glob.glob(str(out / 'train' / 'train-*.tfrecord')))
    assert sorted(_sizes_of(d) for d in images) == sorted(_expected_size(80, 70 + i) for i in range(6))


def test_make_records_glob(mini, tmp_path, capsys):
    out = str(tmp_path / 'recs')
    pattern = os.path.join(mini['tree'], '**', '*.png')
    assert make_records.main([pattern, out, '--prefix', 'kodak', '--per_record', '4', '--jobs', '1',
                              '--feature_key', 'img', '--order', 'sorted', '--no_progress']) == 0
    assert 'Done: 6 images written, 0 skipped' in capsys.readouterr().out
    files = sorted(glob.glob(os.path.join(out, '*.tfrecord')))
    assert [os.path.basename(f) for f in files] == ['kodak-00000.tfrecord', 'kodak-00001.tfrecord']
    images = _read_records(files, key='img')
    # no --shorter_side: sizes kept, PNGs became RGB JPEGs
    assert sorted(_sizes_of(d) for d in images) == sorted((80, 70 + i) for i in range(6))
    assert all(Image.open(io.BytesIO(d)).format == 'JPEG' for d in images)
    assert make_records.main(['/nonexistent/*.png', out, '--jobs', '1']) == 1
    assert 'Error: No images' in capsys.readouterr().err


def test_convert_image_odd_inputs():
    rgba = Image.fromarray(np.dstack([smooth_image(80, 100, 1), np.full((80, 100), 128, np.uint8)]), 'RGBA')
    buf = io.BytesIO()
    rgba.save(buf, 'PNG')
    out = make_records.convert_image(buf.getvalue(), shorter_side=S)
    with Image.open(io.BytesIO(out)) as im:
        assert (im.format, im.mode, im.size) == ('JPEG', 'RGB', (80, S))
    with pytest.raises(UnidentifiedImageError, match='cannot identify image file'):
        make_records.convert_image(b'not an image', shorter_side=S)
    # a big JPEG takes the draft (DCT reduction) path and still ends at exactly the target
    big = _jpeg(np.repeat(np.repeat(smooth_image(100, 150, 2), 8, 0), 8, 1))
    with Image.open(io.BytesIO(make_records.convert_image(big, shorter_side=S))) as im:
        assert im.size == (96, S)
        assert abs(np.asarray(im, np.float32).mean() - np.asarray(Image.open(io.BytesIO(big)), np.float32).mean()) < 3


def test_train_reads_the_records(mini, tmp_path, monkeypatch):
    import train
    out = tmp_path / 'records'
    _prepare(mini['train_tar'], out)
    _prepare(mini['val_tar'], out)
    monkeypatch.setenv('RECORDS_ROOT', str(out))
    args = [os.path.join(ROOT, 'ae_configs', 'cvpr', 'low'), os.path.join(ROOT, 'pc_configs', 'cvpr', 'res_shallow'),
            '--dataset_train', 'imgnet_train', '--dataset_test', 'imgnet_test',
            '--log_dir_root', str(tmp_path / 'logs'), '--max_steps', '2', '-ltrain', '1', '-ltest', '2', '-lsave', '2']
    for o in TINY_AE_OVERRIDES:
        args += ['-co', o]
    for o in TINY_PC_OVERRIDES:
        args += ['-pco', o]
    assert train.main(args) == 0


def test_small_images_are_upscaled_unless_no_upscale(tmp_path, capsys):
    """The original's recipe (-resize "256x256^") upscales images whose shorter side is under 256; ours
    does too by default, --no_upscale keeps them; large ones are downscaled either way."""
    src = tmp_path / 'src'
    src.mkdir()
    small, large = _jpeg(smooth_image(150, 200, 1)), _jpeg(smooth_image(400, 600, 2))  # w x h: 200x150, 600x400
    (src / 'small.JPEG').write_bytes(small)
    (src / 'large.JPEG').write_bytes(large)
    (src / 'exact.JPEG').write_bytes(_jpeg(smooth_image(256, 300, 3)))

    def sizes(*extra):
        out = tmp_path / ('out' + ''.join(extra))
        argv = [str(src), str(out), '--order', 'sorted', '--jobs', '1', '--no_progress'] + list(extra)
        assert prepare_imagenet.main(argv) == 0
        images = _read_records([str(out / 'train' / 'train-00000.tfrecord')])  # exact, large, small
        return [_sizes_of(d) for d in images], images, out
    default, _, out = sizes()
    assert default == [(300, 256), (384, 256), (341, 256)]
    kept, images, _ = sizes('--no_upscale')
    assert kept == [(300, 256), (384, 256), (200, 150)]
    assert images[2] == small  # an RGB JPEG that needs no resizing is kept byte-for-byte

    # records made with the other setting are not mixed with new ones
    assert prepare_imagenet.main([str(src), str(out), '--jobs', '1', '--no_progress', '--no_upscale']) == 1
    assert 'upscale: True -> None' in capsys.readouterr().err

    # make_records keeps sizes by default, and upscales only when asked
    assert make_records.convert_image(small, shorter_side=256) == small
    with Image.open(io.BytesIO(make_records.convert_image(small, shorter_side=256, upscale=True))) as im:
        assert (im.format, im.size) == ('JPEG', (341, 256))
    assert make_records.main([str(src), str(tmp_path / 'm'), '--upscale', '--jobs', '1']) == 1
    assert 'Error: --upscale needs --shorter_side' in capsys.readouterr().err
