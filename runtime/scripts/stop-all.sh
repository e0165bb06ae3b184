#!/usr/bin/env bash
# Stops every top-level Pod of this POD_HOME (each stops its tree bottom-up).
set -euo pipefail
pod ls --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p["state"] == "running" and p["parent"] is None:
        print(p["name"])
' | while read -r name; do
    pod stop "$name"
done
