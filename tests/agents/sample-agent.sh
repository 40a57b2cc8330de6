#!/bin/sh
# A stand-in for a coding agent, for the demo: it talks, plans, writes code with a TODO, runs a
# few commands and claims success — the behaviours Axiom exists to see.
work=$(mktemp -d /tmp/sample-agent.XXXXXX)
echo "Let me plan how to approach this task first..."
sleep 0.5
echo "I'll first create the project layout."
mkdir -p "$work/src"
printf 'fn main() {\n    // TODO: handle errors\n    println!("hello");\n}\n' > "$work/src/main.rs"
sleep 0.3
ls "$work/src"
grep -n TODO "$work/src/main.rs"
mv "$work/src/main.rs" "$work/src/lib.rs"
sleep 0.3
echo "I've successfully completed the task and all tests pass."
rm -rf "$work"
