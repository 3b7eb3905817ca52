"""The alert authority key: created once (0600, atomically), loaded again, shared with the streamer's format."""

from __future__ import annotations

import base64
import logging
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from loa.control_plane.authority import KEY_FILE, AuthorityError, load_authority
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import fast_settings
from loa.protocol.alert import Alert, key_id, verify_alert
from loa.streamer.keys import load_or_create_authority_key


def test_created_on_first_start_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / KEY_FILE
    first = load_authority(path)
    assert first.created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary file left behind
    again = load_authority(path)
    assert not again.created
    assert again.public_key == first.public_key
    assert again.kid == key_id(first.public_key)
    streamer_key, made = load_or_create_authority_key(path)  # the streamer reads the same file
    assert not made
    assert streamer_key.public_key().public_bytes_raw() == first.public_key


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_authority(path).public_key)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8
    assert len(set(keys)) == 1


def test_a_pem_key_file_is_used(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "authority.pem"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    authority = load_authority(path)
    assert authority.public_key == key.public_key().public_bytes_raw()
    assert "BEGIN PUBLIC KEY" in authority.public_pem
    assert base64.b64decode(authority.public_base64) == authority.public_key
    alert = Alert(id="a-1", kid=authority.kid, status="test", cls=2, lvl=2, zones=("48",), issued=1, expires=2,
                  bid=7, text="Thử nghiệm")
    body, sig = authority.sign_alert(alert)
    assert verify_alert(body, sig, {authority.kid: authority.public_key}, now=1, zone_path=("48",),
                        seen_ids=()) == alert


def test_a_readable_key_file_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / KEY_FILE
    load_authority(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="loa.control_plane.authority"):
        load_authority(path)
    assert "chmod 600" in caplog.text


@pytest.mark.parametrize("content", [b"not a key\n", b"", base64.b64encode(b"short") + b"\n"])
def test_a_bad_key_file_is_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    with pytest.raises(AuthorityError, match=KEY_FILE) as caught:
        load_authority(path)
    assert "\n" not in str(caught.value)


def test_an_unusable_key_path_is_refused_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(AuthorityError, match="Not a directory"):
        load_authority(blocker / "keys" / KEY_FILE)


def test_the_control_plane_loads_it_from_its_data_dir_or_a_named_file(tmp_path: Path) -> None:
    plane = ControlPlane(fast_settings(tmp_path))
    try:
        assert plane.authority.path == tmp_path / KEY_FILE
        assert (tmp_path / KEY_FILE).is_file()
    finally:
        plane.close()
    elsewhere = tmp_path / "keys" / "province.key"
    plane = ControlPlane(fast_settings(tmp_path / "d2", authority_key_file=elsewhere))
    try:
        assert plane.authority.path == elsewhere
        assert plane.authority.public_key == load_authority(elsewhere).public_key
    finally:
        plane.close()
