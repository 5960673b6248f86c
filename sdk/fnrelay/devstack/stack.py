"""The whole local stack: RabbitMQ, a broker, user `local` and endpoint `default` in one directory.

`fnrelay local up|down|status` and the test fixtures share this code, so what the tests start
is what users start. `up` records what it started in state.json step by step, so `down` stops
exactly that, and, should the file be damaged, finds the processes by their marker instead.
The directory is 0700 and its files 0600 (0710 with group rabbitmq when RabbitMQ, run by root
as that user, keeps its data inside it).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import stat
from pathlib import Path
from typing import Any

from fnrelay.config import (
    ENV_BROKER_DB,
    ENV_BROKER_URL,
    ENV_ENDPOINT_ID,
    ENV_HOME,
    ENV_TOKEN,
    LOCAL_STACK_FILE,
    local_stack_dir,
    private_mkdir,
    write_private,
)
from fnrelay.devstack.extras import require_extras
from fnrelay.devstack.processes import (
    LocalStackError,
    Log,
    comm,
    http_ok,
    marked_pids,
    quiet,
    reap_marked,
)
from fnrelay.devstack.rabbitmq import (
    RABBITMQ_USER,
    RabbitMQServer,
    is_root,
    rabbitmq_dir_for,
)
from fnrelay.devstack.rabbitmq_cluster import RabbitMQCluster, stop_nodes
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from fnrelay.processes import pid_alive


def default_dir() -> Path:
    """The stack whose home FNRELAY_HOME is, else $FNRELAY_HOME/local, else ~/.fnrelay/local."""
    return local_stack_dir()


class LocalStack:
    """RabbitMQ + broker + user `local` + endpoint `default`, all under one directory."""

    USER = "local"
    ENDPOINT = "default"

    def __init__(self, dir: Path | str | None = None, log: Log = quiet):
        self.dir = Path(dir or default_dir()).expanduser().resolve()
        self.log = log

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def state(self) -> dict[str, Any] | None:
        """The state file's contents (None if there is none); LocalStackError if it cannot be
        read or lacks what the stack wrote into it (a hand edit, a full disk)."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LocalStackError(f"cannot read {self.state_path}: {e}") from e
        problem = _state_problem(state)
        if problem:
            raise LocalStackError(f"{self.state_path} is damaged ({problem}); `fnrelay local "
                                  "down` stops what the stack started and removes it")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        write_private(private_mkdir(self.dir) / self.state_path.name, json.dumps(state, indent=2))

    def _secure_dir(self, rabbit_dir: Path) -> None:
        """The stack's directory: 0700, or 0710 with group rabbitmq when (as root) RabbitMQ,
        running as that user, keeps its data inside and must pass through. Set on every start,
        so a directory an older fnrelay left readable (0755) is closed too."""
        private_mkdir(self.dir)
        if is_root() and rabbit_dir.parent == self.dir:
            os.chown(self.dir, -1, pwd.getpwnam(RABBITMQ_USER).pw_gid)
            os.chmod(self.dir, 0o710)
        else:
            os.chmod(self.dir, 0o700)
        for entry in self.dir.iterdir():  # the broker's database and log, among others
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.chmod(entry, stat.S_IMODE(st.st_mode) & 0o700)

    def up(self, rabbitmq_nodes: int = 1) -> dict[str, Any]:
        """Start everything (or nothing, if it all runs already); returns the state.
        `rabbitmq_nodes` > 1: RabbitMQ is a cluster of that many nodes, with quorum queues."""
        require_extras()
        old = self.state()
        if old is not None:
            if (len(old.get("rabbitmq_nodes") or [None]) == rabbitmq_nodes
                    and all(c["running"] for c in self.status().values())):
                self.log(f"the local stack in {self.dir} is already up")
                if "db_url" in old.get("broker", {}):  # a state an older fnrelay wrote
                    old["exports"].setdefault(ENV_BROKER_DB, old["broker"]["db_url"])
                return old
            self.log("part of the previous local stack is down: restarting all of it")
            self.down()
        rabbit_dir = rabbitmq_dir_for(self.dir)
        self._secure_dir(rabbit_dir)
        # The exported FNRELAY_HOME is self.home: `fnrelay local` in that shell finds the
        # stack from it, not in a `local` directory under it.
        write_private(private_mkdir(self.home) / LOCAL_STACK_FILE, f"{self.dir}\n")
        marker = str(self.dir)
        state: dict[str, Any] = {"dir": str(self.dir), "marker": marker}
        try:
            rabbit = self._start_rabbitmq(rabbit_dir, old or {}, rabbitmq_nodes, state)
            broker = BrokerServer(self.dir, rabbit.amqp_url, marker=marker, log=self.log,
                                  port=(old or {}).get("broker", {}).get("port"),
                                  management_url=rabbit.management_url,
                                  extra_args=_queue_args(rabbitmq_nodes)).start()
            state["broker"] = {"url": broker.url, "port": broker.port, "pid": broker.pid,
                               "db_url": broker.db_url}
            self._save(state)
            token = broker.add_user(self.USER)
            endpoint = LocalEndpoint(self.home, self.ENDPOINT, broker.url, token,
                                     marker=marker, log=self.log)
            endpoint.configure().start()
            state["endpoint"] = {"name": self.ENDPOINT, "endpoint_id": endpoint.endpoint_id,
                                 "pid": endpoint.pid}
            # FNRELAY_BROKER_DB: `fnrelay-broker user add` in the shell that evaluated these
            # lines acts on this stack's broker, not on a database under FNRELAY_HOME.
            state["exports"] = {ENV_HOME: str(self.home), ENV_BROKER_URL: broker.url,
                                ENV_TOKEN: token, ENV_ENDPOINT_ID: endpoint.endpoint_id,
                                ENV_BROKER_DB: broker.db_url}
            self._save(state)
        except BaseException:
            self.log("start-up failed: stopping what was started")
            self.down()
            raise
        self.log(f"the local stack is up in {self.dir}")
        return state

    def _start_rabbitmq(self, rabbit_dir: Path, old: dict[str, Any], nodes: int,
                        state: dict[str, Any]) -> RabbitMQServer | RabbitMQCluster:
        """One node, or a cluster of `nodes` under the same directory; recorded in `state`."""
        marker = state["marker"]
        rabbit: RabbitMQServer | RabbitMQCluster
        if nodes > 1:
            rabbit = RabbitMQCluster(rabbit_dir, nodes, marker=marker, log=self.log,
                                     kept=old.get("rabbitmq_nodes"))
            rabbit.start()
            state["rabbitmq_nodes"] = rabbit.to_dict()
            state["rabbitmq"] = state["rabbitmq_nodes"][0]
        else:
            prev = old.get("rabbitmq", {}) if "rabbitmq_nodes" not in old else {}
            rabbit = RabbitMQServer(rabbit_dir, prev.get("amqp_port"), prev.get("dist_port"),
                                    prev.get("management_port"), marker=marker, log=self.log)
            rabbit.start()
            state["rabbitmq"] = rabbit.to_dict()
        self._save(state)
        return rabbit

    def status(self) -> dict[str, dict[str, Any]]:
        """{component: {"running": bool, ...}} for rabbitmq, broker and endpoint."""
        state = self.state() or {}
        out: dict[str, dict[str, Any]] = {}
        if "rabbitmq_nodes" in state:
            nodes = [RabbitMQServer.from_dict(n) for n in state["rabbitmq_nodes"]]
            out["rabbitmq"] = {"running": all(n.running() for n in nodes),
                               "nodes": len(nodes), "url": ",".join(
                                   f"amqp://127.0.0.1:{n.amqp_port}" for n in nodes),
                               "management_url": nodes[0].management_url}
        elif "rabbitmq" in state:
            rabbit = RabbitMQServer.from_dict(state["rabbitmq"])
            out["rabbitmq"] = {"running": rabbit.running(), "pid": rabbit.pid,
                               "url": f"amqp://127.0.0.1:{rabbit.amqp_port}",
                               "management_url": rabbit.management_url}
        else:
            out["rabbitmq"] = {"running": False}
        if "broker" in state:
            b = state["broker"]
            out["broker"] = {"running": pid_alive(b["pid"]) and http_ok(f"{b['url']}/v1/version"),
                             "pid": b["pid"], "url": b["url"]}
        else:
            out["broker"] = {"running": False}
        if "exports" in state:
            ex = state["exports"]
            ep = LocalEndpoint(ex[ENV_HOME], self.ENDPOINT, ex[ENV_BROKER_URL], ex[ENV_TOKEN])
            out["endpoint"] = {"running": ep.running() and ep.status() == "online",
                               "pid": ep.pid, "endpoint_id": ex[ENV_ENDPOINT_ID],
                               "broker_status": ep.status()}
        else:
            out["endpoint"] = {"running": False}
        return out

    def other_endpoints(self) -> dict[str, dict[str, Any]]:
        """{name: {"running": bool, ...}} for the endpoints besides `default` under the stack's
        home: a user adds them in a shell pointed at the stack, and `down` stops them too."""
        state = self.state() or {}
        ex = state.get("exports") or {}
        home = Path(ex.get(ENV_HOME, self.home))
        out: dict[str, dict[str, Any]] = {}
        for config in sorted((home / "endpoints").glob("*/config.yaml")):
            name = config.parent.name
            if name != self.ENDPOINT:
                out[name] = self._endpoint_status(LocalEndpoint(
                    home, name, ex.get(ENV_BROKER_URL, ""), ex.get(ENV_TOKEN, "")))
        return out

    @staticmethod
    def _endpoint_status(ep: LocalEndpoint) -> dict[str, Any]:
        if not ep.running():
            return {"running": False}
        broker_status = ep.status()
        return {"running": broker_status == "online", "pid": ep.pid,
                "broker_status": broker_status}

    def down(self) -> list[int]:
        """Stop all parts, newest first; returns pids that had to be killed as leftovers.
        With a damaged state file, its processes are found by their marker instead."""
        try:
            state = self.state()
        except LocalStackError as e:
            self.log(f"{e}: stopping the processes the stack marked as its own")
            state = {"marker": str(self.dir)}
        if state is None:
            self.log(f"no local stack in {self.dir}")
            return []
        self._stop_endpoints(Path((state.get("exports") or {}).get(ENV_HOME, self.home)))
        if "broker" in state:
            BrokerServer(self.dir, "", log=self.log, pid=state["broker"]["pid"]).stop()
        if state.get("rabbitmq_nodes"):
            stop_nodes([RabbitMQServer.from_dict(n, log=self.log)
                        for n in state["rabbitmq_nodes"]])
        if "rabbitmq" in state:
            RabbitMQServer.from_dict(state["rabbitmq"], log=self.log).stop()
        left = reap_marked(state.get("marker", str(self.dir)), self.log)
        remaining = [p for p in marked_pids(state.get("marker", str(self.dir)))
                     if comm(p) != "epmd"]
        if remaining:
            raise LocalStackError(f"processes still running after down: {remaining}")
        self.state_path.unlink(missing_ok=True)
        self.log(f"the local stack in {self.dir} is down")
        return left

    def _stop_endpoints(self, home: Path) -> None:
        """Stop every endpoint under the stack's home: besides `default`, those a user
        configured and started in a shell pointed at the stack (they carry no marker)."""
        for config in sorted((home / "endpoints").glob("*/config.yaml")):
            LocalEndpoint(home, config.parent.name, "", "", log=self.log).stop()


#: What each part of a state file must hold (as `up` writes it), for `_state_problem`.
_STATE_KEYS: dict[str, dict[str, type]] = {
    "rabbitmq": {"dir": str, "amqp_port": int, "dist_port": int, "management_port": int,
                 "admin_user": str, "admin_password": str},
    "broker": {"url": str, "port": int, "pid": int},
    "endpoint": {"endpoint_id": str, "pid": int},
    "exports": {ENV_HOME: str, ENV_BROKER_URL: str, ENV_TOKEN: str, ENV_ENDPOINT_ID: str},
}


def _queue_args(rabbitmq_nodes: int) -> list[str]:
    """A cluster's queues are quorum queues: a classic queue dies with its node."""
    return ["--queue-type", "quorum"] if rabbitmq_nodes > 1 else []


def _state_problem(state: Any) -> str | None:
    """What is wrong with a state file's contents, or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    if not isinstance(state.get("marker", ""), str):
        return "'marker' is not text"
    nodes = state.get("rabbitmq_nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        return "'rabbitmq_nodes' is not a list of objects"
    for part, keys in _STATE_KEYS.items():
        if part not in state:
            continue  # written step by step: a start-up that failed leaves parts out
        if not isinstance(state[part], dict):
            return f"'{part}' is not an object"
        for key, kind in keys.items():
            value = state[part].get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"'{part}' has no {kind.__name__} '{key}'"
    return None


def exports(state: dict[str, Any]) -> str:
    """Shell lines that point the SDK, CLI and fnrelay-endpoint at the stack (values quoted)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in state["exports"].items())
