"""val.py on three generated images: measures.csv, reconstructions, skipping validated checkpoints."""
import csv
import os

import numpy as np
from PIL import Image

import ms_ssim_np
import val
from helpers import make_model_dir, smooth_image


def _images(d):
    os.makedirs(d)
    Image.fromarray(smooth_image(32, 40, 0)).save(os.path.join(d, 'a.png'))
    Image.fromarray(smooth_image(27, 45, 1)).save(os.path.join(d, 'b.png'))  # not multiples of 8
    Image.fromarray(smooth_image(24, 24, 2)).convert('RGBA').save(os.path.join(d, 'c.png'))
    return d


def test_val_writes_measures_and_reconstructions(tmp_path, capsys):
    root = str(tmp_path / 'ckpts')
    make_model_dir(root)
    imgs = _images(str(tmp_path / 'myset'))
    assert val.main([root, '0101_1200', imgs, '--save_ours', '--real_bpp']) == 0
    out_dir = os.path.join(root, '0101_1200 myset')
    with open(os.path.join(out_dir, 'measures.csv')) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ['img_name', 'bpp', 'ms-ssim', 'psnr', 'bpp_real', 'enc_s', 'dec_s']
    assert [r['img_name'] for r in rows] == ['a.png', 'b.png', 'c.png']
    for r in rows:
        name = os.path.splitext(r['img_name'])[0]
        rec = np.asarray(Image.open(os.path.join(out_dir, 'imgs', name + '.png')))
        orig = np.asarray(Image.open(os.path.join(imgs, r['img_name'])).convert('RGB'))
        assert rec.shape == orig.shape  # cropped back to the original size
        np.testing.assert_allclose(float(r['psnr']), ms_ssim_np.psnr(orig, rec), rtol=1e-5)
        np.testing.assert_allclose(float(r['ms-ssim']), ms_ssim_np.ms_ssim(orig, rec), rtol=1e-5)
        assert float(r['bpp']) > 0 and float(r['bpp_real']) > 0
    out = capsys.readouterr().out
    assert 'RGBA' in out and 'ckpt 7' in out
    # a second run skips the validated checkpoint; --reset redoes it
    assert val.main([root, '0101_1200', imgs]) == 0
    assert 'Nothing to do' in capsys.readouterr().out
    assert val.main([root, '0101_1200', imgs, '--reset', '--how_many', '1']) == 0
    with open(os.path.join(out_dir, 'measures.csv')) as f:
        assert len(list(csv.DictReader(f))) == 1


def test_val_errors_are_clear(tmp_path, capsys):
    root = str(tmp_path / 'ckpts')
    make_model_dir(root)
    make_model_dir(root, name='0101_1201 cvpr@low cvpr@res_shallow')
    imgs = _images(str(tmp_path / 'set'))
    assert val.main([root, '0101_12', imgs]) == 1  # matches two log dirs
    assert 'matches 2 log dirs' in capsys.readouterr().err
    assert val.main([root, '0999', imgs]) == 1
    assert 'matches 0 log dirs' in capsys.readouterr().err
    assert val.main([root, '0101_1200', str(tmp_path / 'none')]) == 1
    assert 'not a directory' in capsys.readouterr().err


def test_ckpts_to_validate():
    assert val.ckpts_to_validate([1, 2, 3, 4, 5], -1, set()) == [5]
    assert val.ckpts_to_validate([1, 2, 3, 4, 5], 2, set()) == [1, 3, 5]
    assert val.ckpts_to_validate([1, 2, 3, 4, 5], 2, {5}) == [1, 3]
    assert val.ckpts_to_validate([], 2, set()) == []
