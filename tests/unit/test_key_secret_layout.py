"""A key directory mounted from a Kubernetes Secret is flat: ``active`` and ``<kid>.pem``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sizeguard.approvals import KeyStoreError, init_key_dir, load_signing_key


def test_the_flat_layout_of_a_mounted_secret_loads(tmp_path: Path) -> None:
    key = init_key_dir(tmp_path / "keys")
    flat = tmp_path / "secret"
    flat.mkdir()
    shutil.copy(tmp_path / "keys" / "active", flat / "active")
    shutil.copy(tmp_path / "keys" / "signing" / f"{key.kid}.pem", flat / f"{key.kid}.pem")
    assert load_signing_key(flat).kid == key.kid


def test_a_flat_directory_without_the_active_key_is_refused(tmp_path: Path) -> None:
    key = init_key_dir(tmp_path / "keys")
    flat = tmp_path / "secret"
    flat.mkdir()
    shutil.copy(tmp_path / "keys" / "active", flat / "active")
    with pytest.raises(KeyStoreError):
        load_signing_key(flat)
    assert key.kid
