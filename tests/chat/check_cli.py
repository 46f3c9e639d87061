#!/usr/bin/env python3
"""`moeopt chat-template` end to end: every case of tests/data/chat_templates/cases.json is
rendered through the CLI (family names resolved under models/tokenizers, --template for the
Mixtral-Instruct file, --tools/--kwargs/--add-generation-prompt as the case says) and must
print exactly transformers' golden text; cases where transformers raised must exit 2 with a
one-line error. Bad flags and files must exit 2 too.

    python3 tests/chat/check_cli.py build-*/bin/moeopt
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "chat_templates")


def run(cli, args, env):
    p = subprocess.run([cli, "chat-template", *args], capture_output=True, env=env)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


def main():
    cli = os.path.abspath(sys.argv[1])
    env = dict(os.environ, MOEOPT_HOME=ROOT)
    with open(os.path.join(DATA, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    with open(os.path.join(DATA, "goldens.json"), encoding="utf-8") as f:
        goldens = json.load(f)["goldens"]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            name = case["name"]
            msg_file = os.path.join(tmp, name + ".messages.json")
            with open(msg_file, "w", encoding="utf-8") as f:
                json.dump(case["messages"], f, ensure_ascii=False)
            args = ["--tokenizer", case["family"], "--messages", msg_file]
            if "tools" in case:
                tools_file = os.path.join(tmp, name + ".tools.json")
                with open(tools_file, "w", encoding="utf-8") as f:
                    json.dump(case["tools"], f, ensure_ascii=False)
                args += ["--tools", tools_file]
            if case["add_generation_prompt"]:
                args.append("--add-generation-prompt")
            if "kwargs" in case:
                args += ["--kwargs", json.dumps(case["kwargs"])]
            if "template" in case:
                args += ["--template", os.path.join(DATA, "templates", case["template"])]
            rc, out, err = run(cli, args, env)
            golden = goldens[name]
            if "error" in golden:
                if rc != 2 or out or not err.startswith("moeopt chat-template: error:") \
                        or err.count("\n") != 1:
                    failures.append(f"{name}: expected a one-line error and exit 2, got rc={rc} "
                                    f"stdout={out[:80]!r} stderr={err!r}")
            elif rc != 0 or out != golden["rendered"]:
                failures.append(f"{name}: rc={rc} stderr={err!r}\n  ours:   {out[:200]!r}\n"
                                f"  theirs: {golden['rendered'][:200]!r}")

        bad = [
            (["--tokenizer", "qwen3", "--messages", os.path.join(tmp, "missing.json")], "missing file"),
            (["--tokenizer", "no_such_family", "--messages", msg_file], "unknown tokenizer"),
            (["--tokenizer", "qwen3", "--messages", msg_file, "--kwargs", "{not json"], "bad kwargs"),
            (["--tokenizer", "qwen3"], "missing --messages"),
        ]
        broken = os.path.join(tmp, "broken.json")
        with open(broken, "w") as f:
            f.write("[{")
        bad.append((["--tokenizer", "qwen3", "--messages", broken], "invalid messages JSON"))
        for args, what in bad:
            rc, out, err = run(cli, args, env)
            if rc != 2:
                failures.append(f"{what}: expected exit 2, got {rc} ({err.strip()})")

    for f in failures:
        print("FAIL", f)
    print(f"{len(cases)} cases through the CLI, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
