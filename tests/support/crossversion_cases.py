"""Run as a script by another CPython (tests/integration/test_python_versions.py): submit
every kind of function the issue names to an endpoint on 3.11 and print one JSON object of
outcomes. Everything here is defined in ``__main__``, as in a user's script, so it travels by
value. Argument: the endpoint id; FNRELAY_BROKER_URL and FNRELAY_TOKEN name the broker."""

import functools
import json
import sys
import warnings

from fnrelay import Client, Executor, errors

SCALE = 3
WAIT = 120


def helper(x):
    return x * SCALE


def plain(x, y=2):
    return helper(x) + y


def make_adder(n):
    def add(x):
        return x + n
    return add


def shout(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return ("shouted", f(*args, **kwargs))
    return wrapper


@shout
def decorated(x):
    """Adds one."""
    return x + 1


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm(self):
        return abs(self.x) + abs(self.y)

    def scaled(self, k):
        return Point(self.x * k, self.y * k)


def uses_class(x):
    return Point(x, -x).scaled(2)


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


class Refused(Exception):
    pass


def raises(x):
    raise Refused(f"no {x}")


def where():
    return ".".join(map(str, sys.version_info[:2]))


double, triple = (lambda v: v * 2), (lambda v: v * 3)  # two lambdas on one line


def _outcome(call):
    try:
        return {"value": repr(call())}
    except Exception as e:  # noqa: BLE001 - every outcome is reported
        return {"error": type(e).__name__, "bases": [c.__name__ for c in type(e).__mro__],
                "message": str(e)}


def _notebook_function():
    """A function defined in an IPython cell (IPython keeps its source in linecache)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("K = 7\ndef nb_f(x):\n    return x * K\n")
    return shell.user_ns["nb_f"]


def _without_source():
    """A function whose source exists nowhere: exec() of a string."""
    namespace = {}
    exec("def nosrc(x):\n    return x + 1\n", namespace)  # noqa: S102 - the point of it
    return namespace["nosrc"]


def main(endpoint_id):
    client = Client()
    out = {"python": where()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Executor(endpoint_id=endpoint_id, client=client) as ex:
            calls = {
                "where": (where,), "plain": (plain, 4), "closure": (make_adder(5), 1),
                "lambda": (triple, 7), "decorated": (decorated, 1),
                "bound_method": (Point(3, -4).norm,), "main_class": (uses_class, 2),
                "recursion": (fact, 5), "remote_exception": (raises, "way"),
                "no_source": (_without_source(), 1),
            }
            if "--notebook" in sys.argv:
                calls["notebook"] = (_notebook_function(), 6)
            futures = {k: ex.submit(*v) for k, v in calls.items()}
            for k, f in futures.items():
                out[k] = _outcome(lambda f=f: f.result(timeout=WAIT))
        function_id = client.register_function(double)
        task_id = client.run(21, endpoint_id=endpoint_id, function_id=function_id)
        out["client_run"] = _outcome(lambda: _wait(client, task_id))
    out["same_class"] = _outcome(lambda: _same_class(client, endpoint_id))
    out["warnings"] = [str(w.message) for w in caught
                       if issubclass(w.category, errors.PythonVersionWarning)]
    print(json.dumps(out))


def _wait(client, task_id):
    import time

    deadline = time.monotonic() + WAIT
    while client.task_record(task_id)["pending"]:
        if time.monotonic() > deadline:
            raise TimeoutError(task_id)
        time.sleep(0.1)
    return client.get_result(task_id)


def _same_class(client, endpoint_id):
    """A result's instance of a __main__ class is an instance of this program's class."""
    with Executor(endpoint_id=endpoint_id, client=client) as ex:
        p = ex.submit(uses_class, 2).result(timeout=WAIT)
    return type(p) is Point, p.norm()


if __name__ == "__main__":
    main(sys.argv[1])
