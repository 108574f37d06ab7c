"""The provider media protocols the caller simulator speaks, by name (``--protocol``).

``wire_factory(name, ...)`` makes a ``WireFactory``: called with a call id (``None``: a fresh
provider-shaped one) it returns a new ``CallerWire`` for one call. The caller connects to
``/media/<name>``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from ringline.benchmarks.wire import CallerWire, TwilioWire
from ringline.benchmarks.wire_exotel import ExotelWire
from ringline.benchmarks.wire_plivo import PlivoWire
from ringline.benchmarks.wire_telnyx import TelnyxWire
from ringline.benchmarks.wire_vonage import VonageWire

PROTOCOLS = ("twilio", "telnyx", "plivo", "vonage", "exotel")

WireFactory = Callable[[str | None], CallerWire]
"""Call id (``None``: a new one) -> the wire of one call."""


def wire_factory(protocol: str = "twilio", *, reorder_rate: float = 0.0, seed: int = 0) -> WireFactory:
    """Wires of ``protocol``. ``reorder_rate`` (Telnyx only): the rate at which adjacent media
    frames are swapped; call i's swaps are drawn from seed ``seed + i``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if reorder_rate and protocol != "telnyx":
        raise ValueError(f"reorder_rate is for telnyx only, not {protocol!r}")
    if protocol == "telnyx":
        seeds = itertools.count(seed)
        return lambda call_id: TelnyxWire.new(call_id, reorder_rate=reorder_rate, seed=next(seeds))
    if protocol == "plivo":
        # media timestamps are Unix ms: a label, not a clock the caller runs on
        return lambda call_id: PlivoWire.new(call_id, epoch_ms=time.time_ns() // 1_000_000)
    return {"twilio": TwilioWire.new, "vonage": VonageWire.new, "exotel": ExotelWire.new}[protocol]
