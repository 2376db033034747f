"""Bytes in, bytes out: message kinds, framing, signing, serialization, errors.

No sockets here; see ``wire`` for the frame layout and protocol version.
"""

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import PROTOCOL_VERSION, BadMessage, Message, Signer, decode, encode

__all__ = ["Kind", "PROTOCOL_VERSION", "BadMessage", "Message", "Signer", "decode", "encode"]
