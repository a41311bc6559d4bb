"""The codec's modules import without TensorFlow: parsing a header or coding symbols must not pay TF's
start-up (seconds, hundreds of MB), and codec.py imports it only once a model is loaded."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_FREE = ('arithmetic_coding', 'colour_compare', 'fixed_point_pc', 'symbol_coder', 'image_codec', 'codec', 'file_helpers', 'model_files',
           'onnx_model')


@pytest.mark.parametrize('module', TF_FREE)
def test_imports_without_tensorflow(module):
    # a fresh interpreter: in this one, other tests have imported TensorFlow already
    code = 'import sys, {}; print("tensorflow" in sys.modules)'.format(module)
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'False', '{} imports TensorFlow'.format(module)
