"""The context model in exact fixed-point arithmetic, for entropy coding.

Arithmetic decoding needs the decoder to reproduce every frequency table of the encoder exactly, but the
encoder sees the whole symbol volume at once while the decoder sees it grow. Float convolutions give
results that depend on batch shape and kernel choice, so both sides evaluate the trained context model
here instead: weights and activations are integers (fixed point, FRAC_BITS fractional bits) held in
float64, where every product and every partial sum stays below 2**53 and is therefore exact in any
summation order. A position's logits are then the same integers whether computed in one big batched
matrix product (encoder: all positions in parallel) or in the small products of the decoder's wavefronts,
on any BLAS. arithmetic_coding.freqs turns the integer logits into tables with integer operations only.

Geometry. Every layer is a masked (2, 3, 3) conv: the output at (c, y, x) reads the previous layer at
channels c-1 and c, rows y-1..y+1, columns x-1..x+1, where the current channel's slice is limited to
the row above and the left part of the current row (the first layer excludes the center itself). With
wave index T(c, y, x) = 4c + 2y + x every such input has a smaller index for the first layer (inputs are
symbols) and an index <= T for later layers (inputs are activations already computed in wave T). So
the decoder evaluates wave after wave: the four layers at all positions with index T (in the padding
border too), then decodes the symbols of wave T. Each activation is computed exactly once, as in the
encoder's single pass. tests/test_fixed_point_pc.py checks that claim against the receptive field.
"""
import os
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import probclass

FRAC_BITS = 14  # of weights and activations: 2**-14 ~ 6e-5, far below what changes a table
WAVE_COEFFS = (4, 2, 1)  # T = 4c + 2y + x
_EXACT_LIMIT = 2. ** 52  # stay below 2**53 with a margin for the bias

# One masked conv layer: taps = (n_taps, 3) offsets (dc, dy, dx) of its non-zero mask entries;
# weights = (n_taps * in, out) integer-valued float64; bias = (out,) integer-valued float64 at scale
# 2**(2 * FRAC_BITS); relu; residual = index of the layer whose output is added after this one (or None).
Layer = namedtuple('Layer', ['taps', 'weights', 'bias', 'relu', 'residual'])


class FixedPointContextModel(object):
    """Integer-exact evaluation of the trained res_shallow context model.

    :param weights: list of four (2, 3, 3, in, out) float arrays (unmasked, as stored in checkpoints),
        in the order of probclass.ResShallow.LAYER_SCOPES
    :param biases: list of four (out,) float arrays
    :param centers: (L,) float array; symbol s enters the network as centers[s]
    :param pad_value: value of the border (centers[0] with use_centers_for_padding, else 0)
    """

    def __init__(self, weights, biases, centers, pad_value, kernel_size=3):
        if kernel_size != 3:
            raise ValueError('fixed-point coding supports kernel_size 3 (the paper\'s), got {}'.format(kernel_size))
        self.L = len(centers)
        scale = 2. ** FRAC_BITS
        self.center_values = np.round(np.asarray(centers, np.float64) * scale)
        self.pad_q = float(np.round(float(pad_value) * scale))
        masks = [probclass.first_mask(3)] + [probclass.other_mask(3)] * 3
        residual = {2: 0}  # res1: output of conv2 (layer 2) + output of conv0 (layer 0)
        relu = [True, True, False, True]
        self.layers = []
        for i, (w, b, m) in enumerate(zip(weights, biases, masks)):
            taps = np.argwhere(m > 0) - np.array([1, 1, 1])  # (dc, dy, dx), dc in {-1, 0}
            w_taps = np.asarray(w, np.float64)[m > 0]  # (n_taps, in, out), order of argwhere
            w_int = np.round(w_taps * scale).reshape(-1, w_taps.shape[-1])
            b_int = np.round(np.asarray(b, np.float64) * scale * scale)
            self.layers.append(Layer(taps, w_int, b_int, relu[i], residual.get(i)))
        self.max_activation = self._check_exactness()

    @staticmethod
    def from_session(sess, pc, centers_value, pad_value):
        """Reads the variables of a probclass.ResShallow built in sess's graph."""
        by_name = {v.op.name: v for v in pc.variables()}
        names = [probclass.SCOPE + '/logits/' + scope for scope in probclass.ResShallow.LAYER_SCOPES]
        values = sess.run({n: (by_name[n + '/weights'], by_name[n + '/biases']) for n in names})
        return FixedPointContextModel([values[n][0] for n in names], [values[n][1] for n in names],
                                      centers_value, pad_value, pc.kernel_size)

    def _check_exactness(self):
        """Activations are clamped to +-max_activation (in real units); choose it so that no partial
        sum of a layer can reach 2**52: sum_i |w_i| * |a_i| + |b| < 2**52."""
        worst_row = max(np.abs(l.weights).sum(axis=0).max() + np.abs(l.bias).max() / 2. ** FRAC_BITS
                        for l in self.layers)
        max_act = min(2. ** 20, _EXACT_LIMIT / (worst_row * 2. ** FRAC_BITS))
        if max_act < 64:
            raise ValueError('context model weights too large for exact fixed-point evaluation')
        return max_act

    # Single layer -------------------------------------------------------------------------------------

    def _apply(self, li, src, idx, offsets, residual_values):
        """Layer li at the flat positions idx, reading src (positions, in) at idx + tap offsets.

        :return: (n, out) outputs at scale 2**F
        """
        layer = self.layers[li]
        n_in = src.shape[1]
        if n_in == 1:  # one matrix product over all taps
            acc = src[idx[:, None] + offsets[None, :], 0] @ layer.weights
        else:  # a product per tap: small single-threaded BLAS calls beat one big threaded one here
            w = layer.weights.reshape(len(offsets), n_in, -1)
            acc = src[idx + offsets[0]] @ w[0]
            for t in range(1, len(offsets)):
                acc += src[idx + offsets[t]] @ w[t]
        acc += layer.bias  # exact integers at scale 2**(2F), whatever the order of the sums
        out = np.floor(acc * (1. / 2. ** FRAC_BITS))  # exact: power-of-two scaling, then floor
        if residual_values is not None:
            out += residual_values
        if layer.relu:
            np.maximum(out, 0., out=out)
        lim = self.max_activation * 2. ** FRAC_BITS
        return np.clip(out, -lim, lim, out=out)

    # Full volume (encoder) --------------------------------------------------------------------------

    def logits(self, symbols):
        """Integer logits (C, h, w, L) at scale 2**FRAC_BITS of all positions, in one pass per layer.

        :param symbols: int (C, h, w)
        """
        grid = _Grid(symbols.shape)
        vol = grid.input_volume(symbols, self.center_values, self.pad_q)
        outputs = []
        for li in range(len(self.layers)):
            idx = grid.layer_indices(li)  # all positions of this layer's domain
            out = self._eval_positions(li, vol, grid, idx, outputs)
            vol = grid.empty(out.shape[-1])
            vol[idx] = out
            outputs.append(vol)
        return vol.reshape(grid.shape + (self.L,))[grid.volume_slices]

    def _eval_positions(self, li, vol, grid, idx, outputs, chunk=4096):
        """Layer li at all positions idx, in chunks spread over the cores (numpy's products and gathers
        release the GIL; each chunk's result is exact, so the split does not matter)."""
        layer = self.layers[li]
        offsets = grid.tap_offsets(layer.taps)

        def run(s):
            part = idx[s:s + chunk]
            res = outputs[layer.residual][part] if layer.residual is not None else None
            return self._apply(li, vol, part, offsets, res)

        starts = range(0, len(idx), chunk)
        if len(starts) <= 1:
            return run(0)
        return np.concatenate(list(_thread_pool().map(run, starts)))

    # Wavefronts (decoder) ---------------------------------------------------------------------------

    def decode_waves(self, shape, decode_fn, undecoded=None):
        """Runs the decoder schedule on a (C, h, w) volume.

        :param decode_fn: f(logits (n, L) int64) -> symbols (n,) for the positions of one wave, in the
            order given by wave_order(shape); called once per wave that holds symbols
        :param undecoded: optional int (C, h, w) symbols to hold the not-yet-decoded positions (the tests
            put garbage there: the schedule must never read it)
        :return: int64 symbols (C, h, w)
        """
        grid = _Grid(shape)
        symbols = np.zeros(shape, np.int64)
        vol = grid.input_volume(undecoded, self.center_values, self.pad_q)
        vols = [grid.empty(l.weights.shape[1]) for l in self.layers]
        waves = [grid.waves(li) for li in range(len(self.layers))]
        sym_waves = grid.symbol_waves()
        offsets = [grid.tap_offsets(l.taps) for l in self.layers]
        for t in range(grid.t_min, grid.t_max + 1):
            for li, layer in enumerate(self.layers):
                idx = waves[li].get(t)
                if idx is None:
                    continue
                src = vol if li == 0 else vols[li - 1]
                res = vols[layer.residual][idx] if layer.residual is not None else None
                vols[li][idx] = self._apply(li, src, idx, offsets[li], res)
            pos = sym_waves.get(t)
            if pos is None:
                continue
            flat, cyx = pos
            decoded = np.asarray(decode_fn(vols[-1][flat].astype(np.int64)), np.int64)
            symbols[cyx] = decoded
            vol[flat] = self.center_values[decoded][:, None]
        return symbols

    def logits_in_wave_order(self, symbols):
        """The encoder's view: logits (n_total, L) int64 and symbols (n_total,) in wave order."""
        logits = self.logits(symbols).astype(np.int64)
        order = wave_order(symbols.shape)
        return logits[order], symbols[order]


def wave_order(shape):
    """Index arrays (c, y, x) of all positions of a (C, h, w) volume sorted by wave, then raster order."""
    C, h, w = shape
    c, y, x = np.meshgrid(np.arange(C), np.arange(h), np.arange(w), indexing='ij')
    t = WAVE_COEFFS[0] * c + WAVE_COEFFS[1] * y + x
    order = np.lexsort((x.ravel(), y.ravel(), c.ravel(), t.ravel()))
    return tuple(a.ravel()[order] for a in (c, y, x))


_POOL = []
# a forked child (block-parallel coding) inherits the pool object but not its threads
os.register_at_fork(after_in_child=_POOL.clear)


def _thread_pool():
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
    return _POOL[0]


class _Grid(object):
    """One coordinate frame for the padded input and all layer outputs: (C+4) x (h+8) x (w+8), origin at
    original position (-4, -4, -4). Arrays are flat (positions, features); layer li's domain is the box
    c in [-(3-li), C), y in [-(3-li), h+3-li), x likewise."""
    PAD = 4

    def __init__(self, shape):
        self.C, self.h, self.w = shape
        p = self.PAD
        self.shape = (self.C + p, self.h + 2 * p, self.w + 2 * p)
        self.strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        self.volume_slices = (slice(p, None), slice(p, p + self.h), slice(p, p + self.w))
        self.t_min = sum(cf * -(p - 1) for cf in WAVE_COEFFS)
        self.t_max = WAVE_COEFFS[0] * (self.C - 1) + WAVE_COEFFS[1] * (self.h + p - 2) + (self.w + p - 2)

    def empty(self, features):
        return np.zeros((int(np.prod(self.shape)), features))

    def input_volume(self, symbols, center_values, pad_q):
        vol = np.full(self.shape, pad_q)
        if symbols is not None:
            vol[self.volume_slices] = center_values[symbols]
        return vol.reshape(-1, 1)

    def tap_offsets(self, taps):
        return taps @ np.array(self.strides)

    def _box(self, li):
        """Original-coordinate ranges of layer li's outputs."""
        m = self.PAD - 1 - li
        return (-m, self.C), (-m, self.h + m), (-m, self.w + m)

    def _flat(self, c, y, x):
        p = self.PAD
        return (c + p) * self.strides[0] + (y + p) * self.strides[1] + (x + p)

    def layer_indices(self, li):
        (c0, c1), (y0, y1), (x0, x1) = self._box(li)
        c, y, x = np.meshgrid(np.arange(c0, c1), np.arange(y0, y1), np.arange(x0, x1), indexing='ij')
        return self._flat(c, y, x).ravel()

    def waves(self, li):
        """{t: flat indices of layer li's positions in wave t}."""
        (c0, c1), (y0, y1), (x0, x1) = self._box(li)
        c, y, x = [a.ravel() for a in np.meshgrid(np.arange(c0, c1), np.arange(y0, y1), np.arange(x0, x1),
                                                   indexing='ij')]
        return _group_by_wave(WAVE_COEFFS[0] * c + WAVE_COEFFS[1] * y + x, self._flat(c, y, x))

    def symbol_waves(self):
        """{t: (flat indices, (c, y, x) index arrays)} of the symbols of wave t, in wave_order."""
        c, y, x = wave_order((self.C, self.h, self.w))
        t = WAVE_COEFFS[0] * c + WAVE_COEFFS[1] * y + x
        bounds = np.flatnonzero(np.diff(t)) + 1
        out = {}
        for sl in np.split(np.arange(len(t)), bounds):
            if len(sl):
                out[int(t[sl[0]])] = (self._flat(c[sl], y[sl], x[sl]), (c[sl], y[sl], x[sl]))
        return out


def _group_by_wave(t, flat):
    order = np.argsort(t, kind='stable')
    t, flat = t[order], flat[order]
    bounds = np.flatnonzero(np.diff(t)) + 1
    return {int(tt[0]): ff for tt, ff in zip(np.split(t, bounds), np.split(flat, bounds))}
