"""What a model directory holds, readable without TensorFlow: configs, checkpoints, the fingerprint cache
and the exported inference files.

A model is a training log dir (or an export of one, export_model.py):

    <log dir>/ae_config, pc_config          resolved configs (else recovered from the dir's name)
    <log dir>/ckpts/ckpt-<step>.*           TensorFlow checkpoints (saver.py writes them)
    <log dir>/ckpts/fingerprint.json        cached fingerprint of the latest checkpoint (codec.py decode)
    <log dir>/onnx/                         the model for ONNX Runtime (onnx_export.py, onnx_model.py)

codec.py reads all of these without importing TensorFlow; inference.py builds the TensorFlow model.
"""
import glob
import hashlib
import json
import os
import re

import config_parser
import file_helpers
import logdir_helpers

_HERE = os.path.dirname(os.path.abspath(__file__))
AE_CONFIG_COPY = 'ae_config'
PC_CONFIG_COPY = 'pc_config'
CKPT_DIR_NAME = 'ckpts'
CKPT_PREFIX = 'ckpt'
_STEP_RE = re.compile(r'ckpt-(\d+)\.index$')
FINGERPRINT_CACHE = 'fingerprint.json'  # in the checkpoint dir


class ModelError(ValueError):
    pass


# Configs ---------------------------------------------------------------------------------------------

def config_base_dirs():
    return (os.environ.get('CONFIG_BASE_AE', os.path.join(_HERE, 'ae_configs')),
            os.environ.get('CONFIG_BASE_PC', os.path.join(_HERE, 'pc_configs')))


def load_configs(log_dir):
    """(ae_config, pc_config) of a log dir: its config copies, or else the configs its name names
    (`0515_1103 cvpr@low cvpr@res_shallow` -> ae_configs/cvpr/low, pc_configs/cvpr/res_shallow), so that
    the authors' released checkpoints load too."""
    copies = [os.path.join(log_dir, n) for n in (AE_CONFIG_COPY, PC_CONFIG_COPY)]
    if all(os.path.isfile(p) for p in copies):
        return tuple(config_parser.parse(p)[0] for p in copies)
    try:
        ae_rel, pc_rel = logdir_helpers.config_rel_paths_from_log_dir(log_dir)
    except ValueError as e:
        raise ModelError('{} has no config copies ({}, {}) and {}'.format(
            log_dir, AE_CONFIG_COPY, PC_CONFIG_COPY, e)) from None
    ae_base, pc_base = config_base_dirs()
    paths = os.path.join(ae_base, ae_rel), os.path.join(pc_base, pc_rel)
    for p in paths:
        if not os.path.isfile(p):
            raise ModelError('Config {} (from the log dir name {!r}) not found; set CONFIG_BASE_AE / '
                             'CONFIG_BASE_PC'.format(p, os.path.basename(log_dir)))
    return tuple(config_parser.parse(p)[0] for p in paths)


# Checkpoints -----------------------------------------------------------------------------------------

def ckpt_dir_of(log_dir_or_ckpt_dir):
    d = os.path.normpath(log_dir_or_ckpt_dir)
    return d if os.path.basename(d) == CKPT_DIR_NAME else os.path.join(d, CKPT_DIR_NAME)


def all_ckpt_steps(ckpt_dir):
    """Sorted steps of the checkpoints in ckpt_dir."""
    steps = (_STEP_RE.search(p) for p in glob.glob(os.path.join(glob.escape(ckpt_dir), CKPT_PREFIX + '-*.index')))
    return sorted(int(m.group(1)) for m in steps if m)


def ckpt_path(ckpt_dir, step):
    return os.path.join(ckpt_dir, '{}-{}'.format(CKPT_PREFIX, step))


def ckpt_file_names(ckpt_dir, step):
    """Sorted names of the files of checkpoint `step` in ckpt_dir (ckpt-<step>.index, .data-*)."""
    prefix = os.path.basename(ckpt_path(ckpt_dir, step)) + '.'
    return sorted(n for n in os.listdir(ckpt_dir) if n.startswith(prefix))


def select_ckpt_step(ckpt_dir, restore_itr=-1):
    """The latest step, or with restore_itr >= 0 the latest step <= restore_itr."""
    steps = all_ckpt_steps(ckpt_dir)
    if restore_itr is not None and restore_itr >= 0:
        steps = [s for s in steps if s <= restore_itr]
    if not steps:
        raise ValueError('No checkpoint{} in {}'.format(
            '' if restore_itr is None or restore_itr < 0 else ' with step <= {}'.format(restore_itr), ckpt_dir))
    return steps[-1]


def checkpoint_key(log_dir, step=None):
    """'<step>:<sha256>' of what a model's weights come from: the configs and the checkpoint's files (default:
    the latest), by content, so that it holds in any copy of the model (a fresh clone, another machine,
    where mtimes differ) and changes with a config or the checkpoint. ValueError if there is no checkpoint."""
    ckpt_dir = ckpt_dir_of(log_dir)
    step = select_ckpt_step(ckpt_dir) if step is None else step
    h = hashlib.sha256()
    for config in load_configs(log_dir):
        h.update(config.to_text().encode() + b'\0')
    for name in ckpt_file_names(ckpt_dir, step):
        path = os.path.join(ckpt_dir, name)
        h.update('{}\0{}\0'.format(name, os.path.getsize(path)).encode())
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
    return '{}:{}'.format(step, h.hexdigest())


# Fingerprint cache -----------------------------------------------------------------------------------

def cached_fingerprint(log_dir):
    """The fingerprint of the model in log_dir (its latest checkpoint) as save_fingerprint wrote it, or None
    when there is none or it is stale. Reads the checkpoint files, builds no graph."""
    try:
        with open(os.path.join(ckpt_dir_of(log_dir), FINGERPRINT_CACHE)) as f:
            saved = json.load(f)
        if saved['key'] == checkpoint_key(log_dir):
            return bytes.fromhex(saved['fingerprint'])
    except (OSError, ValueError, KeyError, TypeError):  # none, unreadable, or not a model dir
        pass
    return None


def save_fingerprint(log_dir, step, fingerprint):
    """Caches the fingerprint of the model at `step` for cached_fingerprint, when that is the latest
    checkpoint. Models in directories that cannot be written to are left without a cache."""
    try:
        key = checkpoint_key(log_dir)
        if key.split(':')[0] == str(step):
            file_helpers.atomic_write_bytes(os.path.join(ckpt_dir_of(log_dir), FINGERPRINT_CACHE),
                                            json.dumps({'key': key, 'fingerprint': fingerprint.hex()}).encode())
    except (OSError, ValueError):
        pass
