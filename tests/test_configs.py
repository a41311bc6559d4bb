"""The shipped config files resolve to the expected values; the parser reports broken configs clearly."""
import os

import pytest

import config_parser
from config_parser import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(rel):
    return config_parser.parse(os.path.join(ROOT, rel))


AE_BASE = dict(
    num_chan_bn=192, regularization_factor=1e-2, normalization='FIXED', heatmap=True, beta=250,
    train_autoencoder=True, train_probclass=True, arch='TwoLayerNet', distortion_to_minimize='mse',
    K_psnr=100, K_ms_ssim=5000, centers_initial_range=(-2, 2), num_centers=6,
    regularization_factor_centers=0.1, H_target=None, crop_size=(128, 128), batch_size=30, lr_initial=1e-4,
    lr_centers_factor=None, optimizer='ADAM', optimizer_momentum=0.9, lr_schedule='DECAY',
    lr_schedule_decay_interval=2, lr_schedule_decay_rate=0.1, lr_schedule_decay_staircase=True,
    arch_param_B=3)

CVPR_BASE = dict(
    num_chan_bn=32, regularization_factor=0.005, normalization='FIXED', heatmap=True, beta=500,
    train_autoencoder=True, train_probclass=True, arch='CVPR', distortion_to_minimize='ms_ssim',
    K_ms_ssim=5000, K_psnr=100, centers_initial_range=(-2, 2), num_centers=6,
    regularization_factor_centers=0.1, H_target=2 * 0.6, crop_size=(160, 160), batch_size=30,
    lr_initial=8e-5, lr_centers_factor=None, optimizer='ADAM', optimizer_momentum=0.9, lr_schedule='DECAY',
    lr_schedule_decay_interval=2, lr_schedule_decay_rate=0.1, lr_schedule_decay_staircase=True,
    arch_param_B=5, arch_param_n=128)

PC_BASE = dict(
    arch='base', kernel_size=5, lr_initial=1e-4, optimizer='ADAM', optimizer_momentum=0.9, lr_schedule='DECAY',
    lr_schedule_decay_interval=2, lr_schedule_decay_rate=0.1, lr_schedule_decay_staircase=True,
    arch_param__k=24, arch_param__non_linearity='relu', arch_param__fc=64, regularization_factor=None,
    learn_pad_var=False, use_centers_for_padding=True)

AE_CONSTRAINTS = {
    'normalization': ('OFF', 'FIXED'),
    'distortion_to_minimize': ('mse', 'psnr', 'ms_ssim'),
    'optimizer': ('ADAM', 'MOMENTUM', 'SGD'),
    'lr_schedule': ('FIXED', 'DECAY'),
}
PC_CONSTRAINTS = {'optimizer': ('ADAM', 'MOMENTUM', 'SGD'), 'lr_schedule': ('FIXED', 'DECAY')}


def _with(base, **changes):
    d = dict(base)
    d.update(changes)
    return d

# The reduced CPU models: only width, depth, batch size, decay interval and the rate targets differ.
CPU_BASE = _with(CVPR_BASE, arch_param_n=48, arch_param_B=1, batch_size=8, lr_schedule_decay_interval=100)

EXPECTED = {
    'ae_configs/base': (AE_BASE, 'base'),
    'ae_configs/cvpr/base': (CVPR_BASE, 'cvpr/base'),
    'ae_configs/cvpr/low': (_with(CVPR_BASE, H_target=2 * 0.2), 'cvpr/low'),
    'ae_configs/cvpr/med': (_with(CVPR_BASE, H_target=2 * 0.6), 'cvpr/med'),
    'ae_configs/cvpr/hi': (_with(CVPR_BASE, num_chan_bn=64, H_target=1.0), 'cvpr/hi'),
    'ae_configs/cvpr/high': (_with(CVPR_BASE, num_chan_bn=64, H_target=1.0), 'cvpr/high'),
    'ae_configs/cpu/base': (CPU_BASE, 'cpu/base'),
    'ae_configs/cpu/low': (_with(CPU_BASE, H_target=2 * 0.2), 'cpu/low'),
    'ae_configs/cpu/med': (_with(CPU_BASE, H_target=2 * 0.4), 'cpu/med'),
    'ae_configs/cpu/high': (_with(CPU_BASE, H_target=2 * 0.8), 'cpu/high'),
    'pc_configs/base': (PC_BASE, 'base'),
    'pc_configs/cvpr/res_shallow': (_with(PC_BASE, arch='res_shallow', kernel_size=3), 'cvpr/res_shallow'),
    'pc_configs/cvpr/res_shallow_64': (_with(PC_BASE, arch='res_shallow', kernel_size=3, arch_param__k=64),
                                       'cvpr/res_shallow_64'),
    'pc_configs/cpu/res_shallow': (_with(PC_BASE, arch='res_shallow', kernel_size=3, lr_schedule_decay_interval=100),
                                   'cpu/res_shallow'),
}


# ---------------------------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize('rel', sorted(EXPECTED))
def test_shipped_config_values(rel):
    config, rel_path = _parse(rel)
    expected, expected_rel = EXPECTED[rel]
    assert dict(config.items()) == expected
    assert rel_path == expected_rel
    for name, value in expected.items():
        assert type(getattr(config, name)) is type(value), name  # e.g. 192 stays an int, True a bool
    assert config.constraints == (AE_CONSTRAINTS if rel.startswith('ae') else PC_CONSTRAINTS)


def test_target_bpp_of_cvpr_configs():
    bpp = {q: _parse('ae_configs/cvpr/' + q)[0] for q in ('low', 'med', 'hi')}
    assert {q: round(c.H_target * c.num_chan_bn / 64, 6) for q, c in bpp.items()} == \
        {'low': 0.2, 'med': 0.6, 'hi': 1.0}


@pytest.mark.parametrize('rel', sorted(EXPECTED))
def test_to_text_round_trip(rel):
    config, _ = _parse(rel)
    assert config_parser.parse_text(config.to_text()) == config


def test_to_text_round_trip_through_file(tmp_path):
    config, _ = _parse('ae_configs/cvpr/low')
    (tmp_path / 'saved').write_text(config.to_text())
    assert config_parser.parse(str(tmp_path / 'saved')) == (config, 'saved')


# ---------------------------------------------------------------------------------------------- Config API


def test_config_accessors():
    config, _ = _parse('pc_configs/cvpr/res_shallow')
    assert config.kernel_size == 3
    assert config.get('kernel_size') == 3
    assert config.get('nope', 'default') == 'default'
    assert 'arch' in config and 'nope' not in config
    assert [n for n, _ in config.items()] == sorted(PC_BASE)
    assert str(config).splitlines()[0] == "arch = 'res_shallow'"
    assert str(config).splitlines() == ['{} = {!r}'.format(n, v) for n, v in config.items()]
    with pytest.raises(AttributeError, match='kernel_size'):
        config.kernel_sise  # noqa: B018
    with pytest.raises(AttributeError):
        config.kernel_size = 4


def test_expressions_see_earlier_keys_and_constraint_values(tmp_path):
    f = tmp_path / 'c'
    f.write_text('constrain mode :: fast, slow\n'
                 'a = 2\n'
                 'b = a * 3  # trailing comment\n'
                 "mode = slow\n"
                 "name = 'x#y'\n"
                 'pair = (a, max(a, b))\n')
    config, rel = config_parser.parse(str(f))
    assert (config.b, config.mode, config.name, config.pair, rel) == (6, 'slow', 'x#y', (2, 6), 'c')


def test_parameter_named_use_is_an_assignment(tmp_path):
    f = tmp_path / 'c'
    f.write_text('use = 3\n')
    assert config_parser.parse(str(f))[0].use == 3


# ---------------------------------------------------------------------------------------------- overrides


def test_apply_overrides():
    config, _ = _parse('ae_configs/cvpr/base')
    new = config_parser.apply_overrides(
        config, ['batch_size=8', 'crop_size=(64, 64)', 'optimizer=SGD', 'lr_initial = lr_initial * 10'])
    assert (new.batch_size, new.crop_size, new.optimizer, new.lr_initial) == (8, (64, 64), 'SGD', 8e-4)
    assert config.batch_size == 30 and config.optimizer == 'ADAM'  # original untouched
    assert new.constraints == config.constraints


@pytest.mark.parametrize('override, match', [
    ('batch_sise=8', "batch_sise.*batch_size"),      # unknown key, close match listed
    ('optimizer=RMSPROP', "ADAM, MOMENTUM, SGD"),    # unquoted: unknown name, allowed values listed
    ("optimizer='RMSPROP'", "ADAM, MOMENTUM, SGD"),  # constraint violation
    ('batch_size=nope', "unknown name 'nope'"),
    ('batch_size 8', 'NAME=EXPRESSION'),
    ('batch_size=(', 'invalid expression'),
])
def test_apply_overrides_errors(override, match):
    config, _ = _parse('ae_configs/cvpr/base')
    with pytest.raises(ConfigError, match=match) as info:
        config_parser.apply_overrides(config, [override])
    assert repr(override) in str(info.value)


# ---------------------------------------------------------------------------------------------- errors


def _assert_error(path, lineno, *fragments, at=None):
    """parse(path) fails at line `lineno` of `at` (default: `path` itself), and the message says so."""
    with pytest.raises(ConfigError) as info:
        config_parser.parse(str(path))
    path = at or path
    message = str(info.value)
    assert '{}:{}:'.format(path, lineno) in message, message
    assert (info.value.path, info.value.lineno) == (str(path), lineno)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_constraint_violation(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('constrain optimizer :: ADAM, SGD\n\noptimizer = ADAM\noptimizer = MOMENTUM\n')
    _assert_error(f, 4, "unknown name 'MOMENTUM'", 'must be one of ADAM, SGD')
    f.write_text('constrain optimizer :: ADAM, SGD\noptimizer = 3\n')
    _assert_error(f, 2, 'ADAM, SGD', 'optimizer')


def test_constraint_violation_in_child(tmp_path):
    (tmp_path / 'base').write_text('constrain optimizer :: ADAM, SGD\nconstrain other :: MOMENTUM\n')
    child = tmp_path / 'child'
    child.write_text('use base\n# comment\noptimizer = MOMENTUM\n')
    _assert_error(child, 3, 'must be one of ADAM, SGD')


def test_malformed_line(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('a = 1\nthis is not a statement\n')
    _assert_error(f, 2, 'malformed')


def test_leading_whitespace(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('a = 1\n\n  b = 2\n')
    _assert_error(f, 3, 'leading whitespace')


def test_unknown_name_in_expression(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('num_chan = 3\nb = num_chans * 2\n')
    _assert_error(f, 2, "unknown name 'num_chans'", 'num_chan')


def test_expression_that_raises(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('a = 1 / 0\n')
    _assert_error(f, 1, 'ZeroDivisionError')


def test_builtins_are_restricted(tmp_path):
    f = tmp_path / 'broken'
    f.write_text("a = open('x')\n")
    _assert_error(f, 1, "unknown name 'open'")
    f.write_text('a = ().__class__\n')
    _assert_error(f, 1, '__class__')


def test_missing_parent(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('use ../nowhere\na = 1\n')
    _assert_error(f, 1, 'parent config not found', 'nowhere')


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        config_parser.parse(str(tmp_path / 'nope'))


def test_use_cycle(tmp_path):
    (tmp_path / 'a').write_text('use b\n')
    (tmp_path / 'b').write_text('use a\n')
    # reported at the `use` line that closes the cycle
    _assert_error(tmp_path / 'b', 1, 'cycle', '/b -> ', '/a -> ', at=tmp_path / 'a')
    (tmp_path / 'c').write_text('use c\n')
    _assert_error(tmp_path / 'c', 1, 'cycle')


def test_use_only_on_first_line(tmp_path):
    (tmp_path / 'base').write_text('a = 1\n')
    f = tmp_path / 'broken'
    f.write_text('a = 2\nuse base\n')
    _assert_error(f, 2, 'first line')


def test_duplicate_constraint(tmp_path):
    (tmp_path / 'base').write_text('constrain optimizer :: ADAM, SGD\n')
    child = tmp_path / 'child'
    child.write_text('use base\na = 1\nconstrain optimizer :: ADAM\n')
    _assert_error(child, 3, 'declared twice', 'optimizer')


def test_reserved_parameter_name(tmp_path):
    f = tmp_path / 'broken'
    f.write_text('items = 3\n')
    _assert_error(f, 1, "'items'")
