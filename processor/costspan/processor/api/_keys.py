"""API keys: stored hashed in the data dir, shown once on creation, looked up by their public id.

A key reads ``csk_<id>_<secret>``. The file ``<data dir>/api-keys.json`` keeps, per key, its id,
role, tenant, a random salt and ``sha256(salt + secret)`` — never the secret. ``COSTSPAN_ADMIN_KEY``
(any string of 16+ characters) is an admin key that lives only in the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from costspan.processor.store._files import private_dir, private_file
from costspan.processor.store._validate import check_tenant

__all__ = ["ADMIN_KEY_ENV", "KEYS_FILE", "ROLES", "ApiKey", "KeyStore", "Principal", "Role"]

logger = logging.getLogger(__name__)

Role = Literal["admin", "tenant", "ingest", "metrics"]
ROLES: Final[tuple[Role, ...]] = ("admin", "tenant", "ingest", "metrics")
KEYS_FILE: Final = "api-keys.json"
ADMIN_KEY_ENV: Final = "COSTSPAN_ADMIN_KEY"
_PREFIX: Final = "csk_"
_MIN_ADMIN_KEY: Final = 16


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (without its secret)."""

    id: str
    role: Role
    tenant: str
    salt: str
    digest: str
    created: float
    revoked: float | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, role and (for tenant and ingest keys) tenant; ``""`` = any tenant."""

    key_id: str
    role: Role
    tenant: str = ""


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


class KeyStore:
    """The keys of one data dir. Writes are atomic (temp file, fsync, rename); reads are cached."""

    def __init__(self, data_dir: Path, *, admin_key: str | None = None) -> None:
        self.path = data_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._mtime: float | None = None
        if admin_key is not None and len(admin_key) < _MIN_ADMIN_KEY:
            raise ValueError(f"{ADMIN_KEY_ENV} must be at least {_MIN_ADMIN_KEY} characters")
        self._admin_salt = secrets.token_hex(16)
        self._admin_digest = _digest(self._admin_salt, admin_key) if admin_key else None

    @classmethod
    def from_env(cls, data_dir: Path) -> KeyStore:
        return cls(data_dir, admin_key=os.environ.get(ADMIN_KEY_ENV) or None)

    # --- file ---------------------------------------------------------------------------------------
    def _load(self) -> dict[str, ApiKey]:
        """The keys on disk, re-read when the file changed (``keys create`` while serving works)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._keys, self._mtime = {}, None
            return self._keys
        if mtime != self._mtime:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
                raise ValueError(f"{self.path} is not a costspan key file")
            keys = {}
            for entry in data["keys"]:
                key = ApiKey(**entry)
                if key.role not in ROLES:
                    raise ValueError(f"{self.path}: key {key.id} has unknown role {key.role!r}")
                keys[key.id] = key
            self._keys, self._mtime = keys, mtime
        return self._keys

    def _save(self, keys: dict[str, ApiKey]) -> None:
        private_dir(self.path.parent, tighten=False)  # the data dir
        tmp = self.path.with_suffix(".tmp")
        with private_file(tmp, "w") as fh:
            json.dump({"keys": [asdict(k) for k in keys.values()]}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._mtime = None  # re-read next time

    # --- operations ---------------------------------------------------------------------------------
    def create(self, role: str, tenant: str = "", name: str = "") -> tuple[ApiKey, str]:
        """A new key and its secret form (``csk_<id>_<secret>``), which is not stored anywhere."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if role == "tenant" and not tenant:
            raise ValueError("a tenant key needs --tenant")
        if role == "admin" and tenant:
            raise ValueError("an admin key reads every tenant; do not give --tenant")
        check_tenant(tenant, "--tenant")
        if role == "metrics" and tenant:
            raise ValueError("a metrics key scrapes /metrics (every tenant's series); do not give --tenant")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        key = ApiKey(key_id, role, tenant, salt, _digest(salt, secret), time.time(), None, name)
        with self._lock:
            keys = dict(self._load())
            keys[key_id] = key
            self._save(keys)
        logger.info("API key %s created (role %s)", key_id, role)
        return key, f"{_PREFIX}{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created)

    def revoke(self, key_id: str) -> bool:
        """Mark a key revoked; False if there is no such active key."""
        with self._lock:
            keys = dict(self._load())
            key = keys.get(key_id)
            if key is None or key.revoked is not None:
                return False
            keys[key_id] = ApiKey(
                key.id, key.role, key.tenant, key.salt, key.digest, key.created, time.time(), key.name
            )
            self._save(keys)
        logger.info("API key %s revoked", key_id)
        return True

    def has_keys(self) -> bool:
        with self._lock:
            return self._admin_digest is not None or any(k.revoked is None for k in self._load().values())

    def verify(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None (unknown, revoked or wrong secret)."""
        if self._admin_digest is not None and hmac.compare_digest(
            _digest(self._admin_salt, presented), self._admin_digest
        ):
            return Principal("env-admin", "admin")
        if not presented.startswith(_PREFIX):
            return None
        key_id, _, secret = presented[len(_PREFIX) :].partition("_")
        with self._lock:
            key = self._load().get(key_id)
        if key is None or key.revoked is not None or not secret:
            return None
        if not hmac.compare_digest(_digest(key.salt, secret), key.digest):
            return None
        return Principal(key.id, key.role, key.tenant)
