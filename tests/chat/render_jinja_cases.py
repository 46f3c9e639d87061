#!/usr/bin/env python3
"""Render tests/data/chat_templates/jinja_cases.json with Python jinja2, configured the way
transformers configures it for chat templates, and print the results as JSON:
{"<case>": {"out": "<text>"}} or {"<case>": {"error": "<message>", "type": "<exception>"}}.

tests/unit/tokenizer_jinja_test.cpp runs this with the project .venv (jinja2 is pinned in
scripts/requirements-test.txt) and compares moeopt's interpreter with every result.

    .venv/bin/python tests/chat/render_jinja_cases.py [--now UNIX_SECONDS] [CASES_JSON]
"""
import argparse
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_environment(now):
    # The chat-template environment of transformers: sandboxed, trim_blocks and
    # lstrip_blocks on, loop controls, and its globals/filters.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        return datetime.fromtimestamp(now).strftime(fmt)

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"underscore-prefixed attribute {name!r}")

    # A generation block renders its body unchanged (transformers only records offsets).
    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env.add_extension(Generation)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = lambda *a, **k: dict(*a, **k)
    env.globals["namespace"] = Namespace
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="?",
                    default=os.path.join(ROOT, "tests", "data", "chat_templates", "jinja_cases.json"))
    ap.add_argument("--now", type=float, default=1700000000.0)
    args = ap.parse_args()
    env = make_environment(args.now)
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    results = {}
    for case in cases:
        try:
            out = env.from_string(case["template"]).render(**case["context"])
            results[case["name"]] = {"out": out}
        except Exception as e:  # errors are part of the expected behaviour
            results[case["name"]] = {"error": str(e), "type": type(e).__name__}
    json.dump(results, sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
