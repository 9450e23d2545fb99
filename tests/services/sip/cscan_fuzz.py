"""Driver for test_cscan_sanitized: load a C scanner built with AddressSanitizer/UBSan in place of
the normal one, feed it random mutations of the sample messages and compare every result with
the Python scanner's. Run as `python -m tests.services.sip.cscan_fuzz <so path> <count> <seed>`
with the sanitizer runtimes preloaded; a memory error aborts the process."""

from __future__ import annotations

import importlib.util
import random
import sys


def main(so: str, count: int, seed: int) -> None:
    spec = importlib.util.spec_from_file_location("services.sip._cscan", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["services.sip._cscan"] = mod  # before scan.py imports (and configures) it

    from services.sip import scan as sc
    from tests.services.sip.test_cscan import SIPP_RESPONSE, view
    from tests.services.sip.test_scan import SAMPLES

    assert sc._cscan is mod and sc.SCANNER == "c"
    samples = [*SAMPLES, SIPP_RESPONSE]
    rnd = random.Random(seed)
    alphabet = b'<>@;:=",. \t\r\n\\*0123456789sipSIP/aA-_%\x85\xa0\xe9\x00'
    accepted = diffs = 0
    for _ in range(count):
        d = bytearray(rnd.choice(samples))
        for _ in range(rnd.randint(1, 4)):
            op, at = rnd.randint(0, 2), rnd.randint(0, len(d))
            if op == 0:
                d[at:at] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8)))
            elif op == 1:
                del d[at:at + rnd.randint(1, 8)]
            else:
                d[at:at + 1] = bytes([rnd.randint(0, 255)])
        data = bytes(d)
        for datagram in (True, False):
            s = mod.scan(data, datagram)
            if view(s) != view(sc.scan_py(data, datagram)):
                diffs += 1
                print("differs:", data[:200])
            if s is not None:
                accepted += 1
                assert mod.serialize(s.start, s.lines, s.body) == sc.serialize_py(s.start, s.lines, s.body)
    print(f"accepted {accepted} differs {diffs}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
