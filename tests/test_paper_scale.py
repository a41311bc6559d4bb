"""Long checks at the paper's and the shipped models' sizes (`make test-slow`): the paper's cvpr/low
config trains at batch 30 on 160x160 crops, and every shipped model codes a Kodak-size image exactly."""
import glob
import os

import numpy as np
import pytest

import image_codec
import model_files
from helpers import ROOT, smooth_image, write_images

pytestmark = pytest.mark.slow


def _golden_names():
    with open(os.path.join(ROOT, 'tests', 'golden_variables_cvpr_low.txt')) as f:
        return {line.split()[0] for line in f if line.strip() and not line.startswith('#')}


def test_paper_config_trains_two_steps_at_batch_30(tmp_path, capsys):
    """ae_configs/cvpr/low + pc_configs/cvpr/res_shallow unchanged (n = 128, B = 5, batch 30, 160 crops):
    two steps, a finite loss, a checkpoint at step 2 holding every variable of the released graph."""
    import train
    from tf_helpers import tf
    imgs = str(tmp_path / 'imgs')
    write_images(imgs, 6, 176, 200)
    args = [os.path.join(ROOT, 'ae_configs', 'cvpr', 'low'), os.path.join(ROOT, 'pc_configs', 'cvpr', 'res_shallow'),
            '--dataset_train', os.path.join(imgs, '*'), '--dataset_test', os.path.join(imgs, '*'),
            '--log_dir_root', str(tmp_path / 'logs'), '-ltrain', '1', '-ltest', '2', '-lsave', '2',
            '--max_steps', '2']
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = [float(line.split('loss=')[1].split(',')[0]) for line in out.splitlines() if ': loss=' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))
    (log_dir,) = [d for d in glob.glob(str(tmp_path / 'logs' / '*')) if os.path.isdir(d)]
    ckpt_dir = os.path.join(log_dir, 'ckpts')
    assert model_files.all_ckpt_steps(ckpt_dir) == [2]
    saved = {name for name, _ in tf.train.list_variables(model_files.ckpt_path(ckpt_dir, 2))}
    assert _golden_names() <= saved


@pytest.mark.parametrize('model_dir', image_codec.shipped_model_dirs(), ids=os.path.basename)
def test_shipped_model_codes_a_kodak_size_image_exactly(model_dir):
    """768 x 512: real file, decoded symbols equal the encoded ones, the decoded image equals the
    encoder side's reconstruction; the coder writes what the fixed-point context model's tables give, and those
    cost little more than the float context model's estimate."""
    import inference
    import symbol_coder
    model = inference.Model(model_dir)
    try:
        img = smooth_image(512, 768, seed=3)
        data = image_codec.encode_image(model, img)
        symbols = model.run(img, model.g.symbols)[0]
        decoded, _ = image_codec.decode_symbols(model, data)
        np.testing.assert_array_equal(decoded, symbols)
        out = image_codec.decode_image(model, data)
        expected = np.clip(np.round(model.decode_symbols(symbols)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(out, expected)
        ideal = symbol_coder.ideal_bits(symbols, model.fixed_point_pc)
        coded = 8. * (len(data) - image_codec.HEADER_BYTES)
        assert ideal - 64 <= coded <= 1.001 * ideal + 64  # the arithmetic coder's own overhead: its flush
        # Rounding the context model to F fractional bits (F = 8 for the shipped models) costs about 0.01 bits
        # per symbol where the float model is nearly certain: 0.006 bpp, +4.8 %, for the earlier cpu/low at
        # 0.128 bpp on this smooth image; +0.8 % and +0.5 % for cpu/med and cpu/high, +0.4 % for cpu/low on Kodak.
        estimate = float(model.run(img, model.g.bpp)) * img.shape[0] * img.shape[1]
        assert abs(ideal - estimate) <= 0.01 * estimate + 0.02 * symbols.size
    finally:
        model.close()
