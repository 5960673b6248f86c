"""A test double of Harvester's WorkSpec (pandaharvester.harvestercore.work_spec).

It has the attributes, status constants and the set_status / set_log_file / get_access_point
behaviour the plugins rely on, without Harvester's database and config. set_log_file keeps
Harvester's rule that a log file is uploaded under "<harvesterID>__<basename>", so tests can
check that workers' log names do not collide.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any

HARVESTER_ID = "test-harvester"
PANDA_CACHE_URL = "https://pandacache.example.org/cache"

ATTRIBUTES = (
    "workerID", "batchID", "mapType", "queueName", "status", "hasJob", "workParams",
    "workAttributes", "eventsRequestParams", "eventsRequest", "computingSite", "creationTime",
    "submitTime", "startTime", "endTime", "nCore", "walltime", "accessPoint",
    "modificationTime", "lastUpdate", "eventFeedTime", "lockedBy", "postProcessed", "nodeID",
    "minRamCount", "maxDiskCount", "maxWalltime", "killTime", "computingElement",
    "nJobsToReFill", "logFilesToUpload", "jobType", "resourceType", "nativeExitCode",
    "nativeStatus", "diagMessage", "nJobs", "submissionHost", "configID", "syncLevel",
    "checkTime", "ioIntensity", "harvesterHost", "pilotType", "eventFeedLock", "errorCode",
    "errorDiag",
)


class WorkSpec:
    ST_submitted = "submitted"
    ST_running = "running"
    ST_finished = "finished"
    ST_failed = "failed"
    ST_ready = "ready"
    ST_cancelled = "cancelled"
    ST_idle = "idle"
    ST_missed = "missed"
    ST_pending = "pending"

    def __init__(self, **values: Any) -> None:
        for name in ATTRIBUTES:
            setattr(self, name, None)
        self.new_status = False
        for name, value in values.items():
            if name not in ATTRIBUTES:
                raise AttributeError(f"WorkSpec has no attribute {name!r}")
            setattr(self, name, value)

    def is_final_status(self) -> bool:
        return self.status in (self.ST_finished, self.ST_failed, self.ST_cancelled,
                               self.ST_missed)

    def set_status(self, value: str) -> None:
        """As Harvester: never back from running/idle to submitted; times on start and end."""
        if value == self.ST_submitted and self.status in (self.ST_running, self.ST_idle):
            return
        if self.status != value:
            self.new_status = True
        self.status = value
        now = datetime.datetime.now(datetime.timezone.utc)
        if self.status == self.ST_running and self.startTime is None:
            self.startTime = now
        elif self.is_final_status() and self.endTime is None:
            self.endTime = now

    def get_access_point(self) -> str:
        """accessPoint with ${attribute} placeholders replaced, as Harvester does."""
        if "$" in self.accessPoint:
            for name in re.findall(r"\$\{([a-zA-Z\d_.]+)\}", self.accessPoint):
                if hasattr(self, name):
                    self.accessPoint = self.accessPoint.replace(
                        "${" + name + "}", str(getattr(self, name)))
        return self.accessPoint

    def set_work_attributes(self, data: dict[str, Any]) -> None:
        if self.workAttributes is None:
            self.workAttributes = {}
        self.workAttributes.update(data)

    def set_log_file(self, log_type: str, stream: str) -> None:
        key = {"stdout": "stdOut", "stderr": "stdErr", "jdl": "jdl"}.get(log_type, "batchLog")
        if stream.startswith("http"):
            url = stream
        else:
            remote_name = f"{HARVESTER_ID}__{os.path.basename(stream)}"
            url = f"{PANDA_CACHE_URL}/{remote_name}"
            if self.logFilesToUpload is None:
                self.logFilesToUpload = {}
            for path, info in list(self.logFilesToUpload.items()):
                if info["stream_type"] == key:
                    del self.logFilesToUpload[path]
            self.logFilesToUpload[stream] = {"position": 0, "remote_name": remote_name,
                                             "stream_type": key}
        self.set_work_attributes({key: url})

    def log_file(self, log_type: str) -> str:
        """Test helper: the local path registered for upload of this stream."""
        key = {"stdout": "stdOut", "stderr": "stdErr"}[log_type]
        return next(p for p, i in (self.logFilesToUpload or {}).items()
                    if i["stream_type"] == key)

    def set_dialog_message(self, msg: str | None) -> None:
        if msg:
            self.diagMessage = msg[:500]
