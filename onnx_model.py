"""A trained model on ONNX Runtime: what codec.py needs, without TensorFlow (~0.3 s to start instead of ~10 s).

Reads `<model dir>/onnx/` as onnx_export.py wrote it (file list there). The autoencoder runs on
onnxruntime; the context model is fixed_point_pc's integer model, built from the same weights as from the
TensorFlow session, so the frequency tables, and with them the files, are those of the TensorFlow path.
The symbols of the encoder are those of TensorFlow's graph except where a value is within float rounding of
the midpoint of two centers (a handful per image, if any; tests/test_onnx_model.py counts them), and the
reconstruction is within one grey level of TensorFlow's.

Importing this module does not import onnxruntime: OnnxModel does, when a model is loaded.
"""
import gzip
import hashlib
import io
import json
import os
import zlib

import numpy as np

import fixed_point_pc
import model_files

ONNX_DIR = 'onnx'
ENCODER_FILE = 'encoder.onnx'
DECODER_FILE = 'decoder.onnx'
CONTEXT_MODEL_FILE = 'context_model.npz'
MANIFEST_FILE = 'manifest.json'
# 1: the files as they are; 2 (written): the two networks gzip-compressed (`<name>.gz`, 8 % smaller: the
# shipped models' exports have to fit in ckpts/ next to their checkpoints). The manifest lists the files
# as stored; the reader decompresses what ends in .gz.
FORMAT_VERSION = 2
READ_FORMATS = (1, 2)
GZ_SUFFIX = '.gz'


class NotExported(Exception):
    """The model dir has no usable ONNX export: the reason is the message (codec.py falls back to TF)."""


def read_manifest(log_dir):
    """The manifest of log_dir's ONNX export, checked against the model dir.

    :raises NotExported: when there is none, it is unreadable, or it was made from another checkpoint than
        the dir's latest (a model trained or re-exported since); an export without checkpoints next to it
        (shipped alone) is taken as it is.
    """
    path = os.path.join(log_dir, ONNX_DIR, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise NotExported('no ONNX export ({} is missing)'.format(os.path.join(ONNX_DIR, MANIFEST_FILE)))
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest.get('format') not in READ_FORMATS:
            raise NotExported('ONNX export of format {!r}, this code reads {}'.format(
                manifest.get('format'), ' and '.join(map(str, READ_FORMATS))))
        bytes.fromhex(manifest['fingerprint'])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise NotExported('unreadable {}: {}'.format(path, e)) from None
    if model_files.all_ckpt_steps(model_files.ckpt_dir_of(log_dir)):
        try:
            key = model_files.checkpoint_key(log_dir)
        except (OSError, ValueError) as e:
            raise NotExported('cannot read the checkpoint to check the ONNX export against: {}'.format(e)) from None
        if key != manifest.get('checkpoint_key'):
            raise NotExported('the ONNX export is older than the checkpoint (step {} vs {}): run '
                              'python export_model.py --onnx_only "{}"'.format(manifest.get('step'),
                                                                            key.split(':')[0], log_dir))
    return manifest


class OnnxModel(object):
    """The interface of inference.Model that image_codec uses: ae_config, pc_config, log_dir, step, centers,
    fingerprint, fixed_point_pc, encode_symbols, decode_symbols, close.

    :raises NotExported: see read_manifest; also for missing, damaged or unloadable files, or no onnxruntime.
    """
    # peak memory of the (encoder, decoder) per pixel of a tile and per filter n (image_codec.plan_coding):
    # measured 1.3 and 4.9 on the shipped models with onnxruntime 1.32, tiles of 1-6.6 MP
    AE_BYTES_PER_PIXEL_PER_FILTER = (1.5, 5.0)

    def __init__(self, log_dir):
        manifest = read_manifest(log_dir)
        try:
            import onnxruntime
        except ImportError:
            raise NotExported('onnxruntime is not installed (pip install -r requirements.txt)') from None
        self.log_dir = log_dir
        self.step = manifest['step']
        self.fingerprint = bytes.fromhex(manifest['fingerprint'])
        self.ae_config, self.pc_config = model_files.load_configs(log_dir)
        d = os.path.join(log_dir, ONNX_DIR)
        blobs = {}
        for name, digest in sorted(manifest['sha256'].items()):
            try:
                with open(os.path.join(d, name), 'rb') as f:
                    blobs[name] = f.read()
            except OSError as e:
                raise NotExported('cannot read the ONNX export: {}'.format(e)) from None
            if hashlib.sha256(blobs[name]).hexdigest() != digest:
                raise NotExported('{} does not match its checksum in the manifest (damaged or replaced)'.format(
                    os.path.join(d, name)))
            if name.endswith(GZ_SUFFIX):
                try:
                    blobs[name[:-len(GZ_SUFFIX)]] = gzip.decompress(blobs.pop(name))
                except (OSError, EOFError, zlib.error) as e:
                    raise NotExported('cannot decompress {}: {}'.format(os.path.join(d, name), e)) from None
        missing = [n for n in (ENCODER_FILE, DECODER_FILE, CONTEXT_MODEL_FILE) if n not in blobs]
        if missing:
            raise NotExported('the ONNX export lacks {}'.format(', '.join(missing)))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are not for users
        try:
            self._enc = onnxruntime.InferenceSession(blobs[ENCODER_FILE], options, providers=['CPUExecutionProvider'])
            self._dec = onnxruntime.InferenceSession(blobs[DECODER_FILE], options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own exception types for unloadable models
            raise NotExported('onnxruntime cannot load the export: {}'.format(' '.join(str(e).split()))) from None
        self._enc_io = manifest['encoder']['input'], manifest['encoder']['output']
        self._dec_io = manifest['decoder']['input'], manifest['decoder']['output']
        arrays = np.load(io.BytesIO(blobs[CONTEXT_MODEL_FILE]))
        n_layers = len([k for k in arrays.files if k.startswith('weights_')])
        self.centers = arrays['centers']
        self.fixed_point_pc = fixed_point_pc.FixedPointContextModel(
            [arrays['weights_{}'.format(i)] for i in range(n_layers)],
            [arrays['biases_{}'.format(i)] for i in range(n_layers)],
            self.centers, float(arrays['pad_value']), int(arrays['kernel_size']))

    def encode_symbols(self, img):
        """int64 symbols (C, H/8, W/8) of a uint8 H x W x 3 image (H, W multiples of 8)."""
        inp, out = self._enc_io
        return self._enc.run([out], {inp: np.ascontiguousarray(img, np.uint8)})[0][0]

    def decode_symbols(self, symbols):
        """Reconstruction float32 H x W x 3 from int symbols (C, h, w)."""
        inp, out = self._dec_io
        q = self.centers[np.asarray(symbols)][None].astype(np.float32)
        return self._dec.run([out], {inp: q})[0][0]

    def close(self):
        self._enc = self._dec = None

