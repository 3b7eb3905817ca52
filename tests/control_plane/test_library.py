"""The library: content checks (audio, text, images), the content store, uploads over the API, visibility,
issuing levels, playlists and deletion."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loa.control_plane import library, media
from loa.control_plane.content import ContentStore
from loa.control_plane.errors import InvalidError
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, bearer, library_item, wav_bytes

PROBLEM = "application/problem+json"
HAS_PILLOW = media.IMAGE_CHECK == "pillow"


def _png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, built by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _jpeg() -> bytes:
    if HAS_PILLOW:
        from PIL import Image

        out = io.BytesIO()
        Image.new("RGB", (16, 8), (0, 120, 200)).save(out, "JPEG")
        return out.getvalue()
    # the smallest well-formed baseline JPEG header walk: SOI, SOF0 (8x16), EOI
    return b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x08\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9"


def _problem(response: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    if kind is not None:
        assert body["type"] == f"/problems/{kind}"
    return body


# -- content checks ----------------------------------------------------------------------------------------------

def test_text_is_nfc_and_checked() -> None:
    decomposed = "Thông ba\u0301o: ho\u0323p tô\u0309 dân phô\u0301"  # combining marks, as some keyboards type
    checked = media.check_text(f"  {decomposed}\r\n  ")
    assert checked == "Thông báo: họp tổ dân phố"
    assert checked.encode() == "Thông báo: họp tổ dân phố".encode()
    assert media.check_text("Dòng 1\nDòng 2\tcột") == "Dòng 1\nDòng 2\tcột"
    for bad, why in (("   ", "empty"), ("a\x00b", "U\\+0000"), ("x" * (media.MAX_TEXT + 1), "at most"),
                     ("a\ue000", "U\\+E000")):
        with pytest.raises(InvalidError, match=why):
            media.check_text(bad)


@pytest.mark.parametrize("use_pillow", [pytest.param(True, marks=pytest.mark.skipif(
    not HAS_PILLOW, reason="pillow is not installed")), False], ids=["pillow", "signature"])
def test_images_are_png_or_jpeg_and_whole(use_pillow: bool) -> None:
    assert media.check_image(_png(), "a.png", use_pillow=use_pillow) == ("image/png", 3, 2)
    assert media.check_image(_jpeg(), "a.jpg", use_pillow=use_pillow) == ("image/jpeg", 16, 8)
    for blob, name in ((_png()[:-20], "cut.png"), (b"GIF89a" + bytes(40), "anim.gif"), (b"", "empty.png"),
                       (wav_bytes(0.01), "sound.png")):
        with pytest.raises(InvalidError, match=name.replace(".", r"\.")):
            media.check_image(blob, name, use_pillow=use_pillow)
    with pytest.raises(InvalidError, match="at most"):
        media.check_image(_png(width=media.MAX_SIDE + 1, height=1), "wide.png", use_pillow=use_pillow)


def test_audio_is_normalised_stored_once_and_refused_when_not_audio(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    src = tmp_path / "bản tin.wav"
    src.write_bytes(wav_bytes(1.0))
    first = media.ingest_audio(store, src, "bản tin.wav")
    again = media.ingest_audio(store, src, "bản tin.wav")
    assert first == again
    assert first.media_type == "audio/ogg"
    assert first.duration_ms == 1000
    assert first.loudness_lufs is not None
    assert first.gain_db is not None
    path = store.path(first.sha256, "audio/ogg")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first.sha256
    assert sorted(p.name for p in store.root.iterdir() if p.is_file()) == [f"{first.sha256}.opus"]
    bad = tmp_path / "x.mp3"
    bad.write_bytes(b"ID3" + bytes(range(256)) * 20)
    with pytest.raises(InvalidError, match=r"'x\.mp3' is not usable audio"):
        media.ingest_audio(store, bad, "x.mp3")
    with pytest.raises(InvalidError, match="lasts more than"):
        media.ingest_audio(store, src, "long.wav", max_seconds=0.5)
    assert sorted(p.name for p in store.root.iterdir() if p.is_file()) == [f"{first.sha256}.opus"]
    assert list((store.root / ".incoming").iterdir()) == []


def test_display_names_are_safe() -> None:
    assert media.display_name("../../etc/passwd") == "passwd"
    assert media.display_name("C:\\tmp\\bản tin.mp3") == "bản tin.mp3"
    assert media.display_name("a\x00b\n.wav") == "ab.wav"
    assert media.display_name(None) == "upload"


# -- the API -----------------------------------------------------------------------------------------------------

@pytest.fixture
def people(seed: Seed) -> dict[str, dict[str, str]]:
    seed.province()
    return {
        "editor": bearer(seed.user("editor", "editor", "490")),        # district Liên Chiểu
        "commune": bearer(seed.user("commune", "editor", "20194")),    # a commune below it
        "other": bearer(seed.user("other", "viewer", "491")),          # another district
        "admin": bearer(seed.user("root", "admin")),
    }


def _content_files(cp: ControlPlane) -> list[str]:
    root = cp.settings.data_dir / "content"
    return sorted(p.name for p in root.iterdir() if p.is_file()) if root.exists() else []


def test_upload_audio_over_the_api(cp: ControlPlane, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    editor = people["editor"]
    response = client.post("/api/v1/library/audio", headers=editor, data={"title": "Bản tin sáng", "zone": "20194"},
                           files={"file": ("bản tin.wav", wav_bytes(0.5), "audio/wav")})
    assert response.status_code == 201, response.text
    item = response.json()
    assert (item["kind"], item["state"], item["author"], item["zone"]) == ("audio", "draft", "editor", "20194")
    assert (item["class"], item["level"]) == ("normal", "district")  # the district editor's issuing level
    assert item["duration_ms"] == 500
    assert item["media_type"] == "audio/ogg"
    assert _content_files(cp) == [f"{item['content_id']}.opus"]
    content = client.get(f"/api/v1/library/{item['id']}/content", headers=people["commune"])
    assert content.status_code == 200
    assert content.headers["content-type"] == "audio/ogg"
    assert hashlib.sha256(content.content).hexdigest() == item["content_id"]

    same = client.post("/api/v1/library/audio", headers=editor, data={"title": "Bản tin sáng (2)"},
                       files={"file": ("again.wav", wav_bytes(0.5), "audio/wav")}).json()
    assert same["content_id"] == item["content_id"]  # stored once
    assert same["zone"] == "490"                       # default owner: the editor's scope
    assert _content_files(cp) == [f"{item['content_id']}.opus"]

    bad = client.post("/api/v1/library/audio", headers=editor, data={"title": "hỏng"},
                      files={"file": ("hỏng.mp3", b"\xff\xfb" + bytes(5000), "audio/mpeg")})
    assert "'hỏng.mp3' is not usable audio" in _problem(bad, 422, "invalid")["detail"]
    assert _content_files(cp) == [f"{item['content_id']}.opus"]
    assert client.get("/api/v1/library", headers=editor).json()["items"][0]["id"] == same["id"]

    outside = client.post("/api/v1/library/audio", headers=editor, data={"title": "x", "zone": "20227"},
                          files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")})
    _problem(outside, 403, "forbidden")
    too_high = client.post("/api/v1/library/audio", headers=editor, data={"title": "x", "level": "province"},
                           files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")})
    assert "issuing level is district" in _problem(too_high, 403)["detail"]


def test_uploads_past_the_limit_are_refused(db_url: str, tmp_path: Path) -> None:
    from loa.control_plane.api import create_app
    from loa.control_plane.testing import fast_settings

    cp = ControlPlane(fast_settings(tmp_path, db_url, library_max_upload_bytes=10_000))
    try:
        seed = Seed(cp)
        seed.province()
        editor = bearer(seed.user("editor", "editor", "490"))
        with TestClient(create_app(control_plane=cp)) as client:
            big = client.post("/api/v1/library/audio", headers=editor, data={"title": "dài"},
                              files={"file": ("dài.wav", wav_bytes(1.0), "audio/wav")})
            assert "'dài.wav' is larger than" in _problem(big, 413, "too-large")["detail"]
            image = client.post("/api/v1/library/images", headers=editor, data={"title": "ảnh"},
                                files={"file": ("big.png", _png(200, 200) + bytes(20_000), "image/png")})
            _problem(image, 413, "too-large")
        assert _content_files(cp) == []
    finally:
        cp.close()


def test_text_and_images(cp: ControlPlane, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    editor = people["commune"]
    text = client.post("/api/v1/library/texts", headers=editor,
                       json={"title": "Lịch tiêm", "text": "Tie\u0302m chu\u0309ng sáng thứ Bảy", "class": "priority"})
    assert text.status_code == 201, text.text
    body = text.json()
    assert body["text"] == "Tiêm chủng sáng thứ Bảy"
    assert (body["class"], body["level"], body["zone"], body["media_type"]) == ("priority", "commune", "20194",
                                                                                "text/plain")
    stored = client.get(f"/api/v1/library/{body['id']}/content", headers=editor)
    assert stored.headers["content-type"] == "text/plain; charset=utf-8"
    assert stored.content.decode("utf-8") == "Tiêm chủng sáng thứ Bảy"
    _problem(client.post("/api/v1/library/texts", headers=editor, json={"title": "x", "text": "a\u0007b"}), 422)

    png = client.post("/api/v1/library/images", headers=editor, data={"title": "Áp phích"},
                      files={"file": ("áp phích.png", _png(), "image/png")})
    assert png.status_code == 201, png.text
    assert (png.json()["width"], png.json()["height"], png.json()["media_type"]) == (3, 2, "image/png")
    gif = client.post("/api/v1/library/images", headers=editor, data={"title": "x"},
                      files={"file": ("động.gif", b"GIF89a" + bytes(100), "image/gif")})
    assert "'động.gif'" in _problem(gif, 422, "invalid")["detail"]

    edited = client.patch(f"/api/v1/library/{body['id']}", headers=editor, json={"text": "Tiêm chủng chủ nhật"})
    assert edited.json()["content_id"] != body["content_id"]
    assert edited.json()["version"] == 2


def test_who_sees_what(cp: ControlPlane, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    province = library_item(cp, zone="48", state="draft", title="Tỉnh")
    district = library_item(cp, zone="490", state="draft", title="Quận")
    commune = library_item(cp, zone="20194", state="draft", title="Phường")
    national = library_item(cp, zone=None, state="draft", title="Trung ương")
    elsewhere = library_item(cp, zone="20227", state="draft", title="Nơi khác")

    def seen(who: str, **params: Any) -> set[int]:
        response = client.get("/api/v1/library", headers=people[who], params=params)
        assert response.status_code == 200, response.text
        return {i["id"] for i in response.json()["items"]}

    assert seen("commune") == {province, district, commune, national}       # its own and everything above
    assert seen("editor") == {province, district, commune, national}
    assert seen("other") == {province, national, elsewhere}
    assert seen("admin") == {province, district, commune, national, elsewhere}
    assert seen("admin", zone="490") == {district, commune}
    assert seen("admin", q="Phường") == {commune}
    assert client.get(f"/api/v1/library/{province}", headers=people["commune"]).status_code == 200
    _problem(client.get(f"/api/v1/library/{commune}", headers=people["other"]), 403)
    # seeing is not editing: the commune editor may not change the province's item
    _problem(client.patch(f"/api/v1/library/{province}", headers=people["commune"], json={"title": "x"}), 403)
    first = client.get("/api/v1/library", headers=people["admin"], params={"limit": 2}).json()
    second = client.get("/api/v1/library", headers=people["admin"],
                        params={"limit": 10, "cursor": first["next_cursor"]}).json()
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 5
    assert second["next_cursor"] is None


def test_playlists_and_deletion(cp: ControlPlane, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    one = library_item(cp, zone="20194", kind="audio", duration_s=0.5)
    two = library_item(cp, zone="490", kind="audio", duration_s=1.0)
    text = library_item(cp, zone="20194")
    hidden = library_item(cp, zone="20227", kind="text")
    editor = people["commune"]
    created = client.post("/api/v1/playlists", headers=editor, json={"title": "Sáng", "items": [one, two, one]})
    assert created.status_code == 201, created.text
    playlist = created.json()
    assert (playlist["kind"], playlist["members"], playlist["duration_ms"]) == ("playlist", [one, two, one], 2000)
    _problem(client.post("/api/v1/playlists", headers=editor, json={"title": "x", "items": [one, text]}), 422)
    _problem(client.post("/api/v1/playlists", headers=editor, json={"title": "x", "items": [hidden]}), 403)
    _problem(client.post("/api/v1/playlists", headers=editor, json={"title": "x", "items": [9999]}), 404)
    assert [p["id"] for p in client.get("/api/v1/playlists", headers=editor).json()["items"]] == [playlist["id"]]
    changed = client.patch(f"/api/v1/playlists/{playlist['id']}", headers=editor, json={"items": [two]}).json()
    assert (changed["members"], changed["version"], changed["duration_ms"]) == ([two], 2, 1000)
    _problem(client.get(f"/api/v1/playlists/{one}", headers=editor), 404)
    _problem(client.get(f"/api/v1/library/{playlist['id']}/content", headers=editor), 404)

    used = _problem(client.delete(f"/api/v1/library/{two}", headers=people["editor"]), 409, "conflict")
    assert used["used_by"] == {"playlists": [playlist["id"]]}
    assert client.delete(f"/api/v1/library/{playlist['id']}", headers=editor).status_code == 204
    assert client.delete(f"/api/v1/library/{two}", headers=people["editor"]).status_code == 204
    _problem(client.get(f"/api/v1/library/{two}", headers=editor), 404)
    with cp.db.read() as conn:
        assert set(library.get_many(conn, [one, two])) == {one}
