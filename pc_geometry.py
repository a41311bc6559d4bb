"""Geometry of the context model shared by the TensorFlow model (probclass) and the exact fixed-point one
(fixed_point_pc): the causal masks and the variable scopes of the res_shallow layers.

Kept free of TensorFlow so that the codec core (fixed_point_pc, symbol_coder, codec) imports without it.
"""
import numpy as np

SCOPE = 'probclass3d'
# Variable scopes of the res_shallow layers in evaluation order, under SCOPE/logits/.
RES_SHALLOW_LAYER_SCOPES = ('conv3d_conv0_mask', 'res1/conv3d_conv1_mask', 'res1/conv3d_conv2_mask',
                            'conv3d_conv2_mask')


def res_shallow_variable_scopes():
    """Full variable scopes of the res_shallow layers in evaluation order."""
    return [SCOPE + '/logits/' + scope for scope in RES_SHALLOW_LAYER_SCOPES]


def filter_shape(kernel_size):
    """(D, H, W) of the 3D filters: one previous channel plus the current one for K=3."""
    return kernel_size // 2 + 1, kernel_size, kernel_size


def _mask(kernel_size, keep_center):
    """DHW mask: all previous-depth slices visible; in the current slice rows above the center and the
    center row up to the center (inclusive iff keep_center)."""
    k = kernel_size
    mask = np.ones(filter_shape(k), dtype=np.float32)
    mask[-1, k // 2, k // 2 + (1 if keep_center else 0):] = 0
    mask[-1, k // 2 + 1:, :] = 0
    return mask


def first_mask(kernel_size):
    """Mask of the first layer: hides the center (the symbol being predicted) and everything after it."""
    return _mask(kernel_size, keep_center=False)


def other_mask(kernel_size):
    """Mask of later layers: their inputs at the center are features of causal contexts already."""
    return _mask(kernel_size, keep_center=True)
