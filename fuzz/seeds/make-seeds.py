#!/usr/bin/env python3
"""Writes the starting corpus of each fuzz target into fuzz/corpus/<target>/.

The seeds are real messages from the protocol and API docs, the shipped
manifests and typical findings and CPE/version strings, so that libFuzzer
starts from inputs that pass the parsers instead of finding JSON by chance.
Run once; the committed corpora (minimized with `cargo fuzz cmin`) grew from
these. Seed files are named seed-*, so re-running overwrites only them.
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


protocol = (ROOT / "docs" / "protocol.md").read_text()
plugin_lines = [l[2:] for l in protocol.splitlines() if l.startswith("< {")]
plugin_lines += [
    '{"jsonrpc":"2.0","id":2,"error":{"code":-32001,"message":"inputs.target is missing"}}',
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
    '{"jsonrpc":"2.0","method":"log","params":{"level":"debug","message":"x","fields":{"a":1}}}',
]
plugin_lines = [l for l in plugin_lines if "…" not in l]
for i, line in enumerate(plugin_lines):
    write("plugin_line", f"line-{i}", line + "\n")
write("plugin_line", "session", "\n".join(plugin_lines) + "\n")
write("plugin_line", "crlf", "\r\n".join(plugin_lines[:3]) + "\r\n")

api = [
    {"jsonrpc": "2.0", "id": 1, "method": "system.health"},
    {"jsonrpc": "2.0", "id": "a", "method": "plugins.list", "params": {}},
    {"jsonrpc": "2.0", "id": 2, "method": "plugins.revoke", "params": {"name": "ferox", "reason": "r"}},
    {"jsonrpc": "2.0", "id": 3, "method": "runs.execute", "params": {"plugin": "ferox", "inputs": {"target": "http://127.0.0.1:8080"}, "config": {}, "timeout_ms": 1000, "context": {"workflow_id": "w", "node_id": "n"}}},
    {"jsonrpc": "2.0", "id": 4, "method": "runs.get", "params": {"run_id": "0196b3f2-7c1e-7a54-9d0e-5b2f4a1c8e90"}},
    {"jsonrpc": "2.0", "id": 5, "method": "findings.query", "params": {"min_severity": "high", "limit": 10, "after": "x"}},
    {"jsonrpc": "2.0", "id": None, "method": "audit.query", "params": [1, 2]},
    {"jsonrpc": "2.0", "method": "runs.cancel", "params": {"run_id": "r"}},
]
for i, req in enumerate(api):
    write("api_request", f"req-{i}", json.dumps(req) + "\n")
write("api_request", "batch", "\n".join(json.dumps(r) for r in api) + "\n[1]\n{\"jsonrpc\":\"1.0\"}\nnot json\n")

for path in sorted((ROOT / "manifests").glob("*.json")):
    write("manifest", path.stem, path.read_bytes())
full = json.loads((ROOT / "manifests" / "ferox.json").read_text())
full.update({
    "signature_type": "ed25519",
    "signature": "ed25519:" + "A" * 86 + "==",
    "created_at": "2025-01-01T00:00:00Z",
    "expires_at": "2030-01-01T00:00:00+02:00",
    "code_hash": "sha256:" + "ab" * 32,
})
full.setdefault("sandbox", {}).update({"read_paths": ["/usr/share/wordlists"], "memory_mb": 100000})
write("manifest", "full", json.dumps(full, indent=1))

findings = [re.search(r'"finding":(\{.*\})\}\}$', l) for l in plugin_lines]
findings = [json.loads(m.group(1)) for m in findings if m]
findings += [
    {"finding_schema_version": "1.0.0", "rule_id": "ssh.outdated", "title": "OpenSSH 7.2p2", "severity": "medium",
     "target": "10.0.0.5:22", "location": {"ip": "10.0.0.5", "port": 22, "protocol": "tcp"},
     "cpe": ["cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*"], "confidence": "high"},
    {"finding_schema_version": "1.0.0", "rule_id": "CVE-2021-41773", "title": "Path traversal", "severity": "critical",
     "target": "http://[::1]:8080", "location": {"url": "HTTP://user:pw@[::1]:8080/cgi-bin/.%2e/?x=1#f"},
     "vulnerabilities": [{"cve": "CVE-2021-41773", "cwe": ["CWE-22"], "cvss": [{"version": "3.1", "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "base_score": 9.8, "severity": "critical", "source": "nvd"}], "kev": {"date_added": "2021-11-03", "due_date": "2021-11-17"}},
                         {"cve": "cve-2021-42013"}],
     "fingerprint": "", "references": ["https://nvd.nist.gov/vuln/detail/CVE-2021-41773"], "tags": ["rce"]},
    {"finding_schema_version": "1.0.0", "rule_id": "x", "title": "t", "severity": "unknown", "target": "db", "location": {"host": "DB", "port": "5432"}, "fingerprint": "own-fp"},
]
for i, f in enumerate(findings):
    write("finding", f"finding-{i}", json.dumps(f))

cpes = [
    "cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*\n2.4.49\n2.4.50",
    "cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*\ncpe:2.3:a:openbsd:openssh:7.2:p2:*:*:*:*:*:*\n7.2",
    "cpe:2.3:a:openssl:openssl:1.0.1f:*:*:*:*:*:*:*\n1.0.1\n1.0.2",
    "cpe:2.3:a:apache:tomcat:8.5.0:rc1:*:*:*:*:*:*\n8.5.0-rc1\n8.5.0",
    "cpe:2.3:a:erlang\\/otp:erlang\\/otp:-:*:*:*:*:*:*:*\n*\n-",
    "CPE:2.3:o:linux:linux_kernel:5.10:*:*:*:*:*:*:*:extra\nr27\n2.0.0.beta2",
]
for i, c in enumerate(cpes):
    write("cpe_version", f"cpe-{i}", c)
