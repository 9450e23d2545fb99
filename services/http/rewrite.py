"""The prefix rule: how one route's public path prefix relates to its upstream's paths. Sans-IO.

One rule per route, chosen per instance by `web_prefix_mode` and anchored on what nginx does with
`proxy_redirect` and `proxy_cookie_path`:

- "rewrite" (the default; applications always): the upstream does not know its prefix. The proxy
  maps request paths public -> upstream (`/alpha/x` -> `/x`, or `/api/x` -> `/procurat/api/v1/x`
  for an application) and maps the response back upstream -> public: `Location`,
  `Content-Location` and `Refresh`'s URL, when root-relative or absolute on the upstream's origin
  (its URL's scheme://host:port, or for an instance the client's Host it was sent, any scheme),
  get the public prefix, absolute ones the public origin too; `Set-Cookie` `Path` gets the prefix
  and a `Domain` naming the upstream's host is removed (a host-only cookie of the public host is
  the nearest the browser accepts). Paths outside the upstream's base path, relative references
  and other origins are not touched. No `X-Forwarded-Prefix` is sent: nothing would be applied
  twice.
- "forward_prefix": the upstream is told `X-Forwarded-Prefix: /<instance>` and builds its own
  public URLs; nothing is rewritten (`Path=/alpha/` stays `/alpha/`).

Instances share one origin, so in both modes a cookie `Path` still outside `/<instance>/` after
that is narrowed to `/<instance>/`: one instance cannot set cookies for another. A cookie without
`Path` is left so: the browser's default path comes from the public URL, inside the prefix.

Upstream values are hostile input: they are edited as bytes with linear scans (no backtracking
regex over a value), a `Set-Cookie` is read the way a browser reads it (RFC 6265 §5.2: split at
`;`, attribute name before the first `=`, trimmed, any case) and none is dropped. Even a malformed
one (no `=`, no name, odd spacing) gets its `Path` attributes edited, since browsers accept
nameless cookies and passing one unchanged would let it escape the instance. The output only
grows by the prefix and origin per edited line (at most MAX_HEADERS lines), and never gains a
CR or LF: the head was validated before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# One edited field line in a response head (status line first, each line ending CRLF). The value
# is taken whole up to CR: a lazy match against trailing blanks would backtrack quadratically
# on a hostile line of spaces. Trailing blanks are trimmed in Python.
EDITED = re.compile(rb"(?i)(\n(?:set-cookie|location|content-location|refresh):)([^\r\n]*)(?=\r)")
_ABSOLUTE = re.compile(rb"(?i)(https?)://([^/?#\\]*)")
# Refresh: "<delay>[;,] [url=]<url>" (HTML's shared declarative refresh steps); the URL may be quoted
_REFRESH = re.compile(rb"(?i)[0-9. \t]*[;,][ \t]*(?:url[ \t]*=[ \t]*)?")
BLANKS = b" \t"


@dataclass(frozen=True)
class PrefixRule:
    public: str  # the public prefix without trailing '/': "/alpha", "/api"
    upstream: str  # the upstream's base path without trailing '/': "", "/procurat/api/v1"
    rewrite: bool  # mode "rewrite"; False: "forward_prefix"
    scope: bool  # cookie paths kept inside `public` (instances share one origin)
    origins: tuple[str, ...] = ()  # the upstream's own "scheme://authority" forms, lower-case
    upstream_host: str = ""  # the upstream's host, for Domain
    client_host: bool = False  # the upstream was sent the client's Host: "http(s)://<it>" is its origin too

    pub: bytes = field(init=False, repr=False, compare=False)
    base: bytes = field(init=False, repr=False, compare=False)
    forwarded_prefix: bytes = field(init=False, repr=False, compare=False)  # the header line, or b""
    origin_set: frozenset[bytes] = field(init=False, repr=False, compare=False)
    host: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "pub", self.public.encode("latin-1"))
        set_(self, "base", self.upstream.encode("latin-1"))
        set_(self, "forwarded_prefix", b"" if self.rewrite else b"X-Forwarded-Prefix: %s\r\n" % self.pub)
        set_(self, "origin_set", frozenset(o.lower().encode("latin-1") for o in self.origins))
        set_(self, "host", self.upstream_host.lower().encode("latin-1"))

    # -- the head ---------------------------------------------------------------------------------

    def head(self, head: bytes, origin: bytes | None, sent_host: bytes | None) -> bytes:
        """`head` with its Set-Cookie / Location / Content-Location / Refresh lines mapped.

        `origin`: the public "scheme://host[:port]" the client used (None: absolute URLs become
        root-relative); `sent_host`: the Host the upstream was sent, lower-case.
        """
        def edit(m: re.Match[bytes]) -> bytes:
            raw = m[2]
            value = raw.strip(BLANKS)
            name = m[1][1:-1].lower()
            if name == b"set-cookie":
                new = self.cookie(value)
            elif not self.rewrite:
                return m[0]
            elif name == b"refresh":
                new = self.refresh(value, origin, sent_host)
            else:
                new = self.url(value, origin, sent_host)
            return m[0] if new == value else m[1] + b" " + new
        return EDITED.sub(edit, head)

    # -- paths and URLs ---------------------------------------------------------------------------

    def path(self, p: bytes) -> bytes | None:
        """An upstream path (query and fragment may follow) as public; None: outside the base path."""
        base = self.base
        if not base:
            return self.pub + p
        if not p.startswith(base):
            return None
        rest = p[len(base):]
        if not rest or rest[:1] in b"?#":
            return self.pub + b"/" + rest  # the base itself: the prefix with its '/', where the router serves
        return self.pub + rest if rest[:1] == b"/" else None

    def url(self, v: bytes, origin: bytes | None, sent_host: bytes | None) -> bytes:
        """A Location-like URL reference, mapped if it is the upstream's own."""
        if v[:1] == b"/":
            if v[1:2] in (b"/", b"\\"):  # scheme-relative (browsers read '/\' as '//'): another authority
                return v
            return self.path(v) or v
        m = _ABSOLUTE.match(v)
        if m is None:
            return v  # relative to the public URL already, another scheme, or not a URL
        scheme, authority = m[1].lower(), m[2].lower()
        if scheme + b"://" + authority not in self.origin_set and not (
                self.client_host and sent_host and authority == sent_host):
            return v
        rest = v[m.end():]
        mapped = self.path(rest if rest[:1] == b"/" else b"/" + rest)
        if mapped is None:
            return v
        return origin + mapped if origin else mapped

    def refresh(self, v: bytes, origin: bytes | None, sent_host: bytes | None) -> bytes:
        m = _REFRESH.match(v)
        if m is None or m.end() == len(v):
            return v  # a delay alone reloads the same (public) URL
        target = v[m.end():]
        quote = target[:1]
        if quote in (b"'", b'"') and len(target) > 1 and target.endswith(quote):
            inner = self.url(target[1:-1], origin, sent_host)
            return v[:m.end()] + quote + inner + quote
        return v[:m.end()] + self.url(target, origin, sent_host)

    # -- cookies ----------------------------------------------------------------------------------

    def cookie(self, value: bytes) -> bytes:
        """A Set-Cookie value with its Path (and in rewrite mode an upstream Domain) mapped."""
        parts = value.split(b";")
        out = [parts[0]]
        changed = False
        for attr in parts[1:]:
            name, _, v = attr.partition(b"=")
            key = name.strip(BLANKS).lower()
            if key == b"path":
                old = v.strip(BLANKS)
                new = self.cookie_path(old)
                if new != old:
                    attr, changed = b" Path=" + new, True
            elif key == b"domain" and self.rewrite and self.host and \
                    v.strip(BLANKS).lstrip(b".").lower() == self.host:
                changed = True
                continue
            out.append(attr)
        return b";".join(out) if changed else value

    def cookie_path(self, p: bytes) -> bytes:
        # a Path not starting with '/' is ignored by browsers for the default path, which is the
        # public one already (RFC 6265 §5.2.4): left as it is
        if p[:1] != b"/":
            return p
        if self.rewrite:
            p = self.path(p) or p
        if self.scope:
            pub = self.pub
            if not (p == pub or p.startswith(pub + b"/")):
                return pub + b"/"
        return p
