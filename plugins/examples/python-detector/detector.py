#!/usr/bin/env python3
"""python-detector: flags a target served over cleartext HTTP, like the Rust
minimal-detector, in Python 3 with the standard library only. It follows
docs/protocol.md: stdin is read on its own thread so `cancel` is seen while
`run` works, stdout carries protocol messages only, and the plugin exits on
`shutdown` and at end of input.
"""

import json
import queue
import sys
import threading

NAME, VERSION, CATEGORY = "python-detector", "1.0.0", "detector"
CANCELLED, INVALID_INPUTS = -32800, -32001

_protocol_out = sys.stdout
# Anything else printed goes to stderr, never into the protocol stream.
sys.stdout = sys.stderr
_cancelled = threading.Event()


def send(message):
    _protocol_out.write(json.dumps(dict(message, jsonrpc="2.0"), separators=(",", ":")) + "\n")
    _protocol_out.flush()


def reader(requests):
    """Reads stdin; `cancel` is handled here, requests are queued; None is EOF."""
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("method") == "cancel":
            _cancelled.set()
        elif "id" in message:
            requests.put(message)
    requests.put(None)


def run(params):
    target = params.get("inputs", {}).get("target")
    if not isinstance(target, str):
        return None, {"code": INVALID_INPUTS, "message": "inputs.target must be a URL"}
    findings = 0
    if target.startswith("http://") and not _cancelled.is_set():
        findings += 1
        send({"method": "finding", "params": {"seq": findings, "finding": {
            "finding_schema_version": "1.0.0",
            "rule_id": "transport.cleartext",
            "title": "Target is served over cleartext HTTP",
            "severity": "low",
            "target": target,
            "location": {"url": target},
            "remediation": "Serve it over HTTPS.",
        }}})
    if _cancelled.is_set():
        return None, {"code": CANCELLED, "message": "cancelled"}
    return {"outputs": {"cleartext": findings > 0}, "findings": findings}, None


def main():
    requests = queue.Queue()
    threading.Thread(target=reader, args=(requests,), daemon=True).start()
    while True:
        request = requests.get()
        if request is None:
            return 0
        method, rid = request.get("method"), request["id"]
        if method == "initialize":
            send({"id": rid, "result": {"protocol_version": 1, "name": NAME, "version": VERSION,
                                        "category": CATEGORY,
                                        "capabilities": {"cancel": True, "progress": False}}})
        elif method == "run":
            result, error = run(request.get("params") or {})
            send({"id": rid, "error": error} if error else {"id": rid, "result": result})
        elif method == "shutdown":
            send({"id": rid, "result": {}})
            return 0
        else:
            send({"id": rid, "error": {"code": -32601, "message": f"unknown method {method}"}})


if __name__ == "__main__":
    sys.exit(main())
