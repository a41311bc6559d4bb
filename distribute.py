"""Training over several devices or machines with tf.distribute (compat.v1 graph mode, Sessions).

train.py's `--strategy mirrored` replicates the train step over the GPUs of one machine
(tf.compat.v1.distribute.MirroredStrategy; `--cpu_replicas K` splits the CPU into K logical devices instead),
`--strategy multi_worker` over the machines of the `TF_CONFIG` environment variable, or of a Slurm job step
with `--cluster_resolver slurm` (MultiWorkerMirroredStrategy: collective all-reduce). docs/distributed_training.md
has the user's side; what this module does:

* One step means what it means on one device. `batch_size` is the global batch; every replica gets
  batch_size / num_replicas crops (each worker reads batch_size / num_workers crops from its own shard of the
  training files and splits them among its devices). A replica's share of the objective is its data loss
  divided by the number of replicas, so the sum of the replicas' gradients (what a v1 optimizer's
  apply_gradients applies under a strategy) is their mean. The L2 regularization does not depend on the batch:
  its gradient enters once, through the first replica of the cluster, instead of num_replicas times.
  The two optimizers (autoencoder and context model) each all-reduce their gradients and apply them in
  cross-replica context; the global step is one variable, incremented once per step by the AE optimizer,
  so the learning-rate schedules see the same step count as on one device.
* Where a replica's loss is not a plain mean over its crops, the distributed loss is the mean of per-replica
  values: MS-SSIM is pooled over the batch (one value per batch), so the distributed MS-SSIM is the mean of the
  per-replica pooled MS-SSIMs, and the rate hinge max(H_soft - H_target, 0) is taken per replica. Batch norm
  normalizes with per-replica batch statistics; the moving averages are kept equal on all replicas (the mean
  of the replicas' updates, one small all-reduce per step). Logged values are means over the replicas.
* Variables are MirroredVariables whose primary copy has the single-device name; checkpoints are written by
  the chief from the primary copies, so they have exactly the single-device variable names, and single-device
  checkpoints restore into a distributed run.
* Only the chief (the `chief` task, else worker 0) writes the log dir, summaries and checkpoints and evaluates
  the test batch. A stop request (SIGINT/SIGTERM on any worker) and the loss travel in the per-step all-reduce,
  so all workers stop at the same step; a NaN loss stops all of them. A dead or hung peer ends every session
  step that waits for it after --worker_timeout seconds with an error, instead of a collective op waiting forever.
"""
import hashlib
import json
import os

import numpy as np

import autoencoder
import probclass
import saver as saver_lib
import training_helpers
from tf_helpers import tf

STRATEGIES = ('mirrored', 'multi_worker')
CLUSTER_RESOLVERS = ('tf_config', 'slurm')
DEFAULT_WORKER_TIMEOUT_S = 600.
_SLURM_MAX_TASKS_PER_NODE = 1024
# Per-replica values averaged over the replicas every step; `stop` is the stop request (0 or 1) of the replica's
# worker, so its mean is > 0 when any worker asked to stop.
_SCALARS = ('total_loss', 'mse', 'psnr', 'ms_ssim', 'd_loss_scaled', 'bpp', 'H_real', 'H_mask', 'H_soft',
            'pc_loss', 'reg_enc_dec', 'reg_pc', 'stop')


class DistributionError(ValueError):
    """A distributed set-up that cannot work (bad flags, batch, TF_CONFIG), or a peer worker that failed."""


def add_arguments(parser):
    g = parser.add_argument_group('distributed training (docs/distributed_training.md)')
    g.add_argument('--strategy', choices=STRATEGIES, default=None,
                   help='mirrored: all GPUs of this machine (or --cpu_replicas logical CPUs); multi_worker: the '
                        'machines in $TF_CONFIG (or the Slurm job step). Default: one device, as before')
    g.add_argument('--cpu_replicas', type=int, default=None, metavar='K',
                   help='with --strategy mirrored: split the CPU into K logical devices, one replica each (for '
                        'tests and machines without GPUs)')
    g.add_argument('--cluster_resolver', choices=CLUSTER_RESOLVERS, default='tf_config',
                   help='with --strategy multi_worker: where the cluster comes from. Default: %(default)s')
    g.add_argument('--slurm_port_base', type=int, default=8888,
                   help='with --cluster_resolver slurm: first port of the tasks on a node. Default: %(default)s')
    g.add_argument('--worker_timeout', type=float, default=DEFAULT_WORKER_TIMEOUT_S, metavar='SECONDS',
                   help='with --strategy multi_worker: a session step (the start, when workers wait for each '
                        'other, included) that takes longer ends training with an error; bounds the wait for a '
                        'dead peer. Default: %(default)s')


# Set-up --------------------------------------------------------------------------------------------

def split_cpu(num_replicas):
    """Splits the first physical CPU into num_replicas logical devices /cpu:0 .. /cpu:<K-1>.

    :raises DistributionError: if TensorFlow has already initialized its devices in this process
    """
    cpus = tf.config.list_physical_devices('CPU')
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)])
    except RuntimeError as e:
        raise DistributionError('--cpu_replicas must be set before TensorFlow initializes its devices, i.e. '
                                'before any session runs in this process (start a new process): {}'.format(e))


def _cluster_resolver(flags):
    if flags.cluster_resolver == 'slurm':
        try:
            # auto_set_gpu=False: TensorFlow has enumerated the GPUs by now, so CUDA_VISIBLE_DEVICES set here would
            # be ignored (Slurm's --gpus-per-task sets it per task). The GPU counts then only feed the resolver's
            # own bookkeeping, which rejects 0 (CPU nodes) and would call nvidia-smi without them.
            return tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=flags.slurm_port_base, gpus_per_node=_SLURM_MAX_TASKS_PER_NODE, gpus_per_task=1,
                auto_set_gpu=False)
        except (KeyError, RuntimeError, ValueError, OSError) as e:
            raise DistributionError('--cluster_resolver slurm: cannot read the Slurm job step ({}: {}); run '
                                    'train.py under srun'.format(type(e).__name__, e))
    raw = os.environ.get('TF_CONFIG')
    if not raw:
        raise DistributionError('--strategy multi_worker needs the TF_CONFIG environment variable, e.g. '
                                'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                                '"task": {"type": "worker", "index": 0}}\' (see docs/distributed_training.md)')
    try:
        config = json.loads(raw)
        task = config['task']
        cluster = config['cluster']
        if task['type'] not in cluster or not 0 <= int(task['index']) < len(cluster[task['type']]):
            raise ValueError('task {} is not in the cluster {}'.format(task, cluster))
    except (ValueError, KeyError, TypeError) as e:
        raise DistributionError('TF_CONFIG is not valid ({}: {}): {}'.format(type(e).__name__, e, raw))
    bad_jobs = set(cluster) - {'chief', 'worker'}
    if bad_jobs:
        raise DistributionError('TF_CONFIG: MultiWorkerMirroredStrategy has only chief and worker tasks, '
                                'not {}'.format(', '.join(sorted(bad_jobs))))
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def _id_in_cluster(cluster, task_type, task_id):
    """The chief first, then the workers: the order of MultiWorkerMirroredStrategy's replica ids."""
    return task_id + (1 if task_type == 'worker' and 'chief' in cluster else 0)


class Distribution(object):
    """A strategy with what train.py needs around it: who this process is, its session, timeouts.

    num_replicas: replicas in sync (all workers); num_local_replicas: this worker's; num_workers, worker_index
    (position in the cluster, chief first; the shard this worker reads); is_chief: writes logs and checkpoints.
    """

    def __init__(self, kind, strategy, num_workers=1, worker_index=0, server=None, timeout_s=None,
                 host_device='/cpu:0'):
        self.kind = kind
        self.strategy = strategy
        self.num_workers = num_workers
        self.worker_index = worker_index
        self.num_replicas = strategy.num_replicas_in_sync
        self.num_local_replicas = self.num_replicas // num_workers
        # should_checkpoint: the strategy's own notion of the chief
        self.is_chief = bool(strategy.extended.should_checkpoint)
        self._server = server
        self._timeout_s = timeout_s
        self._host_device = host_device

    @property
    def multi_worker(self):
        return self.num_workers > 1

    def describe(self):
        if self.kind == 'mirrored':
            devices = ', '.join(self.strategy.extended.worker_devices)
            return 'MirroredStrategy: {} replica{} on {}'.format(self.num_replicas, 's' * (self.num_replicas > 1),
                                                                 devices)
        return 'MultiWorkerMirroredStrategy: worker {} of {}{}, {} replicas in all'.format(
            self.worker_index, self.num_workers, ' (chief)' if self.is_chief else '', self.num_replicas)

    def shard(self):
        """(index, count) of this worker's shard of the training files, None for one worker."""
        return (self.worker_index, self.num_workers) if self.multi_worker else None

    def worker_batch_size(self, global_batch_size, num_crops_per_img=1):
        """This worker's share of the global batch.

        :raises DistributionError: unless the batch divides into equal replica batches of whole crop stacks
        """
        per_replica, rest = divmod(global_batch_size, self.num_replicas)
        if rest or per_replica == 0:
            raise DistributionError(
                'batch_size {} (the global batch) does not divide into {} equal replica batches; use a multiple '
                'of {} (-co batch_size=...)'.format(global_batch_size, self.num_replicas, self.num_replicas))
        if per_replica % num_crops_per_img:
            raise DistributionError('the replica batch {} (batch_size {} / {} replicas) is not divisible by '
                                    'NUM_CROPS_PER_IMG={}'.format(per_replica, global_batch_size, self.num_replicas,
                                                                  num_crops_per_img))
        return per_replica * self.num_local_replicas

    def input_device(self):
        """Where this worker's input pipeline runs: its own CPU."""
        return tf.device(self._host_device)

    def session(self, num_threads=None):
        config = tf.ConfigProto(allow_soft_placement=True)
        if num_threads:
            config.intra_op_parallelism_threads = num_threads
            config.inter_op_parallelism_threads = num_threads
        config.gpu_options.allow_growth = True
        config = self.strategy.update_config_proto(config)
        return tf.Session(target=self._server.target if self._server else '', config=config)

    def run(self, sess, fetches, feed_dict=None):
        """sess.run with the worker timeout; failures of peers become DistributionError."""
        if not self.multi_worker:
            return sess.run(fetches, feed_dict)
        options = tf.RunOptions(timeout_in_ms=int(self._timeout_s * 1000))
        try:
            return sess.run(fetches, feed_dict, options=options)
        except tf.errors.DeadlineExceededError:
            raise DistributionError(
                'worker {}: a session step took longer than --worker_timeout {:g} s; a peer worker probably died '
                'or hangs (or its start, a checkpoint or the test batch take longer than that: raise '
                '--worker_timeout). Stopping.'.format(self.worker_index, self._timeout_s))
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                tf.errors.InternalError, tf.errors.FailedPreconditionError) as e:
            raise DistributionError('worker {}: lost a peer worker ({}: {}). Stopping.'.format(
                self.worker_index, type(e).__name__, _cause(e.message)))

    # Variables ------------------------------------------------------------------------------------

    def fingerprint(self, sess):
        """A hash of all variables (the primary copies, by name), to check at the end that the workers agree,
        and the names of variables whose copies on this worker's devices differ from the primary (none if the
        replicas stayed in sync)."""
        variables = sorted(tf.global_variables(), key=lambda v: v.op.name)
        copies = self.run(sess, [list(self.strategy.experimental_local_results(v)) for v in variables])
        digest = hashlib.sha1()
        differ = []
        for v, values in zip(variables, copies):
            digest.update(v.op.name.encode())
            digest.update(np.ascontiguousarray(values[0]).tobytes())
            if any(not np.array_equal(values[0], other) for other in values[1:]):
                differ.append(v.op.name)
        return digest.hexdigest()[:16], differ

    def initialize(self, sess):
        """Initializes all variables (multi-worker: the chief's initial values are broadcast to all)."""
        self.run(sess, tf.global_variables_initializer())

    def restore(self, sess, graph, ckpt_file, skip_var_substrings):
        """Initializes, then the chief restores what ckpt_file holds (same name and shape, not skipped) and
        the other workers take the chief's values. Only the chief reads ckpt_file.

        :return: (restored names, initialized names), known on the chief only (None elsewhere)
        """
        self.initialize(sess)
        restored = initialized = None
        if self.is_chief:
            available = dict(tf.train.list_variables(ckpt_file))
            to_restore = [v for v in tf.global_variables()
                          if not any(s and s in v.op.name for s in skip_var_substrings)
                          and v.op.name in available and list(available[v.op.name]) == v.shape.as_list()]
            # all variables are initialized already: restore only, no second (collective) initialization
            restored, _ = saver_lib.restore(sess, ckpt_file, skip_var_substrings, var_list=to_restore)
            names = set(restored)
            initialized = [v.op.name for v in tf.global_variables() if v.op.name not in names]
        if self.multi_worker:
            self.run(sess, graph.sync_from_chief)
        return restored, initialized


_NOISE = ('Graph execution error', 'Detected at node', 'File "', 'Node:', 'From /job:', '[[', 'Additional GRPC',
          ':UNKNOWN:', 'The error could be from')


def _cause(message):
    """The line of a TF error message that says what happened (e.g. 'Collective ops is aborted by: Socket
    closed'), without the graph-execution boilerplate around it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE)]
    return (useful or lines or ['(no message)'])[0][:300]


def from_flags(flags):
    """The Distribution of train.py's flags, None for the single-device path. Call it before TensorFlow
    initializes its devices (--cpu_replicas)."""
    if flags.strategy is None:
        if flags.cpu_replicas:
            raise DistributionError('--cpu_replicas needs --strategy mirrored')
        return None
    if flags.cpu_replicas is not None and (flags.strategy != 'mirrored' or flags.cpu_replicas < 1):
        raise DistributionError('--cpu_replicas K (K >= 1) works with --strategy mirrored only')
    if flags.strategy == 'mirrored':
        devices = None
        if flags.cpu_replicas:
            if tf.config.list_physical_devices('GPU'):
                raise DistributionError('--cpu_replicas is for machines without GPUs; with GPUs, --strategy '
                                        'mirrored uses all visible GPUs (select them with CUDA_VISIBLE_DEVICES)')
            split_cpu(flags.cpu_replicas)
            devices = ['/cpu:{}'.format(i) for i in range(flags.cpu_replicas)]
        return Distribution('mirrored', tf.compat.v1.distribute.MirroredStrategy(devices))
    return _multi_worker(flags)


def _multi_worker(flags):
    if flags.worker_timeout <= 0:
        raise DistributionError('--worker_timeout must be positive')
    resolver = _cluster_resolver(flags)
    strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    cluster = resolver.cluster_spec()
    task_type, task_id = resolver.task_type, int(resolver.task_id)
    num_workers = sum(len(cluster.as_dict().get(job, [])) for job in ('chief', 'worker'))
    # Also for a cluster of one: the graph is placed on /job:<task type>/task:<i> devices, which only a server
    # has. The server takes the strategy's config (collective group leader, device filters), as the session.
    server = tf.distribute.Server(cluster, job_name=task_type, task_index=task_id, protocol='grpc',
                                  config=strategy.update_config_proto(tf.ConfigProto()), start=True)
    return Distribution('multi_worker', strategy, num_workers, _id_in_cluster(cluster.as_dict(), task_type, task_id),
                        server, flags.worker_timeout, '/job:{}/task:{}/device:CPU:0'.format(task_type, task_id))


# Graph ---------------------------------------------------------------------------------------------

def _batch_norm_moving_variables():
    """layers.batch_norm's moving averages: updated by the train step, read by the test branch."""
    # v.name: the primary copy's name also in replica context, where v.op is the local copy's op
    return [v for v in tf.global_variables() if v.name.split(':')[0].endswith(('BatchNorm/moving_mean',
                                                                               'BatchNorm/moving_variance'))]


class _NewItems(object):
    """The items added to a graph collection inside the block: one replica's, because a replica function
    runs alone until its first merge_call (there is none before the optimizers)."""

    def __init__(self, key):
        self._key = key
        self.items = None

    def __enter__(self):
        self._start = len(tf.get_collection(self._key))
        return self

    def __exit__(self, *exc):
        self.items = tf.get_collection(self._key)[self._start:]


class DistributedTrainGraph(object):
    """model_graph.TrainGraph's attributes, with the train branch replicated by dist.strategy.

    x_train: this worker's batch (dist.worker_batch_size crops), split among its replicas. The loss terms,
    distortions and rates are means over all replicas (one small all-reduce per step, which also carries the
    stop request fed to stop_request; stop_any says whether any worker asked); another one averages the batch-norm
    moving averages. sync_from_chief: sets every variable to the chief's value (after the chief alone restored a
    checkpoint).
    """

    def __init__(self, dist, ae_config, pc_config, x_train, x_test, iterations_per_epoch, data_format):
        self._dist = dist
        self._ae_config, self._pc_config = ae_config, pc_config
        strategy = dist.strategy
        with strategy.scope():
            self.ae = autoencoder.get_network_cls(ae_config)(ae_config, data_format)
            self.pc = probclass.get_network_cls(pc_config)(pc_config, ae_config.num_centers)
            self.global_step = tf.train.get_or_create_global_step()
            self.lr_ae = training_helpers.learning_rate(ae_config, self.global_step, iterations_per_epoch)
            self.lr_pc = training_helpers.learning_rate(pc_config, self.global_step, iterations_per_epoch)
            self.stop_request = tf.placeholder_with_default(0., [], name='stop_request')
            with dist.input_device():
                # split on the host, so that each device receives only its own crops
                x_replicas = tf.split(x_train, dist.num_local_replicas, axis=0, name='split_batch')
            train_ops, scalars, bn_stats = strategy.extended.call_for_each_replica(
                self._replica_step, args=(x_replicas,))
            # two all-reduces, so that fetching the losses alone does not update the batch-norm averages
            means = strategy.reduce(tf.distribute.ReduceOp.MEAN, scalars, axis=None)
            values = dict(zip(_SCALARS, tf.unstack(means)))
            bn_means = strategy.reduce(tf.distribute.ReduceOp.MEAN, bn_stats, axis=None)
            # mean of the replicas' moving averages = moving average of their mean batch statistics
            bn_sync, offset = [], 0
            for v in _batch_norm_moving_variables():
                n = v.shape.num_elements()
                bn_sync.append(v.assign(tf.reshape(bn_means[offset:offset + n], v.shape), read_value=False))
                offset += n
            self.train_op = tf.group(list(strategy.experimental_local_results(train_ops)) + bn_sync,
                                     name='train_op')
            with tf.control_dependencies([self.train_op]):
                self.step_after_train = tf.identity(self.global_step.read_value())
            self.stop_any = values['stop'] > 0.
            self._set_terms(values)
            self.train_summaries = training_helpers.train_summaries(
                training_helpers.TrainTerms(self.dist_train, self.rate, self.bpp_train, self.reg_enc_dec,
                                            self.reg_pc, self.total_loss),
                self.lr_ae, self.lr_pc, self.ae.get_centers_variable())
            self.test_fetches, self.test_summaries = training_helpers.test_branch(
                self.ae, self.pc, x_test, ae_config) if x_test is not None else (None, None)
            self.sync_from_chief = self._sync_from_chief() if dist.multi_worker else None

    def _set_terms(self, v):
        self.dist_train = training_helpers.Distortions(v['mse'], v['psnr'], v['ms_ssim'], v['d_loss_scaled'])
        self.rate = training_helpers.RateLoss(v['H_real'], v['H_mask'], v['H_soft'], v['pc_loss'])
        self.bpp_train, self.reg_enc_dec, self.reg_pc = v['bpp'], v['reg_enc_dec'], v['reg_pc']
        self.total_loss = v['total_loss']

    @tf.autograph.experimental.do_not_convert  # plain graph building: no Python control flow to convert
    def _replica_step(self, x_replicas):
        replica_id = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        x = x_replicas[replica_id % self._dist.num_local_replicas]
        with _NewItems(tf.GraphKeys.UPDATE_OPS) as bn_updates:
            terms = training_helpers.train_terms(self.ae, self.pc, x, self._ae_config)
        # The optimizers sum the replicas' gradients: a 1/num_replicas share of the data loss makes that a mean.
        # On replicas after the first of a worker the regularization tensors are those the first built (they
        # read its copies and give no gradient here), so the regularization enters on replica 0 only, once.
        objective = (terms.dist.d_loss_scaled + terms.rate.pc_loss) / float(self._dist.num_replicas)
        if replica_id == 0:
            objective += terms.reg_enc_dec + terms.reg_pc
        pc_vars = self.pc.variables()
        pc_ids = {id(v) for v in pc_vars}
        ae_vars = [v for v in tf.trainable_variables() if id(v) not in pc_ids]
        train_op = training_helpers.create_train_op(objective, ae_vars, pc_vars, self.lr_ae, self.lr_pc,
                                                    self._ae_config, self._pc_config, self.global_step,
                                                    update_ops=bn_updates.items)
        d, r = terms.dist, terms.rate
        scalars = tf.stack([terms.total_loss, d.mse, d.psnr, d.ms_ssim, d.d_loss_scaled, terms.bpp, r.H_real,
                            r.H_mask, r.H_soft, r.pc_loss, terms.reg_enc_dec, terms.reg_pc, self.stop_request])
        # this replica's moving averages after its own update (batch norm keeps them per replica)
        with tf.control_dependencies(bn_updates.items):
            bn_stats = tf.concat([tf.reshape(v.read_value(), [-1]) for v in _batch_norm_moving_variables()], 0)
        return train_op, scalars, bn_stats

    def _sync_from_chief(self):
        """Every variable <- the chief's value: an all-reduce sum in which only replica 0 contributes."""
        strategy = self._dist.strategy
        variables = tf.global_variables()
        floats = [v for v in variables if v.dtype.base_dtype == tf.float32]
        others = [v for v in variables if v.dtype.base_dtype != tf.float32]

        @tf.autograph.experimental.do_not_convert
        def contribution():
            keep = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group) == 0
            flat = tf.concat([tf.reshape(v.read_value(), [-1]) for v in floats], 0)
            # integers (the global step) travel as float64, exact up to 2^53
            extra = tf.concat([tf.reshape(tf.cast(v.read_value(), tf.float64), [-1]) for v in others]
                              + [tf.zeros([0], tf.float64)], 0)
            return (flat, extra) if keep else (tf.zeros_like(flat), tf.zeros_like(extra))

        flat, extra = strategy.extended.call_for_each_replica(contribution)
        flat = strategy.reduce(tf.distribute.ReduceOp.SUM, flat, axis=None)
        extra = strategy.reduce(tf.distribute.ReduceOp.SUM, extra, axis=None)
        assigns, offset = [], 0
        for v in floats:
            n = v.shape.num_elements()
            assigns.append(v.assign(tf.reshape(flat[offset:offset + n], v.shape), read_value=False))
            offset += n
        offset = 0
        for v in others:
            n = v.shape.num_elements()
            assigns.append(v.assign(tf.cast(tf.reshape(extra[offset:offset + n], v.shape), v.dtype.base_dtype),
                                    read_value=False))
            offset += n
        return tf.group(assigns, name='sync_from_chief')
