"""`proxyd provisioning-url --config FILE INSTANCE MAC`: the URL a phone is given (standalone mode)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxyd.config import ConfigError, load_file
from services.provisioning import normalize_mac, provisioning_url, trusted_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provisioning-url", help="print the provisioning URL of one phone")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("instance")
    p.add_argument("mac")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_file(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    prov = cfg.services.provisioning
    inst = cfg.instance(args.instance)
    if inst is None or not inst.provisioning:
        print(f"no instance {args.instance!r} with a provisioning URL in {args.config}", file=sys.stderr)
        return 1
    if normalize_mac(args.mac) is None:
        print(f"invalid MAC address {args.mac!r} (a unicast MAC: 12 hex digits, or six pairs joined by ':' "
              "or by '-')", file=sys.stderr)
        return 1
    if prov.mode == "off":
        print("provisioning is off on this proxy (services.provisioning.mode)", file=sys.stderr)
        return 1
    if prov.mode == "encrypted":
        assert prov.key is not None
        print(provisioning_url(cfg.proxy.fqdn, prov.https_port, prov.key, inst.name, args.mac))
        return 0
    print(trusted_url(cfg.proxy.fqdn, prov.https_port, inst.name, args.mac))
    if prov.mode == "http_and_https":
        print(trusted_url(cfg.proxy.fqdn, prov.http_port, inst.name, args.mac, scheme="http"))
    return 0
