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
