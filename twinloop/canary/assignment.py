"""Sticky arm assignment: one user sees one arm for the whole canary.

A request's key (its `user_id`, else its `session_id`) is hashed with SHA-256 and a salt that
does not depend on the canary, and the first 8 bytes of the digest, modulo 10 000, are its
*bucket*. The request goes to the canary arm when `bucket < percent * 100`. So

* the same key always lands in the same bucket, on every gateway and after every restart;
* raising the percentage only adds buckets: a user on the canary at 10 % is on it at 20 %,
  and lowering it only removes users;
* buckets are uniform, so `percent` of the keys (not of the requests: a heavy user weighs
  as much as the others on the split, more in the counts) reach the canary.

The salt is the same for every canary, so the same users are the first to meet every new
Shadow; a deployment that wants to spread that burden passes its own salt per canary.

A request with neither id is split at random with the injected RNG and flagged
`sticky=False`, so that the caller can count such requests apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from random import Random

from twinloop.errors import InvalidRequestError

BUCKETS = 10_000
DEFAULT_SALT = "twinloop-canary-v1"


class Arm(StrEnum):
    ACTIVE = "active"
    CANARY = "canary"


@dataclass(frozen=True)
class Assignment:
    arm: Arm
    sticky: bool  # False: neither id, split at random
    bucket: int | None  # in [0, BUCKETS) when sticky


def bucket_of(key: str, *, salt: str = DEFAULT_SALT) -> int:
    """The key's bucket in [0, BUCKETS): stable across processes and Python versions."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(
    *,
    percent: float,
    user_id: str | None,
    session_id: str | None,
    rng: Random,
    salt: str = DEFAULT_SALT,
) -> Assignment:
    """The arm for one request; `percent` of the keys, in [0, 100], go to the canary."""
    if not 0 <= percent <= 100:
        raise InvalidRequestError(f"canary percent must be within [0, 100], not {percent}")
    key = f"user:{user_id}" if user_id else f"session:{session_id}" if session_id else None
    if key is None:
        canary = rng.random() * 100 < percent
        return Assignment(Arm.CANARY if canary else Arm.ACTIVE, sticky=False, bucket=None)
    bucket = bucket_of(key, salt=salt)
    arm = Arm.CANARY if bucket < round(percent * 100) else Arm.ACTIVE
    return Assignment(arm, sticky=True, bucket=bucket)
