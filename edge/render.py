#!/usr/bin/env python3
"""Renders edge/config.capnp into a runnable directory for workerd.

    edge/render.py OUT_DIR --policy policy.json --origin http://127.0.0.1:8000 \
        [--collector http://127.0.0.1:4318] [--listen 127.0.0.1:8787] [--per-isolate]

Rate buckets and lockout live in the ChatguardState Durable Object unless
--per-isolate drops its lines (marked `@state`) from the config.

OUT_DIR receives config.capnp, policy.json, and links to worker.js and pkg/
(built by `make edge`). Then: workerd serve OUT_DIR/config.capnp
"""
import argparse
import os
import shutil
import sys

EDGE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--policy", required=True, help="policy JSON file")
    ap.add_argument("--origin", required=True, help="base URL of the guarded service")
    ap.add_argument("--collector", default="", help="base URL of the audit collector")
    ap.add_argument("--listen", default="127.0.0.1:8787")
    ap.add_argument("--per-isolate", action="store_true", help="no Durable Object: buckets and lockout per isolate")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(EDGE, "pkg", "chatguard_bg.wasm")):
        sys.exit("edge/pkg is missing: run `make edge` first")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(EDGE, "config.capnp")) as f:
        text = f.read()
    for key, value in (("@ORIGIN@", args.origin), ("@COLLECTOR_URL@", args.collector), ("@LISTEN@", args.listen)):
        if '"' in value or "\\" in value:
            sys.exit(f"{key}: quotes and backslashes are not allowed")
        text = text.replace(key, value)
    if args.per_isolate:
        text = "".join(l for l in text.splitlines(keepends=True) if not l.rstrip().endswith(("# @state", "# @state-owner")))
    with open(os.path.join(args.out_dir, "config.capnp"), "w") as f:
        f.write(text)
    shutil.copyfile(args.policy, os.path.join(args.out_dir, "policy.json"))
    for name in ("worker.js", "pkg"):
        link = os.path.join(args.out_dir, name)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.join(EDGE, name), link)
    print(os.path.join(args.out_dir, "config.capnp"))


if __name__ == "__main__":
    main()
