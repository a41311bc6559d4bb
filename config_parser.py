"""Parser for the plain-text config files in ae_configs/ and pc_configs/.

Format, one statement per line::

    use ../base                        # only on the first line: parse ../base first, then apply this file
    # a comment                        # empty lines and lines starting with '#' are skipped
    constrain optimizer :: ADAM, SGD   # allowed values of `optimizer`; ADAM and SGD become bare names
    optimizer = ADAM                   # the string 'ADAM'
    num_chan_bn = 3*8*8                # right-hand sides are Python expressions ...
    H_target = 2*0.6                   # ... that may use keys set above and the constraint values

``use PATH`` is relative to the directory of the file containing it.  Later assignments override earlier
ones, so a child file only lists what it changes.  A constraint may be declared only once in a chain, and
every value assigned to a constrained name must be one of its allowed values.

Expressions see no builtins besides a few harmless functions (``min``, ``max``, ``abs``, ...).  This keeps
typos loud; it is not a security sandbox, so only parse config files you trust.

Any problem raises ConfigError, whose message starts with ``FILE:LINE:`` and repeats the offending line.
"""
import ast
import difflib
import keyword
import os
import re

__all__ = ['ConfigError', 'Config', 'parse', 'parse_text', 'apply_overrides']

_NAME = r'[A-Za-z_][A-Za-z0-9_]*'
# `use` must be the keyword followed by a path; `use = 3` is an assignment, not a `use` line.
_USE_RE = re.compile(r'^use\s+(?P<path>[^\s=#]\S*)\s*(?:#.*)?$')
_CONSTRAIN_RE = re.compile(r'^constrain\s+(?P<name>' + _NAME + r')\s*::(?P<values>.*)$')
_ASSIGN_RE = re.compile(r'^(?P<name>' + _NAME + r')\s*=(?!=)\s*(?P<expr>.*)$')

# Functions an expression may call.  Everything else (open, __import__, ...) is unknown on purpose.
_SAFE_BUILTINS = {f.__name__: f for f in (abs, min, max, round, int, float, bool, str, tuple, list, len, sum)}


class ConfigError(ValueError):
    """A config file, config text or override is broken.  `path` and `lineno` say where (None if unknown)."""

    def __init__(self, message, path=None, lineno=None):
        super().__init__(message)
        self.path = path
        self.lineno = lineno


class _Where:
    """Location of the statement being processed, to build error messages that point at it."""

    def __init__(self, path, lineno=None, line=None):
        self.path, self.lineno, self.line = path, lineno, line

    def error(self, message):
        if self.lineno is None:
            return ConfigError('{}: {}'.format(self.path, message), self.path)
        return ConfigError('{}:{}: {}\n    {}'.format(self.path, self.lineno, message, self.line),
                           self.path, self.lineno)


class Config:
    """Read-only set of parameters: ``config.name``, ``config.get(name, default)``, ``name in config``."""

    def __init__(self, values, constraints=None):
        object.__setattr__(self, '_values', dict(values))
        object.__setattr__(self, '_constraints', {n: tuple(v) for n, v in (constraints or {}).items()})

    def __getattr__(self, name):
        values = self.__dict__.get('_values')  # absent while copy/pickle rebuild the object
        if values is None or name.startswith('__'):
            raise AttributeError(name)
        try:
            return values[name]
        except KeyError:
            raise AttributeError('config has no parameter {!r}{}'.format(name, _suggest(name, values))) from None

    def __setattr__(self, name, value):
        raise AttributeError('Config is read-only; use apply_overrides() to derive a changed copy')

    def __contains__(self, name):
        return name in self._values

    def __eq__(self, other):
        if not isinstance(other, Config):
            return NotImplemented
        return self._values == other._values and self._constraints == other._constraints

    def __len__(self):
        return len(self._values)

    def __str__(self):
        return '\n'.join('{} = {!r}'.format(n, v) for n, v in self.items())

    def __repr__(self):
        return 'Config({!r})'.format(dict(self.items()))

    def get(self, name, default=None):
        return self._values.get(name, default)

    def items(self):
        """(name, value) pairs sorted by name."""
        return sorted(self._values.items())

    def names(self):
        return sorted(self._values)

    @property
    def constraints(self):
        """name -> tuple of allowed values."""
        return dict(self._constraints)

    def to_text(self):
        """A flat config file (no `use`) that parse_text() reads back to an equal Config."""
        lines = ['constrain {} :: {}'.format(n, ', '.join(v)) for n, v in sorted(self._constraints.items())]
        lines += ['{} = {}'.format(n, _value_to_text(n, v)) for n, v in self.items()]
        return '\n'.join(lines) + '\n'


# Keys that would be hidden behind Config's own attributes.
_RESERVED = frozenset(n for n in dir(Config) if not n.startswith('_'))


def _value_to_text(name, value):
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        same = False
    if not same:
        raise ConfigError('cannot write parameter {!r} as text: {} does not read back'.format(name, text))
    return text


def _suggest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return ' (did you mean {}?)'.format(', '.join(close)) if close else ''


class _State:
    """Parameters and constraints accumulated while walking a `use` chain from the root down."""

    def __init__(self, values=None, constraints=None):
        self.values = dict(values or {})
        self.constraints = dict(constraints or {})

    def constraint_names(self):
        """Every constraint value is a bare name that evaluates to its own string."""
        return {v: v for allowed in self.constraints.values() for v in allowed}

    def to_config(self):
        return Config(self.values, self.constraints)


# ---------------------------------------------------------------------------------------------- statements


def _apply_constrain(name, values_text, state, where):
    if name in state.constraints:
        raise where.error('constraint for {!r} is declared twice (allowed values so far: {})'.format(
            name, ', '.join(state.constraints[name])))
    allowed = tuple(v.strip() for v in values_text.split('#', 1)[0].split(','))
    for v in allowed:
        if not v.isidentifier() or keyword.iskeyword(v):
            raise where.error('constraint value {!r} of {!r} is not a plain name'.format(v, name))
        if v in state.values:
            raise where.error('constraint value {!r} clashes with the parameter of that name'.format(v))
    state.constraints[name] = allowed
    if name in state.values:  # a value set before its constraint must obey it too
        _check_constraint(name, state.values[name], state, where)


def _apply_assign(name, expr, state, where):
    _check_name(name, state, where)
    allowed = state.constraints.get(name)
    hint = ' ({!r} must be one of {})'.format(name, ', '.join(allowed)) if allowed else ''
    value = _evaluate(expr, state, where, hint)
    _check_constraint(name, value, state, where)
    state.values[name] = value


def _check_name(name, state, where):
    if keyword.iskeyword(name) or name.startswith('__') or name in _RESERVED:
        raise where.error('{!r} cannot be used as a parameter name'.format(name))
    if name in state.constraint_names():
        raise where.error('parameter {!r} clashes with the constraint value of that name'.format(name))


def _check_constraint(name, value, state, where):
    allowed = state.constraints.get(name)
    if allowed is not None and not (isinstance(value, str) and value in allowed):
        raise where.error('{!r} must be one of {}, got {!r}'.format(name, ', '.join(allowed), value))


def _evaluate(expr, state, where, hint=''):
    """Evaluate a right-hand side with the parameters set so far and the constraint values as names.

    `hint` is appended to unknown-name errors (a misspelt constraint value shows up as an unknown name).
    """
    try:
        tree = ast.parse(expr.strip(), mode='eval')
    except SyntaxError as e:
        raise where.error('invalid expression: {}'.format(e.msg)) from None
    _reject_dunders(tree, where)
    env = {'__builtins__': _SAFE_BUILTINS}
    env.update(state.constraint_names())
    env.update(state.values)
    try:
        return eval(compile(tree, str(where.path), 'eval'), env)
    except NameError as e:
        known = list(state.values) + list(state.constraint_names())
        raise where.error('unknown name {!r} in expression{}{}'.format(
            e.name, _suggest(e.name, known), hint)) from None
    except Exception as e:  # anything else the expression raises (ZeroDivisionError, TypeError, ...)
        raise where.error('cannot evaluate expression: {}: {}'.format(type(e).__name__, e)) from None


def _reject_dunders(tree, where):
    # Dunder access is the usual way out of restricted builtins; no config needs it.
    for node in ast.walk(tree):
        ident = node.attr if isinstance(node, ast.Attribute) else getattr(node, 'id', '')
        if ident.startswith('__'):
            raise where.error('{!r} is not allowed in expressions'.format(ident))


# ---------------------------------------------------------------------------------------------- files


def _read_lines(path, where):
    try:
        with open(path, encoding='utf-8') as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise where.error('config file not found: {}'.format(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise where.error('cannot read config file {}: {}'.format(path, e)) from None


def _resolve_use(path, use_path, chain, where):
    """Path of the parent file named by a `use` line, after checking it exists and closes no cycle."""
    parent = os.path.normpath(os.path.join(os.path.dirname(path), use_path))
    if not os.path.isfile(parent):
        raise where.error('parent config not found: {} (resolved to {})'.format(use_path, parent))
    real = os.path.realpath(parent)
    if real in chain:
        cycle = chain[chain.index(real):] + (real,)
        raise where.error('`use` cycle: {}'.format(' -> '.join(cycle)))
    return parent


def _parse_lines(lines, path, state, chain):
    """Apply `lines` (the text of `path`) to `state`, parents first.  Returns the path of the root config."""
    root, body_start = path, 0
    if lines:
        m = _USE_RE.match(lines[0])
        if m:
            where = _Where(path, 1, lines[0])
            parent = _resolve_use(path, m.group('path'), chain, where)
            root = _parse_file(parent, state, chain, where)
            body_start = 1
    for i in range(body_start, len(lines)):
        _apply_line(lines[i], state, _Where(path, i + 1, lines[i]))
    return root


def _parse_file(path, state, chain=(), where=None):
    lines = _read_lines(path, where or _Where(path))
    return _parse_lines(lines, path, state, chain + (os.path.realpath(path),))


def _apply_line(line, state, where):
    if not line.strip() or line.startswith('#'):
        return
    if line[0].isspace():
        raise where.error('malformed line: leading whitespace')
    m = _CONSTRAIN_RE.match(line)
    if m:
        return _apply_constrain(m.group('name'), m.group('values'), state, where)
    m = _ASSIGN_RE.match(line)
    if m:
        return _apply_assign(m.group('name'), m.group('expr'), state, where)
    if _USE_RE.match(line):
        raise where.error('`use` is only allowed on the first line')
    raise where.error('malformed line: expected `NAME = EXPRESSION` or `constrain NAME :: V1, V2, ...`')


# ---------------------------------------------------------------------------------------------- API


def parse(path):
    """Parse the config file at `path` -> (Config, rel_path).

    rel_path is `path` relative to the directory of the root config of its `use` chain, with forward
    slashes, e.g. 'ae_configs/cvpr/low' -> 'cvpr/low'.
    """
    state = _State()
    root = _parse_file(os.fspath(path), state)
    rel_path = os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(root)))
    return state.to_config(), rel_path.replace(os.sep, '/')


def parse_text(text, name='<string>'):
    """Parse config text -> Config.  `name` is used in error messages and to resolve a `use` line."""
    state = _State()
    chain = (os.path.realpath(name),) if os.path.exists(name) else ()
    _parse_lines(text.splitlines(), name, state, chain)
    return state.to_config()


def apply_overrides(config, overrides):
    """New Config with overrides like ['batch_size=8', 'optimizer=SGD'] applied in order.

    Each override is evaluated like a config line (earlier keys and constraint values are visible, the
    constraint is checked); only existing keys can be overridden.  Keys derived from an overridden key in
    the config file are not recomputed.
    """
    if isinstance(overrides, str):
        raise TypeError('overrides must be a list of strings, got the string {!r}'.format(overrides))
    state = _State(config._values, config._constraints)
    for text in overrides:
        where = _Where('override {!r}'.format(text))
        m = _ASSIGN_RE.match(str(text).strip())
        if not m:
            raise where.error('expected NAME=EXPRESSION')
        name = m.group('name')
        if name not in state.values:
            raise where.error('unknown parameter {!r}{}'.format(name, _suggest(name, state.values)))
        _apply_assign(name, m.group('expr'), state, where)
    return state.to_config()


def arch_class(config, archs, kind, root, example):
    """archs[config.arch] (a network class), or ValueError naming the known archs.

    :param kind: what the network is, for the message
    :param root: the root config of its kind (e.g. ae_configs/base), which sets no runnable arch
    :param example: a runnable config to suggest
    """
    if config.arch not in archs:
        raise ValueError('Unknown {} arch {!r} (known: {}); the root config {} is not runnable by itself, use '
                         'e.g. {}'.format(kind, config.arch, ', '.join(archs), root, example))
    return archs[config.arch]
