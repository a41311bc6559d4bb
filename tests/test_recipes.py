"""recipes/: the CPU budget of a phase that was interrupted and continued."""
import os
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, 'recipes'))
import recipe_helpers  # noqa: E402


def test_used_cpu_hours_sums_the_last_figure_of_each_run():
    log = ('$ python train.py ...\nLog dir: logs/0101_1200 x\n100: loss=1.0, ms_ssim=0.5, bpp=1.0, H_real=2.0 '
           '(img/s: 5.0, CPU 0.100 h) 0101_1200\n200: loss=1.0, ms_ssim=0.5, bpp=1.0, H_real=2.0 (img/s: 5.0, CPU '
           '0.250 h) 0101_1200\nGot signal 15: saved checkpoint at step 200\n$ python train.py ... --restore_continue\n'
           'Log dir: logs/0101_1200 x\n300: loss=1.0, ms_ssim=0.5, bpp=1.0, H_real=2.0 (img/s: 5.0, CPU 0.125 h) '
           '0101_1200 Restored\n')
    assert abs(recipe_helpers.used_cpu_hours(log) - 0.375) < 1e-12
    # a run that was stopped before its first log line counts nothing
    assert recipe_helpers.used_cpu_hours(log + '$ python train.py ...\nLog dir: logs/0101_1200 x\n') == 0.375
    assert recipe_helpers.used_cpu_hours('') == 0
