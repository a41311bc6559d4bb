"""Builds the inference graph shared by val.py, codec.py and the exports: image -> symbols -> image."""
from collections import namedtuple

import autoencoder
import bits
import probclass
from tf_helpers import tf

# x: uint8 placeholder H x W x 3 (one image, H and W multiples of 8); symbols: int64 1 x C x h x w;
# x_out: float32 1 x H x W x 3 in [0, 255]; bpp: the cross-entropy estimate; q_in / x_from_q: decoder
# alone, fed with quantized values 1 x C x h x w.
InferenceGraph = namedtuple('InferenceGraph', ['ae', 'pc', 'x', 'symbols', 'qhard', 'x_out', 'bit_cost',
                                               'bpp', 'heatmap', 'centers', 'q_in', 'x_from_q'])


def build_inference_graph(ae_config, pc_config, data_format=None):
    """Encoder, decoder and context model in inference mode (batch-norm moving averages)."""
    ae = autoencoder.get_network_cls(ae_config)(ae_config, data_format)
    pc = probclass.get_network_cls(pc_config)(pc_config, ae_config.num_centers)
    x = tf.placeholder(tf.uint8, [None, None, 3], name='x')
    x_batch = tf.expand_dims(tf.cast(x, tf.float32), 0)
    enc = ae.encode(x_batch, is_training=False)
    x_out = ae.decode(enc.qhard, is_training=False)
    bit_cost = pc.bitcost(enc.qhard, enc.symbols, pc.auto_pad_value(ae))
    bpp = bits.bitcost_to_bpp(bit_cost, x_batch)
    q_in = tf.placeholder(tf.float32, [1, ae_config.num_chan_bn, None, None], name='q_in')
    x_from_q = ae.decode(q_in, is_training=False)
    return InferenceGraph(ae, pc, x, enc.symbols, enc.qhard, x_out, bit_cost, bpp, enc.heatmap,
                          ae.get_centers_variable(), q_in, x_from_q)
