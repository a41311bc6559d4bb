#!/usr/bin/env python
"""Pilots of candidate architectures at equal compute, compared on held-out training-set photos.

    python recipes/pilots.py --train 'DATA/train/bsds500_t*,DATA/train/imagenet_*' \\
        --heldout 'DATA/train/bsds500_val_*' --out logs_cpu/pilots [--cpu_hours 1.2] [--only A,B]

Every candidate (CANDIDATES below: ae_configs/cpu/base with other n, B, C, crop and batch) is trained from
scratch with the same schedule and the same CPU-time budget (train.py --max_cpu_hours, so that other load
on the machine does not favour one of them): a short MSE phase that teaches colour, then the paper's
MS-SSIM loss, both networks learning at fixed rates. Each one's last checkpoint is then evaluated by val.py
on the held-out photos (never Kodak). WebP is measured once on the same photos (other_codecs.py), and the
table ranks the candidates by their MS-SSIM distance to WebP's curve at their own mean bpp, which compares
candidates that end at somewhat different rates. Steps run so far are kept: a pilot whose log says it is
done (budget used) is not trained again, and several pilots.py may run at once (one per candidate with
--only: each takes a lock on its candidates).
"""
import argparse
import os

import recipe_helpers

# name -> autoencoder config overrides on top of ae_configs/cpu/base (n=48, B=1, C=32, crop 160, batch 8)
CANDIDATES = {
    'A_n48_B1_crop160_batch8': [],
    'B_n64_B2_crop128_batch8': ['arch_param_n=64', 'arch_param_B=2', 'crop_size=(128,128)'],
    'C_n32_B1_crop128_batch16': ['arch_param_n=32', 'crop_size=(128,128)', 'batch_size=16'],
}
# Shared by all: the medium paper rate (0.677 bpp = H_target * C / 64 with C = 32), fixed learning rates.
COMMON = ['H_target=2*0.68', 'lr_schedule=FIXED', 'lr_initial=1e-4']
PC_COMMON = ['lr_schedule=FIXED', 'lr_initial=1e-4']
MSE_FRACTION = 0.25  # of the budget spent on the MSE phase


def _train_phase(name, phase, flags, hours, overrides, restore):
    """One phase of a candidate (recipe_helpers.train_phase). Returns its log dir."""
    cmd = recipe_helpers.train_command('ae_configs/cpu/base', 'pc_configs/cpu/res_shallow', flags.train, flags.out,
                                       flags.heldout, COMMON + CANDIDATES[name] + overrides, PC_COMMON)
    log_path = os.path.join(flags.out, '{}.{}.log'.format(name, phase))
    return recipe_helpers.train_phase(log_path, cmd, hours, restore, label='{} {}'.format(name, phase))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--train', required=True, help='training images (globs, comma-separated)')
    p.add_argument('--heldout', required=True, help='held-out photos (a glob): test batch and comparison')
    p.add_argument('--out', default='logs_cpu/pilots', help='log dir root. Default: %(default)s')
    p.add_argument('--cpu_hours', type=float, default=1.2,
                   help='CPU hours per candidate, both phases (2 cores for 1 h = 2). Default: %(default)s')
    p.add_argument('--only', default=None, help='comma-separated candidate names (prefixes)')
    flags = p.parse_args()
    os.makedirs(flags.out, exist_ok=True)
    names = [n for n in CANDIDATES if not flags.only or any(n.startswith(o) for o in flags.only.split(','))]
    results = {}
    for name in names:
        lock = recipe_helpers.lock(flags.out, name)
        if lock is None:
            print('{}: another pilots.py is running it; skipped'.format(name), flush=True)
            continue
        mse_dir = _train_phase(name, 'mse', flags, MSE_FRACTION * flags.cpu_hours,
                               ['distortion_to_minimize=mse'], None)
        final_dir = _train_phase(name, 'ms_ssim', flags, (1 - MSE_FRACTION) * flags.cpu_hours, [], mse_dir)
        val_log = os.path.join(flags.out, '{}.val.log'.format(name))
        results[name] = recipe_helpers.evaluate(final_dir, flags.out, flags.heldout, val_log), final_dir
    print('\n{:28s} {:>7s} {:>8s} {:>7s} {:>11s}  {}'.format('candidate', 'bpp', 'MS-SSIM', 'PSNR',
                                                             'vs WebP', 'log dir'))
    nan = float('nan')
    for name, (r, d) in sorted(results.items(), key=lambda kv: -(kv[1][0]['d_webp'] or -1.)):
        print('{:28s} {:7.4f} {:8.4f} {:7.2f} {:+11.4f}  {}'.format(name, r['bpp'], r['ms-ssim'], r['psnr'],
                                                                   nan if r['d_webp'] is None else r['d_webp'], d))


if __name__ == '__main__':
    main()
