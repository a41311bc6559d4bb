"""The decoder's compiled kernel (fixed_point_kernel): the same tables as arithmetic_coding, a fallback to
numpy where it cannot be built. Its layer step is compared with numpy's in tests/test_fixed_point_pc.py."""
import numpy as np
import pytest

import arithmetic_coding
import fixed_point_kernel


@pytest.fixture
def kernel():
    k = fixed_point_kernel.load()
    if k is None:
        pytest.skip('no compiled kernel here: {}'.format(fixed_point_kernel.last_error()))
    return k


@pytest.mark.parametrize('frac_bits', [0, 3, 8, 9, 13, 14, 22])
@pytest.mark.parametrize('L', [1, 2, 6, 7])
def test_tables_equal_freqs_from_int_logits(kernel, frac_bits, L):
    """Random logits from tiny to huge differences, ties (equal logits, equal remainders) and constant rows."""
    rng = np.random.RandomState(frac_bits * 10 + L)
    rows = []
    for scale in (1, 7, 2 ** frac_bits, 2 ** (frac_bits + 5), 2 ** 30):
        rows.append(rng.randint(-scale, scale + 1, (300, L)))
    rows.append(rng.randint(-3, 4, (300, L)) * (2 ** max(frac_bits - 8, 0)))  # many ties on the 1/256 grid
    rows.append(np.full((5, L), 12345))
    logits = np.concatenate(rows).astype(np.int64)
    np.testing.assert_array_equal(kernel.freqs(logits, frac_bits),
                                  arithmetic_coding.freqs_from_int_logits(logits, frac_bits))


def test_tables_refuse_what_the_fast_path_does_not_cover(kernel):
    with pytest.raises(ValueError, match='L <= 7'):
        kernel.freqs(np.zeros((2, 8), np.int64), 8)
    with pytest.raises(ValueError, match='frac_bits <= 22'):
        kernel.freqs(np.zeros((2, 6), np.int64), 23)


def test_kernel_falls_back_to_numpy_without_a_compiler(monkeypatch, tmp_path):
    """No usable compiler and nothing cached: load() gives None with the reason (decoders then use numpy,
    tests/test_fixed_point_pc.py decodes that way)."""
    monkeypatch.setattr(fixed_point_kernel, '_STATE', {})
    monkeypatch.setenv('HOME', str(tmp_path))  # an empty cache
    monkeypatch.setattr(fixed_point_kernel.tempfile, 'gettempdir', lambda: str(tmp_path))
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-cc'))
    assert fixed_point_kernel.load() is None
    assert 'no-such-cc' in fixed_point_kernel.last_error()
    monkeypatch.setattr(fixed_point_kernel, '_STATE', {})
    monkeypatch.setenv('CPM_KERNEL', '0')
    assert fixed_point_kernel.load() is None and 'CPM_KERNEL=0' in fixed_point_kernel.last_error()
