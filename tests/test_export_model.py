"""export_model.py: a trained log dir -> inference-only checkpoint under a plain name that val.py /
codec.py load, with the same reconstructions and without optimizer slots."""
import glob
import os

import numpy as np

import export_model
import inference
import model_files
import train
from helpers import smooth_image, train_args
from tf_helpers import tf


def _train_tiny(tmp_path, *extra):
    assert train.main(train_args(tmp_path, *extra)) == 0


def _log_dirs(tmp_path):
    return [d for d in glob.glob(os.path.join(str(tmp_path), 'logs', '*')) if os.path.isdir(d)]


def _var_names(ckpt_dir):
    return {name for name, _ in tf.train.list_variables(model_files.ckpt_path(ckpt_dir, max(model_files.all_ckpt_steps(ckpt_dir))))}


def test_export_of_a_restored_run(tmp_path):
    _train_tiny(tmp_path, '--max_steps', '2')
    (first,) = _log_dirs(tmp_path)
    _train_tiny(tmp_path, '--max_steps', '3', '--restore', first, '-co', 'distortion_to_minimize=mse')
    (restored,) = [d for d in _log_dirs(tmp_path) if 'RESTORE@' in d]
    assert any('Adam' in n for n in _var_names(os.path.join(restored, 'ckpts')))

    out_root = os.path.join(str(tmp_path), 'ckpts')
    assert export_model.main([restored, out_root]) == 0
    (shipped,) = glob.glob(os.path.join(out_root, '*'))
    assert os.path.basename(shipped) == os.path.basename(restored).split(' RESTORE@')[0]
    names = _var_names(os.path.join(shipped, 'ckpts'))
    assert 'global_step' in names and not any('Adam' in n for n in names)
    assert model_files.all_ckpt_steps(os.path.join(shipped, 'ckpts')) == [3]

    img = smooth_image(24, 32)
    a, b = inference.Model(restored), inference.Model(shipped)
    try:
        assert a.ae_config.distortion_to_minimize == b.ae_config.distortion_to_minimize == 'mse'
        assert a.fingerprint == b.fingerprint
        np.testing.assert_array_equal(a.run(img, a.g.x_out), b.run(img, b.g.x_out))
    finally:
        a.close()
        b.close()


def test_export_errors(tmp_path, capsys):
    assert export_model.main([os.path.join(str(tmp_path), 'nope'), str(tmp_path)]) == 1
    assert 'Error' in capsys.readouterr().err
