"""Writes a trained model for ONNX Runtime (onnx_model.py), so that codec.py runs without TensorFlow.

    <model dir>/onnx/encoder.onnx.gz     uint8 image H x W x 3 (multiples of 8) -> int64 symbols 1 x C x H/8 x W/8
    <model dir>/onnx/decoder.onnx.gz     float32 centers[symbols] 1 x C x h x w -> float32 image 1 x 8h x 8w x 3
                                         (both gzip-compressed, format 2; format 1 stored them as they are)
    <model dir>/onnx/context_model.npz   the context model's weights and biases, the centers and the padding
                                         value, as stored in the checkpoint (fixed_point_pc.py makes its
                                         integer tables from them, as from the TensorFlow session)
    <model dir>/onnx/manifest.json       fingerprint, the checkpoint it was made from (model_files.checkpoint_key),
                                         tensor names, sha256 of the files

The two networks are the inference graph of model_graph.py (batch-norm moving averages, the importance map,
the quantizer's argmin), frozen with the checkpoint's values and converted by tf2onnx, dynamic in height and
width. Needs TensorFlow, tf2onnx and onnx; running the result needs only onnxruntime.
"""
import gzip
import hashlib
import io
import json
import os

import numpy as np

import file_helpers
import fixed_point_pc
import model_files
from onnx_model import (CONTEXT_MODEL_FILE, DECODER_FILE, ENCODER_FILE, FORMAT_VERSION, GZ_SUFFIX, MANIFEST_FILE,
                        ONNX_DIR)
from tf_helpers import tf

OPSET = 17  # supported by every onnxruntime since 1.14


def _frozen_subgraph(model, output):
    """GraphDef computing `output` with the variables replaced by their values."""
    with model.graph.as_default():
        graph_def = tf.graph_util.convert_variables_to_constants(model.sess, model.graph.as_graph_def(),
                                                                 [output.op.name])
    return tf.graph_util.extract_sub_graph(graph_def, [output.op.name])


def _to_onnx(model, inp, out):
    import tf2onnx  # only for exporting
    proto, _ = tf2onnx.convert.from_graph_def(_frozen_subgraph(model, out), input_names=[inp.name],
                                              output_names=[out.name], opset=OPSET)
    return proto.SerializeToString()


def _context_model_arrays(model):
    weights, biases = fixed_point_pc.weights_from_session(model.sess, model.g.pc)
    arrays = {'centers': np.asarray(model.centers),
              'pad_value': np.asarray(model.centers[0] if model.pc_config.use_centers_for_padding else 0.,
                                      np.float32),
              'kernel_size': np.asarray(model.g.pc.kernel_size)}
    for i, (w, b) in enumerate(zip(weights, biases)):
        arrays['weights_{}'.format(i)], arrays['biases_{}'.format(i)] = w, b
    return arrays


def export(model, model_dir=None):
    """Writes model_dir/onnx/ (default: the model's own dir) for an inference.Model whose checkpoint is the
    latest in model_dir. :return: the onnx dir"""
    model_dir = model_dir or model.log_dir
    out_dir = os.path.join(model_dir, ONNX_DIR)
    os.makedirs(out_dir, exist_ok=True)
    g = model.g
    npz = io.BytesIO()
    np.savez(npz, **_context_model_arrays(model))
    # mtime=0: the same model gives the same bytes
    files = {ENCODER_FILE + GZ_SUFFIX: gzip.compress(_to_onnx(model, g.x, g.symbols), 9, mtime=0),
             DECODER_FILE + GZ_SUFFIX: gzip.compress(_to_onnx(model, g.q_in, g.x_from_q), 9, mtime=0),
             CONTEXT_MODEL_FILE: npz.getvalue()}
    for name, data in files.items():
        file_helpers.atomic_write_bytes(os.path.join(out_dir, name), data)
    manifest = {
        'format': FORMAT_VERSION,
        'fingerprint': model.fingerprint.hex(),
        'checkpoint_key': model_files.checkpoint_key(model_dir, model.step),
        'step': model.step,
        'opset': OPSET,
        'encoder': {'input': g.x.name, 'output': g.symbols.name},
        'decoder': {'input': g.q_in.name, 'output': g.x_from_q.name},
        'sha256': {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    # written last: a manifest means a complete export
    file_helpers.atomic_write_bytes(os.path.join(out_dir, MANIFEST_FILE),
                                    (json.dumps(manifest, indent=1, sort_keys=True) + '\n').encode())
    for stale in (ENCODER_FILE, DECODER_FILE):  # an earlier export of format 1
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    return out_dir
