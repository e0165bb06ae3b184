#!/bin/sh
# Runs the stand-in agent as a lead Pod's workload, in a fresh POD_HOME and
# work folder, and prints what the server answered. From the repository:
#   cargo build -p pod && sh runtime/examples/mcp-agent/run.sh
# (POD=/path/to/pod to use another binary).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
POD=${POD:-$(cd "$here/../../.." && pwd)/target/debug/pod}
[ -x "$POD" ] || { echo "run.sh: no pod binary at $POD; run \`cargo build -p pod\` first or set POD" >&2; exit 2; }
tmp=$(mktemp -d)
# On the way out: the lead, then the registry daemon its start began.
trap 'POD_HOME="$tmp/home" "$POD" stop lead >/dev/null 2>&1 || true
      POD_HOME="$tmp/home" "$POD" registry stop >/dev/null 2>&1 || true
      rm -rf "$tmp"' EXIT
mkdir -p "$tmp/repo/work" "$tmp/out"
cd "$tmp/repo"
export POD POD_HOME="$tmp/home" ANSWERS="$tmp/out/answers.jsonl"
# The transcript is not part of the codebase: it goes to a scratch folder,
# which the lead's workload may write beside its scope.
"$POD" start lead --write . --scratch "$tmp/out" -- sh "$here/agent.sh"
n=0
while [ ! -e "$ANSWERS" ]; do
    n=$((n + 1))
    [ "$n" -le 600 ] || { echo "run.sh: the agent did not finish; its Pod's log: $("$POD" log lead | tail -5)" >&2; exit 1; }
    sleep 0.05
done
# One line per answer: the request id and the tool's structured result.
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    r = m.get("result", {})
    shown = r.get("structuredContent", r.get("serverInfo"))
    # Times, pids and the temporary folder change from run to run.
    if "pid" in (shown or {}):
        shown["pid"] = "[pid]"
    for line in (shown or {}).get("lines", []):
        line["timestamp_ms"] = "[ts]"
    for key in ("written_at", "written_at_ms"):
        if key in (shown or {}):
            shown[key] = "[time]"
    print(m["id"], json.dumps(shown, sort_keys=True).replace(sys.argv[2], "[tmp]"))
' "$ANSWERS" "$tmp"
