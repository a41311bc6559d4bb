"""What the recipes share: train.py phases on a CPU-time budget that survive interruptions, evaluation of a
checkpoint with val.py on the held-out photos, WebP measured once on them, and locks for concurrent runs.

Every phase is a train.py run with --max_cpu_hours (train.py stops with a checkpoint once the process has
used that much CPU time, so other load on the machine does not change how much a phase trains) whose
output goes to a phase log; a phase whose log says it is done is not run again, one that was interrupted
(e.g. SIGTERM at the end of a session) continues from its last checkpoint with the rest of its budget.
"""
import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import logdir_helpers  # noqa: E402
import model_files  # noqa: E402
import rd_curves  # noqa: E402

HELDOUT_NAME = 'heldout'
CODECS_DIR = 'other_codecs'  # in a recipe's out root: the codecs' curves on the held-out photos
_DONE = 'Used --max_cpu_hours'  # train.py's last line when the budget is used
_SLACK_HOURS = 0.05


def run(cmd, log_path):
    """Runs cmd with its output appended to log_path. SIGTERM or SIGINT to the recipe is passed on to the
    command (train.py then saves a checkpoint) and the recipe stops after it, instead of going on to the next
    phase: run the recipe again to continue."""
    print('$ ' + ' '.join(_quote(c) for c in cmd), flush=True)
    stopped = []
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        def pass_on(signum, frame):
            stopped.append(signum)
            proc.send_signal(signum)
        previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            returncode = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if stopped:
        sys.exit('Stopped by signal {} (the command saved its state, see {}); run the recipe again to '
                 'continue'.format(stopped[0], log_path))
    if returncode != 0:
        sys.exit('Error: the command failed (exit {}), see {}'.format(returncode, log_path))


def _quote(s):
    return "'{}'".format(s) if re.search(r'[\s*?,]', s) else s


def log_dirs_in(log_path):
    if not os.path.exists(log_path):
        return []
    with open(log_path) as f:
        return re.findall(r'^Log dir: (.*)$', f.read(), flags=re.M)


def _runs(log_text):
    """The output of each train.py run in a phase's log (each starts with its `Log dir:` line)."""
    return re.split(r'^Log dir: ', log_text, flags=re.M)[1:]


def used_cpu_hours(log_text):
    """CPU hours of the train.py runs in a phase's log: the last `CPU x h` of each run."""
    last = [re.findall(r'CPU ([0-9.]+) h\)', run) for run in _runs(log_text)]
    return sum(float(m[-1]) for m in last if m)


def phase_steps(log_text):
    """(first, last) training step of a phase's log: the step its first run restored (0 from scratch) and the
    last step logged or saved; None before any step."""
    runs = _runs(log_text)
    if not runs:
        return None
    restored = re.search(r'^Restored .* \(step (\d+)\)', runs[0], flags=re.M)
    first = int(restored.group(1)) if restored else 0
    steps = [int(s) for s in re.findall(r'^(\d+): ', log_text, flags=re.M)]
    steps += [int(s) for s in re.findall(r'saved checkpoint at step (\d+)', log_text)]
    return (first, max(steps)) if steps else None


def learning_rates(log_text):
    """{network: learning rate as train.py printed it at the start of the phase's first run}, e.g.
    {'autoencoder': '1.0e-04 (fixed)', 'context model': '1.0e-04 (fixed)'}."""
    runs = _runs(log_text)
    if not runs:
        return {}
    found = re.findall(r'^(autoencoder|context model): lr (\S+) at this step ?(.*)$', runs[0], flags=re.M)
    return {net: '{} {}'.format(lr, note).strip() for net, lr, note in found}


def phase_done(log_path, hours=None):
    """Whether a phase's last run stopped because its budget was used and, given the phase's budget `hours`,
    the runs used all of it (a budget raised later continues the phase)."""
    if not os.path.exists(log_path):
        return False
    with open(log_path) as f:
        text = f.read()
    runs = _runs(text)
    if not runs or _DONE not in runs[-1]:
        return False
    # the stop line carries the exact CPU time (older logs only the last periodic figure: some slack)
    return hours is None or used_cpu_hours(text) >= hours - _SLACK_HOURS


def train_command(ae_config, pc_config, train_glob, out_root, heldout_glob, ae_overrides=(), pc_overrides=()):
    """The train.py command of a recipe phase (without --restore and --max_cpu_hours): the held-out photos as
    test set, a test and a checkpoint every 500 steps, the distance to WebP logged, config overrides."""
    cmd = [sys.executable, 'train.py', ae_config, pc_config, '-dtrain', train_glob, '-dtest', heldout_glob,
           '-o', out_root, '-ltest', '500', '-lsave', '500', '-dcodec', HELDOUT_NAME,
           '--other_codecs_root', codecs_root(out_root, heldout_glob)]
    for o in ae_overrides:
        cmd += ['-co', o]
    for o in pc_overrides:
        cmd += ['-pco', o]
    return cmd


def train_phase(log_path, cmd, hours, restore=None, label=None, restore_skip=''):
    """Runs the train.py command `cmd` (a list, without --restore and --max_cpu_hours) for `hours` CPU hours,
    starting from the log dir `restore` (or from scratch; restore_skip: train.py's --restore_skip_vars, the
    variables that are initialized instead, e.g. where the shapes differ), unless the phase log says it is
    done; continues an interrupted phase. Returns the phase's log dir."""
    dirs = log_dirs_in(log_path)
    label = label or os.path.basename(log_path)
    if dirs and phase_done(log_path, hours):
        return dirs[-1]
    cmd = list(cmd)
    if dirs and model_files.all_ckpt_steps(model_files.ckpt_dir_of(dirs[-1])):
        used = used_cpu_hours(open(log_path).read())
        print('{}: interrupted after {:.2f} of {:.2f} CPU hours; continuing'.format(label, used, hours), flush=True)
        cmd += ['--restore', dirs[-1], '--restore_continue']
        hours = max(0.01, hours - used)
    elif restore:
        cmd += ['--restore', restore] + (['--restore_skip_vars', restore_skip] if restore_skip else [])
    run(cmd + ['--max_cpu_hours', str(hours)], log_path)
    return log_dirs_in(log_path)[-1]


def evaluate(log_dir, out_root, heldout_glob, log_path, ckpt_step=-1):
    """Mean bpp / MS-SSIM / PSNR of a log dir's last checkpoint (ckpt_step as val.py's) on the held-out photos,
    and the MS-SSIM distance to WebP's curve there at that bpp (d_webp, None outside the curve); val.py runs
    once, its measures are reused."""
    out_dir = _measures_dir(out_root, log_dir)
    if not os.path.exists(os.path.join(out_dir, rd_curves.MEASURES_FILE)):
        _val(log_dir, out_root, heldout_glob, log_path, ckpt_step)
    return _point(os.path.join(out_dir, rd_curves.MEASURES_FILE), _webp_curve(out_root, heldout_glob))


def _val(log_dir, out_root, heldout_glob, log_path, ckpt_step):
    """val.py on the held-out photos (it skips the checkpoints it measured before)."""
    run([sys.executable, 'val.py', out_root, logdir_helpers.log_date_from_log_dir(log_dir),
         os.path.join(heldout_dir(out_root, heldout_glob), '*'), '--ckpt_step', str(ckpt_step),
         '--other_codecs_root', codecs_root(out_root, heldout_glob)], log_path)


def choose_checkpoint(log_dir, out_root, heldout_glob, log_path):
    """The checkpoint of log_dir furthest above WebP in MS-SSIM on the held-out photos at its own mean bpp:
    val.py measures every checkpoint once (--ckpt_step 1). Returns (step, point) with point as evaluate's;
    checkpoints whose bpp lies outside WebP's curve are not chosen."""
    out_dir = _measures_dir(out_root, log_dir)
    steps = model_files.all_ckpt_steps(model_files.ckpt_dir_of(log_dir))
    latest = max(steps)
    files = [rd_curves.MEASURES_FILE if s == latest else rd_curves.older_measures_file(s) for s in steps]
    if not all(os.path.exists(os.path.join(out_dir, f)) for f in files):
        _val(log_dir, out_root, heldout_glob, log_path, ckpt_step=1)
    webp = _webp_curve(out_root, heldout_glob)
    best = None
    for name in sorted(os.listdir(out_dir)):
        m = re.fullmatch(r'measures(?:-(\d+))?\.csv', name)
        if not m:
            continue
        point = _point(os.path.join(out_dir, name), webp)
        step = int(m.group(1)) if m.group(1) else latest
        if point['d_webp'] is not None and (best is None or point['d_webp'] > best[1]['d_webp']):
            best = (step, point)
    if best is None:
        raise ValueError('no checkpoint of {} has a mean bpp within WebP\'s curve on the held-out photos'.format(
            log_dir))
    return best


def _measures_dir(out_root, log_dir):
    return rd_curves.measures_dir(out_root, logdir_helpers.log_date_from_log_dir(log_dir), HELDOUT_NAME)


def _webp_curve(out_root, heldout_glob):
    return rd_curves.CodecDistance.from_codec_dir(
        rd_curves.codec_dir(codecs_root(out_root, heldout_glob), 'webp', HELDOUT_NAME), 'ms-ssim')


def _point(measures_path, webp):
    measures = rd_curves.Measures(measures_path)
    point = {k: measures.mean(k) for k in ('bpp', 'ms-ssim', 'psnr')}
    point['d_webp'] = webp.distance(point['bpp'], point['ms-ssim'])
    return point


def snapshot(log_dir, step, root, out_root):
    """A copy of log_dir with its configs and only checkpoint `step`, in root, next to links to out_root's held-out
    photos and codec curves, for evaluate(copy, root, ...): a run that is still training deletes old checkpoints
    while val.py reads one. Returns the copy's log dir (reused if it exists)."""
    copy = os.path.join(root, os.path.basename(log_dir))
    if os.path.isdir(model_files.ckpt_dir_of(copy)):
        return copy
    src_ckpts = model_files.ckpt_dir_of(log_dir)
    names = model_files.ckpt_file_names(src_ckpts, step)
    if not any(n.endswith('.index') for n in names):
        raise ValueError('no checkpoint {} in {}'.format(step, src_ckpts))
    tmp = copy + '.part'  # a copy cut short (the checkpoint deleted meanwhile) is not taken for a whole one
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(model_files.ckpt_dir_of(tmp))
    for n in (model_files.AE_CONFIG_COPY, model_files.PC_CONFIG_COPY):
        shutil.copy(os.path.join(log_dir, n), tmp)
    for n in names:
        shutil.copy(os.path.join(src_ckpts, n), model_files.ckpt_dir_of(tmp))
    os.rename(tmp, copy)
    link_heldout(root, out_root)
    return copy


def link_heldout(root, out_root):
    """Links to out_root's held-out photos and codec curves in root, so that evaluate(log_dir, root, ...) measures a
    log dir kept apart from out_root's (val.py finds log dirs by job id, which a copy shares) against them."""
    for name in (HELDOUT_NAME, CODECS_DIR):
        link = os.path.join(root, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(out_root, name)), link)


def heldout_dir(out_root, heldout_glob):
    """The held-out photos as links in one folder, whose name val.py and other_codecs.py give their outputs."""
    d = os.path.join(out_root, HELDOUT_NAME)
    if not os.path.isdir(d):
        os.makedirs(d)
        for f in sorted(glob.glob(heldout_glob)):
            os.symlink(os.path.abspath(f), os.path.join(d, os.path.basename(f)))
    return d


def codecs_root(out_root, heldout_glob):
    """Where WebP's curve on the held-out photos is (measured with other_codecs.py the first time)."""
    root = os.path.join(out_root, CODECS_DIR)
    if not glob.glob(os.path.join(root, 'webp_' + HELDOUT_NAME, '*_out.csv')):
        run([sys.executable, 'other_codecs.py', heldout_dir(out_root, heldout_glob), '--codecs', 'webp',
             '--out', root, '--dataset', HELDOUT_NAME], os.path.join(out_root, 'other_codecs.log'))
    return root


def lock(out_root, name, wait=False):
    """An exclusive lock on `name` (several recipe processes may run at once), or None if another process
    holds it (wait: until it lets go). Held until the process ends or the returned file is closed."""
    f = open(os.path.join(out_root, name + '.lock'), 'w')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        f.close()
        return None
    return f
