#!/usr/bin/env bash
# Browser test of the status page at `/`: the real binary in `demo` mode on
# 127.0.0.1 (a free port), Debian's Chromium headless (installed with apt-get
# when missing). It dumps the DOM and checks, against /metrics read just
# before and just after: every webhook row carries data-source, data-webhook,
# data-deliveries-24h and data-failures-24h as numbers between the two
# scrapes' webhook_deliveries_total / webhook_delivery_failures_total (equal
# when nothing was counted in between), every webhook on /metrics has a row
# with a sparkline <svg>, and failing rows come first. It then takes a
# screenshot and prints its path. Everything it starts stops with it.
#
#   scripts/browser-test.sh                                     # the test
#   scripts/browser-test.sh --screenshot-to docs/status-page.png  # and keep the picture
set -euo pipefail
cd "$(dirname "$0")/.."

keep=""
if [ "${1:-}" = "--screenshot-to" ]; then
  keep=${2:?--screenshot-to needs a path}
fi

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  else
    echo "chromium missing: install Debian's chromium package" >&2
    exit 1
  fi
fi

cargo build --locked --quiet --bin webhook-log-exporter
bin=target/debug/webhook-log-exporter
out=target/browser-test
mkdir -p "$out"
profile=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

"$bin" demo --web.listen-address="127.0.0.1:$port" --log.level=warn >"$out/exporter.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$profile"
}
trap cleanup EXIT

get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }

deadline=$((SECONDS + 60))
until get "$url/ready" >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the exporter exited:" >&2
    cat "$out/exporter.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -gt "$deadline" ]; then
    echo "not ready after 60 s" >&2
    exit 1
  fi
  sleep 0.2
done

chrome() {
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" "$@" 2>>"$out/chromium.log"
}

# Counts move while the demo runs: try a few times for a quiet moment, and
# hold the page between the scrapes around it in any case.
for attempt in 1 2 3 4 5; do
  get "$url/metrics" >"$out/metrics-before.txt"
  chrome --dump-dom "$url/" >"$out/dom.html"
  get "$url/metrics" >"$out/metrics-after.txt"
  if python3 - "$out" <<'EOF'
import re, sys
from html.parser import HTMLParser

out = sys.argv[1]

def counts(path):
    """(source, webhook) -> [deliveries, failures] summed over events."""
    c = {}
    for line in open(path):
        m = re.match(r'(webhook_deliveries_total|webhook_delivery_failures_total)\{(.*)\} (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        k = (labels["source"], labels["webhook"])
        c.setdefault(k, [0, 0])[m.group(1) != "webhook_deliveries_total"] += float(m.group(3))
    return c

class Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.cur = [], None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "hook" in (a.get("class") or "").split():
            self.cur = {"attrs": a, "svg": False}
            self.rows.append(self.cur)
        elif tag == "svg" and self.cur is not None:
            self.cur["svg"] = True
    def handle_endtag(self, tag):
        if tag == "tr":
            self.cur = None

before, after = counts(f"{out}/metrics-before.txt"), counts(f"{out}/metrics-after.txt")
p = Rows()
p.feed(open(f"{out}/dom.html").read())
errors = []
if not p.rows:
    errors.append("no webhook rows in the DOM")
rank = {"error": 0, "failing": 1, "recent": 2, "ok": 3, "pending": 4}
seen, last = set(), 0
for r in p.rows:
    a = r["attrs"]
    missing = [k for k in ("data-source", "data-webhook", "data-deliveries-24h", "data-failures-24h")
               if k not in a]
    if missing:
        errors.append(f"row {a} lacks {missing}")
        continue
    k = (a["data-source"], a["data-webhook"])
    seen.add(k)
    try:
        d, f = int(a["data-deliveries-24h"]), int(a["data-failures-24h"])
    except ValueError:
        errors.append(f"{k}: not plain numbers: {a}")
        continue
    lo, hi = before.get(k, [0, 0]), after.get(k, [0, 0])
    if not (lo[0] <= d <= hi[0] and lo[1] <= f <= hi[1]):
        errors.append(f"{k}: page {d} deliveries / {f} failures, /metrics {lo} before and {hi} after")
    if not r["svg"]:
        errors.append(f"{k}: no sparkline <svg")
    st = rank.get(a.get("data-state"), 9)
    if st < last:
        errors.append(f"{k}: state {a.get('data-state')} after a later one: failing rows must come first")
    last = max(last, st)
for k in after:
    if k not in seen:
        errors.append(f"{k} is on /metrics but has no row")
quiet = before == after
total = sum(int(r["attrs"].get("data-deliveries-24h", 0)) for r in p.rows)
print(f"{len(p.rows)} rows, {total} deliveries in 24 h; /metrics {'unchanged' if quiet else 'moved'} during the dump")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(2)
sys.exit(0 if quiet else 1)
EOF
  then
    break
  else
    rc=$?
    if [ "$rc" = 2 ]; then
      echo "browser test FAILED (DOM in $out/dom.html)" >&2
      exit 1
    fi
    echo "counts moved during attempt $attempt; the page was within the bounds" >&2
  fi
done

chrome --screenshot="$out/status-page.png" --window-size=1400,760 --hide-scrollbars "$url/" >/dev/null
[ -s "$out/status-page.png" ] || { echo "no screenshot written" >&2; exit 1; }
echo "screenshot: $PWD/$out/status-page.png"
if [ -n "$keep" ]; then
  cp "$out/status-page.png" "$keep"
  echo "copied to $keep"
fi
echo "browser-test: 1 passed, 0 failed"
