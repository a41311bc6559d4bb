"""The graphs: inference (val.py, the exports: image -> symbols -> image) and training (train.py, bench/)."""
from collections import namedtuple

import autoencoder
import bits
import probclass
import training_helpers
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


class TrainGraph(object):
    """The train branch (batch statistics, qbar) and the test branch (moving averages, qhard), on one device.

    distribute.DistributedTrainGraph builds the same attributes with the train branch replicated."""

    def __init__(self, ae_config, pc_config, x_train, x_test, iterations_per_epoch, data_format):
        self.ae = autoencoder.get_network_cls(ae_config)(ae_config, data_format)
        self.pc = probclass.get_network_cls(pc_config)(pc_config, ae_config.num_centers)
        self.global_step = tf.train.get_or_create_global_step()

        terms = training_helpers.train_terms(self.ae, self.pc, x_train, ae_config)
        self.bpp_train, self.rate, self.dist_train = terms.bpp, terms.rate, terms.dist
        self.reg_enc_dec, self.reg_pc, self.total_loss = terms.reg_enc_dec, terms.reg_pc, terms.total_loss

        pc_vars = self.pc.variables()
        ae_vars = [v for v in tf.trainable_variables() if v not in set(pc_vars)]
        self.lr_ae = training_helpers.learning_rate(ae_config, self.global_step, iterations_per_epoch)
        self.lr_pc = training_helpers.learning_rate(pc_config, self.global_step, iterations_per_epoch)
        self.train_op = training_helpers.create_train_op(self.total_loss, ae_vars, pc_vars, self.lr_ae,
                                                         self.lr_pc, ae_config, pc_config, self.global_step)
        # the step count after this step's update (fetching global_step next to the train op may give
        # either value)
        with tf.control_dependencies([self.train_op]):
            self.step_after_train = tf.identity(self.global_step.read_value())
        self.train_summaries = training_helpers.train_summaries(terms, self.lr_ae, self.lr_pc,
                                                                self.ae.get_centers_variable())
        self.test_fetches, self.test_summaries = training_helpers.test_branch(
            self.ae, self.pc, x_test, ae_config) if x_test is not None else (None, None)
