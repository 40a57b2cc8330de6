#!/usr/bin/env python3
"""A scripted stand-in for a model API, on loopback, for driving the real agent CLIs offline.

It speaks the two wire protocols the real agents use:

* the Anthropic Messages API (`POST /v1/messages`, streaming SSE with text and tool_use blocks):
  Claude Code with `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`;
* the OpenAI Responses API (`POST /v1/responses`, streaming SSE with output_text deltas,
  function calls, and a write as a freeform `apply_patch` call when that is the agent's only
  write tool): Codex CLI with a custom provider (`base_url = "http://127.0.0.1:PORT/v1"`,
  `wire_api = "responses"`), and the Chat Completions API (`POST /v1/chat/completions`,
  streaming) for OpenAI-compatible agents.

An agent that offers no tools (aider) gets, with `--text-edits ROOT`, the rest of the script as one
reply, each write as its whole-file edit format (the path, then the content fenced).

It plays a script: a JSON file with `turns`, each `{"text": "...", "tools": [...]}`, where a tool
is `{"write": {"path", "content"}}`, `{"bash": "command"}`, `{"edit": {"path", "old", "new"}}` or
`{"agent": {"description", "prompt"}}` (a subagent);
a turn with `"after": "text"` is served only to a request that carries that text (a message
typed into the agent), earlier requests get a neutral answer; one with `"unless": "text"` only to
a request that does not (a subagent's first request, not its parent's next one).
Each request of the agent's main loop (one that offers tools) gets the next turn; the agent's
side requests (titles, topic checks, token counts) get a short neutral answer. Text is streamed
in small deltas with short pauses, as a real model does.

Every request is logged (one JSON object per line: time, path, the kind of request, the turn it
got, and the body) so a test can assert on what reached the model; each served turn's text is
logged with the wall time its first delta went out, the origin of a detection latency.
"""
import argparse
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"next": 0, "served": 0}
# The working directory the agent said in the request being answered (per handler thread).
CWD = threading.local()


def now_ns():
    return time.time_ns()


def log(entry):
    entry["time_ns"] = now_ns()
    with LOCK, open(ARGS.log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def chunks(text, size=6):
    """Small deltas, split at word boundaries where it can: how a model's text arrives."""
    out, cur = [], ""
    for tok in re.findall(r"\S+\s*|\s+", text):
        if len(cur) + len(tok) > size and cur:
            out.append(cur)
            cur = ""
        cur += tok
    if cur:
        out.append(cur)
    return out


def tool_names(body):
    names = []
    for t in body.get("tools") or []:
        n = t.get("name") or (t.get("function") or {}).get("name")
        if n:
            names.append(n)
        # Gemini: tools: [{functionDeclarations: [{name, ...}]}]
        for f in t.get("functionDeclarations") or []:
            if f.get("name"):
                names.append(f["name"])
    return names


def next_turn(kind, raw=b""):
    """The next scripted turn (None once the script is played, or while the next one waits for
    a request that carries its `after` text: one that is not there yet gets a neutral answer)."""
    with LOCK:
        i = STATE["next"]
        if i >= len(SCRIPT["turns"]):
            return None, i
        after = SCRIPT["turns"][i].get("after")
        if after and after.encode() not in raw:
            return None, None
        unless = SCRIPT["turns"][i].get("unless")
        if unless and unless.encode() in raw:
            return None, None
        STATE["next"] = i + 1
        return SCRIPT["turns"][i], i


def finished_turn(n=1):
    with LOCK:
        STATE["served"] += n
        done = STATE["served"] >= len(SCRIPT["turns"])
    if done:
        log({"event": "script_done"})


def text_edit_turn():
    """An agent without tools (aider, `--text-edits`): it asks the model once per message, so the
    rest of the script is one reply, its tool calls written as the agent's edits."""
    with LOCK:
        i = STATE["next"]
        turns = SCRIPT["turns"][i:]
        STATE["next"] = len(SCRIPT["turns"])
    if not turns:
        return None, i
    parts = []
    for t in turns:
        if t.get("text"):
            parts.append(t["text"])
        parts.extend(text_edit(tool) for tool in t.get("tools", []))
    return {"text": "\n\n".join(parts), "_n": len(turns)}, i


# This server's address (`{standin}` in a command), and the installer it serves under /dl/.
STANDIN = ""
INSTALLER = "#!/bin/sh\n# An installer, as the web serves them.\necho installed-from-the-net\n"


def text_edit(tool):
    """One tool call as aider's `whole` edit format (the file's path relative to the root on a
    line of its own, then its whole new content fenced), or a shell command said in a sentence
    (aider runs none unasked)."""
    fence = "```"
    if "write" in tool or "edit" in tool:
        if "write" in tool:
            path, content = tool["write"]["path"], tool["write"]["content"]
        else:
            e = tool["edit"]
            path = e["path"]
            with open(path, encoding="utf-8") as f:
                content = f.read().replace(e["old"], e["new"], 1)
        rel = os.path.relpath(path, ARGS.text_edits)
        return f"{rel}\n{fence}\n{content}{fence}"
    # A fenced block after a line is a file to aider: a command is said, not fenced.
    return f"I would run `{tool['bash']}` next."


# ------------------------------------------------------------------ tool calls, per agent


def shell_call(names, command):
    """A shell command as the agent's own shell tool takes it."""
    if "Bash" in names:
        return "Bash", {"command": command, "description": "Run a command"}
    if "exec_command" in names:
        return "exec_command", {"cmd": command}
    if "shell_command" in names:
        return "shell_command", {"command": command}
    if "shell" in names:
        return "shell", {"command": ["bash", "-lc", command]}
    if "run_shell_command" in names:
        return "run_shell_command", {"command": command}
    if "bash" in names:
        return "bash", {"command": command}
    raise KeyError(f"no shell tool among {names}")


def heredoc(path, content):
    return f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' <<'AXIOM_EOF'\n{content}\nAXIOM_EOF"


def patch(path, content):
    """Codex's `apply_patch` (a freeform tool: its input is the patch itself) writing `content`
    to `path`, relative to the agent's working directory: a file added, or every line of one
    that exists replaced."""
    rel = os.path.relpath(path, CWD.value) if getattr(CWD, "value", None) else path
    plus = "".join(f"+{line}\n" for line in content.splitlines())
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            minus = "".join(f"-{line}\n" for line in f.read().splitlines())
        hunk = f"*** Update File: {rel}\n@@\n{minus}{plus}"
    else:
        hunk = f"*** Add File: {rel}\n{plus}"
    return f"*** Begin Patch\n{hunk}*** End Patch\n"


def tool_call(names, tool):
    """(tool name, input object) for one scripted tool call."""
    if "write" in tool:
        w = tool["write"]
        if "Write" in names:
            return "Write", {"file_path": w["path"], "content": w["content"]}
        if "write_file" in names:
            return "write_file", {"file_path": w["path"], "content": w["content"]}
        if "write" in names:
            return "write", {"filePath": w["path"], "content": w["content"]}
        if "apply_patch" in names:
            return "apply_patch", patch(w["path"], w["content"])
        return shell_call(names, heredoc(w["path"], w["content"]))
    if "edit" in tool:
        e = tool["edit"]
        if "Edit" in names:
            return "Edit", {"file_path": e["path"], "old_string": e["old"], "new_string": e["new"]}
        if "replace" in names:
            return "replace", {"file_path": e["path"], "old_string": e["old"], "new_string": e["new"], "instruction": "edit"}
        if "edit" in names:
            return "edit", {"filePath": e["path"], "oldString": e["old"], "newString": e["new"]}
        if "apply_patch" in names:
            with open(e["path"], encoding="utf-8") as f:
                content = f.read().replace(e["old"], e["new"], 1)
            return "apply_patch", patch(e["path"], content)
        py = (
            "import sys,pathlib; p=pathlib.Path(sys.argv[1]); "
            "p.write_text(p.read_text().replace(sys.argv[2], sys.argv[3], 1))"
        )
        q = lambda s: "'" + s.replace("'", "'\\''") + "'"
        return shell_call(names, f"python3 -c {q(py)} {q(e['path'])} {q(e['old'])} {q(e['new'])}")
    if "bash" in tool:
        # `{standin}`: this server's address, for a command that downloads its installer.
        return shell_call(names, tool["bash"].replace("{standin}", STANDIN))
    if "agent" in tool:
        # Claude Code's subagent (its `Agent` tool, `Task` before), waited for.
        a = tool["agent"]
        for n in ("Agent", "Task"):
            if n in names:
                return n, {"description": a["description"], "prompt": a["prompt"], "subagent_type": "general-purpose", "run_in_background": False}
        raise KeyError(f"no subagent tool among {names}")
    raise KeyError(f"unknown tool {tool}")


# ------------------------------------------------------------------ Anthropic Messages


def anthropic_stream(h, turn, names, model):
    msg_id = "msg_" + uuid.uuid4().hex[:20]
    h.sse_start()
    h.sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 1},
            },
        },
    )
    index = 0
    text = turn.get("text", "")
    if text:
        h.sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        log({"event": "text", "turn": turn.get("_i"), "text": text})
        for c in chunks(text):
            h.sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
            )
            time.sleep(ARGS.delta_ms / 1000)
        h.sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        index = 1
    tools = turn.get("tools", [])
    for t in tools:
        name, inp = tool_call(names, t)
        h.sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": name, "input": {}},
            },
        )
        raw = json.dumps(inp)
        for i in range(0, len(raw), 40):
            h.sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": raw[i : i + 40]}},
            )
        h.sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    h.sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 20},
        },
    )
    h.sse("message_stop", {"type": "message_stop"})


def anthropic_plain(h, text, model):
    h.json(
        200,
        {
            "id": "msg_" + uuid.uuid4().hex[:20],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        },
    )


# ------------------------------------------------------------------ OpenAI Responses


def responses_stream(h, turn, names, model):
    rid = "resp_" + uuid.uuid4().hex[:20]
    seq = [0]

    def ev(kind, obj):
        obj["type"] = kind
        obj["sequence_number"] = seq[0]
        seq[0] += 1
        h.sse(kind, obj)

    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model, "output": []}
    h.sse_start()
    ev("response.created", {"response": dict(base, status="in_progress")})
    ev("response.in_progress", {"response": dict(base, status="in_progress")})
    output = []
    text = turn.get("text", "")
    if text:
        item_id = "msg_" + uuid.uuid4().hex[:20]
        oi = len(output)
        ev(
            "response.output_item.added",
            {"output_index": oi, "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}},
        )
        ev(
            "response.content_part.added",
            {"item_id": item_id, "output_index": oi, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        )
        log({"event": "text", "turn": turn.get("_i"), "text": text})
        for c in chunks(text):
            ev("response.output_text.delta", {"item_id": item_id, "output_index": oi, "content_index": 0, "delta": c, "logprobs": []})
            time.sleep(ARGS.delta_ms / 1000)
        ev("response.output_text.done", {"item_id": item_id, "output_index": oi, "content_index": 0, "text": text, "logprobs": []})
        part = {"type": "output_text", "text": text, "annotations": []}
        ev("response.content_part.done", {"item_id": item_id, "output_index": oi, "content_index": 0, "part": part})
        item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        ev("response.output_item.done", {"output_index": oi, "item": item})
        output.append(item)
    for t in turn.get("tools", []):
        name, inp = tool_call(names, t)
        oi = len(output)
        if isinstance(inp, str):
            # A freeform (custom) tool: its input is the text itself.
            kind, prefix, field, payload = "custom_tool_call", "ctc_", "input", inp
            stream = "response.custom_tool_call_input"
        else:
            kind, prefix, field, payload = "function_call", "fc_", "arguments", json.dumps(inp)
            stream = "response.function_call_arguments"
        iid = prefix + uuid.uuid4().hex[:20]
        call_id = "call_" + uuid.uuid4().hex[:20]
        item = {"id": iid, "type": kind, "status": "in_progress", "call_id": call_id, "name": name, field: ""}
        ev("response.output_item.added", {"output_index": oi, "item": item})
        ev(stream + ".delta", {"item_id": iid, "output_index": oi, "delta": payload})
        ev(stream + ".done", {"item_id": iid, "output_index": oi, field: payload})
        item = dict(item, status="completed", **{field: payload})
        ev("response.output_item.done", {"output_index": oi, "item": item})
        output.append(item)
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 120,
    }
    ev("response.completed", {"response": dict(base, status="completed", output=output, usage=usage)})


# ------------------------------------------------------------------ OpenAI Chat Completions


def chat_stream(h, turn, names, model):
    cid = "chatcmpl-" + uuid.uuid4().hex[:20]
    h.sse_start()

    def chunk(delta, finish=None):
        h.sse(
            None,
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            },
        )

    chunk({"role": "assistant", "content": ""})
    text = turn.get("text", "")
    if text:
        log({"event": "text", "turn": turn.get("_i"), "text": text})
        for c in chunks(text):
            chunk({"content": c})
            time.sleep(ARGS.delta_ms / 1000)
    tools = turn.get("tools", [])
    for i, t in enumerate(tools):
        name, inp = tool_call(names, t)
        chunk(
            {
                "tool_calls": [
                    {"index": i, "id": "call_" + uuid.uuid4().hex[:20], "type": "function", "function": {"name": name, "arguments": json.dumps(inp)}}
                ]
            }
        )
    chunk({}, "tool_calls" if tools else "stop")
    h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()


# ------------------------------------------------------------------ Gemini generateContent


def gemini_stream(h, turn, names, model):
    h.sse_start()
    text = turn.get("text", "")
    usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}

    def chunk(parts, finish=None):
        cand = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        h.sse(None, {"candidates": [cand], "usageMetadata": usage, "modelVersion": model})

    if text:
        log({"event": "text", "turn": turn.get("_i"), "text": text})
        for c in chunks(text):
            chunk([{"text": c}])
            time.sleep(ARGS.delta_ms / 1000)
    calls = []
    for t in turn.get("tools", []):
        name, inp = tool_call(names, t)
        calls.append({"functionCall": {"name": name, "args": inp}})
    chunk(calls or [{"text": ""}], "STOP")


def from_schema(schema):
    """The least value a JSON schema accepts: side requests (routing, next-speaker checks) ask
    for JSON of a given shape."""
    t = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if t == "object":
        props = schema.get("properties") or {}
        return {k: from_schema(props.get(k, {})) for k in schema.get("required") or props.keys()}
    if t == "array":
        return []
    if t in ("integer", "number"):
        return 1
    if t == "boolean":
        return False
    return "user" if "speaker" in json.dumps(schema) else "ok"


def gemini_plain(h, turn, names, model, body=None):
    gc = (body or {}).get("generationConfig") or {}
    schema = gc.get("responseJsonSchema") or gc.get("responseSchema")
    if schema is not None and not names:
        turn = {"text": json.dumps(from_schema(schema))}
    parts = []
    if turn.get("text"):
        parts.append({"text": turn["text"]})
    for t in turn.get("tools", []):
        name, inp = tool_call(names, t)
        parts.append({"functionCall": {"name": name, "args": inp}})
    h.json(
        200,
        {
            "candidates": [{"content": {"role": "model", "parts": parts or [{"text": "OK"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        },
    )


# ------------------------------------------------------------------ server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def sse_start(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def sse(self, event, obj):
        data = ""
        if event:
            data += f"event: {event}\n"
        data += "data: " + json.dumps(obj) + "\n\n"
        self.wfile.write(data.encode())
        self.wfile.flush()

    def json(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/dl/"):
            # An installer, as the web serves them (a command's download in the corpus): it
            # only says it ran.
            b = INSTALLER.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/x-sh")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
        elif path.endswith("/models"):
            self.json(200, {"object": "list", "data": [{"id": ARGS.model, "object": "model", "created": 0, "owned_by": "axiom"}], "models": []})
        else:
            self.json(200, {})

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        path = self.path.split("?")[0]
        names = tool_names(body)
        # Codex says its working directory in its environment context: its patches are
        # relative to it.
        m = re.search(rb"<cwd>([^<]*)</cwd>", raw)
        CWD.value = m.group(1).decode() if m else None
        model = body.get("model") or ARGS.model
        stream = bool(body.get("stream"))
        # The main loop offers the agent's tools (a shell among them); side requests do not.
        main = any(x in names for x in ("Bash", "exec_command", "shell", "shell_command", "run_shell_command", "bash"))
        if ARGS.text_edits and path.endswith("/chat/completions"):
            # An agent without tools: every request is its main loop.
            main = True
            turn, i = text_edit_turn()
        else:
            turn, i = (next_turn(path, raw) if main else (None, None))
        log({"event": "request", "path": path, "main": main, "turn": i if turn is not None else None, "tools": names, "body": body})
        if turn is not None:
            # The origin of a detection latency: the model starts answering with this turn.
            log({"event": "turn", "turn": i})
        if turn is not None:
            turn = dict(turn, _i=i)
        else:
            turn = {"text": ARGS.idle_text if main else "OK"}
        try:
            if path.endswith("/count_tokens"):
                self.json(200, {"input_tokens": 100})
            elif path.endswith("/messages"):
                if stream:
                    anthropic_stream(self, turn, names, model)
                else:
                    anthropic_plain(self, turn.get("text", "OK"), model)
            elif path.endswith("/responses"):
                responses_stream(self, turn, names, model)
            elif path.endswith("/chat/completions"):
                chat_stream(self, turn, names, model)
            elif ":streamGenerateContent" in path:
                gemini_stream(self, turn, names, path.split("/models/")[-1].split(":")[0])
            elif ":generateContent" in path:
                gemini_plain(self, turn, names, path.split("/models/")[-1].split(":")[0], body)
            elif ":countTokens" in path:
                self.json(200, {"totalTokens": 100})
            else:
                self.json(404, {"error": {"type": "not_found", "message": path}})
                return
        except (BrokenPipeError, ConnectionResetError):
            # The agent hung up mid-answer (the user — or an intervention — interrupted it):
            # the turn was said all the same.
            log({"event": "interrupted", "turn": turn.get("_i")})
        if "_i" in turn:
            finished_turn(turn.get("_n", 1))


def main():
    global ARGS, SCRIPT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--script", required=True, help="the scenario: a JSON file with turns")
    p.add_argument("--log", required=True, help="JSON lines: every request, every text served")
    p.add_argument("--port", type=int, default=0, help="0: any free port")
    p.add_argument("--port-file", help="where the chosen port is written once listening")
    p.add_argument("--model", default="claude-sonnet-4-5")
    p.add_argument("--delta-ms", type=float, default=15.0, help="pause between text deltas")
    p.add_argument("--idle-text", default="Done.", help="the answer once the script is played")
    p.add_argument(
        "--text-edits",
        metavar="ROOT",
        help="an agent without tools (aider): the script as one reply per request, writes as its "
        "whole-file edits with paths relative to ROOT",
    )
    ARGS = p.parse_args()
    with open(ARGS.script, encoding="utf-8") as f:
        SCRIPT = json.load(f)
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    global STANDIN
    STANDIN = f"127.0.0.1:{srv.server_address[1]}"
    if ARGS.port_file:
        tmp = ARGS.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(srv.server_address[1]))
        os.replace(tmp, ARGS.port_file)
    print(f"standin: listening on 127.0.0.1:{srv.server_address[1]}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
