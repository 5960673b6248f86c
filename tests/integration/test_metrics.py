"""/metrics and JSON logs (issue 23, items 2 and 3) on a real broker, RabbitMQ and endpoint.

One broker of this module's own (its own vhost; operator "ops", 1 s heartbeats, JSON logs at
debug) and one endpoint of carol's, also logging JSON. Scrapes are parsed with
prometheus_client's own parser; mallory, an ordinary user, may not scrape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from fnrelay import Client, Executor
from fnrelay.devstack.services import LocalEndpoint
from support.broker_fixtures import BrokerProcess, start_broker  # noqa: F401
from support.session import MARKER
from support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"no {x}")


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


class Stack:
    def __init__(self, broker: BrokerProcess, endpoint: LocalEndpoint, carol: str, ops: str):
        self.broker, self.endpoint, self.carol, self.ops = broker, endpoint, carol, ops

    def scrape(self, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"{self.broker.url}/metrics", headers=headers, timeout=30)

    def text(self) -> str:
        r = self.scrape(self.ops)
        assert r.status_code == 200, r.text
        return r.text

    def samples(self) -> Samples:
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(self.text()) for s in f.samples}

    def executor(self) -> Executor:
        return Executor(endpoint_id=self.endpoint.endpoint_id,
                        client=Client(self.broker.url, self.carol))


@pytest.fixture(scope="module")
def stack(start_broker, new_vhost, tmp_path_factory) -> Iterator[Stack]:  # noqa: F811
    # No shared queue-depth pass: these tests watch figures change from scrape to scrape.
    broker = start_broker(new_vhost("fnrelay-metrics"), None, "--operator", "ops",
                          "--heartbeat-period", "1", "--log-format", "json",
                          "--log-level", "debug", "--metrics-queue-cache", "0")
    ops, carol = broker.add_user("ops"), broker.add_user("carol")
    home = tmp_path_factory.mktemp("metrics-endpoint")
    with pytest.MonkeyPatch.context() as mp:  # the endpoint inherits them (LocalEndpoint.env)
        mp.setenv("FNRELAY_LOG_FORMAT", "json")
        mp.setenv("FNRELAY_LOG_LEVEL", "debug")
        ep = LocalEndpoint(home, "metrics", broker.url, carol, marker=MARKER)
        ep.configure(max_workers=2).start(foreground=True)
    try:
        yield Stack(broker, ep, carol, ops)
    finally:
        ep.stop()


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 if the scrape has none (a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def endpoint_value(samples: Samples, name: str, stack: Stack, **labels: str) -> float | None:
    """The value of an endpoint figure of the stack's endpoint; None if not exported."""
    want = {"endpoint_id": stack.endpoint.endpoint_id, "endpoint": "metrics",
            "owner": "carol", **labels}
    return samples.get((name, frozenset(want.items())))


def test_only_operators_scrape(stack, start_broker):  # noqa: F811
    mallory = stack.broker.add_user("mallory")
    assert stack.scrape().status_code == 401
    assert stack.scrape("not-a-token").status_code == 401
    for token in (mallory, stack.carol):
        r = stack.scrape(token)
        assert r.status_code == 403, r.text
        assert "operators" in r.json()["message"] and "fnrelay_" not in r.text
    r = stack.scrape(stack.ops)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")


def test_figures_change_as_tasks_run(stack):
    def unfinished(s: Samples) -> float:
        return sum(endpoint_value(s, "fnrelay_endpoint_journal_tasks", stack, state=state) or 0
                   for state in ("queued", "running"))

    before = stack.samples()
    with stack.executor() as ex:
        done = [ex.submit(square, i) for i in range(3)]
        failed = ex.submit(fail, 1)
        assert [f.result(timeout=60) for f in done] == [0, 1, 4]
        with pytest.raises(ValueError):
            failed.result(timeout=60)
        # The agent journals a result a moment after it sent it to its group: a heartbeat that
        # counts none of these unfinished first, so the one below counts the nap alone.
        wait_for(lambda: unfinished(stack.samples()) == 0, "the first tasks journaled as done")
        slow = ex.submit(nap, 4)

        def running_seen() -> Samples | None:
            s = stack.samples()
            ours = endpoint_value(s, "fnrelay_endpoint_running_tasks", stack)
            return s if ours and value(s, "fnrelay_tasks", state="running") >= 1 else None

        during = wait_for(running_seen, "a scrape showing the running task (via a heartbeat)")
        assert slow.result(timeout=60) == 4
    after = stack.samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("fnrelay_tasks_submitted_total", path="rest") == 5
    assert grew("fnrelay_task_results_total", state="success") == 4
    assert grew("fnrelay_task_results_total", state="failed") == 1
    assert grew("fnrelay_task_latency_seconds_count") == 5
    assert grew("fnrelay_task_run_seconds_count") == 5
    assert value(after, "fnrelay_task_run_seconds_bucket", le="1.0") - \
        value(before, "fnrelay_task_run_seconds_bucket", le="1.0") == 4  # the nap took 4 s
    assert grew("fnrelay_task_queue_wait_seconds_count") == 5
    # The gauges count unfinished tasks: the running one while it ran, none once done.
    assert value(during, "fnrelay_user_tasks", username="carol", state="running") >= 1
    assert value(after, "fnrelay_user_tasks", username="carol", state="running") == 0
    assert ("fnrelay_tasks", frozenset({("state", "success")})) not in after
    assert not any(k[0] == "fnrelay_user_tasks" and ("username", "ops") in k[1] for k in after)
    assert value(after, "fnrelay_outbox_messages", kind="task") == 0
    assert value(after, "fnrelay_rabbitmq_up") == 1
    assert ("fnrelay_queue_messages", frozenset({("queue", "results")})) in after
    # The endpoint's own figures, from its heartbeats.
    assert endpoint_value(after, "fnrelay_endpoint_online", stack) == 1
    assert endpoint_value(during, "fnrelay_endpoint_workers", stack, state="busy") == 1
    assert endpoint_value(during, "fnrelay_endpoint_workers", stack, state="idle") == 1
    assert (endpoint_value(after, "fnrelay_endpoint_journal_bytes", stack) or 0) > 0
    assert endpoint_value(after, "fnrelay_endpoint_reconnects_total", stack) == 0
    assert endpoint_value(after, "fnrelay_endpoint_queue_consumers", stack) == 1
    assert endpoint_value(after, "fnrelay_endpoint_queue_messages", stack) == 0
    wait_for(lambda: endpoint_value(stack.samples(), "fnrelay_endpoint_running_tasks",
                                    stack) == 0, "a heartbeat after the nap")
    assert unfinished(during) == 1  # the nap, journaled until its result
    wait_for(lambda: unfinished(stack.samples()) == 0, "the journal's figures after the nap")
    # A heartbeat sent while the nap's result awaited RabbitMQ's confirm still counts it.
    wait_for(lambda: endpoint_value(stack.samples(), "fnrelay_endpoint_unpublished_results",
                                    stack) == 0, "no unpublished results after the nap")


def test_queue_probes_per_scrape_are_bounded_and_shared(start_broker, new_vhost):  # noqa: F811
    """Tenants make endpoints; a scrape must not probe each one's queue every time. With
    --metrics-queue-probes 2, two of four endpoints are probed (never heard from: by id) and
    the rest counted; with a long --metrics-queue-cache, later scrapes reuse that pass."""
    broker = start_broker(new_vhost("fnrelay-metrics-probes"), None, "--operator", "ops",
                          "--metrics-queue-probes", "2", "--metrics-queue-cache", "3600")
    ops, api = broker.add_user("ops"), broker.api()
    eids = [api.endpoint() for _ in range(4)]

    def samples() -> Samples:
        r = requests.get(f"{broker.url}/metrics", headers={"Authorization": f"Bearer {ops}"},
                         timeout=30)
        assert r.status_code == 200, r.text
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(r.text) for s in f.samples}

    def depths(s: Samples) -> dict[str, float]:
        return {dict(k[1])["endpoint_id"]: v for k, v in s.items()
                if k[0] == "fnrelay_endpoint_queue_messages"}

    first = samples()
    assert depths(first) == {eid: 0 for eid in sorted(eids)[:2]}
    assert value(first, "fnrelay_endpoint_queues_unprobed") == 2
    assert value(first, "fnrelay_rabbitmq_up") == 1
    assert ("fnrelay_queue_messages", frozenset({("queue", "results")})) in first

    target = sorted(eids)[0]  # a task waits in its queue: no endpoint runs
    api.submit(target, api.function())
    wait_for(lambda: value(samples(), "fnrelay_outbox_messages", kind="task") == 0,
             "the task published to the endpoint's queue")
    conn = pika.BlockingConnection(pika.URLParameters(broker_amqp_url(broker)))
    try:
        queued = conn.channel().queue_declare(broker.names.endpoint(target), passive=True)
    finally:
        conn.close()
    assert queued.method.message_count == 1
    assert depths(samples())[target] == 0  # the first pass's figure: RabbitMQ not asked again


def broker_amqp_url(broker: BrokerProcess) -> str:
    """The --amqp-url a test broker was started with."""
    argv = list(broker.proc.args)  # type: ignore[arg-type]
    return str(argv[argv.index("--amqp-url") + 1])


def test_grafana_dashboard_uses_only_exported_metrics(stack):
    names = set()
    for family in text_string_to_metric_families(stack.text()):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        # A family with no sample yet still names its samples' suffixes.
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + x for x in suffixes.get(family.type, ()))
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\b(fnrelay_[a-z_]+)\b", e)}
    assert used and used <= names, sorted(used - names)
    assert all(m in used for m in ("fnrelay_tasks", "fnrelay_task_latency_seconds_bucket",
                                   "fnrelay_endpoint_running_tasks"))


def _json_lines(path: Path) -> list[dict]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines, f"{path} is empty"
    return [json.loads(ln) for ln in lines]  # every line is one JSON object


def test_json_logs_name_the_task_and_endpoint(stack):
    with stack.executor() as ex:
        future = ex.submit(square, 7)
        assert future.result(timeout=60) == 49
    task_id = future.task_id
    eid = stack.endpoint.endpoint_id
    endpoint_log = stack.endpoint.dir / "endpoint.log"

    def about_task(path: Path) -> list[dict]:
        return [r for r in _json_lines(path) if r.get("task_id") == task_id]

    broker_lines = wait_for(lambda: about_task(stack.broker.log), "broker lines of the task")
    endpoint_lines = wait_for(lambda: len(about_task(endpoint_log)) >= 2 and
                              about_task(endpoint_log), "endpoint lines of the task")
    for r in _json_lines(stack.broker.log) + _json_lines(endpoint_log):
        assert {"time", "level", "logger", "message"} <= r.keys(), r
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]), r
    assert {r["message"] for r in broker_lines} >= {
        f"task received for endpoint {eid}", "task success: result recorded"}
    assert any(r.get("endpoint_id") == eid for r in broker_lines)
    assert all(r["endpoint_id"] == eid for r in endpoint_lines)
    assert {r["message"] for r in endpoint_lines} >= {"task received (attempt 1)",
                                                      "task success"}


def test_the_scrape_config_of_the_docs_reads_the_broker(stack, tmp_path):
    """docs/metrics.md's scrape job, as Prometheus reads it: path and a token file."""
    import yaml

    from support.doc_blocks import blocks, page, scrape_request

    configs = [yaml.safe_load(b.source) for b in blocks(page("docs/metrics.md"))
               if b.lang == "yaml"]
    (job,) = [j for c in configs for j in c["scrape_configs"]]
    path, _ = scrape_request(job)
    token_file = tmp_path / "fnrelay-token"
    token_file.write_text(stack.ops + "\n")
    r = requests.get(stack.broker.url + path, timeout=30, headers={
        "Authorization": f"Bearer {token_file.read_text().strip()}"})
    assert r.status_code == 200 and "fnrelay_tasks{" in r.text
