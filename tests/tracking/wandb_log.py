"""Read a W&B offline transaction log (``run-<id>.wandb``) back into protobuf Records.

wandb >= 0.19 moved its Python reader into the Go core, so tests read the file themselves:
a LevelDB-style log (7-byte ":W&B" header, 32 KiB blocks, records of FULL/FIRST/MIDDLE/LAST
fragments with a 7-byte header each) of serialised ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x})")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos: pos + HEADER])
        payload = data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        rec = pb.Record()
        rec.ParseFromString(pending)
        pending = b""
        yield rec
