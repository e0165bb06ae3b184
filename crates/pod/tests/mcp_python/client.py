"""`pod mcp` through the official MCP Python SDK (`mcp` on PyPI, major 2), a client
this project did not write. Driven by crates/pod/tests/mcp_python.rs, which
starts the lead Pod and reads what this prints: one JSON object with what
the server answered (the Rust side compares it whole).

argv: POD (the binary), POD_HOME, REPO (the lead's folder, the server's cwd).
"""

import asyncio
import json
import sys

import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError


def refusal(result):
    assert result.is_error, result
    return {"text": result.content[0].text, "structured": result.structured_content}


async def main(pod, home, repo):
    params = StdioServerParameters(
        command=pod,
        args=["mcp"],
        env={"POD_HOME": home, "POD_NAME": "lead", "PATH": "/usr/bin:/bin"},
        cwd=repo,
    )
    seen = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
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
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
