"""The multi-user endpoint: a manager that runs one child endpoint per (user, config).

The broker routes a task sent to the manager to the child ``child_endpoint_id(manager, user,
config)`` and sends the manager a `start-child` message on its control queue. The manager maps
the user to a local account, validates the config against the site's schema, and starts the
child (`child`, beside this module) as that account with a bootstrap on stdin. It reports
children that cannot run (`child-failed`: the broker fails their tasks with the reason), restarts
crashed children, starts idle-stopped ones again on their next task, bounds how many run, and
stops them all when it stops. Its state is in children.json, for `fnrelay-endpoint status`.

One thread owns the AMQP connection and all children's bookkeeping; a small reader thread per
child only collects the child's stdout lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from fnrelay import backoff, logformat, wire
from fnrelay.amqp import dead_letter, parameter_list, process_events
from fnrelay.config import ENV_LOCAL_STACK
from fnrelay.errors import FnRelayError
from fnrelay.wire import ChildFailed, StartChild
from fnrelay_endpoint import daemon, registration
from fnrelay_endpoint.broker_api import BrokerAPI
from fnrelay_endpoint.config.model import EndpointPaths, ManagerConfig
from fnrelay_endpoint.multiuser import identity, usertemplate
from fnrelay_endpoint.startlog import StartLog

log = logging.getLogger(__name__)

STATE_FILE = "children.json"
CHILD_LOGS = "children"
#: How a child starts. Not `-m fnrelay_endpoint.multiuser.child`: multiprocessing runs a main
#: module again by name in every local worker, and runpy, finding it preloaded by the
#: forkserver, wrote a RuntimeWarning into the child's log for each; a `-c` main has no name.
CHILD_MAIN = "import sys; from fnrelay_endpoint.multiuser.child import main; sys.exit(main())"
#: Crashes within RESTART_WINDOW seconds after which a child is given up (and its tasks fail).
MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
STOP_GRACE = 30.0
#: Environment variables a child inherits from the manager (all else is set explicitly).
INHERITED_ENV = ("LANG", "LC_ALL", "TZ", ENV_LOCAL_STACK, logformat.ENV_LOG_FORMAT,
                 daemon.ENV_LOG_LEVEL)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(wire.canonical_config(config).encode()).hexdigest()[:12]


@dataclass
class Child:
    """What the manager knows about one child endpoint."""

    child_id: str
    user: str
    user_id: str
    config: dict[str, Any]
    account: str = ""
    #: The latest start request's `user_runtime`: the next start renders it.
    runtime: dict[str, Any] = field(default_factory=dict, repr=False)
    state: str = "new"  # waiting | starting | running | idle | crashed | failed | stopped
    started: float | None = None
    last_task: float | None = None
    pid: int | None = None
    error: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    crashes: list[float] = field(default_factory=list, repr=False)
    last_request: float = 0.0  # monotonic

    def row(self) -> dict[str, Any]:
        return {"child_id": self.child_id, "user": self.user, "account": self.account,
                "config_hash": config_hash(self.config), "state": self.state,
                "started": self.started, "last_task": self.last_task, "pid": self.pid,
                "error": self.error}


class Manager:
    """Runs the manager until stop()."""

    def __init__(self, paths: EndpointPaths, config: ManagerConfig, token: str):
        self.paths, self.config, self.token = paths, config, token
        self.name = paths.name
        self.endpoint_id = paths.endpoint_id()
        self.children: dict[str, Child] = {}
        self._stop = threading.Event()
        self._api = BrokerAPI(config.broker_url, token)
        self._ch: Any = None
        self._reg: dict[str, Any] = {}
        self._user_id: str | None = None
        self._next_heartbeat = 0.0
        self._dirty = True
        (paths.dir / CHILD_LOGS).mkdir(mode=0o700, exist_ok=True)

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Any = None) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                self._reg = self.register()
                try:
                    self._session(on_ready)
                    on_ready, attempt = None, 0
                except (pika.exceptions.AMQPError, OSError) as e:
                    delay = backoff.delay(attempt)
                    attempt += 1
                    log.warning("AMQP connection lost (%s); reconnecting in %.1f s",
                                e or type(e).__name__, delay)
                    self._stop.wait(delay)
        finally:
            self.stop_children()
            self.write_state()

    def register(self) -> dict[str, Any]:
        """PUT /v1/endpoints/{id} with metadata multi_user: true."""
        reg = self._api.update_endpoint(
            self.endpoint_id, self.config.display_name or self.name,
            {"multi_user": True, "hostname": socket.gethostname()})
        log.info("registered multi-user endpoint %s (%s)", self.name, self.endpoint_id)
        return reg

    def _session(self, on_ready: Any) -> None:
        params = parameter_list(self._reg["amqp_url"])
        conn = pika.BlockingConnection(params)
        try:
            self._user_id = getattr(params[0].credentials, "username", None)
            ch = conn.channel()
            ch.confirm_delivery()
            queue = self._reg["control_queue"]  # a name only the broker knows how to make
            ch.queue_declare(queue, passive=True)  # the broker declares it at registration
            ch.basic_qos(prefetch_count=64)
            ch.basic_consume(queue, self._on_message)
            self._ch = ch
            self._heartbeat("online")
            if on_ready:
                on_ready()
            while not self._stop.is_set():
                process_events(conn, 0.5)
                self.tick()
            self.stop_children()
            self._heartbeat("stopping")
        finally:
            self._ch = None
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    # --- AMQP in and out ---------------------------------------------------------------------
    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        broker_user = self._reg.get("broker_user")
        if broker_user and props.user_id != broker_user:
            # RabbitMQ validates user_id: only the broker's own account can send this.
            log.error("dropping a %r control message from RabbitMQ user %r (only the broker, "
                      "%r, may send control messages)", props.type, props.user_id, broker_user)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        try:
            if props.type != wire.MSG_START_CHILD:
                raise ValueError(f"unknown control message type {props.type!r}")
            msg = wire.decode_start_child(body)
        except ValueError as e:  # wire.WireError, or an unknown type
            log.error("dead-lettering malformed control message: %s", e)
            dead_letter(channel, method, props, body, f"malformed control message: {e}")
            return
        self.request(msg)
        channel.basic_ack(method.delivery_tag)

    def _publish(self, kind: str, body: bytes) -> None:
        if self._ch is None:
            return
        self._ch.basic_publish(
            wire.RESULTS_EXCHANGE, self.endpoint_id, body,
            pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2,
                                 type=kind, user_id=self._user_id))

    def _heartbeat(self, state: str) -> None:
        running = sum(1 for c in self.children.values() if c.state in ("starting", "running"))
        info = {"state": state, "multi_user": True, "children": running}
        self._publish(wire.MSG_HEARTBEAT, wire.encode_heartbeat(
            wire.Heartbeat(endpoint_id=self.endpoint_id, info=info)))
        period = float(self.config.heartbeat_period or self._reg.get("heartbeat_period") or 10)
        self._next_heartbeat = time.monotonic() + period

    def fail(self, child: Child, error: str) -> None:
        """Mark the child failed and have the broker fail its unfinished tasks."""
        log.warning("child %s of %s: %s", child.child_id, child.user, error)
        child.state, child.error, self._dirty = "failed", error, True
        self._publish(wire.MSG_CHILD_FAILED,
                      wire.encode_child_failed(ChildFailed(child.child_id, error)))

    # --- children ----------------------------------------------------------------------------
    def request(self, msg: StartChild) -> None:
        """A task arrived for this child: start it unless it runs."""
        child = self.children.get(msg.child_id)
        if child is None:
            child = Child(msg.child_id, msg.username, msg.user_id, msg.user_endpoint_config)
            self.children[msg.child_id] = child
        child.runtime = msg.user_runtime
        child.last_task, child.last_request, self._dirty = wire.now(), time.monotonic(), True
        if child.proc is not None or child.state == "waiting":
            return  # running, starting, or exiting (then _exited restarts it)
        self.try_start(child)

    def try_start(self, child: Child) -> None:
        try:
            account = identity.resolve(self.mapping(), child.user, self.config.min_uid,
                                       user_id=child.user_id)
            usertemplate.validate(child.config, self.schema())
            template = (self.paths.dir / usertemplate.TEMPLATE_FILE).read_text()
            usertemplate.load_user_environment(self.paths.dir / usertemplate.USER_ENV_FILE)
        except (FnRelayError, OSError) as e:
            self.fail(child, str(e))
            return
        child.account = account.name
        running = sum(1 for c in self.children.values() if c.state in ("starting", "running"))
        if running >= self.config.max_children:
            child.state, self._dirty = "waiting", True
            return
        self.spawn(child, account, template)

    def mapping(self) -> identity.IdentityMapping:
        path = self.paths.dir / self.config.identity_mapping
        return identity.IdentityMapping.load(path, self.endpoint_id)

    def schema(self) -> dict[str, Any]:
        return usertemplate.load_schema(self.paths.dir / usertemplate.SCHEMA_FILE)

    def bootstrap(self, child: Child, account: identity.LocalAccount, template: str
                  ) -> dict[str, Any]:
        name = f"{self.name[:50]}-{child.child_id[:8]}"
        return {
            "child_id": child.child_id, "name": name,
            "account": {"name": account.name, "uid": account.uid, "home": account.home},
            "user_endpoint_config": child.config, "template": template, "schema": self.schema(),
            "context": {"user": child.user, "local_user": account.name, "home": account.home,
                        "endpoint_name": self.name, "manager_id": self.endpoint_id,
                        "child_id": child.child_id},
            "broker_url": self.config.broker_url, "amqp_url": self._reg["amqp_url"],
            "heartbeat_period": self.config.heartbeat_period
            or self._reg.get("heartbeat_period"),
            "idle_timeout": self.config.idle_timeout,
            "gc": usertemplate.gc_variables(self.config.template_context(), account.name,
                                            child.user_id, child.runtime),
            "template_dialect": self.config.template_dialect,
            "site_environment": usertemplate.load_user_environment(
                self.paths.dir / usertemplate.USER_ENV_FILE),
        }

    def child_credentials(self, child: Child) -> dict[str, Any]:
        """The child's own RabbitMQ account (a new password per start) and task queue, from
        the broker."""
        answer = self._api.child_credentials(self.endpoint_id, child.child_id)
        return {"amqp_url": str(answer["amqp_url"]), "task_queue": str(answer["task_queue"])}

    def spawn(self, child: Child, account: identity.LocalAccount, template: str) -> None:
        """Start the child process as `account`, its bootstrap (and secrets) on stdin."""
        boot = self.bootstrap(child, account, template)
        try:
            boot.update(self.child_credentials(child))
        except FnRelayError as e:
            self.fail(child, str(e))
            return
        env = {"HOME": account.home, "USER": account.name, "LOGNAME": account.name,
               "PATH": "/usr/local/bin:/usr/bin:/bin",
               **{k: os.environ[k] for k in INHERITED_ENV if k in os.environ}}
        drop: dict[str, Any] = {}
        if os.geteuid() == 0:  # setgid, setgroups (initgroups), setuid between fork and exec
            drop = {"user": account.uid, "group": account.gid,
                    "extra_groups": list(account.groups)}
        cwd = account.home if os.path.isdir(account.home) else "/"
        logfile = (self.paths.dir / CHILD_LOGS / f"{child.child_id}.log").open("ab")
        try:
            proc = subprocess.Popen(
                [self.config.child_python or sys.executable, "-c", CHILD_MAIN],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logfile, env=env,
                cwd=cwd, start_new_session=True, close_fds=True, **drop)
        except OSError as e:
            self.fail(child, f"cannot start a child endpoint as {account.name!r}: {e}")
            return
        finally:
            logfile.close()
        child.proc, child.pid, child.messages = proc, proc.pid, []
        child.state, child.started, child.error, self._dirty = "starting", wire.now(), "", True
        threading.Thread(target=self._read, args=(child, proc), daemon=True,
                         name=f"child-{child.child_id[:8]}").start()
        try:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(boot) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once; tick() sees the exit
        log.info("started child %s for %s as %s (pid %d)", child.child_id, child.user,
                 account.name, proc.pid)

    @staticmethod
    def _read(child: Child, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                child.messages.append(json.loads(line))
            except ValueError:
                continue

    def tick(self) -> None:
        """Notice ready, failed and exited children; start waiting ones; heartbeat; save."""
        for child in list(self.children.values()):
            while child.messages:
                msg = child.messages.pop(0)
                if msg.get("ready") and child.state == "starting":
                    child.state, self._dirty = "running", True
                elif msg.get("error"):
                    child.error = str(msg["error"])
                elif msg.get("stopped") == "idle":
                    child.state = "idle"
            if child.proc is not None and child.proc.poll() is not None:
                self._exited(child)
        for child in self.children.values():
            if child.state == "waiting" and self._running() < self.config.max_children:
                child.state = "new"
                self.try_start(child)
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat("online")
        if self._dirty:
            self.write_state()

    def _running(self) -> int:
        return sum(1 for c in self.children.values() if c.state in ("starting", "running"))

    def _exited(self, child: Child) -> None:
        proc, self._dirty = child.proc, True
        assert proc is not None
        code = proc.returncode
        if proc.stdout is not None:
            proc.stdout.close()
        child.proc, child.pid = None, None
        if child.error:
            self.fail(child, child.error)
        elif child.state == "idle" and code == 0:
            log.info("child %s of %s stopped after idling", child.child_id, child.user)
            if time.monotonic() - child.last_request < self.config.idle_timeout:
                self.try_start(child)  # a task may have arrived while it was stopping
        elif self._stop.is_set():
            child.state = "stopped"
        else:
            now = time.monotonic()
            child.crashes = [t for t in child.crashes if now - t < RESTART_WINDOW] + [now]
            log.warning("child %s of %s exited with status %s; restarting", child.child_id,
                        child.user, code)
            if len(child.crashes) > MAX_RESTARTS:
                self.fail(child, f"the child endpoint crashed {len(child.crashes)} times in "
                                 f"{RESTART_WINDOW:.0f} s (last exit status {code})")
            else:
                child.state = "crashed"
                self.try_start(child)

    def stop_children(self) -> None:
        """SIGTERM every child, wait for them, SIGKILL the stubborn."""
        live = [(c, c.proc) for c in self.children.values() if c.proc is not None]
        for _, proc in live:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for c, proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            c.proc, c.pid, c.state = None, None, "stopped"
        self._dirty = True

    def write_state(self) -> None:
        data = {"endpoint_id": self.endpoint_id, "updated": wire.now(),
                "children": [c.row() for c in self.children.values()]}
        tmp = self.paths.dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.paths.dir / STATE_FILE)
        self._dirty = False


def read_state(paths: EndpointPaths) -> list[dict[str, Any]]:
    """The children rows the manager saved last (empty if it never ran)."""
    try:
        return json.loads((paths.dir / STATE_FILE).read_text()).get("children") or []
    except (OSError, ValueError):
        return []


# --- running it ------------------------------------------------------------------------
def run_foreground(name: str) -> None:
    paths = EndpointPaths.of(name).require()
    config = ManagerConfig.load(paths.config)
    token = config.resolved_token()
    registration.ensure_id(paths, config.broker_url, token, config.display_name or name,
                           {"multi_user": True})
    identity.IdentityMapping.load(paths.dir / config.identity_mapping)  # errors show now
    usertemplate.load_schema(paths.dir / usertemplate.SCHEMA_FILE)
    other = daemon.running_pid(paths)
    if other and other != os.getpid():
        raise FnRelayError(f"endpoint {name!r} is already running (pid {other})")
    daemon._setup_logging(paths.log)
    paths.ready.unlink(missing_ok=True)
    paths.pid.write_text(f"{os.getpid()}\n")
    manager = Manager(paths, config, token)
    logformat.for_process(endpoint_id=manager.endpoint_id)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: manager.stop())
    log.info("starting multi-user endpoint %s (%s), pid %d", name, manager.endpoint_id,
             os.getpid())
    try:
        manager.run(on_ready=paths.ready.touch)
    finally:
        paths.ready.unlink(missing_ok=True)
        if daemon.running_pid(paths) == os.getpid():
            paths.pid.unlink(missing_ok=True)


def start_background(name: str, timeout: float = daemon.START_TIMEOUT,
                     report: Callable[[str], None] | None = None) -> int:
    """Start the manager detached; returns its pid once it consumes its control queue.
    Meanwhile `report` gets this start's warnings and errors as the manager logs them;
    without it, the error holds this start's log lines."""
    paths = EndpointPaths.of(name).require()
    ManagerConfig.load(paths.config).resolved_token()
    pid = daemon.running_pid(paths)
    if pid:
        raise FnRelayError(f"endpoint {name!r} is already running (pid {pid})")
    paths.ready.unlink(missing_ok=True)
    started = StartLog(paths.log, report)
    with paths.log.open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fnrelay_endpoint", "start", name, "--foreground"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            cwd=paths.dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started.relay()
        if paths.ready.exists():
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
    raise daemon.StartError(started.failed(name))


#: The id shown for a child, and for a manager the broker has not given one yet, in a render.
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"


def _manager_id_or_placeholder(paths: EndpointPaths) -> str:
    """Rendering needs no broker: a manager configured but never started has no id yet."""
    return paths.endpoint_id() if paths.identity.exists() else PLACEHOLDER_ID


def render_for(name: str, user_config: Any, user: str | None) -> str:
    """What a child of manager NAME would get for `user_config` (admins debug templates)."""
    paths = EndpointPaths.of(name).require()
    config = ManagerConfig.load(paths.config)
    username = user or identity.LocalAccount.current().name
    try:
        account = identity.resolve(identity.IdentityMapping.load(
            paths.dir / config.identity_mapping), username, config.min_uid)
    except identity.IdentityError as e:
        if user is not None:
            raise
        log.debug("rendering as the current account: %s", e)
        account = identity.LocalAccount.current()
    context = {"user": username, "local_user": account.name, "home": account.home,
               "endpoint_name": name, "manager_id": _manager_id_or_placeholder(paths),
               "child_id": PLACEHOLDER_ID}
    text, *_ = usertemplate.render(
        (paths.dir / usertemplate.TEMPLATE_FILE).read_text(),
        usertemplate.load_schema(paths.dir / usertemplate.SCHEMA_FILE), user_config, context,
        config.broker_url,
        usertemplate.gc_variables(config.template_context(), account.name, PLACEHOLDER_ID),
        config.template_dialect)
    return text
