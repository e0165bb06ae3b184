"""`pod mcp` through the official MCP Python SDK (`mcp` on PyPI, major 2), a client
this project did not write. Driven by crates/pod/tests/mcp_python.rs, which
starts the lead Pod and reads what this prints: one JSON object with what
the server answered (the Rust side compares it whole).

argv: POD (the binary), POD_HOME, REPO (the lead's folder, the server's cwd);
or `member POD OUT`: run inside helper w1's workload, so its server (this
script's child) is in w1's tree; it writes its JSON object to OUT.

Interleavings are forced through what can be seen, never by sleeping: the
session writes through `Wire`, which counts the messages handed on to the
server's stdin (the server reads them in that order), and a test step
waits for a count before its next request.
"""

import asyncio
import json
import os
import subprocess
import sys

import anyio
import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError


def refusal(result):
    assert result.is_error, result
    return {"text": result.content[0].text, "structured": result.structured_content}


def method_of(session_message):
    dumped = json.loads(session_message.message.model_dump_json(by_alias=True, exclude_none=True))
    return dumped.get("method")


class Wire:
    """Between the session and the transport: hands each message on in order
    and counts them by method, so a step can wait until its requests are on
    the server's stdin."""

    def __init__(self, transport_write):
        self.transport_write = transport_write
        self.session_write, self.from_session = anyio.create_memory_object_stream(0)
        self.counts = {}
        self.changed = anyio.Condition()

    async def forward(self):
        async with self.from_session:
            async for message in self.from_session:
                await self.transport_write.send(message)
                async with self.changed:
                    method = method_of(message)
                    self.counts[method] = self.counts.get(method, 0) + 1
                    self.changed.notify_all()

    async def until(self, method, count):
        async with self.changed:
            while self.counts.get(method, 0) < count:
                await self.changed.wait()


def texts(results):
    return [r.content[0].text for r in results]


async def busy_and_cancelled(session, wire, pod, home):
    """Eight pod_wait calls on a helper that runs on fill the server; a ninth
    call is refused (mcp.busy). One wait is cancelled (the SDK sends
    notifications/cancelled): its place is free, so a new wait is admitted
    and the next call is refused again. Stopping the helper answers the
    eight waits still held, each seeing it killed."""
    sleeper = await session.call_tool(
        "pod_spawn", {"name": "sleeper", "write": ["tests"], "command": ["sleep", "600"]}
    )
    assert not sleeper.is_error, sleeper
    answers = {}
    scopes = {}

    async def wait(key, task_status=anyio.TASK_STATUS_IGNORED):
        with anyio.CancelScope() as scope:
            scopes[key] = scope
            task_status.started()
            result = await session.call_tool("pod_wait", {"names": ["sleeper"], "timeout_seconds": 600})
            answers[key] = result.structured_content
        if scope.cancelled_caught:
            answers[key] = "cancelled"

    seen = {}
    async with anyio.create_task_group() as tg:
        before = wire.counts.get("tools/call", 0)
        for key in range(8):
            await tg.start(wait, key)
            await wire.until("tools/call", before + key + 1)
        full = await session.call_tool("pod_status", {})
        seen["ninth"] = refusal(full)["text"]
        scopes[0].cancel()
        await wire.until("notifications/cancelled", 1)
        await tg.start(wait, 8)
        await wire.until("tools/call", before + 10)
        again = await session.call_tool("pod_status", {})
        seen["after_cancel"] = refusal(again)["text"]
        stop = subprocess.run(
            [pod, "stop", "sleeper"], env={**os.environ, "POD_HOME": home}, capture_output=True, text=True
        )
        assert stop.returncode == 0, stop
    seen["cancelled"] = answers.pop(0)
    seen["held"] = sorted({a["outcomes"][0]["state"] for a in answers.values()})
    seen["held_count"] = len(answers)
    return seen


async def main(pod, home, repo):
    params = StdioServerParameters(
        command=pod,
        args=["mcp"],
        env={"POD_HOME": home, "POD_NAME": "lead", "PATH": "/usr/bin:/bin"},
        cwd=repo,
    )
    seen = {}
    async with stdio_client(params) as (read, transport_write), anyio.create_task_group() as wire_tasks:
        wire = Wire(transport_write)
        wire_tasks.start_soon(wire.forward)
        async with ClientSession(read, wire.session_write) as session:
            init = await session.initialize()
            seen["server"] = init.server_info.name
            tools = (await session.list_tools()).tools
            seen["tools"] = [t.name for t in tools]
            # Every input schema is valid under the metaschema it declares.
            for t in tools:
                validator = jsonschema.validators.validator_for(t.input_schema)
                validator.check_schema(t.input_schema)
                seen.setdefault("dialects", set()).add(validator.META_SCHEMA["$id"])
            seen["dialects"] = sorted(seen["dialects"])

            spawned = await session.call_tool(
                "pod_spawn", {"name": "helper", "write": ["src"], "command": ["sleep", "600"]}
            )
            assert not spawned.is_error, spawned
            seen["spawned"] = {k: spawned.structured_content[k] for k in ("child", "parent")}
            check = await session.call_tool("pod_check", {"name": "helper", "path": "src", "write": True})
            quick = await session.call_tool(
                "pod_spawn", {"name": "quick", "write": ["docs"], "command": ["sh", "-c", "exit 7"]}
            )
            assert not quick.is_error, quick
            waited = await session.call_tool("pod_wait", {"names": ["quick"], "timeout_seconds": 30})
            seen["waited"] = waited.structured_content
            seen["helper_may_write_src"] = check.structured_content["allowed"]
            outside = await session.call_tool("pod_spawn", {"name": "other", "write": ["/etc"]})
            seen["outside"] = refusal(outside)["structured"]["code"]
            stopped = await session.call_tool("pod_stop", {"name": "helper"})
            seen["stopped"] = stopped.structured_content["outcome"]
            try:
                await session.call_tool("pod_check", {"path": "a" * (1024 * 1024 + 1)})
                seen["too_large"] = "answered"
            except MCPError as e:
                seen["too_large"] = [e.error.code, e.error.message.split("[")[-1]]
            status = await session.call_tool("pod_status", {})
            seen["children_after_stop"] = status.structured_content["pods"][0]["children"]

            greeter = await session.call_tool(
                "pod_spawn",
                {
                    "name": "greeter",
                    "write": ["src"],
                    "command": ["sh", "-c", 'echo "greeting=$GREETING"; exit 0'],
                    "env": {"GREETING": "hello from python"},
                },
            )
            assert not greeter.is_error, greeter
            await session.call_tool("pod_wait", {"names": ["greeter"], "timeout_seconds": 30})
            logs = (await session.call_tool("pod_logs", {"name": "greeter"})).structured_content
            seen["logs"] = [[l["stream"], l["line"]] for l in logs["lines"]]
            reserved = await session.call_tool(
                "pod_spawn", {"name": "other", "command": ["true"], "env": {"POD_NAME": "lead"}}
            )
            seen["reserved_env"] = refusal(reserved)["text"]
            many = await session.call_tool("pod_spawn", {"name": "other", "read": ["src"] * 65})
            seen["over_limit"] = refusal(many)["text"]

            stored = await session.call_tool("kv_set", {"key": "/shared/plan", "value": "split", "layer": "lead"})
            got = await session.call_tool("kv_get", {"key": "/shared/plan", "layer": "lead"})
            seen["kv"] = [stored.structured_content, got.structured_content["value"], got.structured_content["written_by"]]
            seen["layer_required"] = refusal(await session.call_tool("kv_get", {"key": "/shared/plan"}))["text"]

            seen["concurrency"] = await busy_and_cancelled(session, wire, pod, home)
        wire_tasks.cancel_scope.cancel()
    print(json.dumps(seen, sort_keys=True))


async def member(pod, out):
    """A helper's session: the server speaks as w1 whatever POD_NAME says
    (here the lie w2), as the kernel says. The workload's POD_SOCKET is
    passed on, as an agent client's configuration would."""
    params = StdioServerParameters(
        command=pod,
        args=["mcp"],
        env={
            "POD_HOME": os.environ["POD_HOME"],
            "POD_SOCKET": os.environ["POD_SOCKET"],
            "POD_NAME": "w2",
            "PATH": "/usr/bin:/bin",
        },
    )
    seen = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            own = await session.call_tool("kv_set", {"key": "/peer/self/r", "value": "from w1"})
            seen["own_slot"] = own.structured_content
            other = await session.call_tool("kv_get", {"key": "/peer/w2/x"})
            seen["read_other"] = refusal(other)["text"]
            other = await session.call_tool("kv_set", {"key": "/peer/w2/x", "value": "overwrite", "override": True})
            seen["write_other"] = refusal(other)["text"]
            listed = await session.call_tool("kv_list", {"pattern": "/**"})
            seen["listed"] = [e["key"] for e in listed.structured_content["entries"]]
            stop = await session.call_tool("pod_stop", {"name": "lead"})
            seen["stop_parent"] = refusal(stop)["structured"]["code"]
    with open(out, "w") as f:
        f.write(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "member":
        asyncio.run(member(*sys.argv[2:4]))
    else:
        asyncio.run(main(*sys.argv[1:4]))
