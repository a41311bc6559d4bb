"""Distributed training (distribute.py, train.py --strategy): one mirrored step equals one single-device step,
checkpoints keep the single-device names, two train.py workers on 127.0.0.1 train in sync, stop together on a
signal and do not hang when a peer dies; sharding, batch and cluster errors.

Logical CPU devices can only be set up before TensorFlow initializes its devices, which the test process may have
done already (any test that ran a session), so everything with --cpu_replicas or several workers runs in child
processes: train.py itself, or this file run as a script (`python test_distribute.py equivalence OUT`).
The slow test (a frozen worker and --worker_timeout) runs with `make test-slow`.
"""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from helpers import ROOT, smooth_image, tiny_configs, train_args  # noqa: E402
import model_files  # noqa: E402

# Regularization large enough that its gradient is comparable to the data term's: counted once per replica,
# or never, it would show in the optimizer state.
EQUIVALENCE_AE_OVERRIDES = ['batch_size=4', 'regularization_factor=50', 'regularization_factor_centers=50']
EQUIVALENCE_PC_OVERRIDES = ['regularization_factor=50']
# the learning rates of cvpr/low and cvpr/res_shallow at step 0: one Adam step moves a weight by about this much
LR_AE, LR_PC = 8e-5, 1e-4


# Child processes -----------------------------------------------------------------------------------------

def _equivalence_child(out_path):
    """One training step on the global batch [A; A] on one device and on 2 logical CPUs from the same weights;
    writes every variable before and after, the gradients and the losses to out_path (.npz)."""
    import distribute
    distribute.split_cpu(2)
    import config_parser
    import saver as saver_lib
    import model_graph
    from tf_helpers import tf

    ae_config, pc_config = tiny_configs()
    ae_config = config_parser.apply_overrides(ae_config, EQUIVALENCE_AE_OVERRIDES)
    pc_config = config_parser.apply_overrides(pc_config, EQUIVALENCE_PC_OVERRIDES)
    half = np.stack([smooth_image(32, 32, seed=s) for s in range(2)]).astype(np.float32)
    # two copies of one half: every replica's batch-norm statistics are those of the whole batch
    batch = np.concatenate([half, half])
    work = os.path.dirname(out_path)
    out = {}

    def values(sess, prefix):
        for name, value in sess.run({v.op.name: v for v in tf.global_variables()}).items():
            out[prefix + name] = value

    def gradients(sess, g, prefix, feed=None):
        # without an update running alongside: TF 1.x ref variables let the single-device train op read
        # weights that its own updates are changing, which makes its result slightly noisy
        trainable = tf.trainable_variables()
        loss, grads = sess.run([g.total_loss, tf.gradients(g.total_loss, trainable)], feed)
        out['loss/' + prefix] = loss
        for v, gv in zip(trainable, grads):
            out['grad_{}/{}'.format(prefix, v.op.name)] = gv

    other_half = np.stack([smooth_image(32, 32, seed=s) for s in (2, 3)]).astype(np.float32)
    mixed = np.concatenate([half, other_half])  # [A; B]: replicas see different crops

    def measures(sess, g, x, feed, prefix):
        loss, msssim = sess.run([g.total_loss, g.dist_train.ms_ssim], {x: feed})
        out['loss/' + prefix], out['ms_ssim/' + prefix] = loss, msssim

    # train.py's single-device graph, with the batch size left open so that one graph serves the global batch
    # [A; A] and, op for op, the computation of each replica on A
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(1)
        x = tf.placeholder_with_default(batch, (None,) + batch.shape[1:])
        g = model_graph.TrainGraph(ae_config, pc_config, x, None, 10, 'NHWC')
        for op in graph.get_operations():  # values per channel that each batch-norm layer averages on [A; A]
            if op.type.startswith('FusedBatchNorm') and 'Grad' not in op.type:
                out['bn_count/' + op.name.rsplit('/', 1)[0]] = len(batch) * np.prod(op.inputs[0].shape[1:3])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver_lib.Saver(os.path.join(work, 'init')).save(sess, 0)
            values(sess, 'init/')
            gradients(sess, g, 'AA')
            gradients(sess, g, 'A', {x: half})
            for name, feed in (('A', half), ('B', other_half), ('AB_pooled', mixed)):
                measures(sess, g, x, feed, name)
            sess.run(g.train_op)
            values(sess, 'single/')
    init_ckpt = model_files.ckpt_path(model_files.ckpt_dir_of(os.path.join(work, 'init')), 0)

    dist = distribute.Distribution('mirrored', tf.compat.v1.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        with dist.input_device():
            x = tf.placeholder_with_default(batch, batch.shape)
        g = distribute.DistributedTrainGraph(dist, ae_config, pc_config, x, None, 10, 'NHWC')
        with dist.session() as sess:
            dist.restore(sess, g, init_ckpt, [])
            measures(sess, g, x, mixed, 'AB_dist')  # changes no variable
            r = sess.run({'itr': g.step_after_train, 'loss': g.total_loss, 'ms_ssim': g.dist_train.ms_ssim})
            out['loss/dist'], out['itr/dist'] = r['loss'], r['itr']
            values(sess, 'dist/')
            out['differing_copies'] = np.array(dist.fingerprint(sess)[1], dtype=object)
            saver_lib.Saver(os.path.join(work, 'dist')).save(sess, 1)
    np.savez(out_path, **out)


def _child(*args, timeout=180):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + list(args), cwd=ROOT, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def _train_cmd(tmp_path, *extra, overrides=()):
    return [sys.executable, os.path.join(ROOT, 'train.py')] + train_args(tmp_path, *extra, overrides=overrides)


def _log_dirs(root):
    return sorted(d for d in glob.glob(os.path.join(str(root), '*')) if os.path.isdir(d))


def _ckpt_vars(log_dir, step):
    from tf_helpers import tf
    ckpt_dir = model_files.ckpt_dir_of(log_dir)
    assert model_files.all_ckpt_steps(ckpt_dir) == [step]
    return dict(tf.train.list_variables(model_files.ckpt_path(ckpt_dir, step)))


def _single_device_var_shapes():
    """{name: shape} of the variables of train.py's single-device graph (tiny config)."""
    import model_graph
    from tf_helpers import tf
    ae_config, pc_config = tiny_configs()
    with tf.Graph().as_default():
        model_graph.TrainGraph(ae_config, pc_config, tf.zeros([4, 32, 32, 3]), None, 10, 'NHWC')
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()}


def _single_device_checkpoint(root, step):
    """A checkpoint of train.py's single-device graph (tiny config, random weights, zero Adam slots) at global
    step `step`, as a training run would leave it. :return: (log dir, {variable name: shape})"""
    import saver as saver_lib
    import model_graph
    from tf_helpers import tf
    ae_config, pc_config = tiny_configs()
    log_dir = os.path.join(str(root), '0101_1200 cvpr@low cvpr@res_shallow')
    with tf.Graph().as_default():
        tf.set_random_seed(3)
        g = model_graph.TrainGraph(ae_config, pc_config, tf.zeros([4, 32, 32, 3]), None, 10, 'NHWC')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            g.global_step.load(step, sess)
            saver_lib.Saver(log_dir).save(sess, step)
        return log_dir, {v.op.name: v.shape.as_list() for v in tf.global_variables()}


# One mirrored step = one single-device step ---------------------------------------------------------------

@pytest.fixture(scope='module')
def equivalence(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('equivalence') / 'result.npz')
    _child('equivalence', out)
    return dict(np.load(out, allow_pickle=True))


def test_mirrored_step_equals_single_device_step(equivalence):
    """Catches: gradients summed instead of averaged, the regularization counted per replica or not at all,
    replicas reading the wrong part of the batch, the global step moving once per replica, the optimizers'
    state or the batch-norm averages going wrong, replicas drifting apart."""
    r = equivalence
    names = sorted(k[len('init/'):] for k in r if k.startswith('init/'))
    assert sorted(k[len('dist/'):] for k in r if k.startswith('dist/')) == names
    # the loss: every term is the same on [A; A] and on each replica's A
    assert r['loss/dist'] == pytest.approx(float(r['loss/AA']), rel=1e-5)
    assert r['loss/dist'] == pytest.approx(float(r['loss/A']), rel=1e-6)
    # On [A; B] each replica has its own crops: the loss is the mean of the replicas' losses, and MS-SSIM (pooled
    # over a batch) the mean of the replicas' pooled MS-SSIMs, not the MS-SSIM pooled over the global batch.
    assert r['loss/AB_dist'] == pytest.approx((r['loss/A'] + r['loss/B']) / 2, rel=1e-5)
    assert r['ms_ssim/AB_dist'] == pytest.approx((r['ms_ssim/A'] + r['ms_ssim/B']) / 2, rel=1e-4)
    assert abs(r['ms_ssim/AB_dist'] - r['ms_ssim/AB_pooled']) > 1e-3 * r['ms_ssim/AB_pooled']
    assert int(r['itr/dist']) == 1 and int(r['dist/global_step']) == 1 == int(r['single/global_step'])
    assert list(r['differing_copies']) == []  # the copies on both devices are equal after the step

    # First Adam step from zero slots: m = 0.1 g, v = 0.001 g^2 of the gradient averaged over the replicas.
    # Each replica computes, op for op, what the single-device graph computes on A alone, so that average is the
    # gradient on A up to rounding; on [A; A] it is the same in exact arithmetic. At the random initial weights
    # MS-SSIM is ~0.002, and its fractional powers of near-zero terms amplify float32 rounding (two single-device
    # graphs with static batch sizes 2 and 4 give gradients ~1e-3 of the largest entry apart), hence the looser
    # tolerance for [A; A]. Errors are relative to the largest entry of each optimizer's slots, because entries
    # near zero are sums that cancel. A sum instead of a mean, or a regularization gradient counted per replica or
    # not at all, is off by more than 4e-3.
    for optimizer in ('Adam_AE', 'Adam_PC'):
        trainable = [n for n in names if 'grad_A/' + n in r and
                     (n.startswith('probclass3d') == (optimizer == 'Adam_PC'))]
        assert trainable
        # TF's Adam uses 1 - beta in float32
        for suffix, expected in (('', lambda g: (1 - np.float32(0.9)) * g),
                                 ('_1', lambda g: (1 - np.float32(0.999)) * g * g)):
            for reference, tolerance in (('A', 1e-4), ('AA', 2e-3)):
                want = {n: expected(r['grad_{}/{}'.format(reference, n)].astype(np.float64)) for n in trainable}
                scale = max(np.max(np.abs(w)) for w in want.values())
                for n in trainable:
                    got = r['dist/{}/{}{}'.format(n, optimizer, suffix)]
                    err = np.max(np.abs(got - want[n])) / scale
                    assert err < tolerance, '{}/{}{} vs the gradient on {}: {:.2e} of the largest slot value'.format(
                        n, optimizer, suffix, reference, err)
    for n in ('beta1_power', 'beta2_power', 'beta1_power_1', 'beta2_power_1'):
        assert r['dist/' + n] == pytest.approx(float(r['single/' + n]), rel=1e-7)

    # The trainable variables: Adam's first update from those slots, with each network's learning rate; and the
    # single-device step's weights, except where a gradient is at the rounding level and Adam's first step
    # (lr * sign(g)) may go either way.
    for n in names:
        if 'grad_A/' + n not in r:
            continue
        optimizer, lr = ('Adam_PC', LR_PC) if n.startswith('probclass3d') else ('Adam_AE', LR_AE)
        m, v = (r['dist/{}/{}{}'.format(n, optimizer, suffix)].astype(np.float64) for suffix in ('', '_1'))
        lr_t = lr * np.sqrt(1 - 0.999) / (1 - 0.9)
        expected = r['init/' + n] - lr_t * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(r['dist/' + n], expected, rtol=0, atol=1e-6, err_msg=n)
        assert np.max(np.abs(r['dist/' + n].astype(np.float64) - r['single/' + n])) <= 2.01 * lr, n

    # Batch norm: the moving mean is the single device's. The fused kernel's batch variance is Bessel-corrected
    # with the number of values it averages, which is half as large per replica: the moving variance is the
    # single device's with n/(n-1) for the replica's count instead of the whole batch's.
    counts = {k[len('bn_count/'):]: float(r[k]) for k in r if k.startswith('bn_count/')}
    assert len(counts) == len([n for n in names if n.endswith('moving_mean')])
    for n in names:
        if n.endswith('moving_mean'):
            np.testing.assert_allclose(r['dist/' + n], r['single/' + n], rtol=1e-4, atol=1e-6, err_msg=n)
        if n.endswith('moving_variance'):
            count = counts[n[:-len('/moving_variance')]]
            single_batch_var = (r['single/' + n] - 0.9 * r['init/' + n]) / 0.1
            per_replica = single_batch_var * (count - 1) / count * (count / 2) / (count / 2 - 1)
            np.testing.assert_allclose(r['dist/' + n], 0.9 * r['init/' + n] + 0.1 * per_replica, rtol=2e-4,
                                       err_msg=n)


def test_distributed_checkpoint_has_single_device_names(equivalence, tmp_path_factory):
    """Catches replica suffixes or MirroredVariable names in checkpoints. The single-device checkpoint restored
    into the distributed run (same initial values: the losses above match), and the distributed checkpoint
    restores into train.py's single-device graph: every variable, with the values the distributed run had."""
    import saver as saver_lib
    import model_graph
    from tf_helpers import tf
    work = glob.glob(os.path.join(str(tmp_path_factory.getbasetemp()), 'equivalence*'))[0]
    single = dict(tf.train.list_variables(os.path.join(work, 'init', 'ckpts', 'ckpt-0')))  # train.py's graph
    dist_ckpt = os.path.join(work, 'dist', 'ckpts', 'ckpt-1')
    dist = dict(tf.train.list_variables(dist_ckpt))
    assert dist == single
    assert not [n for n in dist if 'replica' in n or 'Mirrored' in n]
    ae_config, pc_config = tiny_configs()
    with tf.Graph().as_default():
        model_graph.TrainGraph(ae_config, pc_config, tf.zeros([4, 32, 32, 3]), None, 10, 'NHWC')
        with tf.Session() as sess:
            restored, initialized = saver_lib.restore(sess, dist_ckpt)
            assert initialized == [] and sorted(restored) == sorted(dist)
            for v in tf.global_variables():
                np.testing.assert_array_equal(sess.run(v), equivalence['dist/' + v.op.name], err_msg=v.op.name)


# train.py --strategy mirrored ---------------------------------------------------------------------------

def test_train_py_mirrored_on_two_cpu_devices(tmp_path):
    """The bar: `--strategy mirrored --cpu_replicas 2 --max_steps 2 -co batch_size=4` trains, evaluates the test
    batch, writes a checkpoint at global step 2 with exactly the single-device variable names, and inference
    (val.py, codec.py, export_model.py) loads it unchanged. The replicas see different crops here, so the copies
    of the batch-norm averages only stay equal if they are averaged every step."""
    import inference
    from tf_helpers import tf
    cmd = _train_cmd(tmp_path, '--strategy', 'mirrored', '--cpu_replicas', '2', '--max_steps', '2', '-ltest', '2',
                     overrides=['batch_size=4'])
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert 'MirroredStrategy: 2 replicas' in out and 'batch 4 = 2 replicas x 2' in out
    assert '2: loss=' in out and '2: test ms_ssim=' in out and 'Reached --max_steps 2' in out
    assert 'variables fingerprint' in out and 'copies on this worker differ' not in out
    (log_dir,) = _log_dirs(tmp_path / 'logs')
    saved = _ckpt_vars(log_dir, 2)
    assert saved['global_step'] == [] and tf.train.load_variable(
        os.path.join(log_dir, 'ckpts', 'ckpt-2'), 'global_step') == 2
    assert {n: list(s) for n, s in saved.items()} == _single_device_var_shapes()
    model = inference.Model(log_dir)
    try:
        assert model.step == 2 and np.isfinite(model.run(smooth_image(32, 32), model.g.bpp))
    finally:
        model.close()


def test_batch_that_does_not_divide_is_refused():
    import distribute

    class Strategy(object):
        num_replicas_in_sync = 3

        class extended(object):
            should_checkpoint = True

    dist = distribute.Distribution('mirrored', Strategy())
    assert dist.worker_batch_size(30) == 30
    with pytest.raises(distribute.DistributionError, match=r'batch_size 4 \(the global batch\) does not divide '
                                                           r'into 3 equal replica batches'):
        dist.worker_batch_size(4)
    with pytest.raises(distribute.DistributionError, match='NUM_CROPS_PER_IMG=2'):
        dist.worker_batch_size(9, num_crops_per_img=2)


def test_flag_and_cluster_errors(tmp_path, monkeypatch, capsys):
    import train
    assert train.main(train_args(tmp_path, '--cpu_replicas', '2')) == 1
    assert 'Error: --cpu_replicas needs --strategy mirrored' in capsys.readouterr().err
    monkeypatch.delenv('TF_CONFIG', raising=False)
    assert train.main(train_args(tmp_path, '--strategy', 'multi_worker')) == 1
    assert 'needs the TF_CONFIG environment variable' in capsys.readouterr().err
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    assert train.main(train_args(tmp_path, '--strategy', 'multi_worker')) == 1
    assert 'TF_CONFIG is not valid' in capsys.readouterr().err
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", '
                                    '"index": 0}}')
    assert train.main(train_args(tmp_path, '--strategy', 'multi_worker')) == 1
    assert 'not ps' in capsys.readouterr().err
    # once TensorFlow has initialized its devices, splitting the CPU is a clear error, not a crash
    from tf_helpers import tf
    tf.config.list_logical_devices('CPU')
    assert train.main(train_args(tmp_path, '--strategy', 'mirrored', '--cpu_replicas', '2', '--max_steps', '1')) == 1
    assert 'before TensorFlow initializes its devices' in capsys.readouterr().err


def test_slurm_cluster(monkeypatch):
    """--cluster_resolver slurm: the cluster of a Slurm job step (read from its environment variables)."""
    import distribute
    import train
    monkeypatch.setenv('SLURM_PROCID', '1')
    monkeypatch.setenv('SLURM_STEP_NUM_TASKS', '2')
    monkeypatch.setenv('SLURM_STEP_NODELIST', 'node[07-08]')
    monkeypatch.setenv('SLURM_STEP_TASKS_PER_NODE', '1(x2)')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    flags = train.parse_args(['ae', 'pc', '--strategy', 'multi_worker', '--cluster_resolver', 'slurm',
                              '--slurm_port_base', '9000'])
    resolver = distribute._cluster_resolver(flags)
    assert resolver.cluster_spec().as_dict() == {'worker': ['node07:9000', 'node08:9000']}
    assert (resolver.task_type, resolver.task_id) == ('worker', 1)
    assert 'CUDA_VISIBLE_DEVICES' not in os.environ  # GPUs are Slurm's to assign (--gpus-per-task)
    assert distribute._id_in_cluster({'chief': ['a'], 'worker': ['b', 'c']}, 'worker', 1) == 2
    assert distribute._id_in_cluster({'worker': ['b', 'c']}, 'worker', 1) == 1


def test_shards_partition_the_training_files(tmp_path):
    """Each worker reads its own files: every file in exactly one shard, each shard's batches only from its
    files. The images are flat colors (red = file index) so a crop tells where it came from."""
    from PIL import Image
    import inputpipeline
    from tf_helpers import tf
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 10 * i, np.uint8)).save(str(tmp_path / 'img{}.png'.format(i)))
    spec = inputpipeline.resolve_dataset(str(tmp_path))
    shards = [inputpipeline._shard_files(spec, (k, 2)) for k in range(2)]
    assert sorted(shards[0] + shards[1]) == spec.files and not set(shards[0]) & set(shards[1])
    for k, files in enumerate(shards):
        with tf.Graph().as_default():
            x = inputpipeline.input_batch(spec, 32, 2, shard=(k, 2))
            with tf.Session() as sess:
                seen = {int(v) // 10 for _ in range(6) for v in sess.run(x)[:, 0, 0, 0]}
        assert seen == {int(re.search(r'img(\d)', f).group(1)) for f in files}
    with pytest.raises(inputpipeline.DatasetError, match='5 images cannot be shared among 6 workers'):
        inputpipeline._shard_files(spec, (0, 6))


# Two train.py workers on 127.0.0.1 ----------------------------------------------------------------------

def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class _Workers(object):
    """train.py --strategy multi_worker, once per worker of a TF_CONFIG cluster on 127.0.0.1."""

    def __init__(self, tmp_path, *extra, num_workers=2, overrides=('batch_size=4',)):
        cluster = {'worker': ['127.0.0.1:{}'.format(p) for p in _free_ports(num_workers)]}
        # one thread each: two workers share the test machine's cores
        cmd = _train_cmd(tmp_path, '--strategy', 'multi_worker', '--num_threads', '1', *extra, overrides=overrides)
        self.logs = [str(tmp_path / 'worker{}.log'.format(i)) for i in range(num_workers)]
        self.procs = []
        for i in range(num_workers):
            env = dict(os.environ, NUM_PREPROCESS_THREADS='1',
                       TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}}))
            with open(self.logs[i], 'w') as log:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    def output(self, i):
        with open(self.logs[i]) as f:
            return f.read()

    def wait_for(self, i, pattern, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.output(i), re.M):
                return
            if self.procs[i].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError('worker {} never printed {!r}:\n{}'.format(i, pattern, self.output(i)[-3000:]))

    def wait(self, i, timeout):
        return self.procs[i].wait(timeout=timeout)

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def workers():
    started = []

    def start(*args, **kwargs):
        w = _Workers(*args, **kwargs)
        started.append(w)
        return w
    yield start
    for w in started:
        w.kill_all()


def _fingerprint(output):
    m = re.search(r'variables fingerprint (\w+) at step (\d+)', output)
    assert m, output[-3000:]
    return m.group(1), int(m.group(2))


def test_two_workers_train_in_sync(tmp_path, workers):
    """Both exit 0 at the same step with the same variables; only the chief writes, a checkpoint with the
    single-device names at the expected global step; a single-device checkpoint restores into the run and
    reaches the other worker, which never reads it."""
    single_dir, single_vars = _single_device_checkpoint(tmp_path / 'single', 7)
    w = workers(tmp_path, '--max_steps', '8', '-ltest', '2', '--worker_timeout', '90', '--restore', single_dir)
    assert [w.wait(i, timeout=180) for i in range(2)] == [0, 0], w.output(0)[-3000:] + w.output(1)[-3000:]
    chief, other = w.output(0), w.output(1)
    assert 'worker 0 of 2 (chief), 2 replicas in all' in chief and 'Restored 274 variables' in chief
    assert '8: loss=' in chief and '8: test' in chief
    assert 'Worker 1: reached --max_steps at step 8' in other and 'loss=' not in other
    assert _fingerprint(chief) == _fingerprint(other) and _fingerprint(chief)[1] == 8
    (log_dir,) = _log_dirs(tmp_path / 'logs')  # one log dir: the chief's
    saved = _ckpt_vars(log_dir, 8)
    assert {n: list(s) for n, s in saved.items()} == single_vars


def test_two_workers_count_the_regularization_once(tmp_path, workers):
    """Every worker builds its own regularization terms; their gradient must enter once, not once per worker.
    With only the L2 terms in the loss (K_ms_ssim = beta = 0) the first Adam step from zero slots sets
    m = 0.1 * factor * w exactly for every regularized variable (0.2 * ... if both workers added it)."""
    from tf_helpers import tf
    single_dir, _ = _single_device_checkpoint(tmp_path / 'single', 7)
    w = workers(tmp_path, '--max_steps', '8', '-ltest', '-1', '--worker_timeout', '90', '--restore', single_dir,
                '-pco', 'regularization_factor=0.5',
                overrides=('batch_size=4', 'K_ms_ssim=0', 'beta=0', 'regularization_factor=0.5',
                           'regularization_factor_centers=0.5'))
    assert [w.wait(i, timeout=180) for i in range(2)] == [0, 0], w.output(0)[-3000:] + w.output(1)[-3000:]
    (log_dir,) = _log_dirs(tmp_path / 'logs')
    _ckpt_vars(log_dir, 8)
    before = tf.train.load_checkpoint(os.path.join(single_dir, 'ckpts', 'ckpt-7'))
    after = tf.train.load_checkpoint(os.path.join(log_dir, 'ckpts', 'ckpt-8'))
    regularized = [n for n in after.get_variable_to_shape_map()
                   if n.endswith(('/weights', 'encoder/centers'))]
    assert len(regularized) > 20
    for n in regularized:
        slot = n + ('/Adam_PC' if n.startswith('probclass3d') else '/Adam_AE')
        np.testing.assert_allclose(after.get_tensor(slot), (1 - np.float32(0.9)) * 0.5 * before.get_tensor(n),
                                   rtol=1e-5, atol=1e-9, err_msg=n)


@pytest.mark.parametrize('victim', [1, 0])
def test_a_killed_worker_stops_the_other(tmp_path, workers, victim):
    """A dead peer (the chief, or not) ends the survivor's collective ops with an error and a clear message;
    never a hang."""
    w = workers(tmp_path, '--max_steps', '100000', '-ltrain', '1', '-ltest', '-1', '--worker_timeout', '20')
    w.wait_for(0, r'^3: loss=')
    w.procs[victim].kill()
    t0 = time.time()
    survivor = 1 - victim
    assert w.wait(survivor, timeout=60) == 1
    assert time.time() - t0 < 30  # lost-peer error or the 20 s timeout, whichever comes first
    out = w.output(survivor)
    assert re.search(r'Error: worker {}: (lost a peer worker|a session step took longer than --worker_timeout)'
                     .format(survivor), out), out[-3000:]
    assert 'Traceback' not in out


def test_sigterm_on_one_worker_stops_both_with_a_checkpoint(tmp_path, workers):
    """SIGTERM to the worker that is not the chief: the request travels with the step's all-reduce, both
    stop at the same step and exit 0, the chief saves there (as Ctrl-C on one device)."""
    w = workers(tmp_path, '--max_steps', '100000', '-ltrain', '1', '-ltest', '-1', '--worker_timeout', '60')
    w.wait_for(0, r'^3: loss=')
    w.procs[1].send_signal(signal.SIGTERM)
    assert [w.wait(i, timeout=60) for i in range(2)] == [0, 0], w.output(0)[-2000:] + w.output(1)[-2000:]
    m = re.search(r'Another worker got SIGINT/SIGTERM: saved checkpoint at step (\d+)', w.output(0))
    assert m, w.output(0)[-2000:]
    step = int(m.group(1))
    assert 'Worker 1: stopped by a signal at step {}'.format(step) in w.output(1)
    (log_dir,) = _log_dirs(tmp_path / 'logs')
    _ckpt_vars(log_dir, step)
    from tf_helpers import tf
    assert tf.train.load_variable(os.path.join(log_dir, 'ckpts', 'ckpt-{}'.format(step)), 'global_step') == step


@pytest.mark.slow
def test_a_hung_worker_times_out(tmp_path, workers):
    """A peer that hangs (SIGSTOP) without closing its connections: --worker_timeout ends the wait."""
    w = workers(tmp_path, '--max_steps', '100000', '-ltrain', '1', '-ltest', '-1', '--worker_timeout', '15')
    w.wait_for(0, r'^3: loss=')
    os.kill(w.procs[1].pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        assert w.wait(0, timeout=60) == 1
        assert 15 <= time.time() - t0 < 40
        assert 'a session step took longer than --worker_timeout 15 s' in w.output(0)
    finally:
        os.kill(w.procs[1].pid, signal.SIGCONT)


if __name__ == '__main__':
    if sys.argv[1] == 'equivalence':
        _equivalence_child(sys.argv[2])
    else:
        raise SystemExit('unknown child mode {}'.format(sys.argv[1]))
