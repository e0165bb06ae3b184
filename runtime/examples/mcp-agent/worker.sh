#!/bin/sh
# The helper's stand-in agent: it runs as the worker Pod's workload (a
# member of the lead's layer) with its own `pod mcp`, which speaks as the
# worker. It reads the task the lead published, does it (writes
# work/answer.txt, which only it may write while it runs), and puts its
# result in its own /peer slot, where only it and the lead can see it.
set -eu
: "${POD:?POD names the pod binary}" "${ANSWER:?the lead gives ANSWER}"
# Its transcript inside its own write scope, the one place it may write.
transcript=work/.worker-answers
trap 'rm -f "$transcript"' EXIT
# Made before the pipe starts: `answered` may look before `pod mcp` writes.
: > "$transcript"

answered() {
    n=0
    while ! grep -q "\"id\":$1[,}]" "$transcript"; do
        n=$((n + 1))
        [ "$n" -le 600 ] || { echo "worker: no answer to request $1" >&2; exit 1; }
        sleep 0.05
    done
}

{
    printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stand-in-helper","version":"0"}}}'
    answered 1
    printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    printf '%s\n' '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"kv_get","arguments":{"key":"/shared/task"}}}'
    answered 2
    echo "$ANSWER" > work/answer.txt
    printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"kv_set","arguments":{"key":"/peer/self/result","value":"wrote work/answer.txt"}}}'
    answered 3
} | "$POD" mcp > "$transcript"
echo "worker: the task was: $(sed -n 's/.*"value":"\([^"]*\)".*/\1/p' "$transcript" | head -n 1)"
echo "worker: wrote work/answer.txt"
