"""Structured logs: one JSON object per line on stderr (``--log-format text`` for people at a terminal).

Fields beyond the message go in ``extra={"fields": {...}}``; a log shipper indexes them as they are.
"""
from __future__ import annotations

import json
import logging
import time


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname.lower():<7} " \
               f"{record.getMessage()}" + (f"  {fields}" if fields else "")


def logger(fmt: str = "json", level: str = "info") -> logging.Logger:
    log = logging.getLogger("policyc.agent")
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    return log
