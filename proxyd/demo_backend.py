"""A small demo backend instance for `make run`: a web UI, a REST endpoint and provisioning files.

It stands for a hosted PBX instance behind the proxy. Every answer says which path and which
forwarding headers arrived, so what the proxy did is visible in a browser.
"""

from __future__ import annotations

import argparse
import html
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "pforte-demo-backend"
    name = "demo"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        seen = {k: v for k, v in self.headers.items() if k.lower().startswith(("x-forwarded", "host"))}
        if "/services" in self.path:
            body = json.dumps({"instance": self.name, "path": self.path, "headers": seen}).encode()
            self._send(200, "application/json", body)
        elif "/prov/" in self.path:
            mac = self.path.rsplit("/", 1)[-1]
            body = f"# provisioning for {mac} from instance {self.name}\naccount.1.enable = 1\n".encode()
            self._send(200, "text/plain; charset=utf-8", body)
        else:
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in seen.items())
            body = (
                f"<!doctype html><title>{self.name}</title><h1>Instance {html.escape(self.name)}</h1>"
                f"<p>Path: <code>{html.escape(self.path)}</code></p><table>{rows}</table>"
            ).encode()
            self._send(200, "text/html; charset=utf-8", body)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        print(f"demo-backend: {self.address_string()} {format % args}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--name", default="demo")
    args = ap.parse_args(argv)
    Handler.name = args.name
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"demo-backend: instance {args.name!r} on http://{args.host}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
