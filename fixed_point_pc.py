"""The context model in exact fixed-point arithmetic, for entropy coding.

Arithmetic decoding needs the decoder to reproduce every frequency table of the encoder exactly, but the
encoder sees the whole symbol volume at once while the decoder sees it grow. Float convolutions give
results that depend on batch shape and kernel choice, so both sides evaluate the trained context model
here instead: weights and activations are integers (fixed point, F fractional bits) held in floats, where
every product and every partial sum is an integer below the float's exact range (2**24 in float32, 2**53
in float64) and therefore exact in any summation order. A position's logits are then the same integers
whether computed in one big batched matrix product (encoder: all positions in parallel) or in the small
products of the decoder's wavefronts, on any BLAS. arithmetic_coding.freqs turns the integer logits into
tables with integer operations only.

Two precisions, one per file format version (image_codec): version 3 uses float32 with the largest F <= 13
for which the float32 bound still leaves the activations a clamp of at least MIN_CLAMP (F = 8 for the
shipped models: half the bytes to move and single-precision products, about half the time); version 2 used
float64 with F = 14 (V2_FRAC_BITS), still read. choose_frac_bits picks F from the weights alone, and the
file records it, so encoder and decoder build the same model.

Geometry. Every layer is a masked (2, 3, 3) conv: the output at (c, y, x) reads the previous layer at
channels c-1 and c, rows y-1..y+1, columns x-1..x+1, where the current channel's slice is limited to
the row above and the left part of the current row (the first layer excludes the center itself). With
wave index T(c, y, x) = 4c + 2y + x every such input has a smaller index for the first layer (inputs are
symbols) and an index <= T for later layers (inputs are activations already computed in wave T). So
the decoder evaluates wave after wave: the four layers at all positions with index T (in the padding
border too), then decodes the symbols of wave T. Each activation is computed exactly once, as in the
encoder's single pass. tests/test_fixed_point_pc.py checks that claim against the receptive field.

Evaluation. A layer's taps lie in at most 5 kernel rows (dc, dy), each of the 3 columns dx = -1, 0, 1,
and those 3 positions are adjacent in memory, so every layer is one matrix product (positions, rows * 3 *
in) @ (rows * 3 * in, out) ("im2col"), its left matrix assembled from 3-position windows of the input
(one copy per kernel row and position; the weights of masked taps are zero and multiply finite values, so
they add exact zeros). Weights and bias are pre-scaled by 2**-F: every product and partial sum is then an
integer within the dtype's exact range times a power of two, still exact in any order, and floor() of the sum gives
the next layer's integers directly. The encoder copies the windows of whole grid rows as contiguous
slices and runs blocks of rows in a thread pool; the decoder gathers the windows of each wave's positions
with index arrays computed once per shape and runs each wave in two parts (each part's positions depend
only on earlier waves and on themselves, see _wave_schedule) in two threads, or in one when the other
core turns out to be busy.
"""
import functools
import os
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fixed_point_kernel
import pc_geometry

V2_FRAC_BITS = 14  # format version 2: float64, weights and activations at 2**-14 ~ 6e-5
WAVE_COEFFS = (4, 2, 1)  # T = 4c + 2y + x
_EXACT_LIMIT = 2. ** 52  # float64 (F = 14): stay below 2**53 with a margin for the bias
_FLOAT32_LIMIT = 2. ** 24  # float32 (F < 14): every integer below 2**24 is exact
# float32 needs a clamp of at least this (real units) at its F; the shipped models' activations reach 7-10
# on Kodak (a clamped activation costs rate, never exactness).
MIN_CLAMP = 12.
MIN_FLOAT32_FRAC_BITS = 6  # below, the weights' rounding costs more rate than float32 saves time
# Positions per block of the encoder (rounded down to whole grid rows): big enough for the thread pool's
# overhead, small enough for a block's im2col matrix (~3 MB with 24 features) to stay near the cores.
_ENCODER_BLOCK = 1024
# The decoder cuts waves with at least this many positions in two parts for the thread pool.
_DECODER_THREADS = True
_DECODER_SPLIT = 256

# One masked conv layer: taps = (n_taps, 3) offsets (dc, dy, dx) of its non-zero mask entries;
# weights = (n_taps * in, out) integer-valued float64 (only for the exactness bound); rows = (n_rows, 2)
# offsets (dc, dy) of the kernel rows holding at least one tap; row_weights = (n_rows * 3 * in, out), the
# same integers ordered (row, dx = -1, 0, 1, in), zero at masked taps; bias = (out,) integer-valued
# float64 at scale 2**(2F); relu; residual = index of the layer whose output is added after
# this one (or None).
Layer = namedtuple('Layer', ['taps', 'weights', 'rows', 'row_weights', 'bias', 'relu', 'residual'])


class FixedPointContextModel(object):
    """Integer-exact evaluation of the trained res_shallow context model.

    :param weights: list of four (2, 3, 3, in, out) float arrays (unmasked, as stored in checkpoints),
        in the order of pc_geometry.RES_SHALLOW_LAYER_SCOPES
    :param biases: list of four (out,) float arrays
    :param centers: (L,) float array; symbol s enters the network as centers[s]
    :param pad_value: value of the border (centers[0] with use_centers_for_padding, else 0)
    :param frac_bits: F, the fractional bits of weights and activations: V2_FRAC_BITS (float64, file version
        2) or less (float32, version 3; ValueError if the float32 bound leaves a clamp below MIN_CLAMP);
        None: choose_frac_bits
    """

    def __init__(self, weights, biases, centers, pad_value, kernel_size=3, frac_bits=None):
        if kernel_size != 3:
            raise ValueError('fixed-point coding supports kernel_size 3 (the paper\'s), got {}'.format(kernel_size))
        self._args = (weights, biases, centers, pad_value, kernel_size)
        self._variants = {}
        if frac_bits is None:
            frac_bits = choose_frac_bits(weights, biases, centers, pad_value)
        F = self.frac_bits = int(frac_bits)
        self.L = len(centers)
        scale = 2. ** F
        self.layers = _integer_layers(weights, biases, F)
        self.center_values = np.round(np.asarray(centers, np.float64) * scale)
        self.pad_q = float(np.round(float(pad_value) * scale))
        if F == V2_FRAC_BITS:
            self.dtype = np.dtype(np.float64)
            self.max_activation = self._check_exactness()
            # An integer clamp: a fractional one would put non-integers into the next layer's sums, which
            # are then no longer exact (never reached by the shipped models, whose activations stay below ~16).
            self._lim = float(np.floor(self.max_activation * scale))
        elif MIN_FLOAT32_FRAC_BITS <= F < V2_FRAC_BITS:
            self.dtype = np.dtype(np.float32)
            self._lim = _float32_clamp(self.layers, self.center_values, self.pad_q)
            self.max_activation = self._lim / scale
            if self.max_activation < MIN_CLAMP:
                raise ValueError('F = {} leaves these weights a float32 clamp of {:.3g}, below {}'.format(
                    F, self.max_activation, MIN_CLAMP))
        else:
            raise ValueError('fractional bits must be in {}..{}, got {}'.format(
                MIN_FLOAT32_FRAC_BITS, V2_FRAC_BITS, F))
        self.center_values = self.center_values.astype(self.dtype)
        # Weights and bias pre-scaled by 2**-F, so that the products come out at the outputs' scale: every
        # product and partial sum is an integer below the dtype's exact range (_check_exactness,
        # _float32_clamp) times 2**-F, exact in any order, so the sums equal the integer sums scaled by
        # 2**-F and floor() gives the same outputs as scaling afterwards.
        self._scaled = [((l.row_weights * 2. ** -F).astype(self.dtype), (l.bias * 2. ** -F).astype(self.dtype))
                        for l in self.layers]

    @staticmethod
    def from_session(sess, pc, centers_value, pad_value):
        """Reads the variables of a probclass.ResShallow built in sess's graph."""
        weights, biases = weights_from_session(sess, pc)
        return FixedPointContextModel(weights, biases, centers_value, pad_value, pc.kernel_size)

    def with_frac_bits(self, frac_bits):
        """The same trained model at another F (e.g. the one a file was written with); ValueError if that F
        cannot be exact for these weights."""
        if frac_bits == self.frac_bits:
            return self
        if frac_bits not in self._variants:
            self._variants[frac_bits] = FixedPointContextModel(*self._args, frac_bits=frac_bits)
        return self._variants[frac_bits]

    def _check_exactness(self):
        """float64: activations are clamped to +-max_activation (in real units); choose it so that no
        partial sum of a layer can reach 2**52: sum_i |w_i| * |a_i| + |b| < 2**52."""
        F = self.frac_bits
        worst_row = max(np.abs(l.weights).sum(axis=0).max() + np.abs(l.bias).max() / 2. ** F
                        for l in self.layers)
        max_act = min(2. ** 20, _EXACT_LIMIT / (worst_row * 2. ** F))
        if max_act < 64:
            raise ValueError('context model weights too large for exact fixed-point evaluation')
        return max_act

    def _finish(self, li, acc, residual):
        """Turns acc = products with the pre-scaled weights (..., out) into layer li's outputs at scale
        2**F, in place: bias, floor, residual, relu and clamp, all exact on these values."""
        acc += self._scaled[li][1]
        np.floor(acc, out=acc)
        if residual is not None:
            acc += residual
        np.clip(acc, 0. if self.layers[li].relu else -self._lim, self._lim, out=acc)  # relu and clamp in one pass
        return acc

    # Full volume (encoder) --------------------------------------------------------------------------

    def logits(self, symbols):
        """Integer logits (C, h, w, L) at scale 2**frac_bits of all positions, in one pass per layer.

        :param symbols: int (C, h, w)
        """
        grid = _Grid(symbols.shape, self.dtype)
        return self._logits_on_grid(grid, symbols).reshape(grid.shape + (self.L,))[grid.volume_slices]

    def _logits_on_grid(self, grid, symbols):
        """The last layer's outputs (grid positions, L); valid inside the volume."""
        src = grid.input_volume(symbols, self.center_values, self.pad_q)
        outputs = []
        for li, layer in enumerate(self.layers):
            out = grid.empty(layer.row_weights.shape[1])
            self._layer_on_box(li, grid, src, out, outputs[layer.residual] if layer.residual is not None else None)
            outputs.append(out)
            src = out
        return src

    def _layer_on_box(self, li, grid, src, out, residual):
        """Layer li at all positions of its domain box, written into out (positions, out).

        A block is a run of whole grid rows of one channel, contiguous in memory: its im2col matrix is
        n_rows contiguous slices of the row windows (no index arrays), the product is written in place and
        finished there. The few grid columns outside the box get finite values that no tap with a non-zero
        weight reads (layer li + 1 reads layer li inside its box only). Blocks run in a thread pool
        (numpy's copies and products release the GIL; each block's result is exact, so the split does not
        matter)."""
        layer = self.layers[li]
        (c0, c1), (y0, y1), _ = grid.box(li)
        windows = _void_rows(src, 3)  # item q = src[q:q + 3]: the taps dx = -1, 0, 1 of position q + 1
        row_offsets = grid.row_offsets(layer.rows).tolist()
        row_len = grid.strides[1]
        rows_per_block = max(1, _ENCODER_BLOCK // row_len)

        def run(block):
            c, ya, yb = block
            # from column 1 of row ya to column w+6 of row yb - 1: every window stays inside the grid
            start = grid.flat(c, ya, 1 - grid.PAD)
            n = (yb - ya) * row_len - 2
            cols = np.empty((n, len(row_offsets)), windows.dtype)
            for r, off in enumerate(row_offsets):
                cols[:, r] = windows[start + off:start + off + n]
            acc = out[start:start + n]
            np.matmul(cols.view(self.dtype).reshape(n, -1), self._scaled[li][0], out=acc)
            self._finish(li, acc, residual[start:start + n] if residual is not None else None)

        blocks = [(c, ya, min(ya + rows_per_block, y1)) for c in range(c0, c1) for ya in range(y0, y1, rows_per_block)]
        if len(blocks) == 1:
            run(blocks[0])
        else:
            list(_thread_pool().map(run, blocks))

    # Wavefronts (decoder) ---------------------------------------------------------------------------

    def decode_waves(self, shape, decode_fn, undecoded=None):
        """Runs the decoder schedule on a (C, h, w) volume.

        :param decode_fn: f(logits (n, L) int64) -> symbols (n,) for the positions of one wave, in the
            order given by wave_order(shape); called once per wave that holds symbols
        :param undecoded: optional int (C, h, w) symbols to hold the not-yet-decoded positions (the tests
            put garbage there: the schedule must never depend on it)
        :return: int64 symbols (C, h, w)
        """
        shape = tuple(int(n) for n in shape)
        grid = _Grid(shape, self.dtype)
        dtype = self.dtype
        split = _DECODER_SPLIT if _DECODER_THREADS and (os.cpu_count() or 1) > 1 else None
        waves = _wave_schedule(shape, len(self.layers), split)
        srcs = [grid.input_volume(undecoded, self.center_values, self.pad_q)]
        srcs += [grid.empty(l.row_weights.shape[1]) for l in self.layers[:-1]]
        # Gathers and scatters of whole rows through void views: numpy copies one item per index
        # instead of running its strided subspace loop per index (about twice as fast).
        windows = [_void_rows(s, 3) for s in srcs]
        rows = [_void_rows(s, 1) for s in srcs]
        last = len(self.layers) - 1

        row_offsets = [grid.row_offsets(l.rows)[None, :] for l in self.layers]

        def run(part, k=0):
            """All layers at the positions of one part of a wave; returns the last layer's outputs (or None).
            k: the part's index in its wave (the compiled kernel's buffers; unused here)."""
            acc = None
            for li, idx in part:
                layer = self.layers[li]
                acc = windows[li][idx[:, None] + row_offsets[li]].view(dtype).reshape(len(idx), -1)
                acc = acc @ self._scaled[li][0]
                res = None
                if layer.residual is not None:
                    res = rows[layer.residual + 1][idx].view(dtype).reshape(len(idx), -1)
                self._finish(li, acc, res)
                if li < last:
                    rows[li + 1][idx] = acc.view(rows[li + 1].dtype).ravel()
            return acc if part and part[-1][0] == last else None

        kernel = fixed_point_kernel.load() if dtype == np.float32 else None
        if kernel is not None:
            run = self._kernel_runner(kernel, grid, srcs, waves)  # noqa: F811 (the same values, one call a layer)

        decoded = []
        pool = _thread_pool() if split is not None else None
        watch = _BusyCoreWatch()
        for parts, symbol_positions in waves:
            if len(parts) == 1:
                logits = run(parts[0])
            elif pool is None or watch.one_thread():
                first, second = run(parts[0]), run(parts[1], 1)
            else:
                # Each part reads only earlier waves and its own positions (see _wave_schedule), so the
                # second part runs in the pool. If no worker has picked it up by the time the first is
                # done, it runs here: the decoder never waits for a thread that has not started.
                later = pool.submit(run, parts[1], 1)
                t0 = time.perf_counter()
                first = run(parts[0])
                t1 = time.perf_counter()
                not_started = later.cancel()
                second = run(parts[1], 1) if not_started else later.result()
                watch.add(t1 - t0, time.perf_counter() - t1, not_started)
            if len(parts) > 1:
                logits = first if second is None else second if first is None else np.concatenate([first, second])
            if symbol_positions is None:
                continue
            sym = np.asarray(decode_fn(logits.astype(np.int64)), np.int64)
            srcs[0][symbol_positions, 0] = self.center_values[sym]
            decoded.append(sym)
        symbols = np.zeros(shape, np.int64)
        if decoded:
            symbols[wave_order(shape)] = np.concatenate(decoded)
        return symbols

    def _kernel_runner(self, kernel, grid, srcs, waves):
        """run(part, k) of decode_waves on the compiled kernel (fixed_point_kernel): one call per layer, the
        same values as numpy's; k selects the buffers (the parts of a wave may run at once)."""
        pointers = [s.ctypes.data for s in srcs]
        features = [s.shape[1] for s in srcs]
        offsets = [np.ascontiguousarray(grid.row_offsets(l.rows), np.int64) for l in self.layers]
        scaled = [(np.ascontiguousarray(w), np.ascontiguousarray(b)) for w, b in self._scaled]
        max_n = max(len(idx) for parts, _ in waves for part in parts for _, idx in part)
        buffers = [(np.empty(max_n * max(w.shape[0] for w, _ in scaled), self.dtype),
                    [np.empty((max_n, w.shape[1]), self.dtype) for w, _ in scaled]) for _ in range(2)]
        last = len(self.layers) - 1
        lows = [0. if l.relu else -self._lim for l in self.layers]
        calls = [(pointers[li], features[li], offsets[li].ctypes.data, len(offsets[li]), w.ctypes.data,
                  b.ctypes.data, w.shape[1], pointers[l.residual + 1] if l.residual is not None else None,
                  pointers[li + 1] if li < last else None, lows[li], self._lim)
                 for li, (l, (w, b)) in enumerate(zip(self.layers, scaled))]

        def run(part, k=0, arrays=(srcs, offsets, scaled)):  # arrays: keeps what `calls` points into alive
            cols, accs = buffers[k]
            for li, idx in part:
                src, f, off, n_rows, w, b, m, res, dst, lo, hi = calls[li]
                kernel.layer(len(idx), idx.ctypes.data, src, f, off, n_rows, w, b, m, res, dst, lo, hi,
                             cols.ctypes.data, accs[li].ctypes.data, kernel.sgemm)
            return accs[last][:len(part[-1][1])] if part and part[-1][0] == last else None
        return run

    def logits_in_wave_order(self, symbols):
        """The encoder's view: logits (n_total, L) int64 and symbols (n_total,) in wave order."""
        grid = _Grid(symbols.shape, self.dtype)
        order = wave_order(symbols.shape)
        flat = np.take(self._logits_on_grid(grid, symbols), grid.flat(*order), axis=0)  # one row gather
        return flat.astype(np.int64), symbols[order]


def weights_from_session(sess, pc):
    """([weights], [biases]) of a probclass.ResShallow built in sess's graph, as its constructor takes them."""
    with sess.graph.as_default():
        by_name = {v.op.name: v for v in pc.variables()}
    names = pc_geometry.res_shallow_variable_scopes()
    values = sess.run({n: (by_name[n + '/weights'], by_name[n + '/biases']) for n in names})
    return [values[n][0] for n in names], [values[n][1] for n in names]


def choose_frac_bits(weights, biases, centers, pad_value):
    """F for a trained model: the largest F < V2_FRAC_BITS whose float32 clamp is at least MIN_CLAMP (a
    function of the weights only, so that it is the same on every machine), else V2_FRAC_BITS (float64)."""
    for F in range(V2_FRAC_BITS - 1, MIN_FLOAT32_FRAC_BITS - 1, -1):
        lim = _float32_clamp(_integer_layers(weights, biases, F), np.round(np.asarray(centers, np.float64) * 2. ** F),
                             float(np.round(float(pad_value) * 2. ** F)))
        if lim / 2. ** F >= MIN_CLAMP:
            return F
    return V2_FRAC_BITS


def _integer_layers(weights, biases, F):
    """Layers with the weights (masked) at scale 2**F and the biases at 2**2F, as integer-valued float64."""
    scale = 2. ** F
    masks = [pc_geometry.first_mask(3)] + [pc_geometry.other_mask(3)] * 3
    residual = {2: 0}  # res1: output of conv2 (layer 2) + output of conv0 (layer 0)
    relu = [True, True, False, True]
    layers = []
    for i, (w, b, m) in enumerate(zip(weights, biases, masks)):
        keep = m > 0
        w_int = np.where(keep[..., None, None], np.round(np.asarray(w, np.float64) * scale), 0.)
        taps = np.argwhere(keep) - np.array([1, 1, 1])  # (dc, dy, dx), dc in {-1, 0}
        rows = np.array([(dc - 1, dy - 1) for dc in range(2) for dy in range(3) if keep[dc, dy].any()])
        row_weights = np.concatenate([w_int[dc + 1, dy + 1].reshape(-1, w_int.shape[-1]) for dc, dy in rows])
        b_int = np.round(np.asarray(b, np.float64) * scale * scale)
        layers.append(Layer(taps, w_int[keep].reshape(-1, w_int.shape[-1]), rows, row_weights, b_int,
                            relu[i], residual.get(i)))
    return layers


def _float32_clamp(layers, center_values, pad_q):
    """The largest integer clamp lim (scale 2**F) with which float32 evaluation is exact, 0 if none: for
    every layer and output column sum_i |w_i| * lim + |b| < 2**24 (every product and partial sum, also
    with the bias), lim + the floored sum < 2**24 (the residual's addition: lim <= 2**23 and the sum is
    below 2**24 / 2**F), and the inputs (centers, border) within the clamp."""
    lim = 2. ** 23
    for l in layers:
        col = np.abs(l.weights).sum(axis=0)
        ok = col > 0  # an all-zero column bounds nothing
        if ok.any():
            lim = min(lim, float(np.min(np.floor((_FLOAT32_LIMIT - 1 - np.abs(l.bias[ok])) / col[ok]))))
    if max(np.abs(center_values).max(), abs(pad_q)) > lim:
        return 0.
    return max(lim, 0.)


def wave_order(shape):
    """Index arrays (c, y, x) of all positions of a (C, h, w) volume sorted by wave, then raster order
    (read-only, shared: computed once per shape)."""
    return _wave_order(tuple(int(n) for n in shape))


@functools.lru_cache(maxsize=4)
def _wave_order(shape):
    C, h, w = shape
    c, y, x = [a.ravel() for a in np.meshgrid(np.arange(C), np.arange(h), np.arange(w), indexing='ij')]
    t = WAVE_COEFFS[0] * c + WAVE_COEFFS[1] * y + x
    order = np.argsort(t, kind='stable')  # positions are in raster order, so ties stay in raster order
    out = tuple(a[order] for a in (c, y, x))
    for a in out:
        a.flags.writeable = False
    return out


def _void_rows(a, k):
    """(P, f) C-contiguous floats -> (P - k + 1,) view of opaque items of k * f floats, item q = a[q:q + k]
    flattened (overlapping for k > 1: a kernel row's three taps dx = -1, 0, 1 are adjacent positions, so
    one gathered window serves all three)."""
    f = a.shape[1]
    return np.ndarray(buffer=a, dtype=np.dtype((np.void, a.itemsize * k * f)), shape=(a.shape[0] - k + 1,),
                      strides=(a.itemsize * f,))


@functools.lru_cache(maxsize=2)
def _wave_schedule(shape, num_layers, split=None):
    """The decoder's work per wave T = t_min..t_max: (parts, flat indices of the wave's symbols or None).

    A part is a list of (layer, flat indices of the layer's positions in the part, in raster order).
    Within a wave, the inputs of a position come from earlier waves and from the same position (the centre
    tap, the only one with the same wave index), so a wave can be cut into parts that run in parallel, all
    layers each, if every position's layers are in the same part: the cut is at one flat index for all
    layers. Waves with at least `split` positions in the widest layer get two parts of about equal size,
    the others one. The last layer's domain is the volume, so its positions of a wave, in raster order,
    are the wave's symbols in wave_order.

    Slices of one sorted array per layer, computed once per shape (and reused, e.g. over a data set).
    """
    grid = _Grid(shape)
    per_layer = []
    t_all = np.arange(grid.t_min, grid.t_max + 2)
    for li in range(num_layers):
        c, y, x = grid.box_coordinates(li)
        t = WAVE_COEFFS[0] * c + WAVE_COEFFS[1] * y + x
        order = np.argsort(t, kind='stable')  # raster order within a wave, as wave_order
        per_layer.append((grid.flat(c, y, x)[order], np.searchsorted(t[order], t_all)))
    waves = []
    for k in range(len(t_all) - 1):
        spans = [(s[k], s[k + 1]) for _, s in per_layer]
        sizes = [b - a for a, b in spans]
        widest = int(np.argmax(sizes))
        if split is not None and sizes[widest] >= split:
            a, b = spans[widest]
            cut_at = per_layer[widest][0][(a + b) // 2]  # a flat index: the same cut for every layer
            cuts = [a + int(np.searchsorted(flat[a:b], cut_at)) for (flat, _), (a, b) in zip(per_layer, spans)]
            part_spans = [[(a, c) for (a, _), c in zip(spans, cuts)], [(c, b) for (_, b), c in zip(spans, cuts)]]
        else:
            part_spans = [spans]
        parts = [[(li, flat[a:b]) for li, ((flat, _), (a, b)) in enumerate(zip(per_layer, ps)) if b > a]
                 for ps in part_spans]
        a, b = spans[-1]
        waves.append((parts, per_layer[-1][0][a:b] if b > a else None))
    return waves


class _BusyCoreWatch(object):
    """Whether the decoder's second thread pays, judged over windows of split waves: when the other core is
    busy with other work (a training run; TensorFlow's threads spinning for a while after a session run), its
    thread rarely gets to start, or two threads take longer than one would. Then the next WINDOW * REST split
    waves run in one thread, and the pool is tried again (the load may have passed). A worker that starts
    late on an idle core is not a busy core: with the compiled kernel the parts are short and a wake-up takes
    a good fraction of one, so waits of up to twice the first part's time are allowed."""
    WINDOW = 16
    REST = 4

    def __init__(self):
        self._reset()
        self._rest = 0

    def _reset(self):
        self._n = self._not_started = 0
        self._worked = self._waited = 0.

    def one_thread(self):
        """Called for every split wave: True while resting from a busy window."""
        if self._rest:
            self._rest -= 1
            return True
        return False

    def add(self, worked, waited, not_started):
        """worked: this thread's seconds on the first part; waited: then for (or on) the second part."""
        self._n += 1
        self._not_started += not_started
        self._worked += worked
        self._waited += waited
        if self._n == self.WINDOW:
            if 2 * self._not_started > self._n or self._waited > 2 * self._worked:
                self._rest = self.WINDOW * self.REST
            self._reset()


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
    c in [-(3-li), C), y in [-(3-li), h+3-li), x likewise. Every tap of a box position, and the masked
    neighbours of its kernel rows, lie inside the grid."""
    PAD = 4

    def __init__(self, shape, dtype=np.float64):
        self.dtype = dtype
        self.C, self.h, self.w = shape
        p = self.PAD
        self.shape = (self.C + p, self.h + 2 * p, self.w + 2 * p)
        self.strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        self.volume_slices = (slice(p, None), slice(p, p + self.h), slice(p, p + self.w))
        self.t_min = sum(cf * -(p - 1) for cf in WAVE_COEFFS)
        self.t_max = WAVE_COEFFS[0] * (self.C - 1) + WAVE_COEFFS[1] * (self.h + p - 2) + (self.w + p - 2)

    def empty(self, features):
        return np.zeros((int(np.prod(self.shape)), features), self.dtype)

    def input_volume(self, symbols, center_values, pad_q):
        vol = np.full(self.shape, pad_q, self.dtype)
        if symbols is not None:
            vol[self.volume_slices] = center_values[symbols]
        return vol.reshape(-1, 1)

    def row_offsets(self, rows):
        """Flat offsets of the row windows (_void_rows(a, 3)) of the kernel rows (dc, dy), from a position."""
        return np.array([dc * self.strides[0] + dy * self.strides[1] - 1 for dc, dy in rows])

    def box(self, li):
        """Original-coordinate ranges of layer li's outputs."""
        m = self.PAD - 1 - li
        return (-m, self.C), (-m, self.h + m), (-m, self.w + m)

    def box_coordinates(self, li):
        """(c, y, x) of all positions of layer li's box in raster order, original coordinates."""
        return [a.ravel() for a in np.meshgrid(*[np.arange(a, b) for a, b in self.box(li)], indexing='ij')]

    def flat(self, c, y, x):
        p = self.PAD
        return (c + p) * self.strides[0] + (y + p) * self.strides[1] + (x + p)
