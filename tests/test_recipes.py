"""recipes/: the CPU budget of a phase that was interrupted and continued."""
import os
import sys

import pytest

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


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(','.join(header) + '\n')
        for r in rows:
            f.write(','.join(str(v) for v in r) + '\n')


def test_the_checkpoint_furthest_above_webp_is_chosen(tmp_path, monkeypatch):
    """Three checkpoints measured on the held-out photos (no val.py run: their measures exist): the one whose
    mean MS-SSIM lies furthest above WebP's curve at its own bpp wins, even though another has the higher
    MS-SSIM (at a higher rate) and the latest is the default; one outside WebP's bpp range is not chosen."""
    out = str(tmp_path)
    log_dir = os.path.join(out, '0101_1200 cpu2@med cpu2@res_shallow')
    os.makedirs(os.path.join(log_dir, 'ckpts'))
    for step in (500, 1000, 1500, 2000):
        open(os.path.join(log_dir, 'ckpts', 'ckpt-{}.index'.format(step)), 'w').close()
    held = os.path.join(out, recipe_helpers.HELDOUT_NAME)
    os.makedirs(held)  # the held-out links exist: no glob is needed
    names = ['a.png', 'b.png']
    # WebP: MS-SSIM = 0.8 + 0.2 * bpp on both images, from 0.1 to 1.4 bpp
    for n in names:
        _write_csv(os.path.join(out, 'other_codecs', 'webp_heldout', n[:-4] + '_out.csv'),
                   ('q', 'bpp', 'ssim', 'msssim', 'psnr'),
                   [(q, 0.1 * q, 0.9, 0.8 + 0.02 * q, 30) for q in range(1, 15)])
    measures = {'measures-500.csv': (0.5, 0.905),   # 0.005 above WebP
                'measures-1000.csv': (0.8, 0.975),  # 0.015 above: the best
                'measures-1500.csv': (1.6, 0.990),  # beyond WebP's curve
                'measures.csv': (1.0, 0.990)}       # 2000, the latest: 0.010 above
    for name, (bpp, msssim) in measures.items():
        _write_csv(os.path.join(out, '0101_1200 heldout', name), ('img_name', 'bpp', 'ms-ssim', 'psnr'),
                   [(n, bpp, msssim, 25.) for n in names])
    # step 1500 has not been measured yet: val.py runs once, on every checkpoint (it skips measured ones)
    missing = os.path.join(out, '0101_1200 heldout', 'measures-1500.csv')
    os.rename(missing, missing + '.later')
    calls = []

    def fake_run(cmd, log_path):
        calls.append(cmd)
        os.rename(missing + '.later', missing)
    monkeypatch.setattr(recipe_helpers, 'run', fake_run)
    step, point = recipe_helpers.choose_checkpoint(log_dir, out, 'unused', os.path.join(out, 'val.log'))
    assert len(calls) == 1 and calls[0][1] == 'val.py' and calls[0][5:7] == ['--ckpt_step', '1']
    assert step == 1000
    assert point['d_webp'] == pytest.approx(0.015) and point['bpp'] == pytest.approx(0.8)


def test_a_phase_is_done_when_its_last_run_used_the_whole_budget(tmp_path):
    log = tmp_path / 'med.ms_ssim.log'
    assert not recipe_helpers.phase_done(str(log))
    run1 = ('Log dir: logs/0101_1200 x\n100: loss=1.0, ms_ssim=0.5, bpp=1.0, H_real=2.0 (img/s: 5.0, CPU 0.100 h) '
            '0101_1200\nGot signal 15: saved checkpoint at step 150 in d (CPU 0.150 h)\n')
    log.write_text(run1)
    assert not recipe_helpers.phase_done(str(log), 0.5)  # interrupted, not done
    run2 = 'Log dir: logs/0101_1200 x\nUsed --max_cpu_hours 0.35: saved checkpoint at step 500 in d (CPU 0.350 h)\n'
    log.write_text(run1 + run2)
    assert recipe_helpers.phase_done(str(log), 0.5) and recipe_helpers.phase_done(str(log))
    # the recipe's budget was raised afterwards: the phase goes on
    assert not recipe_helpers.phase_done(str(log), 1.0)
    # a later run that was interrupted again is not done, whatever the budget
    log.write_text(run1 + run2 + run1)
    assert not recipe_helpers.phase_done(str(log), 0.1)


def test_sigterm_to_a_recipe_stops_it_after_the_command(tmp_path):
    """The recipe passes SIGTERM on to its train.py (which saves a checkpoint) and stops instead of going on
    to the next phase."""
    import signal
    import subprocess
    import time
    code = ('import sys; sys.path.insert(0, {!r}); import recipe_helpers\n'
            'recipe_helpers.run([sys.executable, "-c", "import signal, sys, time\\n'
            'signal.signal(signal.SIGTERM, lambda *a: (print(\\"child saved\\", flush=True), sys.exit(0)))\\n'
            'print(\\"child up\\", flush=True)\\ntime.sleep(60)"], {!r})\n'
            'print("next phase")\n').format(os.path.join(ROOT, 'recipes'), str(tmp_path / 'phase.log'))
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if (tmp_path / 'phase.log').exists() and 'child up' in (tmp_path / 'phase.log').read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert 'next phase' not in out
    assert proc.returncode == 1 and 'run the recipe again to continue' in err
    assert 'child saved' in (tmp_path / 'phase.log').read_text()


def test_restore_skip_applies_to_the_start_of_a_phase_not_to_its_continuation(tmp_path, monkeypatch):
    """high starts from med with its bottleneck layers initialized anew (C = 64 against 32); once high has
    checkpoints of its own, continuing it must restore every variable."""
    calls = []
    log = str(tmp_path / 'high.ms_ssim.log')

    def fake_run(cmd, log_path):
        calls.append(cmd)
        log_dir = str(tmp_path / '0101_1300 cpu2@high cpu2@res_shallow')
        os.makedirs(os.path.join(log_dir, 'ckpts'), exist_ok=True)
        open(os.path.join(log_dir, 'ckpts', 'ckpt-100.index'), 'w').close()
        with open(log_path, 'a') as f:
            f.write('Log dir: {}\nGot signal 15: saved checkpoint at step 100 in d (CPU 0.100 h)\n'.format(log_dir))
    monkeypatch.setattr(recipe_helpers, 'run', fake_run)
    for _ in range(2):
        recipe_helpers.train_phase(log, ['train.py'], 1.0, restore='med_dir', restore_skip='to_bn,from_bn/weights')
    first, second = calls
    assert first[first.index('--restore') + 1] == 'med_dir'
    assert first[first.index('--restore_skip_vars') + 1] == 'to_bn,from_bn/weights'
    assert '--restore_continue' in second and '--restore_skip_vars' not in second


def test_a_model_without_a_checkpoint_to_choose_does_not_stop_the_others(tmp_path, monkeypatch):
    """choose_checkpoint fails for high (e.g. its rate beyond WebP's curve): low and med are still printed and
    exported (each calibrated only where that keeps it at least as far above WebP), and the recipe ends with one
    error line naming high, not a traceback."""
    import shipped_models
    exported = []

    def fake_choose(log_dir, *args):
        if 'high' in log_dir:
            raise ValueError('no checkpoint of {} has a mean bpp within WebP\'s curve'.format(log_dir))
        return 100, {'bpp': 0.5, 'ms-ssim': 0.95, 'psnr': 25., 'd_webp': 0.01}
    monkeypatch.setattr(recipe_helpers, 'train_phase', lambda log_path, *a, **k: 'dir_' + os.path.basename(log_path))
    monkeypatch.setattr(recipe_helpers, 'log_dirs_in', lambda log_path: ['dir_' + os.path.basename(log_path)])
    monkeypatch.setattr(recipe_helpers, 'choose_checkpoint', fake_choose)
    # the calibrated low is further above WebP (kept), the calibrated med is not (the uncalibrated is kept)
    monkeypatch.setattr(shipped_models, '_calibrated', lambda flags, model, log_dir, step: (
        log_dir + ' calibrated', {'bpp': 0.5, 'ms-ssim': 0.95, 'psnr': 26., 'd_webp': 0.012 if model == 'low' else 0.009}))
    monkeypatch.setattr(recipe_helpers, 'codecs_root', lambda out_root, heldout_glob: 'codecs')
    monkeypatch.setattr(recipe_helpers, 'run', lambda cmd, log_path: exported.append(cmd[1:3]))
    widened = []
    monkeypatch.setattr(shipped_models.widen_bottleneck, 'widen',
                        lambda src, dst, num_chan_bn: widened.append((src, num_chan_bn)) or dst)
    monkeypatch.setattr(sys, 'argv', ['shipped_models.py', '--train', 'x', '--heldout', 'y', '--out', str(tmp_path),
                                      '--export', str(tmp_path / 'export')])
    with pytest.raises(SystemExit) as e:
        shipped_models.main()
    assert str(e.value).startswith('Error: no checkpoint chosen for high: ')
    # each model's checkpoint comes from its last phase; high started from med widened to C = 64
    assert exported == [['export_model.py', 'dir_low.final.log calibrated'], ['export_model.py', 'dir_med.final.log']]
    assert widened == [('dir_med.ms_ssim.log', 64)]


def _fake_log_dir(root, name, steps):
    log_dir = os.path.join(root, name)
    os.makedirs(os.path.join(log_dir, 'ckpts'))
    for n in ('ae_config', 'pc_config'):
        with open(os.path.join(log_dir, n), 'w') as f:
            f.write('# {}\n'.format(n))
    for step in steps:
        for ext in ('index', 'data-00000-of-00001'):
            with open(os.path.join(log_dir, 'ckpts', 'ckpt-{}.{}'.format(step, ext)), 'w') as f:
                f.write('{} {}'.format(step, ext))
    return log_dir


def test_a_snapshot_holds_one_checkpoint_and_the_held_out_links(tmp_path):
    out = str(tmp_path)
    for name in (recipe_helpers.HELDOUT_NAME, 'other_codecs'):
        os.makedirs(os.path.join(out, name))
    log_dir = _fake_log_dir(out, '0101_1200 cpu2@med cpu2@res_shallow', (500, 1000))
    root = os.path.join(out, 'check', 'med-1000')
    copy = recipe_helpers.snapshot(log_dir, 1000, root, out)
    assert sorted(os.listdir(os.path.join(copy, 'ckpts'))) == ['ckpt-1000.data-00000-of-00001', 'ckpt-1000.index']
    assert open(os.path.join(copy, 'ckpts', 'ckpt-1000.index')).read() == '1000 index'
    assert sorted(os.listdir(copy)) == ['ae_config', 'ckpts', 'pc_config']
    # val.py in root finds the held-out photos and WebP's curve of out, not new ones
    for name in (recipe_helpers.HELDOUT_NAME, 'other_codecs'):
        assert os.path.realpath(os.path.join(root, name)) == os.path.realpath(os.path.join(out, name))
    # the training run deletes its old checkpoints: the copy stays
    os.remove(os.path.join(log_dir, 'ckpts', 'ckpt-1000.index'))
    assert recipe_helpers.snapshot(log_dir, 1000, root, out) == copy
    with pytest.raises(ValueError, match='no checkpoint 1500'):
        recipe_helpers.snapshot(log_dir, 1500, os.path.join(out, 'check', 'med-1500'), out)


def test_check_measures_the_newest_checkpoint_of_the_phase_in_progress(tmp_path, monkeypatch, capsys):
    """med's MSE phase is done, its MS-SSIM phase is running: --check measures a copy of the MS-SSIM run's
    newest checkpoint (not the MSE run's, not an older one) and prints its distance to WebP."""
    import shipped_models
    out = str(tmp_path)
    for name in (recipe_helpers.HELDOUT_NAME, 'other_codecs'):
        os.makedirs(os.path.join(out, name))
    mse_dir = _fake_log_dir(out, '0101_1200 cpu2@med cpu2@res_shallow', (3000,))
    run_dir = _fake_log_dir(out, '0101_1300 cpu2@med cpu2@res_shallow', (3500, 4000))
    line = '{}: loss=1.0, ms_ssim=0.9, bpp=0.7, H_real=1.4 (img/s: 5.0, CPU {:.3f} h) x\n'
    with open(os.path.join(out, 'med.mse.log'), 'w') as f:
        f.write('Log dir: {}\n'.format(mse_dir) + line.format(3000, 0.5) + 'Used --max_cpu_hours 0.5\n')
    with open(os.path.join(out, 'med.ms_ssim.log'), 'w') as f:
        f.write('Log dir: {}\n'.format(run_dir) + line.format(4000, 1.0))
    measured = []

    def fake_evaluate(log_dir, root, heldout_glob, log_path):
        measured.append((log_dir, sorted(os.listdir(os.path.join(log_dir, 'ckpts')))))
        return {'bpp': 0.7, 'ms-ssim': 0.97, 'psnr': 26., 'd_webp': 0.003}
    monkeypatch.setattr(recipe_helpers, 'evaluate', fake_evaluate)
    monkeypatch.setattr(sys, 'argv', ['shipped_models.py', '--train', 'x', '--heldout', 'y', '--out', out,
                                      '--only', 'med,low', '--check'])
    shipped_models.main()
    assert measured == [(os.path.join(out, 'check', 'med.ms_ssim-4000', os.path.basename(run_dir)),
                         ['ckpt-4000.data-00000-of-00001', 'ckpt-4000.index'])]
    printed = capsys.readouterr().out
    assert 'med       4000  0.7000   0.9700   26.00     +0.0030' in printed
    assert 'low    no checkpoint yet' in printed


def test_summary_lists_steps_hours_and_learning_rates_of_each_phase(tmp_path, monkeypatch, capsys):
    """med's MSE phase from scratch, done after two runs; its MS-SSIM phase interrupted: the table gives each
    phase's first and last step, the CPU hours it used of its budget and the learning rates its first run
    printed; phases not started say so."""
    import shipped_models
    out = str(tmp_path)
    line = '{}: loss=1.0, ms_ssim=0.9, bpp=0.7, H_real=1.4 (img/s: 5.0, CPU {:.3f} h) x\n'
    lrs = 'autoencoder: lr 1.0e-04 at this step (fixed)\ncontext model: lr 1.0e-04 at this step (fixed)\n'
    with open(os.path.join(out, 'med.mse.log'), 'w') as f:
        f.write('Log dir: a\n' + lrs + line.format(100, 0.1) + line.format(200, 0.3)
                + 'Got signal 15: saved checkpoint at step 250 in a/ckpts (CPU 0.310 h)\n'
                + 'Log dir: a\nRestored 406 variables from a/ckpts (step 250); initialized 0.\n'
                + 'autoencoder: lr 5.0e-05 at this step (fixed)\n' + line.format(300, 0.1)
                + 'Used --max_cpu_hours 0.19: saved checkpoint at step 330 in a/ckpts (CPU 0.190 h)\n')
    with open(os.path.join(out, 'med.ms_ssim.log'), 'w') as f:
        f.write('Log dir: b\nRestored 406 variables from a/ckpts (step 330); initialized 0.\n'
                'autoencoder: lr 2.0e-05 at this step (fixed)\ncontext model: lr 1.0e-04 at this step (x0.1 every 9 '
                'steps)\n' + line.format(400, 0.2))
    monkeypatch.setattr(sys, 'argv', ['shipped_models.py', '--train', 'x', '--heldout', 'y', '--out', out,
                                      '--scale', '0.001', '--summary'])
    shipped_models.main()
    rows = {tuple(c.strip() for c in line.split('|')[1:3]): [c.strip() for c in line.split('|')[3:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith('| ') and 'phase' not in line}
    assert len(rows) == len(shipped_models.PHASES)
    assert rows['med', 'mse'] == ['scratch', '0-330', '0.50 of 0.0005 (done)', '1.0e-04 (fixed) / 1.0e-04 (fixed)',
                                  'distortion_to_minimize=mse']
    assert rows['med', 'ms_ssim'] == ['med mse', '330-400', '0.20 of 0.008', '2.0e-05 (fixed) / 1.0e-04 (x0.1 every 9 '
                                      'steps)', '']
    assert rows['high', 'ms_ssim'][0] == 'med ms_ssim, widened to C = 64'
    assert rows['low', 'final'][1:4] == ['not started', '0.00 of 0.001', '']
    assert 'lr_initial=1e-5' in rows['low', 'final'][4]
