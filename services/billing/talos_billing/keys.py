"""API keys and node tokens: random, shown once, stored only as a SHA-256 hash.

A key is looked up by its hash (an index lookup that reveals nothing about near misses),
then the stored hash is compared with :func:`hmac.compare_digest` all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "tls_"
NODE_TOKEN_PREFIX = "tlsn_"
# 32 random bytes: 256 bits, far beyond guessing.
_SECRET_BYTES = 32
# Longer input than any key we issue is refused before hashing.
MAX_SECRET_LENGTH = 256


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_node_token() -> str:
    return NODE_TOKEN_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_account_id() -> str:
    return "acc_" + secrets.token_hex(12)


def new_node_id() -> str:
    return "node_" + secrets.token_hex(8)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def matches(stored_hash: str, presented_hash: str) -> bool:
    """Compares a stored hash with the :func:`digest` of a presented secret, in constant time."""
    return hmac.compare_digest(stored_hash.encode("ascii"), presented_hash.encode("ascii"))


def plausible(secret: str, prefix: str) -> bool:
    """Cheap shape check so garbage never reaches the database."""
    return 0 < len(secret) <= MAX_SECRET_LENGTH and secret.startswith(prefix)
