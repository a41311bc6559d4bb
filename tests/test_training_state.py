"""recipes/training_state.py: a recipe's training state kept in a few files survives a fresh work tree."""
import glob
import gzip
import json
import os
import re
import shutil
import sys

import numpy as np

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, 'recipes'))
import model_files  # noqa: E402
import recipe_helpers  # noqa: E402
import training_state  # noqa: E402
import widen_bottleneck  # noqa: E402
from tf_helpers import tf  # noqa: E402

RNG = np.random.default_rng(0)
MODEL_VARS = {'encoder/h1/weights': RNG.standard_normal((3, 3, 3, 4)).astype(np.float32),
              'encoder/h1/BatchNorm/moving_mean': RNG.standard_normal(4).astype(np.float32),
              'centers': np.linspace(-2, 2, 6).astype(np.float32),
              'global_step': np.array(700, np.int64)}
SLOTS = {'encoder/h1/weights/Adam': np.ones((3, 3, 3, 4), np.float32),
         'encoder/h1/weights/Adam_1': np.ones((3, 3, 3, 4), np.float32),
         'beta1_power': np.array(0.5, np.float32), 'beta2_power': np.array(0.9, np.float32)}


def _write_events(log_dir, scalar):
    """An event file with a scalar (train/bpp = scalar at step 10) and an image (step 10), as train.py writes."""
    writer = tf.summary.FileWriter(log_dir)
    image = tf.Summary.Image(height=1, width=1, colorspace=1, encoded_image_string=b'\x89PNG' + b'x' * 100)
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag='train/bpp', simple_value=scalar),
                                         tf.Summary.Value(tag='test/x_out/image/0', image=image)]), 10)
    writer.close()


def _summaries(log_dir):
    """{(tag, step): scalar or 'image'} of the event files of log_dir."""
    out = {}
    for path in glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')):
        for e in tf.train.summary_iterator(path):
            for v in e.summary.value:
                out[v.tag, e.step] = v.simple_value if v.WhichOneof('value') == 'simple_value' else 'image'
    return out


def _log_dir(root, name, steps, scalar=0.5):
    log_dir = os.path.join(root, 'logs', name)
    for step in steps:
        widen_bottleneck.write_checkpoint({**MODEL_VARS, **SLOTS, 'global_step': np.array(step, np.int64)},
                                          model_files.ckpt_dir_of(log_dir), step)
    os.makedirs(log_dir, exist_ok=True)
    for n in (model_files.AE_CONFIG_COPY, model_files.PC_CONFIG_COPY):
        with open(os.path.join(log_dir, n), 'w') as f:
            f.write('# {} of {}\n'.format(n, name))
    _write_events(log_dir, scalar)
    return os.path.join('logs', name)


def _phase_log(root, name, log_dirs):
    path = os.path.join(root, 'logs', name)
    with open(path, 'w') as f:
        f.write(''.join('Log dir: {}\n(CPU 0.200 h)\n'.format(d) for d in log_dirs))
    return os.path.join('logs', name)


def _files(root):
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), 'rb').read()
            for d, _, names in os.walk(root) for n in names}


def test_a_fresh_work_tree_gets_the_newest_checkpoint_logs_and_curves_back(tmp_path):
    work, fresh, state = str(tmp_path / 'work'), str(tmp_path / 'fresh'), str(tmp_path / 'state')
    old = _log_dir(work, '0101_1000 med', [500], scalar=0.75)
    cur = _log_dir(work, '0101_1100 med', [1000, 1500])
    phase = _phase_log(work, 'med.ms_ssim.log', [old, cur])
    webp = os.path.join(work, 'logs', 'other_codecs', 'webp_heldout')
    os.makedirs(webp)
    with open(os.path.join(webp, 'a_out.csv'), 'w') as f:
        f.write('q,bpp,ms-ssim\n50,0.5,0.95\n')
    training_state.save(state, [cur], [phase, 'logs/low.ms_ssim.log'], [old, cur], ['logs/other_codecs'], root=work)
    restored = training_state.restore(state, root=fresh)
    # the phase log that did not exist is not made up
    assert sorted(restored) == sorted([phase, old, cur, 'logs/other_codecs'])
    assert _files(os.path.join(fresh, 'logs', 'other_codecs')) == _files(os.path.join(work, 'logs', 'other_codecs'))
    # the phase log (what ran, CPU hours used) and the curves of both runs are as they were
    assert _files(os.path.join(fresh, 'logs'))[os.path.basename(phase)] == _files(os.path.join(work, 'logs'))[
        os.path.basename(phase)]
    for d, scalar in ((old, 0.75), (cur, 0.5)):
        for name in (model_files.AE_CONFIG_COPY, model_files.PC_CONFIG_COPY):
            assert open(os.path.join(fresh, d, name), 'rb').read() == open(os.path.join(work, d, name), 'rb').read()
        # the curves without the images
        assert _summaries(os.path.join(work, d)) == {('train/bpp', 10): scalar, ('test/x_out/image/0', 10): 'image'}
        assert _summaries(os.path.join(fresh, d)) == {('train/bpp', 10): scalar}
    # only the current run's newest checkpoint, with the model's variables bit for bit and no optimizer slots
    assert model_files.all_ckpt_steps(model_files.ckpt_dir_of(os.path.join(fresh, cur))) == [1500]
    assert not os.path.exists(model_files.ckpt_dir_of(os.path.join(fresh, old)))
    variables = widen_bottleneck.read_variables(
        model_files.ckpt_path(model_files.ckpt_dir_of(os.path.join(fresh, cur)), 1500))
    assert sorted(variables) == sorted(MODEL_VARS)
    for name, value in MODEL_VARS.items():
        expected = 1500 if name == 'global_step' else value
        np.testing.assert_array_equal(variables[name], expected)
        assert variables[name].dtype == value.dtype
    # the recipe's bookkeeping works on the restored tree: this phase continues from step 1500
    assert recipe_helpers.log_dirs_in(os.path.join(fresh, phase)) == [old, cur]
    assert abs(recipe_helpers.used_cpu_hours(open(os.path.join(fresh, phase)).read()) - 0.4) < 1e-9


def test_restore_leaves_what_exists_alone(tmp_path):
    work, state = str(tmp_path / 'work'), str(tmp_path / 'state')
    cur = _log_dir(work, '0101_1100 med', [1000])
    phase = _phase_log(work, 'med.ms_ssim.log', [cur])
    training_state.save(state, [cur], [phase], root=work)
    # the work tree went on training after the save: a newer log line and checkpoint
    with open(os.path.join(work, phase), 'a') as f:
        f.write('(CPU 0.300 h)\n')
    widen_bottleneck.write_checkpoint(MODEL_VARS, model_files.ckpt_dir_of(os.path.join(work, cur)), 1200)
    before = _files(work)
    assert training_state.restore(state, root=work) == []
    assert _files(work) == before


def test_a_save_replaces_the_previous_one(tmp_path):
    work, state = str(tmp_path / 'work'), str(tmp_path / 'state')
    a = _log_dir(work, '0101_1100 med', [1000])
    b = _log_dir(work, '0101_1200 low', [2000])
    training_state.save(state, [a, b], [], root=work)
    training_state.save(state, [b], [], root=work)
    manifest = json.load(open(os.path.join(state, training_state.MANIFEST)))
    assert list(manifest['log_dirs']) == [b]
    assert sorted(os.listdir(state)) == sorted(['phase_logs', 'other_dirs', training_state.MANIFEST,
                                                manifest['log_dirs'][b]['dir']])
    assert not any(os.path.exists(state + suffix) for suffix in ('.tmp', '.old'))


def test_phase_logs_are_kept_compressed(tmp_path):
    work, state = str(tmp_path / 'work'), str(tmp_path / 'state')
    os.makedirs(os.path.join(work, 'logs'))
    phase = _phase_log(work, 'med.mse.log', ['logs/x'] * 2000)
    training_state.save(state, [], [phase], root=work)
    copy = os.path.join(state, 'phase_logs', 'med.mse.log.gz')
    assert gzip.open(copy).read() == open(os.path.join(work, phase), 'rb').read()
    assert os.path.getsize(copy) < os.path.getsize(os.path.join(work, phase)) / 10


def test_the_recipe_keeps_each_models_current_run_and_the_start_of_phases_to_come(tmp_path, monkeypatch):
    """med's MS-SSIM phase is done and low's has started: med's current run (ms_ssim2) and low's are kept with a
    checkpoint; high has not started, so med's MS-SSIM run it starts from is kept too; every run's curves are."""
    import shipped_models
    out = str(tmp_path)

    class Flags:
        scale = 1.0
    Flags.out = out
    logs = {}
    for (model, phase), done in {('med', 'mse'): True, ('med', 'ms_ssim'): True, ('med', 'ms_ssim2'): False,
                                 ('low', 'ms_ssim'): False}.items():
        log_dir = os.path.join(out, '{}_{}'.format(model, phase))
        logs[model, phase] = log_dir
        hours = [h for m, p, _, h, _ in shipped_models.PHASES if (m, p) == (model, phase)][0]
        with open(os.path.join(out, '{}.{}.log'.format(model, phase)), 'w') as f:
            f.write('Log dir: {}\n(CPU {:.3f} h)\n{}'.format(log_dir, hours if done else 0.1,
                                                          'Used --max_cpu_hours\n' if done else ''))
    needed, phase_logs, curves, others = shipped_models._state_contents(Flags)
    assert others == [os.path.join(out, 'other_codecs')]
    assert sorted(needed) == sorted([logs['med', 'ms_ssim2'], logs['low', 'ms_ssim'], logs['med', 'ms_ssim']])
    assert sorted(curves) == sorted(logs.values())
    assert len(phase_logs) == len(shipped_models.PHASES)
    shutil.rmtree(out)


def test_train_py_goes_on_from_a_restored_state(tmp_path, capsys):
    """The state keeps no optimizer slots: train.py --restore_continue starts them anew and goes on from the
    kept step, in the restored log dir."""
    import train
    from helpers import train_args
    assert train.main(train_args(tmp_path, '--max_steps', '3')) == 0
    (log_dir,) = [d for d in glob.glob(os.path.join(str(tmp_path), 'logs', '*')) if os.path.isdir(d)]
    state = str(tmp_path / 'state')
    training_state.save(state, [log_dir], [], [log_dir], root=str(tmp_path))
    shutil.rmtree(log_dir)
    assert training_state.restore(state, root=str(tmp_path)) == [os.path.relpath(log_dir, str(tmp_path))]
    capsys.readouterr()
    assert train.main(train_args(tmp_path, '--max_steps', '5', '--restore', log_dir, '--restore_continue')) == 0
    out = capsys.readouterr().out
    restored, initialized = map(int, re.search(r'Restored (\d+) variables .* initialized (\d+)', out).groups())
    assert restored > 0 and initialized > 0  # the model's variables restored, the optimizer's slots anew
    assert '4: loss=' in out and '\n1: loss=' not in out and 'nan' not in out
    # (the restored checkpoint 3 stays: train.py's saver only deletes the ones it wrote)
    assert model_files.all_ckpt_steps(model_files.ckpt_dir_of(log_dir)) == [3, 5]


def test_no_save_while_a_model_trains(tmp_path, monkeypatch):
    """A recipe process holds the lock of the model it trains: its checkpoint may be half written, so --save_state
    refuses, with a message instead of a traceback, and leaves the previous state as it was."""
    import pytest
    import shipped_models
    state = tmp_path / 'state'
    state.mkdir()
    (state / training_state.MANIFEST).write_text('{"log_dirs": {}, "phase_logs": [], "other_dirs": {}}')
    held = recipe_helpers.lock(str(tmp_path), 'high')
    monkeypatch.setattr(sys, 'argv', ['shipped_models.py', '--train', 'x', '--heldout', 'y', '--out', str(tmp_path),
                                      '--state', str(state), '--save_state'])
    with pytest.raises(SystemExit) as e:
        shipped_models.main()
    assert str(e.value).startswith('Error: high still training')
    assert os.listdir(state) == [training_state.MANIFEST]
    held.close()


def test_the_held_out_links_exist_before_check_on_a_fresh_out_root(tmp_path, monkeypatch):
    """A restored state brings WebP's curve, so the WebP run that used to make the held-out links folder does
    not run: --check links its checkpoint copies to that folder, and val.py failed on the dangling link."""
    import shipped_models
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in ('a.png', 'b.png'):
        (photos / name).write_bytes(b'')
    out = tmp_path / 'out'
    seen = []
    monkeypatch.setattr(shipped_models, 'check', lambda flags, wanted: seen.append(
        sorted(os.listdir(os.path.join(flags.out, recipe_helpers.HELDOUT_NAME)))))
    monkeypatch.setattr(sys, 'argv', ['shipped_models.py', '--train', 'x', '--heldout', str(photos / '*.png'),
                                      '--out', str(out), '--state', '', '--check'])
    shipped_models.main()
    assert seen == [['a.png', 'b.png']]
