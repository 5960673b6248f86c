"""pika's and globus-sdk's records from the Executor's threads are DEBUG, and dropped where
DEBUG is not enabled for them; the user's own threads keep theirs."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pika  # noqa: F401 - creates pika's loggers, as the Executor's import does

from fnrelay.library_logs import reports_its_own_errors

LOGGER = "pika.adapters.blocking_connection"


def test_a_reporting_threads_pika_errors_are_debug_and_the_users_are_not(caplog):
    caplog.set_level(logging.DEBUG)

    def reporting() -> None:
        reports_its_own_errors()
        logging.getLogger(LOGGER).error("attempt failed (reporting thread)")

    thread = threading.Thread(target=reporting, name="fnrelay-test-reporter")
    thread.start()
    thread.join()
    logging.getLogger(LOGGER).error("attempt failed (user thread)")

    levels = {r.getMessage(): r.levelname for r in caplog.records if r.name == LOGGER}
    assert levels == {"attempt failed (reporting thread)": "DEBUG",
                      "attempt failed (user thread)": "ERROR"}


#: A user's program: logging at WARNING (basicConfig), an outage seen by a reporting thread
#: (as the Executor's are) and then by the user's own. Both services are a closed port.
OUTAGE_PROGRAM = r"""
import logging, socket, sys, threading

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(threadName)s")
import globus_sdk, pika
from fnrelay.library_logs import reports_its_own_errors

with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
client = globus_sdk.BaseClient(base_url=f"http://127.0.0.1:{port}/")  # creates its loggers
client.retry_config.max_retries = 0

def outage():
    try:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                          connection_attempts=1))
    except pika.exceptions.AMQPConnectionError:
        pass
    try:
        client.get("/v1/tasks")
    except globus_sdk.NetworkError:
        pass

def reporting():
    reports_its_own_errors()
    outage()

thread = threading.Thread(target=reporting, name="fnrelay-result-watcher")
thread.start()
thread.join()
outage()
"""


def test_a_warning_level_program_prints_none_of_a_reporting_threads_library_records(tmp_path):
    """basicConfig(level=WARNING) is what a user's program says; the records the Executor's
    threads demote must not reach its handler at all, under any label."""
    run = subprocess.run([sys.executable, "-c", OUTAGE_PROGRAM], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines()
             if line.split(" ")[0] in ("DEBUG", "INFO", "WARNING", "ERROR")]
    from_reporter = [line for line in lines if line.endswith(" fnrelay-result-watcher")]
    from_user = [line for line in lines if line.endswith(" MainThread")]
    assert from_reporter == []
    # The user's own calls keep theirs: pika's ERRORs and globus-sdk's WARNING.
    assert any(line.startswith("ERROR pika.") for line in from_user), run.stderr
    assert any(line.startswith("WARNING globus_sdk.transport") for line in from_user), \
        run.stderr
