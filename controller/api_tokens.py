"""Operator API tokens: roles, principals and the token table (DESIGN.md §6).

Tokens are stored only as SHA-256 digests: they are 256-bit random strings (`new_token`), so a
slow password hash would add nothing but latency. A module of its own, apart from the HTTP
handlers of `controller.api` that check a token on every request, because the CLI makes, hashes
and loads tokens without serving anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable
from pathlib import Path

import yaml

from controller import codec

ADMIN = "admin"
DEVELOPER = "developer"
ROLES = (ADMIN, DEVELOPER)
TOKEN_PREFIX = "fgt_"


class TokenFileError(ValueError):
    """The tokens file cannot be used; the message says where and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name, role and namespaces."""

    name: str
    role: str  # ADMIN | DEVELOPER
    namespaces: frozenset[str] = frozenset()

    def may(self, namespace: str) -> bool:
        return self.role == ADMIN or namespace in self.namespaces


@dataclasses.dataclass(frozen=True, slots=True)
class TokenEntry:
    """One token as stored: never the token itself, only its digest."""

    name: str
    sha256: str  # hex digest of the token
    role: str
    namespaces: tuple[str, ...] = ()


def new_token() -> str:
    """A fresh random token (shown once to the operator; store `hash_token` of it)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The token table: digest → principal."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for entry in entries:
            if entry.role not in ROLES:
                raise TokenFileError(f"token {entry.name!r}: role must be one of {ROLES}")
            digest = entry.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise TokenFileError(f"token {entry.name!r}: sha256 must be 64 hex digits")
            self._by_digest[digest] = Principal(entry.name, entry.role, frozenset(entry.namespaces))

    @classmethod
    def from_file(cls, path: Path) -> Tokens:
        """Read a YAML (or JSON) file: `tokens: [{name, sha256, role, namespaces}]`."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TokenFileError(f"{path}: cannot read tokens: {exc}") from exc
        items = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise TokenFileError(f"{path}: expected a top-level `tokens:` list")
        entries = []
        for index, item in enumerate(items):
            try:
                entries.append(codec.decode(TokenEntry, item))
            except (TypeError, ValueError, KeyError) as exc:
                raise TokenFileError(f"{path}: tokens[{index}]: {exc}") from exc
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        # A dict probe on the digest: timing reveals at most which digests exist, never a
        # prefix of a token.
        return self._by_digest.get(hash_token(token))
