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
import csv
import fcntl
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import logdir_helpers  # noqa: E402
import model_files  # noqa: E402
import rd_curves  # noqa: E402

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
HELDOUT_NAME = 'heldout'


def _run(cmd, log_path):
    print('$ ' + ' '.join(_quote(c) for c in cmd), flush=True)
    with open(log_path, 'a') as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit('Error: the command failed (exit {}), see {}'.format(proc.returncode, log_path))


def _quote(s):
    return "'{}'".format(s) if re.search(r'[\s*?,]', s) else s


def _log_dirs_in(log_path):
    if not os.path.exists(log_path):
        return []
    with open(log_path) as f:
        return re.findall(r'^Log dir: (.*)$', f.read(), flags=re.M)


def used_cpu_hours(log_text):
    """CPU hours of the train.py runs in a phase's log: the last `CPU x h` of each run (each starts with its
    `Log dir:` line)."""
    last = [re.findall(r'CPU ([0-9.]+) h\)', run) for run in re.split(r'^Log dir: ', log_text, flags=re.M)[1:]]
    return sum(float(m[-1]) for m in last if m)


def _train_phase(name, phase, flags, hours, overrides, restore):
    """Runs one phase unless its log already says it used its budget; a phase that was interrupted (e.g. the
    machine's session ended) continues from its last checkpoint with what is left of its budget. Returns its
    log dir."""
    log_path = os.path.join(flags.out, '{}.{}.log'.format(name, phase))
    dirs = _log_dirs_in(log_path)
    cmd = [sys.executable, 'train.py', 'ae_configs/cpu/base', 'pc_configs/cpu/res_shallow',
           '-dtrain', flags.train, '-dtest', flags.heldout, '-o', flags.out,
           '-ltest', '500', '-lsave', '500', '-dcodec', HELDOUT_NAME, '--other_codecs_root', _codecs_root(flags)]
    for o in COMMON + CANDIDATES[name] + overrides:
        cmd += ['-co', o]
    for o in PC_COMMON:
        cmd += ['-pco', o]
    if dirs and 'Used --max_cpu_hours' in open(log_path).read():
        return dirs[-1]
    if dirs and model_files.all_ckpt_steps(model_files.ckpt_dir_of(dirs[-1])):
        used = used_cpu_hours(open(log_path).read())
        print('{} {}: interrupted after {:.2f} of {:.2f} CPU hours; continuing'.format(name, phase, used, hours),
              flush=True)
        cmd += ['--restore', dirs[-1], '--restore_continue']
        hours = max(0.01, hours - used)
    elif restore:
        cmd += ['--restore', restore]
    _run(cmd + ['--max_cpu_hours', str(hours)], log_path)
    return _log_dirs_in(log_path)[-1]


def _evaluate(name, log_dir, flags):
    """Mean bpp / MS-SSIM / PSNR of the last checkpoint on the held-out photos, and the distance to WebP."""
    log_path = os.path.join(flags.out, '{}.val.log'.format(name))
    job_id = logdir_helpers.log_date_from_log_dir(log_dir)
    out_dir = os.path.join(flags.out, '{} {}'.format(job_id, HELDOUT_NAME))
    measures = os.path.join(out_dir, rd_curves.MEASURES_FILE)
    if not os.path.exists(measures):
        _run([sys.executable, 'val.py', flags.out, job_id, os.path.join(_heldout_dir(flags), '*'), '--ckpt_step', '-1',
              '--other_codecs_root', _codecs_root(flags)], log_path)
    with open(measures) as f:
        rows = list(csv.DictReader(f))
    point = {k: sum(float(r[k]) for r in rows) / len(rows) for k in ('bpp', 'ms-ssim', 'psnr')}
    with open(log_path) as f:
        m = re.findall(r'Distance to webp: ([-+]?\d+\.\d+) ms-ssim', f.read())
    point['d_webp'] = float(m[-1]) if m else float('nan')
    return point


def _heldout_dir(flags):
    """The held-out photos as links in one folder, whose name val.py and other_codecs.py give their outputs."""
    d = os.path.join(flags.out, HELDOUT_NAME)
    if not os.path.isdir(d):
        os.makedirs(d)
        for f in sorted(glob.glob(flags.heldout)):
            os.symlink(os.path.abspath(f), os.path.join(d, os.path.basename(f)))
    return d


def _codecs_root(flags):
    root = os.path.join(flags.out, 'other_codecs')
    if not glob.glob(os.path.join(root, 'webp_' + HELDOUT_NAME, '*_out.csv')):
        _run([sys.executable, 'other_codecs.py', _heldout_dir(flags), '--codecs', 'webp', '--out', root,
              '--dataset', HELDOUT_NAME], os.path.join(flags.out, 'other_codecs.log'))
    return root


def _lock(flags, name):
    """An exclusive lock on the candidate (several pilots.py may run at once, e.g. one per candidate with
    --only), or None if another process holds it. Held until the process ends."""
    f = open(os.path.join(flags.out, name + '.lock'), 'w')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


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
        lock = _lock(flags, name)
        if lock is None:
            print('{}: another pilots.py is running it; skipped'.format(name), flush=True)
            continue
        mse_dir = _train_phase(name, 'mse', flags, MSE_FRACTION * flags.cpu_hours,
                               ['distortion_to_minimize=mse'], None)
        final_dir = _train_phase(name, 'ms_ssim', flags, (1 - MSE_FRACTION) * flags.cpu_hours, [], mse_dir)
        results[name] = _evaluate(name, final_dir, flags), final_dir
    print('\n{:28s} {:>7s} {:>8s} {:>7s} {:>11s}  {}'.format('candidate', 'bpp', 'MS-SSIM', 'PSNR',
                                                             'vs WebP', 'log dir'))
    for name, (r, d) in sorted(results.items(), key=lambda kv: -kv[1][0]['d_webp']):
        print('{:28s} {:7.4f} {:8.4f} {:7.2f} {:+11.4f}  {}'.format(name, r['bpp'], r['ms-ssim'], r['psnr'],
                                                                   r['d_webp'], d))


if __name__ == '__main__':
    main()
