"""train.py end to end on generated images with a tiny model: steps, checkpoints, events, restore,
all three distortions, over-fitting one batch, NaN handling and clear errors."""
import glob
import os
import re

import numpy as np
import pytest

import config_parser
import model_files
import model_graph
import train
import training_helpers
from helpers import ROOT, tiny_configs, train_args
from tf_helpers import tf

def _only_log_dir(tmp_path):
    dirs = [d for d in glob.glob(os.path.join(str(tmp_path), 'logs', '*')) if os.path.isdir(d)]
    return dirs


def test_train_steps_checkpoint_events_and_restore(tmp_path, capsys):
    assert train.main(train_args(tmp_path, '--max_steps', '4')) == 0
    out = capsys.readouterr().out
    assert '2: loss=' in out and '4: loss=' in out and 'test ms_ssim=' in out
    # the CPU time so far, which recipes/pilots.py sums over interrupted runs
    assert 0 < float(re.search(r'\n4: loss=.*, CPU ([0-9.]+) h\)', out).group(1)) < 1
    (log_dir,) = _only_log_dir(tmp_path)
    assert os.path.basename(log_dir).endswith(' cvpr@low cvpr@res_shallow')
    ckpt_dir = os.path.join(log_dir, 'ckpts')
    assert model_files.all_ckpt_steps(ckpt_dir) == [4]  # max_to_keep=1: step 3 was replaced
    assert glob.glob(os.path.join(log_dir, 'events.out.tfevents.*'))
    # the resolved configs are saved and parse back to what was trained
    ae_copy, _ = config_parser.parse(os.path.join(log_dir, 'ae_config'))
    assert ae_copy.arch_param_n == 16 and ae_copy.H_target == 0.4
    tags = {v.tag for e in tf.train.summary_iterator(glob.glob(os.path.join(log_dir, 'events.*'))[0])
            for v in e.summary.value}
    assert {'train/bpp', 'train/ms_ssim', 'train/PC_loss/H_real', 'test/ms_ssim', 'centers'} <= tags
    for image_tag in ('test/x_in', 'test/x_out', 'test/hm'):  # images are tagged <name>/image/<i>
        assert any(t.startswith(image_tag + '/image') for t in tags), tags

    # --restore continues at the saved step, into a new log dir marked RESTORE
    assert train.main(train_args(tmp_path, '--max_steps', '6', '--restore', log_dir)) == 0
    out = capsys.readouterr().out
    assert 'Restored' in out and '5: loss=' in out and '\n1: loss=' not in out
    restored_dirs = [d for d in _only_log_dir(tmp_path) if 'RESTORE@' in d]
    assert len(restored_dirs) == 1
    assert model_files.all_ckpt_steps(os.path.join(restored_dirs[0], 'ckpts')) == [6]


@pytest.mark.parametrize('distortion', ['mse', 'psnr'])
def test_mse_and_psnr_train(tmp_path, distortion, capsys):
    """The original crashed for these (its loggers assumed MS-SSIM)."""
    args = train_args(tmp_path, '--max_steps', '2', overrides=['distortion_to_minimize={}'.format(distortion)])
    assert train.main(args) == 0
    assert '2: loss=' in capsys.readouterr().out


def test_loss_goes_down_when_overfitting_one_batch():
    ae_config, pc_config = tiny_configs()
    ae_config = config_parser.apply_overrides(ae_config, ['lr_initial=1e-3', 'lr_schedule=FIXED'])
    pc_config = config_parser.apply_overrides(pc_config, ['lr_initial=1e-3', 'lr_schedule=FIXED'])
    from helpers import smooth_image
    batch = np.stack([smooth_image(32, 32, seed=s) for s in range(2)]).astype(np.float32)
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        g = model_graph.TrainGraph(ae_config, pc_config, tf.constant(batch), None, 10, None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            losses = [sess.run([g.train_op, g.total_loss])[1] for _ in range(40)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_nan_loss_stops_with_message(tmp_path, capsys):
    # steps of 1e30 overflow float32 activations right after the first update
    args = train_args(tmp_path, '--max_steps', '30', '-ltest', '-1', overrides=['lr_initial=1e30', 'lr_schedule=FIXED'])
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert 'Loss is nan' in err and 'stopping' in err
    assert 'Traceback' not in err


def test_bad_config_and_dataset_are_clear_errors(tmp_path, capsys):
    assert train.main(train_args(tmp_path, '--max_steps', '1', overrides=['optimizer=RMSPROP'])) == 1
    assert 'optimizer' in capsys.readouterr().err
    args = train_args(tmp_path, '--max_steps', '1')
    args[args.index('--dataset_train') + 1] = os.path.join(str(tmp_path), 'nothing', '*.png')
    assert train.main(args) == 1
    assert 'nothing' in capsys.readouterr().err


def test_lr_schedule_staircase():
    ae_config, _ = tiny_configs()
    cfg = config_parser.apply_overrides(ae_config, ['lr_initial=1.0', 'lr_schedule_decay_interval=2'])
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.placeholder(tf.int64, [])
        lr = training_helpers.learning_rate(cfg, step, iterations_per_epoch=5)
        got = [sess.run(lr, {step: s}) for s in (0, 9, 10, 19, 20)]
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.01], rtol=1e-6)


def test_integer_learning_rate_override():
    """`-co lr_initial=0` (an int) freezes a network instead of failing inside TensorFlow."""
    ae_config, _ = tiny_configs()
    for schedule in ('FIXED', 'DECAY'):
        cfg = config_parser.apply_overrides(ae_config, ['lr_initial=0', 'lr_schedule=' + schedule])
        with tf.Graph().as_default(), tf.Session() as sess:
            lr = training_helpers.learning_rate(cfg, tf.constant(3, tf.int64), iterations_per_epoch=5)
            assert sess.run(lr) == 0.0


def test_sigterm_saves_a_checkpoint(tmp_path):
    """SIGTERM (like Ctrl-C) ends training with a checkpoint of the last step."""
    import signal
    import subprocess
    import sys
    import time
    args = [sys.executable, os.path.join(ROOT, 'train.py')] + train_args(tmp_path, '-ltrain', '1', '-lsave', '1000',
                                                                      '-ltest', '-1')
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        for line in proc.stdout:  # wait until training runs
            if ': loss=' in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert 'Got signal' in out
    (log_dir,) = _only_log_dir(tmp_path)
    steps = model_files.all_ckpt_steps(os.path.join(log_dir, 'ckpts'))
    assert len(steps) == 1 and steps[0] >= 1


def test_describe_schedule_warns_when_a_network_stopped_learning():
    _, pc_config = tiny_configs()
    pc = config_parser.apply_overrides(pc_config, ['lr_initial=1e-4', 'lr_schedule=DECAY',
                                                   'lr_schedule_decay_interval=2'])
    with tf.Graph().as_default(), tf.Session() as sess:
        lr = sess.run(training_helpers.learning_rate(pc, tf.constant(3000, tf.int64), iterations_per_epoch=172))
    line = training_helpers.describe_schedule('context model', pc, 172, lr)
    assert 'every 344 steps' in line and 'stopped learning' in line
    fresh = training_helpers.describe_schedule('context model', pc, 172, 1e-4)
    assert 'Warning' not in fresh
    fixed = config_parser.apply_overrides(pc, ['lr_schedule=FIXED'])
    assert training_helpers.describe_schedule('context model', fixed, 172, 1e-4).endswith('(fixed)')



def test_env_num_crops_and_threads_reach_the_pipelines(tmp_path, capsys, monkeypatch):
    """NUM_CROPS_PER_IMG shortens the epoch of the LR schedule (5 images, batches of 2 crops of 1 image: 5
    steps, not 2) and reaches the train pipeline only; the test pipeline is unshuffled, seeded with 666, 1
    crop per image; NUM_PREPROCESS_THREADS is the parallelism of both. Bad values are one-line errors.
    (The model is not built: a stand-in TrainGraph records what it gets and stops the run.)"""
    import inputpipeline
    calls = {}
    real_input_batch = inputpipeline.input_batch

    def recording_input_batch(*args, **kwargs):
        calls[kwargs['name']] = kwargs
        return real_input_batch(*args, **kwargs)

    def stop_graph(ae_config, pc_config, x_train, x_test, iterations_per_epoch, data_format):
        calls['graph'] = dict(x_train=x_train.shape.as_list(), iterations_per_epoch=iterations_per_epoch)
        raise train.TrainingError('stand-in graph')
    monkeypatch.setattr(inputpipeline, 'input_batch', recording_input_batch)
    monkeypatch.setattr(model_graph, 'TrainGraph', stop_graph)
    monkeypatch.setenv('NUM_CROPS_PER_IMG', '2')
    monkeypatch.setenv('NUM_PREPROCESS_THREADS', '3')
    assert train.main(train_args(tmp_path)) == 1
    assert 'Error: stand-in graph' in capsys.readouterr().err
    assert calls['graph'] == {'x_train': [2, 32, 32, 3], 'iterations_per_epoch': 5}
    assert {k: calls['train'][k] for k in ('shuffle', 'num_crops_per_img', 'num_parallel_calls')} == \
        {'shuffle': True, 'num_crops_per_img': 2, 'num_parallel_calls': 3}
    assert {k: calls['test'][k] for k in ('shuffle', 'seed', 'num_crops_per_img', 'num_parallel_calls')} == \
        {'shuffle': False, 'seed': 666, 'num_crops_per_img': 1, 'num_parallel_calls': 3}

    monkeypatch.setenv('NUM_CROPS_PER_IMG', '3')
    assert train.main(train_args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert 'Error: batch_size 2 is not divisible by NUM_CROPS_PER_IMG=3' in err and 'Traceback' not in err
    monkeypatch.setenv('NUM_CROPS_PER_IMG', '1')
    monkeypatch.setenv('NUM_PREPROCESS_THREADS', 'four')
    assert train.main(train_args(tmp_path)) == 1
    assert "Error: $NUM_PREPROCESS_THREADS must be a positive integer, got 'four'" in capsys.readouterr().err


def test_test_batch_distance_to_codecs(tmp_path, capsys):
    """-dcodec: the test batch's (bpp, MS-SSIM, PSNR) against each codec's averaged curve on that dataset, as
    the original's d_BPG. The codec here is a straight line, so the expected distance is known from the
    printed test values."""
    from helpers import write_codec_curves
    codecs_root = tmp_path / 'codecs'
    line = [(0.0, 0.5, 20.), (4.0, 0.9, 40.)]  # MS-SSIM 0.5 + 0.1 bpp; PSNR 20 + 5 bpp
    write_codec_curves(codecs_root, 'bpg', 'mine', {'a': line, 'b': line})
    args = train_args(tmp_path, '--max_steps', '3', '-dcodec', 'mine', '--other_codecs_root', str(codecs_root))
    # the grid of the codec curves is 0.1..1.4 bpp, which covers the tiny model's rate (< 0.33 bpp)
    assert train.main(args) == 0
    out = capsys.readouterr().out
    (test_line,) = [l for l in out.splitlines() if l.startswith('3: test')]
    fields = dict(kv.split('=') for kv in test_line.split('centers=')[0][len('3: test '):].rstrip(', ').split(', '))
    bpp, msssim = float(fields['bpp']), float(fields['ms_ssim'])
    assert float(fields['d_bpg']) == pytest.approx(msssim - (0.5 + 0.1 * bpp), abs=2e-4)
    (log_dir,) = _only_log_dir(tmp_path)
    values = {v.tag: v.simple_value for e in tf.train.summary_iterator(glob.glob(os.path.join(log_dir, 'events.*'))[0])
              for v in e.summary.value if 'distance' in v.tag}
    assert set(values) == {'test/distance_bpg_ms-ssim', 'test/distance_bpg_psnr'}
    assert values['test/distance_bpg_ms-ssim'] == pytest.approx(float(fields['d_bpg']), abs=1e-4)
    # no curves for the default dataset: a note, no distance
    assert train.main(train_args(tmp_path / 'again', '--max_steps', '1', '--other_codecs_root', str(codecs_root))) == 0
    out = capsys.readouterr().out
    assert "no classical codec curves for 'testset'" in out and 'd_' not in out.split('test ms_ssim')[1]


def test_max_cpu_hours_stops_with_a_checkpoint(tmp_path, capsys, monkeypatch):
    """The budget is checked before every step against the process's CPU time: here a clock that advances
    0.3 h per reading, so a budget of 1 h is used up after a few steps, long before --max_steps."""
    calls = []

    def fake_cpu_hours():
        calls.append(1)
        return 0.3 * len(calls)

    monkeypatch.setattr(train, '_cpu_hours', fake_cpu_hours)
    assert train.main(train_args(tmp_path, '--max_cpu_hours', '1', '--max_steps', '100', '-ltest', '-1')) == 0
    out = capsys.readouterr().out
    step = int(re.search(r'Used --max_cpu_hours 1: saved checkpoint at step (\d+)', out).group(1))
    assert 1 <= step <= 4
    (log_dir,) = _only_log_dir(tmp_path)
    assert model_files.all_ckpt_steps(os.path.join(log_dir, 'ckpts')) == [step]
