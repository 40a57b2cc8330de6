"""`cargo xtask bench mcp`'s client: what the MCP front end costs, each against its baseline in
the same run.

1. spawn: one agent (`/bin/true`) per `spawn` call until it returns (the agent tracked and
   released), against `axiomctl --json run -- /bin/true` run directly until it says the same
   (its `started` line): what spawn does underneath, without MCP and the server in between.
2. parallel spawn: N agents in one call, against N single calls one after another.
3. delivery latency: an agent writes a line every few ms; from the kernel's timestamp of each
   write to the moment the client holds it, through `observe` (long-poll), against the raw event
   stream (`axiomctl events -f --json`) read at the same time.

Prints one `mcp:` line of numbers; the harness prints the ratios.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import time

from mcp import ClientSession, StdioServerParameters, stdio_client


def median(v):
    return statistics.median(v) if v else float("nan")


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


async def call(s, name, args):
    r = await s.call_tool(name, args)
    if r.is_error:
        raise SystemExit(f"{name}: {r.content}")
    return r.structured_content


async def wait_exit(s, agent, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await call(s, "status", {"agent": agent})
        if st["agents"][0]["state"] == "exited":
            return
        await asyncio.sleep(0.02)
    raise SystemExit(f"agent {agent} did not end")


async def main(a):
    params = StdioServerParameters(
        command=a.axiomctl, args=["--socket", a.socket, "mcp", "--bus", a.bus]
    )
    run_cmd = [a.axiomctl, "--socket", a.socket, "--json", "run", "--workspace", a.ws, "--",
               "/bin/true"]

    def run_started_ms():
        """ms from starting `axiomctl run` to its `started` line (then it is left to finish)."""
        t0 = time.perf_counter()
        p = subprocess.Popen(run_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        took = None
        for line in p.stderr:
            if '"started"' in line:
                took = (time.perf_counter() - t0) * 1e3
                break
        p.stderr.read()
        if p.wait() != 0 or took is None:
            raise SystemExit(f"axiomctl run failed: {p.returncode}")
        return took

    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            # Warm both paths once.
            run_started_ms()
            await call(s, "spawn", {"agents": [{"command": ["/bin/true"], "workspace": a.ws}]})

            run_ms, spawn_ms = [], []
            for _ in range(a.rounds):
                run_ms.append(run_started_ms())
                t0 = time.perf_counter()
                sp = await call(s, "spawn", {"agents": [{"command": ["/bin/true"], "workspace": a.ws}]})
                spawn_ms.append((time.perf_counter() - t0) * 1e3)
                await wait_exit(s, sp["agents"][0]["agent"])

            t0 = time.perf_counter()
            sp = await call(s, "spawn", {"agents": [
                {"command": ["/bin/true"], "workspace": a.ws} for _ in range(a.parallel)]})
            parallel_ms = (time.perf_counter() - t0) * 1e3
            ok = [x for x in sp["agents"] if "agent" in x]
            if len(ok) != a.parallel:
                raise SystemExit(f"parallel spawn: {sp}")
            for x in ok:
                await wait_exit(s, x["agent"])

            # Delivery latency: MCP observe against the raw stream, side by side.
            script = f"for i in $(seq 1 {a.lines}); do echo line-$i; sleep 0.005; done"
            sp = await call(s, "spawn", {"agents": [
                {"command": ["bash", "-c", f"sleep 0.5; {script}"], "workspace": a.ws}]})
            agent = sp["agents"][0]["agent"]
            raw = await asyncio.create_subprocess_exec(
                a.axiomctl, "--socket", a.socket, "--json", "events", "--agent", str(agent), "-f",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            stream_lat, mcp_lat = [], []

            async def read_raw():
                while len(stream_lat) < a.lines:
                    line = await raw.stdout.readline()
                    if not line:
                        return
                    now = time.time_ns()
                    e = json.loads(line)
                    if e.get("kind") == "output" and "line-" in e.get("text", ""):
                        stream_lat.append((now - e["time_ns"]) / 1e6)

            async def read_mcp():
                cursor = 0
                while len(mcp_lat) < a.lines:
                    page = await call(s, "observe", {"agent": agent, "cursor": cursor,
                                                     "kinds": ["output"], "wait_ms": 2000,
                                                     "limit": 1000})
                    now = time.time_ns()
                    cursor = page["next_cursor"]
                    for e in page["events"]:
                        if "line-" in e.get("text", ""):
                            mcp_lat.append((now - e["time_ns"]) / 1e6)

            await asyncio.wait_for(asyncio.gather(read_raw(), read_mcp()), timeout=120)
            raw.kill()
            await raw.wait()
    print(
        f"mcp: run_ms={median(run_ms):.2f} spawn_ms={median(spawn_ms):.2f} "
        f"parallel={a.parallel} parallel_ms={parallel_ms:.1f} "
        f"stream_p50_ms={pct(stream_lat, 0.5):.2f} stream_p99_ms={pct(stream_lat, 0.99):.2f} "
        f"observe_p50_ms={pct(mcp_lat, 0.5):.2f} observe_p99_ms={pct(mcp_lat, 0.99):.2f} "
        f"events={len(mcp_lat)} rounds={a.rounds}",
        flush=True,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--axiomctl", required=True)
    p.add_argument("--bus", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--ws", required=True)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--lines", type=int, default=400)
    asyncio.run(main(p.parse_args()))
