#!/usr/bin/env python3
"""Renders envoy/chatguard.yaml.tmpl: `render.py KEY=VALUE ... [policy=FILE]`.

An empty policy means the compiled-in default policy."""
import json, string, sys, pathlib

here = pathlib.Path(__file__).parent
values = dict(arg.split("=", 1) for arg in sys.argv[1:])
policy = values.pop("policy", "")
text = pathlib.Path(policy).read_text() if policy else ""
# A JSON string is a valid YAML scalar: no quoting rules to get wrong.
values["policy_yaml"] = json.dumps(json.dumps(json.loads(text)) if text.strip() else "")
print(string.Template((here / "chatguard.yaml.tmpl").read_text()).substitute(values))
