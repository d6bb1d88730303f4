"""Log output (runtime/logs.py): DYN_LOGGING_JSONL's JSON lines and the request-trace events."""

from __future__ import annotations

import io
import json
import logging

import pytest

from dynamo.runtime.logs import JsonlFormatter, RequestEvents, rfc3339
from dynamo.runtime.settings import RuntimeSettings


def capture(jsonl: bool, level: int = logging.DEBUG) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonlFormatter() if jsonl else logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.logs.{jsonl}.{level}")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger, stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_dynamos_keys():
    logger, stream = capture(jsonl=True)
    logger.warning("disk %s is %d%% full", "sda", 93)
    [entry] = lines(stream)
    assert entry["message"] == "disk sda is 93% full" and entry["level"] == "WARN"  # Dynamo's spelling
    assert entry["target"] == logger.name and entry["file"].endswith("test_logs.py") and entry["line"] > 0
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_fields_and_exceptions_become_keys_and_odd_values_text():
    logger, stream = capture(jsonl=True)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.error("failed", exc_info=True, extra={"fields": {"request_id": "r1", "obj": object()}})
    [entry] = lines(stream)  # a multi-line traceback stays inside one line
    assert entry["request_id"] == "r1" and entry["obj"].startswith("<object object")
    assert "ValueError: boom" in entry["exception"] and entry["level"] == "ERROR"


def test_rfc3339_is_utc_with_microseconds():
    assert rfc3339(0.000001) == "1970-01-01T00:00:00.000001Z"
    assert rfc3339(86400 * 365 + 0.5) == "1971-01-01T00:00:00.500000Z"


def test_request_events_are_info_in_json_lines():
    logger, stream = capture(jsonl=True, level=logging.INFO)
    events = RequestEvents(jsonl=True, logger=logger)
    events.emit(logging.INFO, "request received", request_id="r1", model="m")
    events.emit(logging.ERROR, "request completed", request_id="r1", status="error")
    first, last = lines(stream)
    assert (first["message"], first["level"], first["request_id"], first["model"]) == ("request received", "INFO",
                                                                                       "r1", "m")
    assert (last["level"], last["status"]) == ("ERROR", "error")


@pytest.mark.parametrize("level, written", [(logging.INFO, True), (logging.WARNING, False)])
def test_request_events_are_info_in_text_logs_too(level, written):
    """As Dynamo 1.6.1 writes them: a default (info) text log has the request lines, fields inline; a
    logger set above INFO leaves them out."""
    logger, stream = capture(jsonl=False, level=level)
    events = RequestEvents(jsonl=False, logger=logger)
    assert events.enabled(logging.INFO) is written
    events.emit(logging.INFO, "request received", request_id="r1", session_id=None, model="m")
    text = stream.getvalue()
    assert (text == "INFO request received request_id=r1 model=m\n") if written else text == ""


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("0", False), ("", False)])
def test_the_switch_is_dynamos_variable(raw, value):
    assert RuntimeSettings.from_env({"DYN_LOGGING_JSONL": raw}).logging_jsonl is value
