"""Functions and classes as source text: the form every supported Python version reads.

Bytecode (what dill writes for a function by value) runs only on the minor version that
compiled it. Source does not: a function travels as the text of its ``def`` (or ``lambda``)
with the values it captures (the globals it uses, closure cells, defaults), and the receiver
compiles it with its own interpreter. Classes the function uses travel as their ``class``
statement the same way, and instances of them as the class plus their state.

`Pickler` is a dill pickler that does this for every function and class a module the
receiver cannot import defines (``__main__``, a notebook, a script's own modules); everything
else pickles as dill would, so installed modules and their objects go by reference. Source
comes from `linecache`, which also holds IPython's cells.

A decorated function is what its decorator returned: usually a wrapper closure whose cell
holds the undecorated function. Both travel as source (decorator lines stripped: the wrapper
is already applied), with the attributes `functools.wraps` set; a decorator from an installed
package is referenced by name. A bound method is its instance (by value) and its name.

Globals of one module share one namespace on the receiver, as they did in the sender, so
functions that call each other (or themselves) and ``global`` statements keep working.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import contextlib
import functools
import hashlib
import linecache
import sys
import types
from typing import Any

import dill

#: Every pickle fnrelay writes uses this protocol: Python 3.8 and later (so 3.10-3.13, every
#: version fnrelay supports) read it, whichever version wrote it.
PICKLE_PROTOCOL = 5

_ENCLOSING = "__fnrelay_enclosing__"


class SourceUnavailable(Exception):
    """A function or class whose source text cannot be found (exec of a string, a code
    object built by hand, a REPL without history)."""


# --- finding source --------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _parsed(filename: str, digest: str) -> tuple[str, ast.Module]:
    """The text of `filename` as linecache has it, parsed (keyed by its digest: a notebook
    cell re-run under the same name has new text)."""
    text = "".join(linecache.getlines(filename))
    return text, ast.parse(text)


def _tree(filename: str) -> tuple[str, ast.Module]:
    lines = linecache.getlines(filename)
    if not lines:
        raise SourceUnavailable(f"no source text for {filename!r}")
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    try:
        return _parsed(filename, digest)
    except SyntaxError as e:
        raise SourceUnavailable(f"the source of {filename!r} does not parse: {e}") from e


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None)
    return decorators[0].lineno if decorators else node.lineno  # type: ignore[attr-defined]


def _function_node(code: types.CodeType) -> tuple[str, ast.AST]:
    """The source text holding `code` and its ``def`` or ``lambda`` node."""
    text, tree = _tree(code.co_filename)
    if code.co_name == "<lambda>":
        return text, _lambda_node(code, text, tree)
    for node in ast.walk(tree):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name == code.co_name and _first_line(node) == code.co_firstlineno):
            return text, node
    raise SourceUnavailable(f"no 'def {code.co_name}' at line {code.co_firstlineno} of "
                            f"{code.co_filename!r}")


def _lambda_node(code: types.CodeType, text: str, tree: ast.Module) -> ast.Lambda:
    """The lambda of `code` among those on its line: by its parameters, then (3.11+) by the
    column its body starts at, then by what each compiles to."""
    nargs = code.co_argcount + code.co_kwonlyargcount
    nargs += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)
    params = list(code.co_varnames[:nargs])
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)
             and n.lineno == code.co_firstlineno and _lambda_params(n) == params]
    if len(found) > 1 and hasattr(code, "co_positions"):
        starts = {(line, col) for line, _, col, _ in code.co_positions() if col is not None}
        found = [n for n in found if (n.body.lineno, n.body.col_offset) in starts] or found
    if len(found) > 1:
        found = [n for n in found if _compiles_to(code, text, n)]
    if len(found) != 1:
        raise SourceUnavailable(f"cannot tell which lambda of line {code.co_firstlineno} of "
                                f"{code.co_filename!r} this is")
    return found[0]


def _compiles_to(code: types.CodeType, text: str, node: ast.Lambda) -> bool:
    segment = ast.get_source_segment(text, node) or ""
    try:
        other = _function_code(segment, node.lineno, code.co_filename, "<lambda>",
                               code.co_freevars)
    except (SyntaxError, ValueError, StopIteration):
        return False
    return _essence(other) == _essence(code)


def _check_same_code(code: types.CodeType, source: str, line: int, flags: int) -> None:
    """SourceUnavailable unless `source` compiles to `code`: a file edited after it was
    imported would otherwise send other code than the code that runs here."""
    try:
        other = _function_code(source, line, code.co_filename, code.co_name, code.co_freevars,
                               flags)
    except (SyntaxError, ValueError, StopIteration) as e:
        raise SourceUnavailable(f"the source of {code.co_name!r} does not compile: {e}") from e
    if _essence(other) != _essence(code):
        raise SourceUnavailable(f"the source of {code.co_name!r} in {code.co_filename!r} is "
                                "not the code that runs (edited since it was loaded?)")


def _essence(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(c for c in code.co_consts if not isinstance(c, types.CodeType))
    return code.co_code, code.co_names, consts


def _lambda_params(node: ast.Lambda) -> list[str]:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args]
    if a.vararg:
        names.append(a.vararg.arg)
    names += [x.arg for x in a.kwonlyargs]
    if a.kwarg:
        names.append(a.kwarg.arg)
    return names


def _segment(text: str, node: ast.AST, start: int) -> str:
    """Lines `start`..end of `node`, as written (indentation kept)."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[start - 1:node.end_lineno])  # type: ignore[attr-defined]


def function_source(fn: types.FunctionType) -> tuple[str, int]:
    """`fn`'s ``def`` without decorators (or its lambda expression), and its first line."""
    text, node = _function_node(fn.__code__)
    if isinstance(node, ast.Lambda):
        segment = ast.get_source_segment(text, node)
        if segment is None:
            raise SourceUnavailable(f"no source segment for the lambda of {fn.__qualname__}")
        return segment, node.lineno
    return _segment(text, node, node.lineno), node.lineno  # type: ignore[attr-defined]


def _class_file(cls: type) -> str:
    """Where `cls` is defined: one of its methods says (`_class_node` checks it); else its
    module's file; else (a notebook's ``__main__`` has no file) the last source linecache
    holds that defines it."""
    for code in _method_codes(cls):
        with contextlib.suppress(SourceUnavailable):
            _class_node_at(cls, code)
            return code.co_filename
    found = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if found:
        return str(found)
    needle = f"class {cls.__name__}"
    for filename, entry in reversed(list(linecache.cache.items())):
        if len(entry) == 4 and any(line.lstrip().startswith(needle) for line in entry[2]):
            return str(filename)
    return ""


def _method_codes(cls: type) -> list[types.CodeType]:
    return [f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType)]


def _class_node_at(cls: type, code: types.CodeType) -> tuple[str, ast.ClassDef]:
    """The class statement around the method `code` (SourceUnavailable for a method a
    decorator generated elsewhere, as dataclass does)."""
    text, tree = _tree(code.co_filename)
    line = code.co_firstlineno
    for n in ast.walk(tree):
        if isinstance(n, ast.ClassDef) and n.name == cls.__name__ \
                and n.lineno <= line <= (n.end_lineno or 0):
            return text, n
    raise SourceUnavailable(f"no 'class {cls.__name__}' around line {line} of "
                            f"{code.co_filename!r}")


def _class_node(cls: type) -> tuple[str, ast.ClassDef]:
    for code in _method_codes(cls):
        with contextlib.suppress(SourceUnavailable):
            return _class_node_at(cls, code)
    filename = _class_file(cls)
    text, tree = _tree(filename)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    if not nodes:
        raise SourceUnavailable(f"no 'class {cls.__name__}' in {filename!r}")
    return text, nodes[-1]  # a script that redefines a class: the last definition is live


# --- the sender ------------------------------------------------------------------------
def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _globals_of(names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    return {n: namespace[n] for n in sorted(names) if n in namespace and n != "__builtins__"}


def _class_names(node: ast.ClassDef) -> tuple[set[str], set[str]]:
    """Names the class statement reads when it runs (bases, decorators, class body, method
    defaults) and those only its methods read later (which may name the class itself)."""
    later: set[int] = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            body = n.body if isinstance(n.body, list) else [n.body]
            later.update(id(x) for stmt in body for x in ast.walk(stmt))
    now: set[str] = set()
    after: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (after if id(n) in later else now).add(n.id)
    return now, after - now


def _is_installed(module_name: str | None) -> bool:
    from fnrelay.serialize import _is_installed_module

    return _is_installed_module(module_name)


class Pickler(dill.Pickler):
    """dill, except that functions and classes of modules the receiver cannot import travel
    as source. `strict`: raise SourceUnavailable where source is missing (a caller then
    falls back to bytecode for the whole function); else such an object pickles as dill
    would."""

    def __init__(self, file: Any, strict: bool = False):
        super().__init__(file, protocol=PICKLE_PROTOCOL, recurse=True)
        self.strict = strict
        self._namespaces: dict[int, _Namespace] = {}

    def reducer_override(self, obj: Any) -> Any:
        if not self.strict and isinstance(obj, (types.FunctionType, type)) and _locate(obj):
            return NotImplemented  # data: what the sender imports by name goes by reference
        if isinstance(obj, types.FunctionType) and _is_installed(obj.__module__) \
                and not _locate(obj):
            # A closure an installed package made (contextmanager's helper, a decorator's
            # wrapper): dill would send its bytecode; its source is in the package.
            with contextlib.suppress(SourceUnavailable):
                return self._reduce_function(obj)
            return NotImplemented
        try:
            if isinstance(obj, types.FunctionType) and not _is_installed(obj.__module__):
                return self._reduce_function(obj)
            if isinstance(obj, type) and not _is_installed(obj.__module__):
                return self._reduce_class(obj)
            if isinstance(obj, types.MethodType) and isinstance(obj.__func__,
                                                                types.FunctionType):
                return getattr, (obj.__self__, obj.__func__.__name__)
        except SourceUnavailable:
            if self.strict:
                raise
        return NotImplemented

    def _namespace(self, namespace: dict[str, Any]) -> _Namespace:
        ns = self._namespaces.get(id(namespace))
        if ns is None:
            ns = self._namespaces[id(namespace)] = _Namespace(
                str(namespace.get("__name__") or "__main__"), namespace)
        return ns

    def _reduce_function(self, fn: types.FunctionType) -> Any:
        owner = _owning_class(fn)
        if owner is not None:
            return getattr, (owner, fn.__name__)
        source, line = function_source(fn)
        code = fn.__code__
        _check_same_code(code, source, line, _future_flags(fn.__globals__))
        skeleton = (source, line, code.co_filename, fn.__name__, code.co_freevars,
                    self._namespace(fn.__globals__), _future_flags(fn.__globals__))
        cells = [c.cell_contents if _filled(c) else _EMPTY for c in fn.__closure__ or ()]
        state = {"globals": _globals_of(_names_used(code), fn.__globals__),
                 "cells": dict(zip(code.co_freevars, cells, strict=True)),
                 "defaults": fn.__defaults__, "kwdefaults": fn.__kwdefaults__,
                 "dict": dict(fn.__dict__), "doc": fn.__doc__,
                 "qualname": fn.__qualname__, "module": fn.__module__}
        return _make_function, skeleton, state, None, None, _fill_function

    def _reduce_class(self, cls: type) -> Any:
        text, node = _class_node(cls)
        namespace = _class_namespace(cls)
        now, later = _class_names(node)
        skeleton = (_segment(text, node, _first_line(node)), _first_line(node),
                    _class_file(cls), cls.__name__, self._namespace(namespace),
                    _globals_of(now, namespace), cls.__module__, cls.__qualname__,
                    _future_flags(namespace))
        state = {"globals": _globals_of(later, namespace), "qualname": cls.__qualname__,
                 "namespace": self._namespace(namespace)}
        return _make_class, skeleton, state, None, None, _fill_class


def _future_flags(namespace: dict[str, Any]) -> int:
    """The compiler flag of ``from __future__ import annotations`` if the module has it:
    without it, the receiver would evaluate annotations the sender keeps as text."""
    feature = __future__.annotations
    return feature.compiler_flag if namespace.get("annotations") is feature else 0


def _locate(obj: Any) -> bool:
    """Whether `obj` is found under its module and qualified name (not ``__main__``'s,
    which is another program on the receiver), as dill decides what goes by reference."""
    return obj.__module__ != "__main__" and _lookup(obj.__module__, obj.__qualname__) is obj


def _lookup(module: str, qualname: str) -> Any:
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _owning_class(fn: types.FunctionType) -> type | None:
    """The class `fn` is a method of, if its qualified name finds it there: a method is
    compiled inside its class (``super()`` needs that), so it travels as that class's."""
    outer, _, name = fn.__qualname__.rpartition(".")
    if not outer or "<locals>" in outer:
        return None
    owner: Any = sys.modules.get(fn.__module__)
    for part in outer.split("."):
        owner = getattr(owner, part, None)
    if isinstance(owner, type) and vars(owner).get(name) is fn:
        return owner
    return None


def _class_namespace(cls: type) -> dict[str, Any]:
    for f in vars(cls).values():
        if isinstance(f, types.FunctionType):
            return f.__globals__
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None else {}


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - the only way to ask
    except ValueError:
        return False
    return True


class _Empty:
    """An empty closure cell (a variable assigned after the function was made)."""

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


class _Namespace:
    """Stands for a module's globals while pickling: one per module, so every function and
    class of that module shares one namespace on the receiver."""

    def __init__(self, name: str, namespace: dict[str, Any]):
        self.name, self.namespace = name, namespace

    def __reduce__(self) -> Any:
        return _new_namespace, (self.name,)


# --- the receiver ----------------------------------------------------------------------
def _new_namespace(name: str) -> dict[str, Any]:
    """A fresh namespace for the sender's module `name`; registered as that module when
    this process has none of that name, since code such as dataclass looks classes' modules
    up in sys.modules."""
    if name in sys.modules:
        return {"__name__": name, "__builtins__": builtins}
    module = types.ModuleType(name)
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules[name] = module
    _REGISTERED.add(name)
    return vars(module)


#: Modules `_new_namespace` registered: their classes came from a sender, maybe with other
#: globals than the task at hand, so `_make_class` never takes them for the receiver's own.
_REGISTERED: set[str] = set()


def _filename(filename: str) -> str:
    return f"<fnrelay source of {filename}>"


def _parse(source: str, line: int, filename: str, mode: str = "exec") -> ast.mod:
    """Parse a segment as written (indented when it came from inside a block) and give its
    nodes their lines in the sender's file; tracebacks show those lines (linecache)."""
    indented = source[:1] in (" ", "\t")
    text = ("if True:\n" + source) if indented else source
    tree = ast.parse(text, _filename(filename), mode)
    ast.increment_lineno(tree, line - 1 - indented)
    _remember(_filename(filename), source, line)
    return tree


def _remember(name: str, source: str, line: int) -> None:
    """Put a segment's lines at their place in linecache's copy of the sender's file, beside
    the segments of that file received before (tracebacks read every function's lines)."""
    entry = linecache.cache.get(name)
    lines = list(entry[2]) if entry is not None and len(entry) == 4 else []
    segment = source.splitlines(keepends=True)
    end = line - 1 + len(segment)
    lines += ["\n"] * (end - len(lines))
    lines[line - 1:end] = segment
    linecache.cache[name] = (sum(map(len, lines)), None, lines, name)


def _function_code(source: str, line: int, filename: str, name: str,
                   freevars: tuple[str, ...], flags: int = 0) -> types.CodeType:
    """Compile the function inside an enclosing function whose parameters are its free
    variables, so the compiler makes them closure cells as the sender's did (and nothing
    else: its own name stays global, so a recursive function finds itself)."""
    enclosing = ast.parse(f"def {_ENCLOSING}({', '.join(freevars)}):\n    pass\n").body[0]
    assert isinstance(enclosing, ast.FunctionDef)
    if source.lstrip().startswith("lambda"):
        expr = _parse("(" + source + ")", line, filename, "eval")
        assert isinstance(expr, ast.Expression)
        enclosing.body = [ast.Return(expr.body)]
        target = "<lambda>"
    else:
        tree = _parse(source, line, filename)
        node = _find_def(tree, name)
        node.decorator_list = []
        enclosing.body = [node, ast.Return(ast.Name(node.name, ast.Load()))]
        if node.name not in freevars:  # the def binds a global, as it did in the sender
            enclosing.body.insert(0, ast.Global([node.name]))
        target = node.name
    module = ast.Module(body=[enclosing], type_ignores=[])
    ast.fix_missing_locations(module)
    code = compile(module, _filename(filename), "exec", flags, dont_inherit=True)
    outer = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    return next(c for c in outer.co_consts
                if isinstance(c, types.CodeType) and c.co_name == target)


def _find_def(tree: ast.AST, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node
    raise ValueError(f"no function definition in the source of {name!r}")


def _make_function(source: str, line: int, filename: str, name: str,
                   freevars: tuple[str, ...], namespace: dict[str, Any],
                   flags: int = 0) -> types.FunctionType:
    code = _function_code(source, line, filename, name, freevars, flags)
    cells = tuple(types.CellType() for _ in code.co_freevars)
    return types.FunctionType(code, namespace, name, None, cells)


def _fill_function(fn: types.FunctionType, state: dict[str, Any]) -> None:
    fn.__globals__.update(state["globals"])
    by_name = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True))
    for var, value in state["cells"].items():
        if value is not _EMPTY and var in by_name:
            by_name[var].cell_contents = value
    fn.__defaults__, fn.__kwdefaults__ = state["defaults"], state["kwdefaults"]
    fn.__dict__.update(state["dict"])
    fn.__doc__, fn.__qualname__, fn.__module__ = state["doc"], state["qualname"], state["module"]


def _make_class(source: str, line: int, filename: str, name: str, namespace: dict[str, Any],
                needed: dict[str, Any], module: str = "", qualname: str = "",
                flags: int = 0) -> type:
    """The class the source defines; the receiver's own class of that name when its source
    is the same (a result's instance is then of the submitter's class, as in one program)."""
    mine = module and qualname and module not in _REGISTERED
    existing = _lookup(module, qualname) if mine else None
    if isinstance(existing, type):
        with contextlib.suppress(SourceUnavailable, OSError, TypeError):
            text, node = _class_node(existing)
            if _segment(text, node, _first_line(node)) == source:
                return existing
    namespace.update(needed)
    tree = _parse(source, line, filename)
    assert isinstance(tree, ast.Module)
    code = compile(tree, _filename(filename), "exec", flags, dont_inherit=True)
    exec(code, namespace)  # noqa: S102 - the task's code, as the sender ran it
    cls = namespace[name]
    assert isinstance(cls, type)
    return cls


def _fill_class(cls: type, state: dict[str, Any]) -> None:
    state["namespace"].update(state["globals"])
    cls.__qualname__ = state["qualname"]
