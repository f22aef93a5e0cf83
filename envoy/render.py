#!/usr/bin/env python3
"""Renders an Envoy config template: `render.py [TEMPLATE] KEY=VALUE ... [policy=FILE] [jwks=FILE]`.

TEMPLATE defaults to envoy/chatguard.yaml.tmpl. `policy=FILE` becomes the plugin
configuration (empty: the compiled-in default policy); `jwks=FILE` is inlined for
the native jwt_authn baseline."""
import json, string, sys, pathlib

here = pathlib.Path(__file__).parent
args = sys.argv[1:]
template = here / "chatguard.yaml.tmpl"
if args and "=" not in args[0]:
    template = pathlib.Path(args.pop(0))
values = dict(arg.split("=", 1) for arg in args)
policy = values.pop("policy", "")
text = pathlib.Path(policy).read_text() if policy else ""
# A JSON string is a valid YAML scalar: no quoting rules to get wrong.
values["policy_yaml"] = json.dumps(json.dumps(json.loads(text)) if text.strip() else "")
jwks = values.pop("jwks", "")
if jwks:
    values["jwks_yaml"] = json.dumps(pathlib.Path(jwks).read_text())
print(string.Template(template.read_text()).safe_substitute(values))
