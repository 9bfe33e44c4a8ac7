#!/usr/bin/env bash
# Restarts site-a's gateway three times under running workloads, in the three-site example
# federation of configs/ on loopback, as an upgrade restarts it; prints how long each
# restart left the site without a gateway, who owns site-a's accounts after it, and how
# many workloads stopped (from the node agents' event logs). docs/operations.md, "Upgrades".
#
#   scripts/restart-gateway.sh [BINARY] [SIGNAL]     # default target/release/leasehold, TERM
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
binary=$(realpath "${1:-$here/target/release/leasehold}")
signal=${2:-TERM}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
cp "$here"/configs/site-[abc].toml .
"$binary" certs init --dir certs >/dev/null
for s in site-a site-b site-c; do "$binary" certs issue --dir certs --site $s >/dev/null; done
for n in a1 a2 a3 a4; do "$binary" certs issue --dir certs --site site-a --node $n >/dev/null; done
declare -A gateway
for s in a b c; do
  "$binary" gateway run --config site-$s.toml --certs certs --state state-$s >gw-$s.log 2>&1 &
  gateway[$s]=$!
done
for n in a1 a2 a3 a4; do
  "$binary" node run --gateway 127.0.0.1:7301 --id $n --certs certs --work nodes/$n >node-$n.log 2>&1 &
done
owners() {
  curl -sf 127.0.0.1:7101/v1/accounts | python3 -c '
import json, sys
print(", ".join("%s: owner %s term %s, %s serving" % (a["name"], a["owner"], a["ownership_term"], a["servers"]) for a in json.load(sys.stdin)))'
}
for _ in $(seq 300); do
  [ "$(curl -sf 127.0.0.1:7101/v1/servers | grep -o '"serving"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
sleep 2
echo "before: $(owners)"
for round in 1 2 3; do
  start=$(date +%s%N)
  kill -"$signal" "${gateway[a]}"
  wait "${gateway[a]}" 2>/dev/null || true
  "$binary" gateway run --config site-a.toml --certs certs --state state-a >>gw-a.log 2>&1 &
  gateway[a]=$!
  until curl -sf 127.0.0.1:7101/ready >/dev/null; do sleep 0.01; done
  ready=$(date +%s%N)
  sleep 4
  echo "restart $round (SIG$signal): ready again after $(( (ready - start) / 1000000 )) ms; $(owners)"
done
stopped=0
for n in a1 a2 a3 a4; do
  stopped=$((stopped + $(grep -c '"event":"workload_stopped"' nodes/$n/events.jsonl || true)))
done
echo "workloads stopped on site-a's servers: $stopped"
