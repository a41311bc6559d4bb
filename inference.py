"""A trained model in TensorFlow for inference (val.py, export_model.py, codec.py without exported files):
graph, checkpoint, fingerprint. What a model directory holds is model_files.py.
"""
import hashlib
import os

import numpy as np

import fixed_point_pc
import model_files
import model_graph
import saver as saver_lib
from tf_helpers import tf, create_session

class Model(object):
    """An inference graph in its own tf.Graph and session, restored from a checkpoint.

    Attributes: ae_config, pc_config, g (model_graph.InferenceGraph), sess, step, centers (L,),
    fixed_point_pc (for entropy coding), fingerprint (8 bytes identifying the weights and configs).
    """
    # peak memory of the (encoder, decoder) per pixel of a tile and per filter n (image_codec.plan_coding),
    # measured with bench/codec_scale.py
    AE_BYTES_PER_PIXEL_PER_FILTER = (2.5, 2.5)

    def __init__(self, log_dir, ckpt_step=None, data_format=None):
        if not os.path.isdir(log_dir):
            raise model_files.ModelError('Model directory {} does not exist'.format(log_dir))
        self.log_dir = log_dir
        self.ae_config, self.pc_config = model_files.load_configs(log_dir)
        self.ckpt_dir = model_files.ckpt_dir_of(log_dir)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.g = model_graph.build_inference_graph(self.ae_config, self.pc_config, data_format)
            self.sess = create_session(self.graph)
        self.step = None
        self.restore(ckpt_step)

    def restore(self, ckpt_step=None):
        """Loads the checkpoint with that step (default: the latest)."""
        try:
            step = ckpt_step if ckpt_step is not None else model_files.select_ckpt_step(self.ckpt_dir)
        except ValueError as e:
            raise model_files.ModelError(str(e)) from None
        path = model_files.ckpt_path(self.ckpt_dir, step)
        with self.graph.as_default():
            _, missing = saver_lib.restore(self.sess, path)
        if missing:
            raise model_files.ModelError('Checkpoint {} lacks {} variables of the model, e.g. {}'.format(
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

    def encode_symbols(self, img):
        """int64 symbols (C, H/8, W/8) of a uint8 H x W x 3 image (H, W multiples of 8)."""
        return self.run(img, self.g.symbols)[0]

    def decode_symbols(self, symbols):
        """Reconstruction float32 H x W x 3 from int symbols (C, h, w)."""
        q = self.centers[np.asarray(symbols)][None].astype(np.float32)
        return self.sess.run(self.g.x_from_q, {self.g.q_in: q})[0]

    def close(self):
        self.sess.close()
