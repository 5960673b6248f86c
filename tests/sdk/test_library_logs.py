"""pika's records from the Executor's threads are DEBUG; the user's own threads keep theirs."""

from __future__ import annotations

import logging
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
