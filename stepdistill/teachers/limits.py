"""Politeness towards a paid API: retry delays, Retry-After, and per-minute request/token limits.

Pure where possible (the delay functions take the clock and random source as arguments) so the
tests check exact numbers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

# Statuses worth retrying: request timeout, conflict, rate limited, and every server error.
RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 600.0  # a server asking for more than 10 minutes is treated as asking for 10


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry `attempt` (0-based): base * 2**attempt capped at max, with "equal jitter"
    (a uniform draw in [d/2, d]) so that many clients that failed together do not retry together."""
    delay = min(max_s, base_s * (2.0**attempt))
    return rng.uniform(delay / 2.0, delay)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits as a virtual schedule (leaky bucket).

    Each reservation pushes the schedule forward by amount / rate; a caller waits until the
    schedule is within `burst_s` of now. Token reservations use an estimate and are corrected
    with the real usage afterwards. `pause(s)` holds every caller (a 429 with Retry-After).
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rpm, self.tpm, self.burst_s, self.clock = requests_per_minute, tokens_per_minute, burst_s, clock
        self._req_t = 0.0  # when the reserved requests are used up at the steady rate
        self._tok_t = 0.0
        self._paused_until = 0.0

    def reserve(self, tokens: int) -> float:
        """Reserve one request of `tokens` (estimated) tokens; returns how long to wait before it."""
        now = self.clock()
        wait = max(0.0, self._paused_until - now)
        if self.rpm:
            self._req_t = max(self._req_t, now) + 60.0 / self.rpm
            wait = max(wait, self._req_t - self.burst_s - now)
        if self.tpm:
            self._tok_t = max(self._tok_t, now) + tokens * 60.0 / self.tpm
            wait = max(wait, self._tok_t - self.burst_s - now)
        return wait

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a token reservation with the usage the server reported."""
        if self.tpm:
            self._tok_t += (actual - estimated) * 60.0 / self.tpm

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    async def acquire(self, tokens: int) -> None:
        wait = self.reserve(tokens)
        if wait > 0:
            await asyncio.sleep(wait)
        # A pause may have started while we waited.
        while (left := self._paused_until - self.clock()) > 0:
            await asyncio.sleep(left)
