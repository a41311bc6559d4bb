"""A recipe's training state in a few files that can be committed, so that training spread over several
working sessions survives a new machine (whose work tree is a fresh clone: log dirs outside git are gone).

    save(state_dir, log_dirs, phase_logs)   # after the training processes stopped (SIGTERM saves checkpoints)
    restore(state_dir)                      # on the new machine, before the recipe runs again

What is kept, per log dir: the config copies, the newest checkpoint's model variables (float32, exact; the
optimizer's slots are left out: they are three times the model's size, and train.py starts missing slots at
zero, i.e. Adam begins its moment estimates anew, which it does within a few hundred steps) and the TensorBoard
events (the training curves). Per phase: its log, which says what ran and how many CPU hours were used.
Everything is compressed; one save replaces the previous one.

Layout of state_dir:
    manifest.json           {"log_dirs": {path: {"step": kept step or null, "dir": n}}, "phase_logs": [path, ...],
                             "other_dirs": {path: file}}, paths relative to the project
    other_dirs/<n>.tar.gz   a folder kept whole
    phase_logs/<name>.gz    a phase log
    <n>/                    a log dir: ae_config, pc_config, events.tar.gz, variables.npz (if a checkpoint is kept)
"""
import gzip
import json
import os
import shutil
import tarfile
import tempfile

import numpy as np

import recipe_helpers  # puts the project's root on sys.path
import widen_bottleneck

import model_files  # noqa: E402
from tf_helpers import tf  # noqa: E402

ROOT = recipe_helpers.ROOT
MANIFEST = 'manifest.json'
VARIABLES = 'variables.npz'
EVENTS = 'events.tar.gz'
_OPTIMIZER_PARTS = ('Adam', 'beta1_power', 'beta2_power')


def is_optimizer_variable(name):
    return any(part in name.split('/')[-1] for part in _OPTIMIZER_PARTS)


def _rel(path, root):
    return os.path.relpath(os.path.abspath(os.path.join(root, path)), root)


def save(state_dir, log_dirs, phase_logs, curve_log_dirs=(), other_dirs=(), root=ROOT):
    """Keeps the newest checkpoint (model variables), config copies and events of each of log_dirs, the config
    copies and events of curve_log_dirs (the training curves of earlier runs), the phase logs and other_dirs
    (whole, e.g. the codecs' curves on the held-out photos, hours of work to measure again), in state_dir
    (written aside, then put in place of the previous state). Relative paths are relative to root (the
    project's, where the recipe runs). Returns the manifest."""
    tmp = state_dir.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ('phase_logs', 'other_dirs'):
        os.makedirs(os.path.join(tmp, sub))
    manifest = {'log_dirs': {}, 'phase_logs': [], 'other_dirs': {}}
    with_ckpt = set(_rel(d, root) for d in log_dirs)
    for i, log_dir in enumerate(sorted(with_ckpt | set(_rel(d, root) for d in curve_log_dirs))):
        if not os.path.isdir(os.path.join(root, log_dir)):
            continue
        dst = os.path.join(tmp, str(i))
        os.makedirs(dst)
        for name in (model_files.AE_CONFIG_COPY, model_files.PC_CONFIG_COPY):
            shutil.copy(os.path.join(root, log_dir, name), dst)
        _pack_events(os.path.join(root, log_dir), os.path.join(dst, EVENTS))
        steps = _steps(os.path.join(root, log_dir)) if log_dir in with_ckpt else []
        if steps:
            ckpt_dir = model_files.ckpt_dir_of(os.path.join(root, log_dir))
            variables = widen_bottleneck.read_variables(model_files.ckpt_path(ckpt_dir, max(steps)))
            np.savez_compressed(os.path.join(dst, VARIABLES),
                                **{k: v for k, v in variables.items() if not is_optimizer_variable(k)})
        manifest['log_dirs'][log_dir] = {'step': max(steps) if steps else None, 'dir': str(i)}
    for path in sorted(set(_rel(p, root) for p in phase_logs)):
        if not os.path.exists(os.path.join(root, path)):
            continue
        with open(os.path.join(root, path), 'rb') as f, gzip.open(_phase_log_copy(tmp, path), 'wb') as g:
            shutil.copyfileobj(f, g)
        manifest['phase_logs'].append(path)
    for i, path in enumerate(sorted(set(_rel(d, root) for d in other_dirs))):
        if os.path.isdir(os.path.join(root, path)):
            with tarfile.open(os.path.join(tmp, 'other_dirs', '{}.tar.gz'.format(i)), 'w:gz') as tar:
                tar.add(os.path.join(root, path), arcname='.')
            manifest['other_dirs'][path] = '{}.tar.gz'.format(i)
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    old = state_dir.rstrip('/') + '.old'
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(state_dir):
        os.rename(state_dir, old)
    os.rename(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def restore(state_dir, root=ROOT):
    """Writes back what save() kept, where it is missing: phase logs and log dirs that do not exist (a log dir
    that exists without the kept checkpoint gets it). Returns the restored paths (relative to the project)."""
    with open(os.path.join(state_dir, MANIFEST)) as f:
        manifest = json.load(f)
    restored = []
    for path in manifest['phase_logs']:
        dst = os.path.join(root, path)
        if os.path.exists(dst):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with gzip.open(_phase_log_copy(state_dir, path), 'rb') as g, open(dst + '.tmp', 'wb') as f:
            shutil.copyfileobj(g, f)
        os.rename(dst + '.tmp', dst)
        restored.append(path)
    for path, name in sorted(manifest['other_dirs'].items()):
        dst = os.path.join(root, path)
        if os.path.isdir(dst):
            continue
        shutil.rmtree(dst + '.tmp', ignore_errors=True)
        with tarfile.open(os.path.join(state_dir, 'other_dirs', name)) as tar:
            tar.extractall(dst + '.tmp', filter='data')
        os.rename(dst + '.tmp', dst)
        restored.append(path)
    for log_dir, entry in sorted(manifest['log_dirs'].items()):
        dst = os.path.join(root, log_dir)
        src = os.path.join(state_dir, entry['dir'])
        if not os.path.isdir(dst):
            tmp = dst + '.tmp'
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            for name in (model_files.AE_CONFIG_COPY, model_files.PC_CONFIG_COPY):
                shutil.copy(os.path.join(src, name), tmp)
            with tarfile.open(os.path.join(src, EVENTS)) as tar:
                tar.extractall(tmp, filter='data')
            os.rename(tmp, dst)
        elif entry['step'] is None or entry['step'] in _steps(dst):
            continue
        if entry['step'] is not None:
            with np.load(os.path.join(src, VARIABLES)) as npz:
                variables = {k: npz[k] for k in npz.files}
            widen_bottleneck.write_checkpoint(variables, model_files.ckpt_dir_of(dst), entry['step'])
        restored.append(log_dir)
    return restored


def _steps(log_dir):
    ckpt_dir = model_files.ckpt_dir_of(log_dir)
    return model_files.all_ckpt_steps(ckpt_dir) if os.path.isdir(ckpt_dir) else []


def _phase_log_copy(state_dir, path):
    return os.path.join(state_dir, 'phase_logs', os.path.basename(path) + '.gz')


def _pack_events(log_dir, dst):
    """The TensorBoard event files of log_dir (their paths inside it) as a tar.gz, with their scalars only: the
    test images they hold too grow them by megabytes every 500 steps."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(dst, 'w:gz') as tar:
        for folder, _, files in os.walk(log_dir):
            for name in sorted(files):
                if name.startswith('events.out.tfevents'):
                    path = os.path.join(folder, name)
                    scalars = os.path.join(tmp, name)
                    _scalar_events(path, scalars)
                    tar.add(scalars, arcname=os.path.relpath(path, log_dir))


def _scalar_events(src, dst):
    """Copies the event file src to dst without the summaries that are not scalars (and without graphs)."""
    with tf.io.TFRecordWriter(dst) as writer:
        for event in tf.train.summary_iterator(src):
            if event.HasField('summary'):
                scalars = [v for v in event.summary.value if v.WhichOneof('value') == 'simple_value']
                if not scalars:
                    continue
                del event.summary.value[:]
                event.summary.value.extend(scalars)
            elif not event.HasField('file_version'):
                continue
            writer.write(event.SerializeToString())


def describe(state_dir):
    """One line per kept log dir and phase log, for the recipe's output."""
    with open(os.path.join(state_dir, MANIFEST)) as f:
        manifest = json.load(f)
    size = sum(os.path.getsize(os.path.join(folder, n)) for folder, _, names in os.walk(state_dir) for n in names)
    lines = ['{}: {} log dirs, {} phase logs, {} other folders, {:.1f} MB'.format(
        state_dir, len(manifest['log_dirs']), len(manifest['phase_logs']), len(manifest['other_dirs']), size / 1e6)]
    lines += ['  {} ({})'.format(d, 'events only' if e['step'] is None else 'step {}'.format(e['step']))
              for d, e in sorted(manifest['log_dirs'].items())]
    return '\n'.join(lines)

