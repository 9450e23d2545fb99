"""Sans-IO stream framing for SIP over TCP/TLS (RFC 3261 §18.3): messages are delimited by
their header section and a mandatory Content-Length; CRLF keepalives are passed through."""

from __future__ import annotations

from services.sip.message import MAX_MESSAGE, SipError, head_of, header_end


class StreamFramer:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Complete messages (and b"\\r\\n\\r\\n" pings) found so far; raises SipError on a framing
        error, with the head of the message in `partial` when it can be answered (the stream is
        lost either way: where the next message starts is unknown, or not worth reading to)."""
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            if self._buf.startswith(b"\r\n"):
                n = 4 if self._buf.startswith(b"\r\n\r\n") else 2
                if n == 2 and len(self._buf) < 4 and self._buf == b"\r\n\r"[: len(self._buf)]:
                    break  # maybe the start of a CRLFCRLF ping
                out.append(bytes(self._buf[:n]))
                del self._buf[:n]
                continue
            end, sep = header_end(self._buf)
            if end == -1:
                if len(self._buf) > MAX_MESSAGE:  # the header lines read so far may still name it
                    raise SipError(513, "Message Too Large", head_of(self._buf[:self._buf.rfind(b"\n")]))
                break
            head = self._buf[:end]
            try:
                length = _content_length(bytes(head))
            except SipError as exc:
                exc.partial = head_of(head)
                raise
            total = end + sep + length
            if total > MAX_MESSAGE:
                raise SipError(513, "Message Too Large", head_of(head))
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out


def _content_length(head: bytes) -> int:
    values = []
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            values.append(value.strip())
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 10:
        raise SipError(400, "Bad or Missing Content-Length on a stream")
    return int(values[0])
