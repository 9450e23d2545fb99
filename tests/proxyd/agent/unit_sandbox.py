"""Run a command under the system-call filter and memory policy a systemd unit asks for.

`python unit_sandbox.py UNIT_FILE COMMAND...` reads the unit's SystemCallFilter= lines (resolving
each @set with `systemd-analyze syscall-filter`, as systemd does), SystemCallErrorNumber= and
MemoryDenyWriteExecute=, installs the same seccomp filter (libseccomp's Python binding, Debian
python3-seccomp) and PR_SET_MDWE, then execs COMMAND. So a test can run proxyd as the unit will,
without a running systemd.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import subprocess
import sys

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-seccomp, same CPython 3.11 ABI
import seccomp  # noqa: E402

PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1


@functools.cache
def expand(item: str) -> frozenset[str]:
    if not item.startswith("@"):
        return frozenset({item})
    out = subprocess.run(["systemd-analyze", "syscall-filter", item], capture_output=True, text=True,
                         check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:  # the first line is the set's own name
        word = line.strip()
        if word and not word.startswith("#"):
            names |= expand(word)
    return frozenset(names)


def policy(unit_text: str) -> tuple[set[str], int, bool]:
    """(allowed system calls, errno for the others, memory-deny-write-execute) from a unit."""
    allowed: set[str] | None = None
    err, mdwe = errno.EPERM, False
    for line in unit_text.splitlines():
        key, _, value = line.partition("=")
        if key == "SystemCallFilter":
            deny = value.startswith("~")
            names = set().union(*(expand(w) for w in value.lstrip("~").split()))
            if deny:
                allowed = (allowed if allowed is not None else set()) - names
            else:
                allowed = (allowed or set()) | names
        elif key == "SystemCallErrorNumber":
            err = getattr(errno, value)
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"
    if allowed is None:
        raise SystemExit("the unit has no SystemCallFilter=")
    return allowed, err, mdwe


def main() -> None:
    unit, command = sys.argv[1], sys.argv[2:]
    with open(unit, encoding="utf-8") as f:
        allowed, err, mdwe = policy(f.read())
    libc = ctypes.CDLL(None, use_errno=True)
    if mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(err))
    for name in sorted(allowed):
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call on this architecture (systemd skips those too)
    filt.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
