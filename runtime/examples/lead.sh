#!/bin/sh
# A lead that runs two helpers and learns how each ended: it spawns them
# with their task in the environment (`--env`), waits for both (`pod
# wait`), reads what they printed (`pod logs`) and their exit codes.
#
# Run it (from the repository, with the pod binary on PATH):
#   cargo build -p pod && PATH="$PWD/target/debug:$PATH" sh runtime/examples/lead.sh
# It works in a new temporary POD_HOME and folder and removes them after.
set -eu

if [ "${1:-}" != "--as-lead" ]; then
    script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
    work=$(mktemp -d)
    export POD_HOME="$work/home"
    mkdir -p "$work/repo/docs" "$work/repo/tests"
    cd "$work/repo"
    # The lead is this same script, as the workload of Pod `lead`.
    pod start lead --write . -- sh "$script" --as-lead
    status=0
    pod wait lead || status=$?
    echo "--- the lead's own output (pod logs lead):"
    pod logs lead | cut -d' ' -f2-
    # The registry daemon the first command started on demand goes too.
    pod rm lead >/dev/null
    pod registry stop >/dev/null
    rm -rf "$work"
    exit "$status"
fi

# Inside the lead's workload: POD_NAME=lead, so --parent is implied.
TASK_SECRET=not-in-argv
export TASK_SECRET
pod spawn writer --write docs --env TASK=write-docs --env TASK_SECRET -- \
    sh -c 'echo "writing docs ($TASK, secret of ${#TASK_SECRET} chars)"; echo "docs/guide.md" > docs/guide.md'
pod spawn tester --write tests --env TASK=run-tests -- \
    sh -c 'echo "running tests ($TASK)" >&2; echo "2 tests failed" >&2; exit 3'

all=0
pod wait writer tester || all=$?
echo "both done: pod wait exited $all (1: not all succeeded)"
for helper in writer tester; do
    code=0
    pod wait "$helper" >/dev/null || code=$?
    echo "$helper exited $code; it printed:"
    pod logs "$helper" | cut -d' ' -f2-
done
pod rm writer tester
