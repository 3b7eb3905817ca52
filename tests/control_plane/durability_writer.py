"""Writer process for the kill -9 test: writes devices one transaction each, acknowledging every commit.

Usage: python durability_writer.py URL. Each transaction enrols device number n (a key derived from n), writes
its audit entry, marks it online (a status history row) and commits; only then it prints ``n id``. It starts
after the devices already stored, so it continues where a killed predecessor stopped.
"""

from __future__ import annotations

import hashlib
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select

from loa.control_plane import devices
from loa.control_plane.auth import Actor
from loa.control_plane.db import Database
from loa.control_plane.db.schema import devices as devices_table

ZONE = "kill-zone"


def key_for(n: int) -> bytes:
    private = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"durability %d" % n).digest())
    return private.public_key().public_bytes_raw()


def name_for(n: int) -> str:
    return f"Cụm loa số {n} {'đ' * (n % 150)}".strip()


def main(url: str) -> None:
    db = Database.open(url, migrate_schema=False)
    with db.read() as conn:
        n = int(conn.execute(select(func.count()).select_from(devices_table)).scalar_one())
    while True:
        with db.write() as tx:
            record = devices.enrol(tx, Actor("writer", "127.0.0.1"), public_key=key_for(n), kind="speaker",
                                   zone=ZONE, name=name_for(n))
            devices.record_status(tx, record.id, online=True, status={"n": n, "fw": "1.0"}, reason="test")
        sys.stdout.write(f"{n} {record.id}\n")
        sys.stdout.flush()
        n += 1


if __name__ == "__main__":
    main(sys.argv[1])
