"""Drives `axiomctl mcp` with the official Python MCP SDK (an independent client), end to end:
initialize, list the tools, spawn two agents in parallel, observe both, see the violation,
intervene, verify, read the transcript resource, and the notifications that come unasked.

Usage: drive.py stdio --axiomctl BIN --bus ADDR --socket SOCK --ws1 DIR --ws2 DIR [--uid N]
       drive.py http  --url URL --token-file FILE --ws1 DIR
Exits non-zero with the reason when something is not as it should be; prints MCP-OK at the end.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

import httpx2 as httpx  # the SDK's own HTTP client
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {"spawn", "observe", "status", "intervene", "principles", "verify"}
INVALID_PARAMS = -32602

# Agent A writes code with a TODO (rule todo-left; through an fd that stays open a moment, as
# tests/tests/rules.rs explains), claims tests pass without running any
# (rule false-tests-pass), then echoes whatever is typed into its terminal and ticks a file
# (so a freeze can be seen). Agent B creates a file, lists it, claims one more file than it
# wrote, and exits 0.
AGENT_A = r"""
(printf 'def greet():\n    # TODO: implement\n    pass\n'; sleep 0.3) > hello.py
echo "I have created hello.py. All tests pass."
while true; do
  if read -r -t 0.2 line; then echo "got: $line"; fi
  echo tick >> ticks.log
done
"""
AGENT_B = r"""
mkdir -p data
echo result > data/out.txt
ls data
echo "I've created data/out.txt and report.md."
sleep 1
exit 0
"""


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def data(result):
    """The structured content of a tool result (the JSON the tool returned)."""
    sc = getattr(result, "structured_content", None)
    if sc is None:
        sc = getattr(result, "structuredContent", None)
    if sc is None:
        text = result.content[0].text
        sc = json.loads(text)
    return sc


async def call(s, name, args, *, error=False):
    r = await s.call_tool(name, args)
    is_error = bool(getattr(r, "is_error", None) or getattr(r, "isError", None))
    check(is_error == error, f"{name}({args}): is_error={is_error}: {r.content}")
    return data(r)


async def invalid(s, name, args, needle):
    try:
        r = await s.call_tool(name, args)
    except MCPError as e:
        check(e.code == INVALID_PARAMS, f"{name}({args}): code {e.code}, not invalid params: {e}")
        check(needle in e.message, f"{name}({args}): reason {e.message!r} lacks {needle!r}")
        return e.message
    fail(f"{name}({args}) was accepted: {r.content}")


async def observe_until(s, agent, cursor, pred, what, timeout=30.0):
    """Pages through an agent's events (waiting for new ones) until pred(events so far) holds."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = await call(s, "observe", {"agent": agent, "cursor": cursor, "wait_ms": 1000})
        seen += page["events"]
        check(page["next_cursor"] >= cursor, "next_cursor went back")
        cursor = page["next_cursor"]
        if pred(seen):
            return seen, cursor
    kinds = {}
    for e in seen:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    notable = [e for e in seen if e["kind"] in ("violation", "intervention", "agent_exited", "exec")]
    fail(f"agent {agent}: {what} not seen in {timeout}s; saw {kinds}; notably {notable}")


class Notices:
    def __init__(self):
        self.logs = []
        self.updated = []
        self.other = []

    async def on_log(self, params):
        self.logs.append(params.data)

    async def on_message(self, m):
        name = type(m).__name__
        if "ResourceUpdated" in name:
            self.updated.append(m.params.uri)
        elif not isinstance(m, Exception):
            self.other.append(name)

    async def wait_log(self, pred, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(d) for d in self.logs):
                return
            await asyncio.sleep(0.1)
        fail(f"no notification for {what}; got {self.logs}")


async def stdio(a):
    prefix = []
    if a.uid is not None:
        prefix = ["setpriv", f"--reuid={a.uid}", f"--regid={a.uid}", "--clear-groups"]
    cmd = prefix + [a.axiomctl, "--socket", a.socket, "mcp", "--bus", a.bus]
    params = StdioServerParameters(
        command=cmd[0], args=cmd[1:], env={"HOME": "/nonexistent", "AXIOM_LOG": "info"}
    )
    n = Notices()
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w, logging_callback=n.on_log, message_handler=n.on_message) as s:
            init = await s.initialize()
            caps = init.capabilities
            check(caps.tools is not None and caps.resources is not None, f"capabilities: {caps}")
            check(bool(caps.resources.subscribe), "resources cannot be subscribed to")

            tools = (await s.list_tools()).tools
            names = {t.name for t in tools}
            check(names == TOOLS, f"tools: {names}")
            for t in tools:
                schema = t.input_schema if hasattr(t, "input_schema") else t.inputSchema
                check(schema.get("type") == "object", f"{t.name}: schema {schema}")
                check(len(t.description or "") > 40, f"{t.name}: description {t.description!r}")
            spawn_schema = next(t for t in tools if t.name == "spawn")
            check("agents" in json.dumps(spawn_schema.model_dump()), "spawn's schema lacks agents")

            # Errors follow the protocol.
            await invalid(s, "spawn", {"agents": []}, "agents is empty")
            await invalid(s, "spawn", {"agents": [{"command": ["true"], "workspace": "/nonexistent/x"}]}, "workspace")
            await invalid(s, "observe", {"kinds": ["bogus"]}, "unknown kind")
            await invalid(s, "intervene", {"agent": 999999, "action": "freeze"}, "no agent 999999")
            await invalid(s, "intervene", {"agent": 1, "action": "explode"}, "")
            await invalid(s, "status", {"agent": "x"}, "")
            # What axiomd refuses when an agent starts comes back as the spawn's error, with its reason.
            r = await call(s, "spawn", {"agents": [
                {"command": ["true"], "workspace": a.ws1, "profile": "no-such-profile"}]}, error=True)
            check("no-such-profile" in r["agents"][0]["error"], f"spawn with a bad profile: {r}")
            # ... and the server is still there after them.
            check(len((await s.list_tools()).tools) == 6, "the server did not survive bad calls")

            # Two agents, in parallel.
            t0 = time.monotonic()
            sp = await call(s, "spawn", {"agents": [
                {"command": ["bash", "-c", AGENT_A], "workspace": a.ws1, "name": "writer"},
                {"command": ["bash", "-c", AGENT_B], "workspace": a.ws2, "name": "lister"},
            ]})
            started = sp["agents"]
            check(len(started) == 2 and all("agent" in x for x in started), f"spawn: {sp}")
            A, B = started[0]["agent"], started[1]["agent"]
            check(A != B, "the same agent twice")
            print(f"spawned agents {A} and {B} in {time.monotonic() - t0:.2f}s", flush=True)

            # The transcript resources exist; subscribe to A's.
            res = await s.list_resources()
            uris = {str(x.uri) for x in res.resources}
            ua, ub = f"axiom://agents/{A}/transcript", f"axiom://agents/{B}/transcript"
            check(ua in uris and ub in uris, f"resources: {uris}")
            await s.subscribe_resource(ua)

            # Observe both: A's violation, B's whole life.
            def violated(evs):
                return any(e["kind"] == "violation" and e["rule"] == "todo-left" for e in evs)

            a_events, a_cur = await observe_until(s, A, 0, violated, "the todo-left violation")
            check(any(e["kind"] == "exec" and "bash" in e.get("filename", "") for e in a_events),
                  "A's exec not observed")
            check(any(e["kind"] == "file" and e["path"].endswith("hello.py") for e in a_events),
                  f"A's hello.py not observed: {[e for e in a_events if e['kind'] == 'file'][:3]}")

            def ended(evs):
                return any(e["kind"] == "agent_exited" for e in evs)

            b_events, _ = await observe_until(s, B, 0, ended, "B's exit")
            check(any(e["kind"] == "exec" and e.get("filename", "").endswith("/ls") for e in b_events),
                  f"B's ls not observed: {[e.get('filename') for e in b_events if e['kind'] == 'exec']}")
            outs = "".join(e.get("text", "") for e in b_events if e["kind"] == "output")
            check("out.txt" in outs, f"B's output not observed: {outs!r}")
            ex = next(e for e in b_events if e["kind"] == "agent_exited")
            check(ex.get("code") == 0, f"B's exit: {ex}")

            # All agents at once, with a cursor, and the tree.
            page = await call(s, "observe", {"limit": 5, "tree": True})
            check(len(page["events"]) == 5, "limit not honoured")
            check({e["agent"] for e in page["events"]} <= {A, B}, "events of other agents")
            tree = {t["agent"]: t for t in page["tree"]}
            check(A in tree and tree[A]["processes"], f"A's process tree: {page['tree']}")
            check("bash" in tree[A]["processes"][0]["command"], f"A's tree root: {tree[A]}")
            page2 = await call(s, "observe", {"cursor": page["next_cursor"], "limit": 5})
            check(all(e["seq"] >= page["next_cursor"] for e in page2["events"]), "cursor not honoured")

            # Status: what each did.
            st = {x["agent"]: x for x in (await call(s, "status", {}))["agents"]}
            sa, sb = st[A], st[B]
            check(sa["state"] == "running", f"A: {sa['state']}")
            check(sa["owner_uid"] == (a.uid if a.uid is not None else os.getuid()), f"A's owner: {sa['owner_uid']}")
            check(any(p.endswith("/hello.py") for p in sa["files_created"]), f"A created: {sa['files_created']}")
            check(any(v["rule"] == "todo-left" for v in sa["violations"]), f"A's violations: {sa['violations']}")
            check(sb["state"] == "exited" and sb["exit_code"] == 0, f"B: {sb['state']} {sb['exit_code']}")
            check(any(p.endswith("/data/out.txt") for p in sb["files_created"]), f"B created: {sb['files_created']}")
            check(sb["commands_run"] >= 2, f"B's commands: {sb['commands_run']}")
            check(sb["runtime_s"] > 0.5, f"B's runtime: {sb['runtime_s']}")

            # The violation arrived unasked too.
            await n.wait_log(lambda d: d.get("event") == "violation" and d.get("agent") == A,
                             "A's violation")
            await n.wait_log(lambda d: d.get("event") == "agent_exited" and d.get("agent") == B,
                             "B's exit")

            # Intervene: type into A's terminal, and see it answer.
            r = await call(s, "intervene", {"agent": A, "action": "inject", "message": "stop and finish greet"})
            check(r["done"] == "inject" and r.get("delivered") is True, f"inject: {r}")
            _, a_cur = await observe_until(
                s, A, a_cur,
                lambda evs: any("got: stop and finish greet" in e.get("text", "") for e in evs),
                "A answering the injected message")

            # Freeze: the ticks stop; thaw: they go on.
            ticks = os.path.join(a.ws1, "ticks.log")
            await call(s, "intervene", {"agent": A, "action": "freeze"})
            st = {x["agent"]: x for x in (await call(s, "status", {"agent": A}))["agents"]}
            check(st[A]["state"] == "frozen", f"A after freeze: {st[A]['state']}")
            await asyncio.sleep(0.5)
            n1 = os.path.getsize(ticks)
            await asyncio.sleep(1.0)
            n2 = os.path.getsize(ticks)
            check(n1 == n2, f"A kept ticking while frozen ({n1} -> {n2})")
            await call(s, "intervene", {"agent": A, "action": "thaw"})
            await asyncio.sleep(1.0)
            check(os.path.getsize(ticks) > n2, "A did not tick after thaw")

            # Refused by axiomd (not the caller's to decide): a tool error, readable.
            r = await call(s, "intervene", {"agent": B, "action": "inject", "message": "hi"}, error=True)
            check("inject" in r["error"], f"inject into an ended agent: {r}")

            # Principles: the list, and an offline check.
            pr = await call(s, "principles", {})
            ids = {p["id"] for p in pr["principles"]}
            check({"todo-left", "stop-planning", "false-completion"} <= ids, f"principles: {ids}")
            chk = await call(s, "principles", {"text": "OK, here's my plan: first I'll read the code."})
            check(not chk["clean"] and any(m["rule"] == "stop-planning" for m in chk["matches"]), f"check: {chk}")
            chk = await call(s, "principles", {"text": "x = 1  # FIXME later", "scope": "file_write"})
            check(any(m["rule"] == "todo-left" for m in chk["matches"]), f"check code: {chk}")
            chk = await call(s, "principles", {"text": "def add(a, b):\n    return a + b\n", "scope": "file_write"})
            check(chk["clean"], f"clean code flagged: {chk}")
            await invalid(s, "principles", {"text": "x", "scope": "nowhere"}, "scope")

            # Verify: claims against the kernel's record.
            vb = await call(s, "verify", {"agent": B})
            claims = {c["claim"]: c for c in vb["claims"]}
            check(any("report.md" in c and v["verdict"] == "contradicted" for c, v in claims.items()),
                  f"B's claim about report.md: {vb['claims']}")
            check(any(f["path"].endswith("/data/out.txt") and f["change"] == "created" for f in vb["files"]),
                  f"B's files: {vb['files']}")
            check(any(c["argv"][0] == "ls" and c.get("exit_code") == 0 for c in vb["commands"]),
                  f"B's commands: {vb['commands']}")
            va = await call(s, "verify", {"agent": A, "claims": "I have created hello.py. All tests pass."})
            verdicts = {c["claim"]: c["verdict"] for c in va["claims"]}
            check(verdicts.get("I have created hello.py.") == "supported", f"A's claims: {va['claims']}")
            check(verdicts.get("All tests pass.") == "contradicted", f"A's claims: {va['claims']}")

            # The transcript: what A's terminal showed.
            rr = await s.read_resource(ua)
            text = rr.contents[0].text
            check("I have created hello.py" in text and "got: stop and finish greet" in text,
                  f"A's transcript: {text[:500]!r}")
            try:
                await s.read_resource("axiom://agents/999999/transcript")
                fail("a transcript of no agent was read")
            except MCPError:
                pass

            # Kill A: its exit is observed, notified, and its subscribed transcript updated.
            await call(s, "intervene", {"agent": A, "action": "kill"})
            a_more, _ = await observe_until(s, A, a_cur, ended, "A's exit after kill")
            ex = next(e for e in a_more if e["kind"] == "agent_exited")
            check(ex.get("signal") == 9, f"A's exit: {ex}")
            await n.wait_log(lambda d: d.get("event") == "agent_exited" and d.get("agent") == A, "A's exit")
            deadline = time.monotonic() + 10
            while ua not in n.updated and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            check(ua in n.updated, f"no resources/updated for {ua}: {n.updated}")
            print(f"notifications: {len(n.logs)} log messages, {len(n.updated)} resource updates", flush=True)

            # An unknown tool is the protocol's error too, and the server stays.
            try:
                await s.call_tool("format_disk", {})
                fail("an unknown tool was called")
            except MCPError as e:
                check(e.code in (INVALID_PARAMS, -32601) and "not found" in e.message,
                      f"unknown tool: {e.code} {e.message}")

            # One left running: the server stops it when the client goes (the test checks).
            sp = await call(s, "spawn", {"agents": [{"command": ["sleep", "600"], "workspace": a.ws2}]})
            print(f"LINGER {sp['agents'][0]['agent']}", flush=True)
    print("MCP-OK", flush=True)


async def http(a):
    token = open(a.token_file).read().strip()
    # No token, no service.
    req = urllib.request.Request(a.url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)
        fail("a request without the token was served")
    except urllib.error.HTTPError as e:
        check(e.code == 401, f"without the token: HTTP {e.code}")
    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                               timeout=httpx.Timeout(30.0, read=60.0))
    async with client:
        async with streamable_http_client(a.url, http_client=client) as streams:
            r, w = streams[0], streams[1]
            async with ClientSession(r, w) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                check(names == TOOLS, f"tools over HTTP: {names}")
                sp = await call(s, "spawn", {"agents": [
                    {"command": ["bash", "-c", "echo 'let me plan this first'; sleep 1; echo done > x.txt"],
                     "workspace": a.ws1, "name": "http"}]})
                agent = sp["agents"][0]["agent"]

                def planned(evs):
                    return any(e["kind"] == "violation" and e["rule"] == "stop-planning" for e in evs)

                await observe_until(s, agent, 0, planned, "the stop-planning violation")
                await observe_until(s, agent, 0,
                                    lambda evs: any(e["kind"] == "agent_exited" for e in evs),
                                    "the agent's exit")
                vr = await call(s, "verify", {"agent": agent, "claims": "I've created x.txt"})
                check(vr["claims"][0]["verdict"] == "supported", f"verify over HTTP: {vr['claims']}")
                await invalid(s, "verify", {"agent": 424242}, "no agent 424242")
    print("MCP-HTTP-OK", flush=True)


async def restart(a):
    """axiomd restarts under a running session: the server subscribes again, cursors keep going
    up, the agent (restored by axiomd) is still observed, and nothing before is lost."""
    params = StdioServerParameters(
        command=a.axiomctl, args=["--socket", a.socket, "mcp", "--bus", a.bus],
        env={"AXIOM_LOG": "info"})
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            sp = await call(s, "spawn", {"agents": [{"command": [
                "bash", "-c", "i=0; while true; do echo beat-$i; i=$((i+1)); sleep 0.1; done"],
                "workspace": a.ws1}]})
            agent = sp["agents"][0]["agent"]

            def beats(evs):
                return [int(e["text"].split("beat-")[1].split()[0])
                        for e in evs if e["kind"] == "output" and "beat-" in e.get("text", "")]

            before, cur = await observe_until(s, agent, 0, lambda evs: len(beats(evs)) >= 5, "beats")
            print("RESTART", flush=True)
            while not os.path.exists(a.flag):
                await asyncio.sleep(0.05)
            last = max(beats(before))
            after, cur2 = await observe_until(
                s, agent, cur, lambda evs: any(b > last + 20 for b in beats(evs)),
                "beats after axiomd restarted", timeout=40)
            check(cur2 > cur, f"the cursor went back: {cur} -> {cur2}")
            check(all(e["seq"] >= cur for e in after), "an event from before the cursor")
            st = (await call(s, "status", {"agent": agent}))["agents"][0]
            check(st["state"] == "running", f"after the restart: {st['state']}")
            old = await call(s, "observe", {"agent": agent, "limit": 1000})
            check(set(beats(before)) <= set(beats(old["events"])), "events from before the restart lost")
            # The writes made while axiomd was down waited in the kernel's ring: none is missing.
            seen = sorted(set(beats(before) + beats(after)))
            missing = sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))
            check(not missing, f"beats lost across the restart: {missing[:20]} ({len(missing)})")
            await call(s, "intervene", {"agent": agent, "action": "kill"})
    print("MCP-RESTART-OK", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["stdio", "http", "restart"])
    p.add_argument("--flag")
    p.add_argument("--axiomctl")
    p.add_argument("--bus")
    p.add_argument("--socket")
    p.add_argument("--ws1")
    p.add_argument("--ws2")
    p.add_argument("--uid", type=int)
    p.add_argument("--url")
    p.add_argument("--token-file")
    a = p.parse_args()
    asyncio.run({"stdio": stdio, "http": http, "restart": restart}[a.mode](a))


if __name__ == "__main__":
    main()
