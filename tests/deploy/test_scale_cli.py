"""`python -m dynamo.deploy scale URL A=1 B=2 ...`: several assignments are all checked first, then
applied one request each, in order (the control endpoint takes one service per request); a failure
stops there and says what was applied and what was not. Against a stand-in control endpoint (a thread)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dynamo.deploy.__main__ import build_parser
from dynamo.deploy.control import scale_main


class StandIn:
    """POST /scale as `run` answers it: 200 with the status, 404 for a service it does not have."""

    def __init__(self, services: dict[str, int]) -> None:
        self.services, self.posted = dict(services), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                owner.posted.append((body["service"], body["replicas"]))
                if body["service"] not in owner.services:
                    self._send(404, {"error": f"unknown service {body['service']!r}"})
                    return
                owner.services[body["service"]] = body["replicas"]
                self._send(200, {"services": owner.services})

            def _send(self, code: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def control():
    stand_in = StandIn({"Frontend": 1, "Prefill": 1, "Decode": 1})
    yield stand_in
    stand_in.close()


def test_the_cli_takes_several_assignments():
    args = build_parser().parse_args(["scale", "http://x", "Prefill=2", "Decode=3"])
    assert args.assignments == ["Prefill=2", "Decode=3"]
    assert build_parser().parse_args(["scale", "http://x"]).assignments == []


def test_several_assignments_are_applied_in_order(control, capsys):
    assert scale_main(control.url, ["Prefill=2", "Decode=3"]) == 0
    assert control.posted == [("Prefill", 2), ("Decode", 3)]
    out, err = capsys.readouterr()
    assert json.loads(out) == {"Frontend": 1, "Prefill": 2, "Decode": 3}
    assert "scaled Prefill to 2" in err and "scaled Decode to 3" in err


def test_a_failure_midway_says_what_was_and_was_not_applied(control, capsys):
    assert scale_main(control.url, ["Prefill=2", "Nope=1", "Decode=3"]) == 1
    assert control.posted == [("Prefill", 2), ("Nope", 1)]  # stopped at the failure
    err = capsys.readouterr().err
    assert "error 404" in err and "Nope=1 failed; applied: Prefill=2; not attempted: Decode=3" in err


@pytest.mark.parametrize("assignments, message", [
    (["Prefill=2", "Decode"], "expected SERVICE=REPLICAS"),
    (["Prefill=2", "Decode=100000"], "limit of 64"),
    (["Prefill=2", "Prefill=3"], "assigned twice"),
])
def test_a_bad_assignment_sends_nothing(control, capsys, assignments, message):
    assert scale_main(control.url, assignments) == 2
    assert control.posted == [] and message in capsys.readouterr().err
