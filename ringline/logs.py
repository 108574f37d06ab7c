"""Logging set-up for the daemon: one line a record, with the call id when there is one."""

from __future__ import annotations

import logging


class _CallIdDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = "-"
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_CallIdDefault())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(call_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
