"""A log line for every dropped or refused message, without letting a flood flood the log — sans-IO.

An admin reads why a phone's message went nowhere in the log, not in a counter. But one source
can send thousands of the same bad message a second (a scanner, a looping PBX, a broken
client retrying): so the first occurrence of a reason is logged in full, further ones within
`interval` seconds are only counted, and the count becomes one summary line when the interval
is over (at the next occurrence, or at `flush`, which the service's timer calls). Time is
passed in, as everywhere in the relay core.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

#: distinct reasons remembered; they come from a fixed vocabulary (our own reason strings), so
#: this bound is only a guard: past it the least recently noted reason is summarised and forgotten
_MAX_REASONS = 512


class ReasonLog:
    def __init__(self, log: logging.Logger, interval: float = 10.0, level: int = logging.INFO):
        self.log, self.interval, self.level = log, interval, level
        #: reason -> [when its last line was written, occurrences not written since], least
        #: recently noted first
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def note(self, reason: str, now: float, fmt: str, *args: object) -> None:
        """Log `fmt % args` (which should name `reason`) unless `reason` was logged less than
        `interval` ago; then it is counted for the summary."""
        seen = self._seen.get(reason)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            self._seen.move_to_end(reason)  # in use: the last a new reason evicts
            return
        if seen is not None:
            if seen[1]:
                self._summary(reason, seen, now)
            seen[0], seen[1] = now, 0
            self._seen.move_to_end(reason)
        else:
            if len(self._seen) >= _MAX_REASONS:
                old, s = self._seen.popitem(last=False)
                if s[1]:
                    self._summary(old, s, now)
            self._seen[reason] = [now, 0]
        self.log.log(self.level, fmt, *args)

    def flush(self, now: float) -> None:
        """The summary of every reason whose interval is over with occurrences not logged."""
        for reason, seen in self._seen.items():
            if seen[1] and now - seen[0] >= self.interval:
                self._summary(reason, seen, now)
                seen[0], seen[1] = now, 0

    def _summary(self, reason: str, seen: list[float], now: float) -> None:
        self.log.log(self.level, "event=sip_log_suppressed reason=%s count=%d seconds=%.0f", reason, seen[1],
                     now - seen[0])
