#!/bin/sh
# A scripted stand-in for an agent client (no model): it runs as the lead
# Pod's workload, starts `pod mcp` as its own child (so the server speaks as
# the lead, from the kernel's view of the process tree) and sends the tool
# calls a lead agent would: publish a task in the layer's store, hand
# `work/` to a helper (worker.sh, another stand-in agent), wait for the
# helper's result in its /peer slot, wait for it to exit, read its output,
# and check that `work/` is the lead's again.
# The server's answers, one JSON-RPC message a line, go to $ANSWERS.
set -eu
: "${POD:?POD names the pod binary}" "${ANSWERS:?ANSWERS names the transcript file}"
here=$(cd "$(dirname "$0")" && pwd)
part="$ANSWERS.part"
: > "$part"

# Waits (bounded, 30 s) until the answer with JSON-RPC id $1 is in.
answered() {
    n=0
    while ! grep -q "\"id\":$1[,}]" "$part"; do
        n=$((n + 1))
        [ "$n" -le 600 ] || { echo "agent: no answer to request $1" >&2; exit 1; }
        sleep 0.05
    done
}

call() {
    printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"%s","arguments":%s}}\n' "$1" "$2" "$3"
}

{
    printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stand-in-agent","version":"0"}}}'
    answered 1
    printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    call 2 kv_set '{"key":"/shared/task","value":"write the answer to work/answer.txt"}'
    answered 2
    call 3 pod_spawn "{\"name\":\"worker\",\"write\":[\"work\"],\"command\":[\"sh\",\"$here/worker.sh\"],\"env\":{\"ANSWER\":\"42\"}}"
    answered 3
    # The helper's result, in its /peer slot: the wait returns once it is written.
    call 4 kv_wait '{"key":"/peer/worker/result","timeout_seconds":30}'
    answered 4
    call 5 pod_wait '{"names":["worker"],"timeout_seconds":30}'
    answered 5
    # One at a time: the server answers in the order its calls finish.
    call 6 pod_logs '{"name":"worker"}'
    answered 6
    call 7 pod_check '{"path":"work/answer.txt","write":true}'
    answered 7
} | "$POD" mcp > "$part"
mv "$part" "$ANSWERS"
