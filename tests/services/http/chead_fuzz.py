"""Driver for test_chead_sanitized: load the C hot path built with AddressSanitizer/UBSan in place of
the normal one, feed it random mutations of the sample heads and targets, and compare every result
with the Python reference's. Run as `python -m tests.services.http.chead_fuzz <so path> <count> <seed>`
with the sanitizer runtimes preloaded; a memory error aborts the process."""

from __future__ import annotations

import importlib.util
import random
import sys


def main(so: str, count: int, seed: int) -> None:
    spec = importlib.util.spec_from_file_location("services.http._chead", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["services.http._chead"] = mod  # before http1/framing/canonical import (and configure) it

    from services.http import canonical, framing, http1
    from tests.services.http import test_chead as t

    assert http1._framing is mod.framing and framing._head_end is mod.head_end
    assert canonical._c_split is mod.split_target
    heads = t.SAMPLES + t.HOSTILE_HEADS
    targets = t.HOSTILE_TARGETS
    rnd = random.Random(seed)
    alphabet = b"\r\n \t:;,.%/\\?#=0123456789abcdefABCDEF-\x00\x7f\x80\xc0\xae\xffchunkedclose"
    accepted = diffs = 0
    for _ in range(count):
        d = bytearray(rnd.choice(heads) if rnd.random() < 0.7 else rnd.choice(targets))
        for _ in range(rnd.randint(1, 4)):
            op, at = rnd.randint(0, 2), rnd.randint(0, len(d))
            if op == 0:
                d[at:at] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8)))
            elif op == 1:
                del d[at:at + rnd.randint(1, 8)]
            else:
                d[at:at + 1] = bytes([rnd.randint(0, 255)])
        data = bytes(d)
        try:
            if data.endswith(b"\r\n\r\n"):
                v = t.same_head(data)
                accepted += not (isinstance(v, tuple) and v[:1] == ("HttpError",))
            t.same_end(data)
            target = data.partition(b" ")[2].partition(b" ")[0] if data[:1] != b"/" else data
            v = t.same_target(target)
            accepted += not (isinstance(v, tuple) and v[:1] == ("BadPath",))
        except AssertionError as exc:
            diffs += 1
            print("differs:", repr(exc)[:300])
    print(f"accepted {accepted} differs {diffs}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
