"""Small shared helpers for the tests: tiny configs and generated images."""
import os

import numpy as np
from PIL import Image

import config_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model small enough for fast tests, otherwise the paper's cvpr/low + res_shallow.
TINY_AE_OVERRIDES = ['arch_param_B=1', 'arch_param_n=16', 'num_chan_bn=8', 'batch_size=2',
                     'crop_size=(32, 32)']
TINY_PC_OVERRIDES = ['arch_param__k=8']


GOLDEN_FILES = os.path.join(ROOT, 'tests', 'golden_files')


def golden_files():
    """(the golden files' record, the model they were written with). That model (the cpu@med shipped until
    the cpu2 models) lives beside them, so that the check does not depend on which models ckpts/ ships."""
    import json
    with open(os.path.join(GOLDEN_FILES, 'decoded_sha256.json')) as f:
        golden = json.load(f)
    return golden, os.path.join(GOLDEN_FILES, 'model', golden['model'])


def assert_golden_files_decode(model):
    """Every golden file decodes with `model` (TensorFlow or ONNX Runtime) to its recorded shape, version and
    symbols (exactly), and to pixels within one grey level of the recorded PNG on 99.9 % of the values."""
    import hashlib
    import numpy as np
    from PIL import Image
    import image_codec
    golden, _ = golden_files()
    for name, want in sorted(golden['files'].items()):
        with open(os.path.join(GOLDEN_FILES, name), 'rb') as f:
            data = f.read()
        symbols, hdr = image_codec.decode_symbols(model, data)
        assert list(symbols.shape) == want['symbols_shape'], name
        assert hdr['version'] == want['version'], name
        assert hashlib.sha256(np.ascontiguousarray(symbols, np.int64).tobytes()).hexdigest() == \
            want['sha256_of_decoded_symbols_int64'], name
        out = image_codec.decode_image(model, data)
        assert out.shape == (want['height'], want['width'], 3), name
        diff = np.abs(out.astype(int) - np.asarray(Image.open(os.path.join(GOLDEN_FILES, want['png']))))
        assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3, name


def configs(ae='ae_configs/cvpr/low', pc='pc_configs/cvpr/res_shallow', ae_overrides=(), pc_overrides=()):
    ae_config, _ = config_parser.parse(os.path.join(ROOT, ae))
    pc_config, _ = config_parser.parse(os.path.join(ROOT, pc))
    return (config_parser.apply_overrides(ae_config, list(ae_overrides)),
            config_parser.apply_overrides(pc_config, list(pc_overrides)))


def tiny_configs():
    return configs(ae_overrides=TINY_AE_OVERRIDES, pc_overrides=TINY_PC_OVERRIDES)


def smooth_image(h, w, seed=0):
    """A natural-ish RGB uint8 image: low-frequency color blobs plus a little noise."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 6.28)]
            img[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
    img = (img - img.min()) / (img.max() - img.min()) * 230 + 10 + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(directory, n, h, w, ext='png'):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(directory, 'img{}.{}'.format(i, ext))
        Image.fromarray(smooth_image(h, w, seed=i)).save(p)
        paths.append(p)
    return paths


def make_model_dir(root, name='0101_1200 cvpr@low cvpr@res_shallow', seed=0, ae_overrides=None, steps=(7,)):
    """A log dir with config copies and checkpoints of a randomly initialized tiny model (with random
    biases and batch-norm statistics, so that the context model is not trivially uniform): one per step,
    all kept, each with other random biases (so restoring the wrong one changes the measures; saving
    is far cheaper than training)."""
    import model_graph
    import saver as saver_lib
    from tf_helpers import tf
    ae_config, pc_config = configs(ae_overrides=TINY_AE_OVERRIDES + list(ae_overrides or []),
                                   pc_overrides=TINY_PC_OVERRIDES)
    log_dir = os.path.join(str(root), name)
    os.makedirs(log_dir, exist_ok=True)
    for fname, cfg in (('ae_config', ae_config), ('pc_config', pc_config)):
        with open(os.path.join(log_dir, fname), 'w') as f:
            f.write(cfg.to_text())
    rng = np.random.RandomState(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        model_graph.build_inference_graph(ae_config, pc_config)
        saver = saver_lib.Saver(log_dir, max_to_keep=None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for step in steps:
                for v in tf.global_variables():
                    if v.op.name.endswith(('biases', 'beta')):
                        v.load(rng.uniform(-0.2, 0.2, v.shape.as_list()), sess)
                saver.save(sess, step)
    return log_dir


def train_args(tmp_path, *extra, overrides=()):
    """train.py arguments for a tiny cvpr/low model on 5 small images written under tmp_path."""
    imgs = os.path.join(str(tmp_path), 'imgs')
    if not os.path.isdir(imgs):
        write_images(imgs, 5, 40, 48)
    args = [os.path.join(ROOT, 'ae_configs', 'cvpr', 'low'), os.path.join(ROOT, 'pc_configs', 'cvpr', 'res_shallow'),
            '--dataset_train', os.path.join(imgs, '*'), '--dataset_test', os.path.join(imgs, '*'),
            '--log_dir_root', os.path.join(str(tmp_path), 'logs'), '-ltrain', '2', '-ltest', '3', '-lsave', '3']
    for o in TINY_AE_OVERRIDES + list(overrides):
        args += ['-co', o]
    for o in TINY_PC_OVERRIDES:
        args += ['-pco', o]
    return args + list(extra)


def write_codec_curves(other_codecs_root, codec, dataset, curves):
    """Per-image codec CSVs as other_codecs.py writes them. curves: {image name: [(bpp, msssim, psnr), ...]}."""
    import rd_curves
    for img_name, points in curves.items():
        rows = [(q, b, 0., m, p) for q, (b, m, p) in enumerate(points)]
        rd_curves.write_csv_atomic(
            rd_curves.codec_measures_path(rd_curves.codec_dir(str(other_codecs_root), codec, dataset), img_name),
            rd_curves.CODEC_CSV_HEADER, rows)
