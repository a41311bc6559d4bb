"""training_curves.py: events of a model's phases merged by step (the later write wins), the figure written."""
import os
import time

import pytest

import training_curves
from tf_helpers import tf


def _write_events(log_dir, points, wall_time):
    """points: [(step, {tag: value})]"""
    writer = tf.summary.FileWriter(log_dir)
    for step, values in points:
        s = tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        event = tf.Event(wall_time=wall_time + step, step=step, summary=s)
        writer.add_event(event)
    writer.close()


def test_phases_are_merged_by_step(tmp_path):
    first, second = str(tmp_path / 'mse'), str(tmp_path / 'ms_ssim RESTORE@mse')
    now = time.time()
    _write_events(first, [(100, {'test/ms_ssim': 0.5, 'test/bpp': 0.9}), (200, {'test/ms_ssim': 0.6})], now)
    # the continued run logs step 200 again (later) and goes on
    _write_events(second, [(200, {'test/ms_ssim': 0.65}), (300, {'test/ms_ssim': 0.7, 'train/x': 1.0})], now + 1000)
    series = training_curves.read_scalars([second, first], ['test/ms_ssim', 'test/bpp'])
    assert series['test/ms_ssim'] == ([100, 200, 300], pytest.approx([0.5, 0.65, 0.7]))
    assert series['test/bpp'] == ([100], pytest.approx([0.9]))
    out = str(tmp_path / 'curves.png')
    training_curves.main(['--curve', 'med', first, second, '--tags', 'test/ms_ssim,test/bpp', '-o', out])
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_dir_without_events_is_a_clear_error(tmp_path, capsys):
    os.makedirs(str(tmp_path / 'empty'))
    with pytest.raises(SystemExit, match='no TensorBoard events in'):
        training_curves.main(['--curve', 'x', str(tmp_path / 'empty'), '-o', str(tmp_path / 'c.png')])
