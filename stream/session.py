"""Thin stateful wrappers around the engine's explicit-state steps: a sender turns uint8 frames
into packets (and knows the receiver's reconstruction, closed loop); a receiver turns packets back
into frames. The state lives in one attribute, replaced after every frame."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor, to_uint8
from livetok.engine.runtime import CodeLength, Runtime
from livetok.engine.sender import SenderState, account, encode_named, encode_streams
from livetok.engine.state import FrameTokens, StreamState

from .bitrate import BitRate, TargetCheck, check_target, policy_floor
from .packet_guard import DEFAULT_LIMITS, ReceiverLimits, check_packet_fits, check_packet_size, largest_packet
from .video_io import as_rgb8
from .wire import VERSIONS, CoderState, PacketError, PacketHeader, TokenPacket, peek_header, token_bits
from .wire.packet import _check_model


def tokens_to_packet(tokens: FrameTokens, model_id: bytes, bits: int, timestamp_us: int, row: int = 0) -> TokenPacket:
    """One stream's row of a `FrameTokens` as a packet (only the kept indices travel)."""
    mask = tokens.mask[row].cpu().numpy()
    idx = tokens.indices[row].cpu().numpy()[mask].astype(np.uint32)
    return TokenPacket(
        model_id=model_id,
        frame_index=tokens.frame_indices[row],
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
        frame_indices=(packet.frame_index,),
    )


def wire_roundtrip(model: Runtime) -> Callable[[FrameTokens], FrameTokens]:
    """One stream's tokens -> packet bytes -> tokens, as a receiver of `model` gets them (what a
    parity check passes so that its tokens cross the real wire format)."""
    model_id, bits = model.identity, model.cfg.fsq.bits_per_index

    def roundtrip(tokens: FrameTokens) -> FrameTokens:
        data = tokens_to_packet(tokens, model_id, bits, 0).pack()
        return packet_to_tokens(TokenPacket.unpack(data, expect_model_id=model_id), model.device)

    return roundtrip


@dataclass(frozen=True)
class EncodedFrame:
    packet: TokenPacket
    data: bytes  # the packet's bytes: what goes on the wire / into the .ltk file
    tokens: FrameTokens
    recon: np.ndarray  # uint8 RGB [H, W, 3]: the receiver's reconstruction of this frame
    encode_ms: float


class SenderSession:
    """Encodes one stream frame by frame; all its memory is `state` (engine/sender.py), replaced after
    every frame."""

    def __init__(self, model: Runtime, sender: SenderConfig | None = None) -> None:
        self.model = model
        self.sender = sender or SenderConfig()
        self.model_id = model.identity
        self.bits = model.cfg.fsq.bits_per_index
        self.state = SenderState()
        # the entropy coder's adaptive models (packets v2 and v3): the receiver's twin evolves identically
        self.coder = CoderState.empty(model.cfg.fsq.levels)
        self.rate = BitRate()  # the stream's packets so far, for its bit rate (stream/bitrate.py)
        # non-keyframes that carried tokens, and those of them at the policy's floor: whether a rate
        # target below what the stream can reach was missed for that reason (`target_check`)
        self.coded_frames = self.floor_frames = 0

    def step(self, frame: np.ndarray | Tensor, force_keyframe: bool = False) -> FrameTokens:
        """Run the model on one uint8 RGB frame [H, W, 3], or one already pre-processed float tensor
        [1, 3, H, W] in [-1, 1] (the compute; no bytes yet)."""
        # gray, RGBA and 16-bit frames (cameras, robot sensors) become uint8 RGB first
        x = frame if isinstance(frame, Tensor) else to_tensor(as_rgb8(frame), self.model.device)
        (tokens,), (new,) = encode_streams(self.model, x, [self.state], self.sender, [force_keyframe],
                                           self.code_length())
        self.state = replace(self.state, stream=new.stream)  # see step_sessions: the rate part is packetize's
        return tokens

    def code_length(self) -> CodeLength | None:
        """The `bits` router signal's view of this stream (None for the other signals): each
        position's code length were its token kept, under the coder state as it stands (before a
        stream's first frame, or when the frame will be a keyframe, a flat log2 of the codebook). In
        a pipeline, packetize of the previous frame may not have run yet: the state can be a frame
        old there, which changes which tokens are sent, never whether they decode."""
        if self.sender.budget.signal != "bits":
            return None
        coder, flat = self.coder, float(np.log2(self.model.cfg.fsq.codebook_size))

        def bits(indices: Tensor) -> Tensor:
            idx = indices[0].detach().cpu().numpy()
            if coder.n is None or coder.n != idx.shape[0]:
                return torch.full(tuple(indices.shape), flat)
            return torch.from_numpy(token_bits(coder, idx)).float()[None]

        return bits

    def packetize(self, tokens: FrameTokens, timestamp_us: int) -> tuple[TokenPacket, bytes]:
        """The packet and its bytes; with rate control, its cost (bits or tokens) is accounted."""
        packet = tokens_to_packet(tokens, self.model_id, self.bits, timestamp_us)
        data, self.coder = packet.pack_as(self.sender.wire, self.coder)
        self.state = account(self.sender, self.state, 8 * len(data), packet.k, timestamp_us / 1e6)
        self.rate.add(len(data), timestamp_us, packet.k)
        if not packet.keyframe and packet.k:
            self.coded_frames += 1
            self.floor_frames += packet.k <= policy_floor(self.sender, packet.n)
        return packet, data

    def target_check(self) -> TargetCheck | None:
        """The stream's bit rate so far against its `target_bps` (None without a bit-rate target)."""
        rc = self.sender.rate_control
        return check_target(rc.target_bps if rc is not None else None, self.rate.bits_per_s(), self.floor_frames,
                            self.coded_frames, self.rate.seconds)

    def end_of_stream(self, timestamp_us: int) -> bytes:
        """The packet that ends the stream (no tokens; its index follows the last frame's)."""
        return end_of_stream_packet(self.model_id, self.bits, self.state.next_frame, timestamp_us)

    def encode(self, frame: np.ndarray, timestamp_us: int | None = None, force_keyframe: bool = False) -> EncodedFrame:
        """Encode one uint8 RGB frame [H, W, 3] into a packet, with the receiver's reconstruction."""
        t0 = time.perf_counter()
        ts = int(time.time() * 1e6) if timestamp_us is None else timestamp_us
        tokens = self.step(frame, force_keyframe)
        packet, data = self.packetize(tokens, ts)
        assert self.state.stream is not None
        h, w = tokens.size
        recon = to_uint8(self.state.stream.recon[0, :, :h, :w])  # the receiver's reconstruction (closed loop)
        return EncodedFrame(packet, data, tokens, recon, (time.perf_counter() - t0) * 1e3)


def step_sessions(sessions: Mapping[str, SenderSession], frames: Mapping[str, Tensor],
                  force_keyframe: Collection[str] = ()) -> dict[str, FrameTokens]:
    """One frame ([1, 3, H, W] in [-1, 1]) of each named session's stream: the sessions of one frame
    size run as one batched step (what `livetok publish` does with several sources). The sessions
    share one runtime and sender config; each keeps its own state, packets and rate control."""
    if not frames:
        return {}
    first = sessions[next(iter(frames))]
    views = {n: v for n in frames if (v := sessions[n].code_length()) is not None}  # `bits` signal only
    code_length = views or None
    tokens, states = encode_named(first.model, frames, {n: sessions[n].state for n in frames}, first.sender,
                                  force_keyframe, code_length)
    for name, st in states.items():
        # only the stream part: in a pipeline this runs in a worker thread while the event loop
        # packetizes the previous frame, and packetize's rate accounting must not be overwritten
        sessions[name].state = replace(sessions[name].state, stream=st.stream)
    return tokens


def end_of_stream_packet(model_id: bytes, bits: int, frame_index: int, timestamp_us: int) -> bytes:
    """The bytes of the packet that ends a stream (no tokens; `frame_index` follows the last frame's)."""
    eos = TokenPacket(model_id, frame_index, timestamp_us, False, True, 0, 0, 0, 0, bits,
                      np.zeros(0, bool), np.zeros(0, np.uint32))
    return eos.pack()


class ReceiverSession:
    """Decodes one stream's packets in order; refuses packets made by another model."""

    def __init__(self, model: Runtime, limits: ReceiverLimits = DEFAULT_LIMITS) -> None:
        self.model = model
        self.model_id = model.identity
        self.limits = limits
        self.state: StreamState | None = None
        self.coder = CoderState.empty(model.cfg.fsq.levels)  # packets v2 and v3's models, twin of the sender's
        fsq = model.cfg.fsq
        # the largest packet of any version this model sends within the limits (a .ltk reader's bound)
        self.max_packet_bytes = max(largest_packet(v, bits_per_index=fsq.bits_per_index, stride=model.cfg.stride,
                                                   limits=limits) for v in VERSIONS)

    def check_size(self, data: bytes) -> None:
        """Refuse (PacketError) bytes longer than the largest packet of their version this model sends
        for a frame within the size limit, before they are parsed (CRC, header, decoding)."""
        check_packet_size(data, bits_per_index=self.model.cfg.fsq.bits_per_index, stride=self.model.cfg.stride,
                          limits=self.limits)

    def screen(self, data: bytes) -> None:
        """Everything refusable before decoding: the size, the header, the model id and the header's
        promises (`check`). A v1 mask or a v2 or v3 payload then costs at most what this model's largest
        frame costs (docs/PACKET.md 1.4)."""
        self.check_size(data)
        header = peek_header(data)
        _check_model(header, self.model_id)
        self.check(header)

    def check(self, packet: TokenPacket | PacketHeader) -> None:
        """Refuse (PacketError) a packet this model could not have made, or one over the size limit;
        a header alone is checked before anything is decoded (a v2 payload's cost follows its grid)."""
        fsq = self.model.cfg.fsq
        check_packet_fits(packet, bits_per_index=fsq.bits_per_index, codebook_size=fsq.codebook_size,
                          stride=self.model.cfg.stride, limits=self.limits)

    def decode(self, packet: TokenPacket | bytes) -> np.ndarray:
        """Decode one packet to a uint8 RGB frame [H, W, 3] (see `decode_packet`)."""
        return self.decode_packet(packet)[1]

    def decode_packet(self, packet: TokenPacket | bytes) -> tuple[TokenPacket, np.ndarray]:
        """Decode one packet (bytes of any version, in stream order; or an already parsed packet)
        to (the packet, a uint8 RGB frame [H, W, 3]).

        Raises:
            PacketError: bad bytes, a packet of another model (the message names both identities), one
                this model could not have made or over the receiver's size limit (`packet_guard`), or a
                v2 or v3 packet that does not follow the last one decoded (a loss: request a keyframe; a v3
                non-keyframe carries no model id, and one of another model's stream fails its CRC).
            TokenizerError: a non-keyframe arrives with no usable state (join at a keyframe).
        """
        if isinstance(packet, bytes | bytearray | memoryview):
            data = bytes(packet)
            self.screen(data)  # size and header, before the payload is decoded (unpack verifies the CRC)
            packet, self.coder = TokenPacket.unpack_any(data, self.coder, expect_model_id=self.model_id)
        elif packet.model_id != self.model_id:
            raise PacketError(
                f"packet is for model {packet.model_id.hex()}, this receiver runs model {self.model_id.hex()}"
            )
        if packet.end_of_stream and packet.n == 0:
            raise TokenizerError("an end-of-stream packet carries no frame")
        self.check(packet)
        tokens = packet_to_tokens(packet, self.model.device)
        frame, self.state = self.model.decode_step(tokens, self.state)
        return packet, to_uint8(frame[0])
