"""Where Customer.io credentials come from, behind one interface, re-readable on a 401.

``CIOGUARD_SECRETS`` chooses the source:

* ``env`` (default): ``CUSTOMERIO_SITE_ID`` / ``CUSTOMERIO_TRACK_API_KEY`` from the environment
  as it was at start (a process cannot see its environment change, so rotation needs a restart);
* ``dir:/run/secrets``: one file per secret named after its variable (Docker/Kubernetes
  secrets); files are re-read on demand, so a rotated key is picked up without a restart.

Values are cached; :meth:`CredentialSource.refresh` re-reads once (the worker calls it after a
401 before retrying).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cioguard.errors import ConfigurationError

SITE_ID_VAR = "CUSTOMERIO_SITE_ID"
API_KEY_VAR = "CUSTOMERIO_TRACK_API_KEY"


@dataclass(frozen=True)
class Credentials:
    site_id: str
    api_key: str
    created_at: datetime | None = None  # when the source knows the key's age

    def __repr__(self) -> str:
        return "Credentials(site_id=***, api_key=***)"


class SecretReader(Protocol):
    def read(self, name: str) -> tuple[str | None, datetime | None]: ...


class EnvReader:
    def read(self, name: str) -> tuple[str | None, datetime | None]:
        return os.environ.get(name), None


class DirReader:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> tuple[str | None, datetime | None]:
        path = self.root / name
        if not path.is_file():
            return None, None
        created = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        return path.read_text().strip(), created


class CredentialSource:
    """Cached credentials from one reader."""

    def __init__(self, reader: SecretReader, description: str) -> None:
        self._reader = reader
        self.description = description
        self._cached: Credentials | None = None

    def get(self) -> Credentials:
        if self._cached is None:
            self._cached = self._load()
        return self._cached

    def refresh(self) -> Credentials:
        self._cached = None
        return self.get()

    def _load(self) -> Credentials:
        site_id, _ = self._reader.read(SITE_ID_VAR)
        api_key, created = self._reader.read(API_KEY_VAR)
        for name, value in ((SITE_ID_VAR, site_id), (API_KEY_VAR, api_key)):
            if not value:
                raise ConfigurationError(
                    f"{name} is not set in the secret source ({self.description}): "
                    "expected the Customer.io Track API credential"
                )
        assert site_id and api_key
        return Credentials(site_id, api_key, created)


def source_from_spec(spec: str) -> CredentialSource:
    """Parse ``CIOGUARD_SECRETS``."""
    if spec == "env":
        return CredentialSource(EnvReader(), "env")
    if spec.startswith("dir:"):
        root = Path(spec[4:])
        if not root.is_dir():
            raise ConfigurationError(
                f"CIOGUARD_SECRETS names a directory that does not exist: {root}"
            )
        return CredentialSource(DirReader(root), spec)
    raise ConfigurationError(
        "CIOGUARD_SECRETS is invalid: expected 'env' or 'dir:/path/to/secrets'"
    )
