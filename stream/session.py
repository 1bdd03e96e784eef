"""Thin stateful wrappers around the engine's explicit-state steps: a sender turns uint8 frames
into packets (and knows the receiver's reconstruction, closed loop); a receiver turns packets back
into frames. The state lives in one attribute, replaced after every frame."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from livetok.engine.checkpoint import model_identity
from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor, to_uint8
from livetok.engine.model import Tokenizer
from livetok.engine.rate_control import RateState, rate_update
from livetok.engine.state import FrameTokens, StreamState

from .packet_guard import DEFAULT_LIMITS, ReceiverLimits, check_packet_fits
from .video_io import as_rgb8
from .wire import PacketError, TokenPacket


def tokens_to_packet(tokens: FrameTokens, model_id: bytes, bits: int, timestamp_us: int, row: int = 0) -> TokenPacket:
    """One stream's row of a `FrameTokens` as a packet (only the kept indices travel)."""
    mask = tokens.mask[row].cpu().numpy()
    idx = tokens.indices[row].cpu().numpy()[mask].astype(np.uint32)
    return TokenPacket(
        model_id=model_id,
        frame_index=tokens.frame_index,
        timestamp_us=int(timestamp_us),
        keyframe=bool(tokens.keyframe[row]),
        end_of_stream=False,
        width=tokens.size[1],
        height=tokens.size[0],
        grid_h=tokens.grid[0],
        grid_w=tokens.grid[1],
        bits_per_index=bits,
        mask=mask,
        indices=idx,
    )


def packet_to_tokens(packet: TokenPacket, device: torch.device | str = "cpu") -> FrameTokens:
    """A packet back to a one-stream `FrameTokens` (dropped positions get index 0: never read)."""
    mask = torch.from_numpy(np.array(packet.mask, dtype=bool)).to(device)
    indices = torch.zeros(packet.n, dtype=torch.int64, device=device)
    indices[mask] = torch.from_numpy(packet.indices.astype(np.int64)).to(device)
    return FrameTokens(
        indices=indices[None],
        mask=mask[None],
        keyframe=torch.tensor([packet.keyframe], device=device),
        grid=(packet.grid_h, packet.grid_w),
        size=(packet.height, packet.width),
        frame_index=packet.frame_index,
    )


def _device_of(model: Tokenizer) -> torch.device:
    # a torch model computes where its weights are; a runtime without torch weights (the ONNX one)
    # says where it wants its input tensors
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else next(model.parameters()).device


@dataclass(frozen=True)
class EncodedFrame:
    packet: TokenPacket
    data: bytes  # the packet's bytes: what goes on the wire / into the .ltk file
    tokens: FrameTokens
    recon: np.ndarray  # uint8 RGB [H, W, 3]: the receiver's reconstruction of this frame
    encode_ms: float


class SenderSession:
    """Encodes one stream frame by frame; `state` is the engine's explicit state after the last frame."""

    def __init__(self, model: Tokenizer, sender: SenderConfig | None = None) -> None:
        self.model = model
        self.sender = sender or SenderConfig()
        self.model_id = model_identity(model)
        self.bits = model.cfg.fsq.bits_per_index
        self.state: StreamState | None = None
        self.rate = RateState()
        self._device = _device_of(model)

    def step(self, frame: np.ndarray, force_keyframe: bool = False) -> FrameTokens:
        """Run the model on one uint8 RGB frame [H, W, 3] (the compute; no bytes yet)."""
        if self.state is not None and self.sender.rate_control is not None:
            # rate control speaks through beta's scale in the router state
            self.state = replace(self.state, budget=tuple(replace(b, scale=self.rate.scale) for b in self.state.budget))
        # gray, RGBA and 16-bit frames (cameras, robot sensors) become uint8 RGB first
        tokens, self.state = self.model.encode_step(to_tensor(as_rgb8(frame), self._device), self.state, self.sender,
                                                    force_keyframe)
        return tokens

    def packetize(self, tokens: FrameTokens, timestamp_us: int) -> tuple[TokenPacket, bytes]:
        """The packet and its bytes; with rate control, its cost (bits or tokens) is accounted."""
        packet = tokens_to_packet(tokens, self.model_id, self.bits, timestamp_us)
        data = packet.pack()
        rc = self.sender.rate_control
        if rc is not None:
            used = 8 * len(data) if rc.target_bps is not None else packet.k
            self.rate = rate_update(rc, self.rate, used, timestamp_us / 1e6)
        return packet, data

    def end_of_stream(self, timestamp_us: int) -> bytes:
        """The packet that ends the stream (no tokens; its index follows the last frame's)."""
        index = self.state.frame_index if self.state is not None else 0
        eos = TokenPacket(self.model_id, index, timestamp_us, False, True, 0, 0, 0, 0, self.bits,
                          np.zeros(0, bool), np.zeros(0, np.uint32))
        return eos.pack()

    def encode(self, frame: np.ndarray, timestamp_us: int | None = None, force_keyframe: bool = False) -> EncodedFrame:
        """Encode one uint8 RGB frame [H, W, 3] into a packet, with the receiver's reconstruction."""
        t0 = time.perf_counter()
        ts = int(time.time() * 1e6) if timestamp_us is None else timestamp_us
        tokens = self.step(frame, force_keyframe)
        packet, data = self.packetize(tokens, ts)
        assert self.state is not None
        h, w = tokens.size
        recon = to_uint8(self.state.recon[0, :, :h, :w])
        return EncodedFrame(packet, data, tokens, recon, (time.perf_counter() - t0) * 1e3)


class ReceiverSession:
    """Decodes one stream's packets in order; refuses packets made by another model."""

    def __init__(self, model: Tokenizer, limits: ReceiverLimits = DEFAULT_LIMITS) -> None:
        self.model = model
        self.model_id = model_identity(model)
        self.limits = limits
        self.state: StreamState | None = None
        self._device = _device_of(model)

    def check(self, packet: TokenPacket) -> None:
        """Refuse (PacketError) a packet this model could not have made, or one over the size limit."""
        fsq = self.model.cfg.fsq
        check_packet_fits(packet, bits_per_index=fsq.bits_per_index, codebook_size=fsq.codebook_size,
                          stride=self.model.cfg.stride, limits=self.limits)

    def decode(self, packet: TokenPacket | bytes) -> np.ndarray:
        """Decode one packet to a uint8 RGB frame [H, W, 3].

        Raises:
            PacketError: bad bytes, a packet of another model (the message names both identities), or
                one this model could not have made or over the receiver's size limit (`packet_guard`).
            TokenizerError: a non-keyframe arrives with no usable state (join at a keyframe).
        """
        if isinstance(packet, bytes | bytearray | memoryview):
            packet = TokenPacket.unpack(bytes(packet), expect_model_id=self.model_id)
        elif packet.model_id != self.model_id:
            raise PacketError(
                f"packet is for model {packet.model_id.hex()}, this receiver runs model {self.model_id.hex()}"
            )
        if packet.end_of_stream and packet.n == 0:
            raise TokenizerError("an end-of-stream packet carries no frame")
        self.check(packet)
        tokens = packet_to_tokens(packet, self._device)
        frame, self.state = self.model.decode_step(tokens, self.state)
        return to_uint8(frame[0])
