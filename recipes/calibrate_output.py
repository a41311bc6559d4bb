#!/usr/bin/env python
"""Calibrates the level of a trained model's reconstructions on training images: the mean error of each
colour channel is brought to zero by shifting the decoder's last batch-norm offset. The last step of each
shipped model in recipes/shipped_models.py.

    python recipes/calibrate_output.py SRC_LOG_DIR DST_LOG_DIR --images 'DATA/train/imagenet_*' \\
        [--ckpt_step N] [--num_images 100]

Why. MS-SSIM on RGB hardly sees the global level of an image (only the coarsest scale's luminance term, with
exponent 0.1333), so the paper's loss does little to keep it right, and the decoder ends in a batch norm
(h13), whose output mean is its offset beta in training (batch statistics) but follows the moving averages
of 35 layers at inference. The shipped `high` came out 6 to 8 levels too dark per channel on training and
held-out photos alike (after its bottleneck was widened and its rate lowered); shifting its output back by
that constant raised its MS-SSIM on 14 held-out photos by 0.0024 and its PSNR by 1.4 dB
(docs/training_log_cpu2_models.md).

How. The reconstructions are made as the codec makes them (inference mode, from the quantized symbols) on
images cropped to multiples of 8. The unclipped output moves by exactly s when beta moves by s / std_c (the
output is y * std_c + mean_c, autoencoder._denormalize), so the shift s_c that zeroes the mean of
clip(output + s_c, 0, 255) - image is found by bisection on the stored outputs, with no further runs of the
model. Every other variable (and every optimizer slot) is copied unchanged: the calibrated model trains on
as its source would. Choosing the images is a training-data choice: never the evaluation images.
"""
import argparse
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import autoencoder  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import model_files  # noqa: E402
import widen_bottleneck  # noqa: E402

BETA = 'autoencoder/decoder/h13/BatchNorm/beta'


def sample_images(globs, num_images):
    """Every k-th of the sorted files matched by the comma-separated globs: num_images spread over all."""
    paths = sorted({p for g in globs.split(',') for p in glob.glob(g)})
    if not paths:
        raise ValueError('no images match {}'.format(globs))
    step = max(1, len(paths) // num_images)
    return paths[::step][:num_images]


def unclipped_outputs(model, paths):
    """[(unclipped reconstruction float32 H x W x 3, image uint8 H x W x 3)] with H, W cropped to multiples of 8."""
    unclipped = model.g.x_from_q.op.inputs[0]  # the input of the decoder's clip to [0, 255]
    out = []
    for p in paths:
        img = images.load_rgb(p)[0]
        img = img[:img.shape[0] // 8 * 8, :img.shape[1] // 8 * 8]
        q = model.centers[model.encode_symbols(img)][None].astype(np.float32)
        out.append((model.sess.run(unclipped, {model.g.q_in: q})[0], img))
    return out


def level_shift(pairs, tol=1e-4):
    """Per channel, the s with sum(clip(output + s, 0, 255) - image) = 0 over all pixels (bisection: the sum
    grows with s). pairs: [(unclipped output, image)] as unclipped_outputs gives."""
    outputs = np.concatenate([o.reshape(-1, 3) for o, _ in pairs]).astype(np.float64)
    targets = np.concatenate([i.reshape(-1, 3) for _, i in pairs]).astype(np.float64)
    shifts = np.zeros(3)
    for c in range(3):
        lo, hi = -255., 255.
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            if np.sum(np.clip(outputs[:, c] + mid, 0., 255.) - targets[:, c]) < 0:
                lo = mid
            else:
                hi = mid
        shifts[c] = 0.5 * (lo + hi)
    return shifts


def mean_error(pairs, shifts=np.zeros(3)):
    """Per channel mean of clip(output + shift, 0, 255) - image over all pixels."""
    err, n = np.zeros(3), 0
    for o, i in pairs:
        err += (np.clip(o + shifts, 0., 255.) - i).reshape(-1, 3).sum(axis=0)
        n += i.shape[0] * i.shape[1]
    return err / n


def calibrate(src_log_dir, dst_log_dir, image_globs, ckpt_step=None, num_images=100):
    """Writes src_log_dir's checkpoint (default: the latest) with the level shift of its reconstructions on the
    images into dst_log_dir, with the source's configs. Returns (mean error before, after) per channel."""
    src_ckpts = model_files.ckpt_dir_of(src_log_dir)
    step = model_files.select_ckpt_step(src_ckpts) if ckpt_step is None else ckpt_step
    model = inference.Model(src_log_dir, ckpt_step=step)
    try:
        pairs = unclipped_outputs(model, sample_images(image_globs, num_images))
    finally:
        model.close()
    shifts = level_shift(pairs)
    variables = widen_bottleneck.read_variables(model_files.ckpt_path(src_ckpts, step))
    # _denormalize's scale
    std = 1. if model.ae_config.normalization == 'OFF' else np.sqrt(autoencoder._VAR + 1e-10)
    variables[BETA] = (variables[BETA] + shifts / std).astype(variables[BETA].dtype)
    shutil.rmtree(dst_log_dir, ignore_errors=True)
    widen_bottleneck.write_log_dir(dst_log_dir, variables, step, model.ae_config, model.pc_config)
    return mean_error(pairs), mean_error(pairs, shifts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src_log_dir', help='log dir of the trained model')
    p.add_argument('dst_log_dir', help='log dir to write (replaced if it exists)')
    p.add_argument('--images', required=True, help='training images (globs, comma-separated); never evaluation ones')
    p.add_argument('--ckpt_step', type=int, help='checkpoint to calibrate (default: the latest)')
    p.add_argument('--num_images', type=int, default=100, help='images to measure the level on. Default: %(default)s')
    flags = p.parse_args()
    try:
        before, after = calibrate(flags.src_log_dir, flags.dst_log_dir, flags.images, flags.ckpt_step,
                                  flags.num_images)
    except (ValueError, OSError, model_files.ModelError, images.ImageError) as e:
        sys.exit('Error: {}'.format(e))
    print('Mean error (R, G, B) on the images: before {}, after {}'.format(np.round(before, 2), np.round(after, 2)))
    print('Wrote', flags.dst_log_dir)


if __name__ == '__main__':
    main()
