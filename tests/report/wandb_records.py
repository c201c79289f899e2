"""Read the records of an offline W&B run file (``run-<id>.wandb``) without the network.

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of records with a 7-byte
header each: crc32, length, type FULL/FIRST/MIDDLE/LAST) whose payloads are ``wandb_internal_pb2.Record``
protobufs; wandb 0.31 ships no Python reader for it, so the test reads it here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_file(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, position, pending = [], 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:  # zero padding up to the block's end
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def summary_of(path: Path) -> dict[str, Any]:
    """Group, tags, config keys and the last logged value of every history key."""
    out: dict[str, Any] = {"config": {}, "history": {}}
    for record in read_wandb_file(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["tags"] = record.run.run_group, list(record.run.tags)
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            out["history"].update(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            )
    return out
