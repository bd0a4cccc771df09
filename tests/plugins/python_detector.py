#!/usr/bin/env python3
"""python-detector: a SecFlow detector in Python 3, standard library only, written
from docs/protocol.md alone. Used by the integration tests to prove the protocol
document is enough to write a plugin in another language.

It answers `initialize` with the name and version the supervisor expects
(category `detector`), so one script serves any test manifest.

Config knobs:
  count     (integer, default 3): findings to send, each distinct
            (location http://127.0.0.1:8080/py/<i>).
  delay_ms  (integer, default 0): pause between findings; `cancel` interrupts it
            and the run is answered with -32800.

Outputs: {"emitted": <findings sent>}.
"""

import json
import queue
import sys
import threading

CANCELLED = -32800
INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
PARSE_ERROR = -32700
SEVERITIES = ["info", "low", "medium", "high", "critical"]

_out = sys.stdout
_out_lock = threading.Lock()
# Keep stray print() calls off the protocol channel: the protocol writes go to
# the saved stdout, everything else printed goes to stderr.
sys.stdout = sys.stderr


def send(message):
    line = json.dumps(message, separators=(",", ":")) + "\n"
    with _out_lock:
        _out.write(line)
        _out.flush()


def answer(msg_id, result):
    send({"jsonrpc": "2.0", "id": msg_id, "result": result})


def answer_error(msg_id, code, text):
    send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": text}})


def notify(method, params):
    send({"jsonrpc": "2.0", "method": method, "params": params})


def read_stdin(requests, cancelled):
    """Reader thread: `cancel` sets the flag at once; requests go to the main loop."""
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            message = json.loads(raw)
        except ValueError:
            answer_error(None, PARSE_ERROR, "parse error")
            continue
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            answer_error(message.get("id") if isinstance(message, dict) else None,
                         INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            continue
        method = message.get("method")
        if "id" not in message:
            if method == "cancel":
                cancelled.set()
            continue  # other notifications are ignored
        if method is None:
            continue  # a response: the plugin sent no requests
        requests.put(message)
    requests.put(None)  # end of input


def knob(config, name, default):
    value = config.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def run(params, config, cancelled):
    """Sends the findings; returns (result, None) or (None, (code, message))."""
    target = params.get("inputs", {}).get("target", "http://127.0.0.1:8080")
    if not isinstance(target, str) or not target:
        return None, (-32001, "inputs.target must be a non-empty string")
    count = knob(config, "count", 3)
    delay = knob(config, "delay_ms", 0) / 1000.0
    sent = 0
    for i in range(1, count + 1):
        if i > 1 and delay > 0:
            cancelled.wait(delay)
        if cancelled.is_set():
            return None, (CANCELLED, "run cancelled after %d findings" % sent)
        finding = {
            "finding_schema_version": "1.0.0",
            "rule_id": "python.fixture",
            "title": "Python fixture finding %d" % i,
            "severity": SEVERITIES[(i - 1) % len(SEVERITIES)],
            "target": target,
            "location": {"url": "http://127.0.0.1:8080/py/%d" % i},
        }
        sent += 1
        notify("finding", {"seq": sent, "finding": finding})
        notify("progress", {"completed": i, "total": count})
    return {"outputs": {"emitted": sent}, "findings": sent}, None


def main():
    requests = queue.Queue()
    cancelled = threading.Event()
    threading.Thread(target=read_stdin, args=(requests, cancelled), daemon=True).start()
    init = None
    ran = False
    while True:
        message = requests.get()
        if message is None:
            return 0  # end of input
        msg_id, method = message["id"], message.get("method")
        params = message.get("params") or {}
        if method == "initialize":
            if params.get("protocol_version") != 1:
                answer_error(msg_id, INVALID_PARAMS, "protocol_version %r is not supported; this plugin speaks 1"
                             % params.get("protocol_version"))
                continue
            init = params
            plugin = params.get("plugin", {})
            answer(msg_id, {"protocol_version": 1, "name": plugin.get("name", "python-detector"),
                            "version": plugin.get("version", "0.0.0"), "category": "detector",
                            "capabilities": {"cancel": True, "progress": True}})
        elif method == "run":
            if init is None or ran:
                answer_error(msg_id, INVALID_REQUEST, "run must come once, after initialize")
                continue
            ran = True
            result, error = run(params, init.get("config") or {}, cancelled)
            if error is not None:
                answer_error(msg_id, *error)
            else:
                answer(msg_id, result)
        elif method == "shutdown":
            answer(msg_id, {})
            return 0
        else:
            answer_error(msg_id, METHOD_NOT_FOUND, "unknown method %r" % method)


if __name__ == "__main__":
    sys.exit(main())
