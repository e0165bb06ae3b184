#!/bin/sh
# A scripted stand-in for an agent client (no model): it runs as the lead
# Pod's workload, starts `pod mcp` as its own child (so the server speaks as
# the lead, from the kernel's view of the process tree) and sends the tool
# calls a lead agent would: hand `work/` to a helper, look at the tree, ask
# what the lead may still write, stop the helper when its work is done.
# The server's answers, one JSON-RPC message a line, go to $ANSWERS.
set -eu
: "${POD:?POD names the pod binary}" "${ANSWERS:?ANSWERS names the transcript file}"
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

{
    printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stand-in-agent","version":"0"}}}'
    answered 1
    printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    printf '%s\n' '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pod_spawn","arguments":{"name":"worker","write":["work"],"command":["sh","-c","echo 42 > work/answer.txt; exec sleep 600"]}}}'
    answered 2
    printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"pod_status","arguments":{}}}'
    printf '%s\n' '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"pod_check","arguments":{"path":"work/answer.txt","write":true}}}'
    answered 3; answered 4
    # The helper's work is done once its file is there.
    n=0
    while [ ! -s work/answer.txt ]; do n=$((n + 1)); [ "$n" -le 600 ] || exit 1; sleep 0.05; done
    printf '%s\n' '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"pod_stop","arguments":{"name":"worker"}}}'
    answered 5
    printf '%s\n' '{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"pod_check","arguments":{"path":"work/answer.txt","write":true}}}'
    answered 6
} | "$POD" mcp > "$part"
mv "$part" "$ANSWERS"
