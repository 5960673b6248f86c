"""Functions travel by value, so an endpoint that cannot import the caller's code runs them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fnrelay import serialize
from fnrelay.errors import SerializationError


def run_elsewhere(serialized_fn: str, args_payload: str) -> str:
    """Deserialize and call in a fresh interpreter that cannot import this test module."""
    code = textwrap.dedent(
        """
        import sys
        from fnrelay import serialize
        fn_data, args_data = sys.stdin.read().split("\\n<<SPLIT>>\\n")
        fn = serialize.deserialize(fn_data)
        args, kwargs = serialize.deserialize_args(args_data)
        print(repr(fn(*args, **kwargs)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=f"{serialized_fn}\n<<SPLIT>>\n{args_payload}",
        capture_output=True, text=True, cwd="/", check=True,
    )
    return out.stdout.strip()


SCALE = 3


def module_level(x, y=1):
    return (x + y) * SCALE


def test_function_of_an_unimportable_module_travels_by_value():
    data = serialize.serialize_function(module_level)
    assert run_elsewhere(data, serialize.serialize_args((2,), {"y": 4})) == "18"


def test_main_module_function_travels_by_value(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(
        """
        from fnrelay import serialize
        def greet(name):
            return "hello " + name
        print(serialize.serialize_function(greet))
        """
    ))
    data = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert run_elsewhere(data, serialize.serialize_args(("ada",), {})) == "'hello ada'"


def test_closure_and_lambda_round_trip():
    offset = 10

    def add(x):
        return x + offset

    assert run_elsewhere(serialize.serialize_function(add), serialize.serialize_args((5,), {})) \
        == "15"
    assert run_elsewhere(serialize.serialize_function(lambda s: s[::-1]),
                         serialize.serialize_args(("abc",), {})) == "'cba'"


def test_shell_function_travels_by_reference_and_runs():
    from fnrelay import ShellFunction

    data = serialize.serialize_function(ShellFunction("echo {word}"))
    out = run_elsewhere(data, serialize.serialize_args((), {"word": "hi"}))
    assert "returncode=0" in out and "stdout='hi\\n'" in out


def test_arguments_keep_their_types():
    value = ((1, 2.5), {"k": {3, 4}}, b"bytes")
    args, kwargs = serialize.deserialize_args(serialize.serialize_args(value, {"t": (1,)}))
    assert args == value and kwargs == {"t": (1,)}


def test_unserializable_argument_names_the_object_and_which_argument():
    gen = (i for i in range(3))
    with pytest.raises(SerializationError,
                       match=r"^cannot serialize argument 1 of type generator: .*'generator'"):
        serialize.serialize_args((1, gen), {})
    with pytest.raises(SerializationError, match=r"keyword argument 'items' of type generator"):
        serialize.serialize_args((1,), {"items": gen, "n": 2})


def test_unserializable_value_names_its_type():
    class Holder:
        def __init__(self):
            self.gen = (i for i in range(3))

    with pytest.raises(SerializationError, match="Holder"):
        serialize.serialize(Holder())


class CustomError(Exception):
    """A class only this (unimportable) test module defines."""


def helper(x):
    return x * 10


def uses_helper_and_class(x):
    if x < 0:
        raise CustomError(f"negative: {x}")
    return helper(x)


def test_helpers_and_classes_of_an_unimportable_module_travel_with_the_function():
    data = serialize.serialize_function(uses_helper_and_class)
    assert run_elsewhere(data, serialize.serialize_args((4,), {})) == "40"
    # The module's own objects are left as they were.
    assert CustomError.__module__ == helper.__module__ == __name__


def test_a_class_of_an_unimportable_module_can_be_raised_remotely():
    code = textwrap.dedent(
        """
        import sys
        from fnrelay import serialize
        fn = serialize.deserialize(sys.stdin.read())
        try:
            fn(-1)
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=serialize.serialize_function(uses_helper_and_class),
        capture_output=True, text=True, cwd="/", check=True,
    )
    assert out.stdout.strip() == "CustomError negative: -1"


PENDING = (i for i in range(3))  # a generator: dill cannot pickle it


def uses_unpicklable_global(x):
    return next(PENDING) + x


def test_unpicklable_global_is_named_at_submit_rather_than_a_remote_name_error():
    with pytest.raises(SerializationError, match=(
            r"^cannot serialize function 'uses_unpicklable_global': global 'PENDING' of type "
            r"generator cannot be serialized: .*'generator'")):
        serialize.serialize_function(uses_unpicklable_global)


def test_unpicklable_enclosing_variable_is_named():
    pending = (i for i in range(3))

    def inner(x):
        return next(pending) + x

    with pytest.raises(SerializationError,
                       match=r"variable from the enclosing scope 'pending' of type generator"):
        serialize.serialize_function(inner)


# --- source (tag 06): what every supported Python version reads ---------------------------
def _pickle_protocol(data: str) -> int:
    import base64

    raw = base64.b64decode(data.partition("\n")[2])
    assert raw[0] == 0x80  # PROTO opcode
    return raw[1]


def test_functions_by_value_travel_as_source_with_pickle_protocol_5():
    data = serialize.serialize_function(uses_helper_and_class)
    assert data.startswith(serialize.TAG_SOURCE_VALUES + "\n")
    assert _pickle_protocol(data) == serialize.PICKLE_PROTOCOL == 5
    assert _pickle_protocol(serialize.serialize((1.5, {2}))) == 5
    assert b"def uses_helper_and_class" in __import__("base64").b64decode(data[3:])


double, triple = (lambda v: v * 2), (lambda v: v * 3)  # two lambdas on one line


def test_the_right_lambda_of_a_line_travels():
    for fn, expected in ((double, "14"), (triple, "21")):
        data = serialize.serialize_function(fn)
        assert data.startswith("06\n")
        assert run_elsewhere(data, serialize.serialize_args((7,), {})) == expected


def shout(f):
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return ("shouted", f(*args, **kwargs))
    return wrapper


@shout
def decorated(x):
    """Adds one."""
    return x + 1


def test_a_decorated_function_travels_as_its_wrapper_around_the_undecorated_one():
    data = serialize.serialize_function(decorated)
    assert data.startswith("06\n")
    fn = serialize.deserialize(data)
    assert (fn.__name__, fn.__doc__, fn(1)) == ("decorated", "Adds one.", ("shouted", 2))
    assert fn.__wrapped__(1) == 2  # functools.wraps' attributes travel too
    assert run_elsewhere(data, serialize.serialize_args((1,), {})) == "('shouted', 2)"


class Base:
    def __init__(self, n):
        self.n = n

    def value(self):
        return self.n


class Child(Base):
    def value(self):
        return super().value() * 10 + is_even(self.n)


def is_even(n):
    return n == 0 or is_odd(n - 1)


def is_odd(n):
    return n != 0 and is_even(n - 1)


def test_a_bound_method_carries_its_instance_and_its_classes_as_source():
    data = serialize.serialize_function(Child(4).value)
    assert data.startswith("06\n")
    assert run_elsewhere(data, serialize.serialize_args((), {})) == "41"  # super(), recursion


def test_a_function_without_source_falls_back_to_bytecode():
    namespace: dict = {}
    exec("def nosrc(x):\n    return x + 1\n", namespace)  # noqa: S102 - no linecache entry
    data = serialize.serialize_function(namespace["nosrc"])
    assert data.startswith(serialize.TAG_DILL_CODE + "\n")
    assert _pickle_protocol(data) == 5
    assert serialize.deserialize(data)(1) == 2


def fails_on_line():
    return {}["missing"]


def test_a_remote_traceback_shows_the_senders_file_and_line():
    fn = serialize.deserialize(serialize.serialize_function(fails_on_line))
    try:
        fn()
    except KeyError:
        import traceback

        text = traceback.format_exc()
    assert f"fnrelay source of {__file__}" in text
    assert f"line {fails_on_line.__code__.co_firstlineno + 1}" in text
    assert 'return {}["missing"]' in text


class Annotated:
    def area(self, side: NotDefinedAnywhere) -> AlsoText:  # type: ignore[name-defined]  # noqa: F821
        return side * side


def test_annotations_stay_text_under_the_senders_future_import():
    data = serialize.serialize_function(Annotated().area)
    assert data.startswith("06\n")
    assert run_elsewhere(data, serialize.serialize_args((3,), {})) == "9"


def test_a_file_edited_after_import_sends_the_running_code_as_bytecode(tmp_path):
    script = tmp_path / "edited.py"
    script.write_text(textwrap.dedent(
        """
        import linecache, pathlib
        from fnrelay import serialize
        def f(x):
            return x + 1
        print(serialize.serialize_function(f)[:2])
        pathlib.Path(__file__).write_text(pathlib.Path(__file__).read_text()
                                          .replace("x + 1", "x + 2"))
        linecache.checkcache(__file__)
        data = serialize.serialize_function(f)
        print(data[:2], serialize.deserialize(data)(1))
        """
    ))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["06", "01 2"]


def _bytecode_free(data: str) -> bool:
    """No code object in the pickle (dill rebuilds one with its _create_code)."""
    import base64

    return b"_create_code" not in base64.b64decode(data.partition("\n")[2])


def _scanner():  # a closure made by an installed module (not found under its name there)
    import json.scanner

    return json.scanner.py_make_scanner(json.JSONDecoder())


SCAN = _scanner()


def uses_a_package_made_closure(x):
    return SCAN(f"[{x}, {x}]", 0)[0]


def test_functions_travel_without_any_bytecode_even_through_a_packages_closure():
    for fn in (uses_a_package_made_closure, uses_helper_and_class, decorated, triple,
               Child(4).value):
        data = serialize.serialize_function(fn)
        assert data.startswith("06\n") and _bytecode_free(data), fn
    data = serialize.serialize_function(uses_a_package_made_closure)
    assert run_elsewhere(data, serialize.serialize_args((5,), {})) == "[5, 5]"


@__import__("dataclasses").dataclass
class Pair:  # a dataclass: its __init__ and __eq__ are generated from strings
    left: int
    right: int = 0


def makes_pairs(n):
    return Pair(n, n + 1) == Pair(n, n + 1), Pair(n).right


def test_a_dataclass_travels_as_its_source():
    data = serialize.serialize_function(makes_pairs)
    assert data.startswith("06\n") and _bytecode_free(data)
    assert run_elsewhere(data, serialize.serialize_args((2,), {})) == "(True, 0)"


def test_a_worker_running_two_tasks_of_one_module_keeps_each_tasks_globals(tmp_path):
    """The receiver registers the sender's module to rebuild classes in (dataclass looks it
    up); the next task's class is rebuilt with its own globals, not taken from there."""
    (tmp_path / "scaled.py").write_text(textwrap.dedent(
        """
        SCALE = 3
        class K:
            def v(self):
                return SCALE
        def use():
            return K().v()
        """
    ))
    sender = textwrap.dedent(
        """
        import scaled
        from fnrelay import serialize
        print(serialize.serialize_function(scaled.use), end="<<END>>")
        scaled.SCALE = 4
        print(serialize.serialize_function(scaled.use), end="<<END>>")
        """
    )
    payloads = subprocess.run([sys.executable, "-c", sender], capture_output=True, text=True,
                              check=True, cwd=tmp_path).stdout
    receiver = textwrap.dedent(
        """
        import sys
        from fnrelay import serialize
        print([serialize.deserialize(p)() for p in sys.stdin.read().split("<<END>>")[:2]])
        """
    )
    out = subprocess.run([sys.executable, "-c", receiver], input=payloads, capture_output=True,
                         text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[3, 4]"
