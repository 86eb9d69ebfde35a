"""How many teacher requests may be in flight at once: adapted to what the server sustains.

A fixed number of requests in flight is either too few for a batching server (vLLM answers
32 requests nearly as fast as one) or too many for a slow one: a small model behind
``transformers serve`` on two CPU cores shares them between every request it holds, so 16
requests each take 16 times longer, all finish together, and once that exceeds
``teacher.timeout`` every request times out, is sent again, and nothing finishes at all.

:class:`AdaptiveLimit` adapts the number in flight within ``1 .. teacher.concurrency``, the way
TCP adapts its congestion window (additive increase, multiplicative decrease):

- It starts at 1 and, while answers come back about as fast as they did with few requests in
  flight, raises the limit by one per round trip (1/limit per answer). Not faster: an answer
  tells of the load one round trip late, and doubling every round trip (TCP's slow start)
  overshoots a one-request-at-a-time server into timeouts before the first slow answer is
  back (measured with the benchmark). "As fast" means within ``LATENCY_TOLERANCE`` times the
  *baseline*: the lowest smoothed latency seen (an exponential average over the last few
  answers), so one lucky or unlucky answer moves nothing; a hosted API whose answers vary
  from 0.5 to 1.5 s at any load still gets the full ``teacher.concurrency``.
- When the smoothed latency rises past that, requests queue at the server: the limit goes
  down by one per round trip. A server that runs one request at a time
  settles at 2 or 3 in flight, which keeps it busy without queueing.
- A timeout, HTTP 429, a 5xx or a refused connection halves the limit, at most once per round
  trip (the requests already in flight when it was cut do not cut it again).

``teacher.adapt_concurrency=false`` keeps exactly ``teacher.concurrency`` in flight instead.
All methods run on the backend's event loop (one thread), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

#: Latency this many times the baseline means the server is queueing.
LATENCY_TOLERANCE = 2.0
#: Weight of the newest answer in the smoothed latency (about the last five answers count).
SMOOTHING = 0.3
#: Answers averaged before the baseline is set (one lucky first answer must not set it).
WARM_UP = 2


class AdaptiveLimit:
    def __init__(self, ceiling: int, adaptive: bool = True):
        self.ceiling = max(1, int(ceiling))
        self.adaptive = adaptive
        self.limit = 1.0 if adaptive else float(self.ceiling)
        self.in_flight = 0
        #: exponential average of recent answers' latency, and its lowest value (the baseline)
        self.smoothed: float | None = None
        self.baseline: float | None = None
        self._answers = 0
        self._last_cut = float("-inf")
        self._waiting: deque[asyncio.Future] = deque()  # requests waiting for a slot, oldest first

    @property
    def allowed(self) -> int:
        """Requests allowed in flight now."""
        return max(1, min(self.ceiling, int(self.limit)))

    async def acquire(self) -> float:
        """Wait for a free slot (first come, first served); returns the start time to pass to
        :meth:`release`."""
        if self.in_flight < self.allowed and not self._waiting:
            self.in_flight += 1
        else:
            ticket = asyncio.get_running_loop().create_future()
            self._waiting.append(ticket)
            try:
                await ticket  # release() counts the slot for us before waking us
            except asyncio.CancelledError:
                if ticket.done() and not ticket.cancelled():
                    self.release_slot()  # woken and cancelled at once: hand the slot on
                else:
                    self._waiting.remove(ticket)
                raise
        return time.monotonic()

    def release(self, started: float, outcome: str) -> None:
        """A request that started at ``started`` ended: ``"answered"``, ``"overloaded"``
        (timeout, 429, 5xx, refused connection) or ``"other"`` (e.g. a rejected request)."""
        self._adapt(started, time.monotonic() - started, outcome)
        self.release_slot()

    def release_slot(self) -> None:
        self.in_flight -= 1
        while self._waiting and self.in_flight < self.allowed:
            ticket = self._waiting.popleft()
            if not ticket.done():
                self.in_flight += 1
                ticket.set_result(None)

    def _adapt(self, started: float, latency: float, outcome: str) -> None:
        if not self.adaptive:
            return
        if outcome == "overloaded":
            if started >= self._last_cut:  # one cut per round trip
                self.limit = max(1.0, self.limit / 2)
                self._last_cut = time.monotonic()
            return
        if outcome != "answered":
            return
        self._answers += 1
        self.smoothed = latency if self.smoothed is None else (1 - SMOOTHING) * self.smoothed + SMOOTHING * latency
        if self._answers >= WARM_UP:
            self.baseline = self.smoothed if self.baseline is None else min(self.baseline, self.smoothed)
        bound = LATENCY_TOLERANCE * (self.baseline or self.smoothed)
        if self.smoothed > bound:  # answers slowed down for a while: requests queue
            self.limit = max(1.0, self.limit - 1.0 / self.limit)
        elif latency <= bound:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
