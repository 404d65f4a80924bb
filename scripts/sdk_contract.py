"""The official Authing and GenAuth Python SDKs against the simulator.

The simulator stands in for the real service in `demo`, the tests and the
bench; this keeps it speaking the real protocol, as the SDKs (PyPI
`authing==5.1.0`, `genauth==5.1.0`) speak it: the token flow, each edition's
pool header, the envelope and documented fields of `list-webhooks` and
`get-webhook-logs`, a `limit` over 50 refused in the body with `statusCode`
and `apiCode`, and an unknown webhook answered with an empty list.

Usage: python3 scripts/sdk_contract.py PATH-TO-webhook-log-exporter
It starts `demo` on a free loopback port and stops it when done.
"""

import re
import subprocess
import sys
import time

# Documented fields (shared/api-samples/authing-*.json).
HOOK_FIELDS = {"webhookId", "name", "url", "contentType", "enabled", "events", "createdAt", "updatedAt"}
LOG_FIELDS = {"webhookId", "eventName", "requestBody", "requestHeaders", "responseHeaders",
              "responseBody", "timestamp", "success"}
KEY_ID, KEY_SECRET = "sim-access-key-id", "sim-access-key-secret-DO-NOT-LEAK"

failures = []
passed = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"))
    (passed if ok else failures).append(what)


def contract(name, client):
    hooks = client.list_webhooks(page=1, limit=10)
    check(f"{name}: list-webhooks answers statusCode 200", hooks.get("statusCode") == 200, hooks)
    data = hooks.get("data") or {}
    listed = data.get("list") or []
    check(f"{name}: list-webhooks lists the pool's webhooks with totalCount",
          len(listed) == 3 and data.get("totalCount") == 3, data.get("totalCount"))
    missing = [sorted(HOOK_FIELDS - set(h)) for h in listed if not HOOK_FIELDS <= set(h)]
    check(f"{name}: every webhook has the documented fields", not missing, missing)
    too_many = client.list_webhooks(page=1, limit=51)
    check(f"{name}: list-webhooks refuses limit 51 in the body",
          too_many.get("statusCode") == 400 and "apiCode" in too_many, too_many)

    hook = listed[0]["webhookId"] if listed else "missing"
    logs = client.get_webhook_logs(webhook_id=hook, page=1, limit=50)
    check(f"{name}: get-webhook-logs answers statusCode 200", logs.get("statusCode") == 200, logs.get("statusCode"))
    ldata = logs.get("data") or {}
    entries = ldata.get("list") or []
    check(f"{name}: get-webhook-logs has entries and totalCount",
          len(entries) > 0 and isinstance(ldata.get("totalCount"), int), ldata.get("totalCount"))
    bad = [sorted(LOG_FIELDS - set(e)) for e in entries if not LOG_FIELDS <= set(e)]
    check(f"{name}: every entry has the documented fields", not bad, bad[:3])
    stamps = [e.get("timestamp", "") for e in entries]
    check(f"{name}: timestamps look like 2022-09-20T08:55:00.188+0800",
          all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", t) for t in stamps), stamps[:2])
    check(f"{name}: failed entries say why (errorMessage or a status)",
          all(e.get("errorMessage") or e.get("responseStatusCode") for e in entries if not e["success"]))

    refused = client.get_webhook_logs(webhook_id=hook, page=1, limit=51)
    check(f"{name}: get-webhook-logs refuses limit 51 with statusCode and apiCode",
          refused.get("statusCode") == 400 and "apiCode" in refused, refused)
    unknown = client.get_webhook_logs(webhook_id="6229ffa00000000000ffffff", page=1, limit=10)
    udata = unknown.get("data") or {}
    check(f"{name}: an unknown webhook is an empty list, not an error",
          unknown.get("statusCode") == 200 and udata.get("list") == [] and udata.get("totalCount") == 0, unknown)


def main():
    binary = sys.argv[1]
    proc = subprocess.Popen([binary, "demo", "--web.listen-address=127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base, deadline = None, time.time() + 30
        while base is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"Authing API at (http://127\.0\.0\.1:\d+)", line)
            base = m.group(1) if m else None
        if base is None:
            print("FAIL demo did not say where its Authing API is")
            return 1
        import authing
        import genauth
        contract("authing", authing.ManagementClient(
            access_key_id=KEY_ID, access_key_secret=KEY_SECRET, host=base))
        contract("genauth", genauth.ManagementClient(
            access_key_id=KEY_ID, access_key_secret=KEY_SECRET, host=base))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"sdk-contract: {len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
