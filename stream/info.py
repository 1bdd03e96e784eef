"""What a publisher shares about a stream beside its packets: the description every receiver gets (MQTT
retained info, Zenoh info, WebRTC offer, Foxglove/MCAP channel metadata, `.ltk` header), one definition for
all of them."""

from __future__ import annotations

from typing import Any

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from .sources import public_source


def reader_info(model: Runtime, sender: SenderConfig) -> dict[str, Any]:
    """What a receiver without the model needs to read a stream's packets: the FSQ levels, which travel in no
    packet (docs/PACKET.md 6.2), and the packet version (`wire`)."""
    return {"fsq_levels": [int(v) for v in model.cfg.fsq.levels], "wire": sender.wire}


def stream_info(model: Runtime, sender: SenderConfig, source: str, **extra: Any) -> dict[str, Any]:
    """A live stream's description, shared with every receiver (MQTT retained info, Zenoh info; the WebRTC
    offer and Foxglove/MCAP channel metadata carry the same keys): model, policy, `reader_info`, and the
    source as `public_source` words it (a URL's user name and password never leave the publisher); `extra`
    added."""
    return {"model_id": model.identity.hex(), "preset": model.cfg.name,
            "keyframe_interval": sender.keyframe_interval, "bits_per_index": model.cfg.fsq.bits_per_index,
            **reader_info(model, sender), "policy": sender.budget.policy, "rate": sender.budget.rate,
            "source": public_source(source), **extra}
