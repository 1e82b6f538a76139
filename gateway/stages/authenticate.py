"""Stage 1, authenticate: which API key (and so which team) is calling.

Keys are stored as SHA-256 digests; the presented key is hashed and compared in constant time.
A routes file without keys turns authentication off (local development): every caller is the
anonymous key of team `anonymous`.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.config import ANONYMOUS, Compiled, CompiledKey
from gateway.errors import GatewayError


def authenticate(compiled: Compiled, authorization: str | None) -> CompiledKey:
    if not compiled.auth_required:
        return ANONYMOUS
    if not authorization:
        raise GatewayError(
            401, "Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise GatewayError(401, "Authorization header must be 'Bearer <key>'.", "invalid_api_key")
    digest = hashlib.sha256(token.strip().encode()).digest()
    key = compiled.keys.get(digest)
    if key is None or not hmac.compare_digest(key.digest, digest):
        raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")
    return key
