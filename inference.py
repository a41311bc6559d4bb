"""Loading a trained model for inference (val.py, codec.py): configs, graph, checkpoint, fingerprint.

A model is a training log dir: `<log dir>/ckpts/ckpt-<step>` plus the configs, taken from the copies
train.py writes into the log dir (`ae_config`, `pc_config`), or else recovered from the log dir's name
(`0515_1103 cvpr@low cvpr@res_shallow` -> ae_configs/cvpr/low, pc_configs/cvpr/res_shallow), so the
authors' released checkpoints load too.
"""
import hashlib
import json
import os

import numpy as np

import config_parser
import fixed_point_pc
import images
import logdir_helpers
import model_graph
import saver as saver_lib
from tf_helpers import tf, create_session

_HERE = os.path.dirname(os.path.abspath(__file__))
AE_CONFIG_COPY = 'ae_config'
PC_CONFIG_COPY = 'pc_config'


class ModelError(ValueError):
    pass


def config_base_dirs():
    return (os.environ.get('CONFIG_BASE_AE', os.path.join(_HERE, 'ae_configs')),
            os.environ.get('CONFIG_BASE_PC', os.path.join(_HERE, 'pc_configs')))


def load_configs(log_dir):
    """(ae_config, pc_config) of a log dir."""
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


class Model(object):
    """An inference graph in its own tf.Graph and session, restored from a checkpoint.

    Attributes: ae_config, pc_config, g (model_graph.InferenceGraph), sess, step, centers (L,),
    fixed_point_pc (for entropy coding), fingerprint (8 bytes identifying the weights and configs).
    """

    def __init__(self, log_dir, ckpt_step=None, data_format=None):
        if not os.path.isdir(log_dir):
            raise ModelError('Model directory {} does not exist'.format(log_dir))
        self.log_dir = log_dir
        self.ae_config, self.pc_config = load_configs(log_dir)
        self.ckpt_dir = saver_lib.ckpt_dir_of(log_dir)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.g = model_graph.build_inference_graph(self.ae_config, self.pc_config, data_format)
            self.sess = create_session(self.graph)
        self.step = None
        self.restore(ckpt_step)

    def restore(self, ckpt_step=None):
        """Loads the checkpoint with that step (default: the latest)."""
        try:
            step = ckpt_step if ckpt_step is not None else saver_lib.select_ckpt_step(self.ckpt_dir)
        except ValueError as e:
            raise ModelError(str(e)) from None
        path = saver_lib.ckpt_path(self.ckpt_dir, step)
        with self.graph.as_default():
            _, missing = saver_lib.restore(self.sess, path)
        if missing:
            raise ModelError('Checkpoint {} lacks {} variables of the model, e.g. {}'.format(
                path, len(missing), missing[0]))
        self.step = step
        self._after_restore()

    def _after_restore(self):
        values = self.sess.run({v.op.name: v for v in self.graph.get_collection('variables')})
        h = hashlib.sha256()
        h.update(self.ae_config.to_text().encode())
        h.update(self.pc_config.to_text().encode())
        for name in sorted(values):
            h.update(name.encode())
            h.update(np.ascontiguousarray(values[name]).tobytes())
        self.fingerprint = h.digest()[:8]
        self.centers = values[self.g.centers.op.name]
        pad = self.centers[0] if self.pc_config.use_centers_for_padding else 0.
        with self.graph.as_default():
            self.fixed_point_pc = fixed_point_pc.FixedPointContextModel.from_session(
                self.sess, self.g.pc, self.centers, pad)

    def run(self, img, fetch):
        """Runs the encoder side on one padded uint8 H x W x 3 image; fetch: dict of graph tensors."""
        return self.sess.run(fetch, {self.g.x: img})

    def decode_symbols(self, symbols):
        """Reconstruction float32 H x W x 3 from int symbols (C, h, w)."""
        q = self.centers[np.asarray(symbols)][None].astype(np.float32)
        return self.sess.run(self.g.x_from_q, {self.g.q_in: q})[0]

    def close(self):
        self.sess.close()


# The fingerprint without building the model ------------------------------------------------------------

FINGERPRINT_CACHE = 'fingerprint.json'  # in the checkpoint dir


def _fingerprint_cache_key(log_dir):
    """(path of the cache file, key). The key hashes what the fingerprint is computed from, the configs and
    the latest checkpoint's files, by content: it holds in any copy of the model (a fresh clone, another
    machine, where mtimes differ) and goes stale when a config or the checkpoint changes."""
    ckpt_dir = saver_lib.ckpt_dir_of(log_dir)
    step = saver_lib.select_ckpt_step(ckpt_dir)
    h = hashlib.sha256()
    for config in load_configs(log_dir):
        h.update(config.to_text().encode() + b'\0')
    prefix = os.path.basename(saver_lib.ckpt_path(ckpt_dir, step)) + '.'  # ckpt-<step>.index, .data-*
    for name in sorted(n for n in os.listdir(ckpt_dir) if n.startswith(prefix)):
        path = os.path.join(ckpt_dir, name)
        h.update('{}\0{}\0'.format(name, os.path.getsize(path)).encode())
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
    return os.path.join(ckpt_dir, FINGERPRINT_CACHE), '{}:{}'.format(step, h.hexdigest())


def cached_fingerprint(log_dir):
    """The fingerprint of the model in log_dir (its latest checkpoint) as save_fingerprint wrote it, or None
    when there is none or it is stale. Reads the checkpoint files, builds no graph."""
    try:
        with open(os.path.join(saver_lib.ckpt_dir_of(log_dir), FINGERPRINT_CACHE)) as f:
            saved = json.load(f)
        if saved['key'] == _fingerprint_cache_key(log_dir)[1]:
            return bytes.fromhex(saved['fingerprint'])
    except (OSError, ValueError, KeyError, TypeError):  # none, unreadable, or not a model dir
        pass
    return None


def save_fingerprint(model):
    """Caches model.fingerprint next to its checkpoint for cached_fingerprint, when the model holds the latest
    checkpoint. Models in directories that cannot be written to are left without a cache."""
    try:
        path, key = _fingerprint_cache_key(model.log_dir)
        if key.split(':')[0] == str(model.step):
            images.atomic_write_bytes(path, json.dumps({'key': key, 'fingerprint': model.fingerprint.hex()}).encode())
    except (OSError, ValueError):
        pass
