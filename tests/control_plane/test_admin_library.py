"""`loa admin library` and `loa admin playlists` against a real app: upload, approval, playlists, and every
failure as one line (status, title, detail) and exit 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _admin_env import PNG, Env, admin_env, write_file

from loa.control_plane.testing import library_item, wav_bytes


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from admin_env(tmp_path)


def test_library_upload_submit_approve_reject_delete(env: Env) -> None:
    wav = write_file(env, "ban-tin-sang.wav", wav_bytes(0.5))
    (audio,) = env.rows("ed", "library", "upload", wav, "--class", "priority", "--zone", "20194")
    assert audio[1:7] == ["audio", "draft", "priority", "district", "20194", "0.5s"]  # level: the author's
    assert audio[7] == "ban-tin-sang"  # the title defaults to the file's name
    (image,) = env.rows("ed", "library", "image", write_file(env, "bang.png", PNG), "--title", "Bảng tin")
    assert image[1:4] == ["image", "draft", "normal"]
    assert image[5:] == ["490", "-", "Bảng tin"]  # owner zone: the editor's scope
    (text,) = env.rows("ed", "library", "text", "Họp tổ", "Họp tổ dân phố lúc 19 giờ.")
    piped = env.ok("ed", "--json", "library", "text", "Tiêm chủng", "-", "--level", "commune",
                   stdin="Tiêm chủng mở rộng\nsáng thứ Bảy\n")
    assert json.loads(piped)["text"] == "Tiêm chủng mở rộng\nsáng thứ Bảy"  # TEXT "-": read from standard input

    audio_id, image_id, text_id = int(audio[0]), int(image[0]), int(text[0])
    listed = env.rows("ed", "library", "list")
    assert {int(r[0]) for r in listed} >= {audio_id, image_id, text_id}
    assert all(len(r) == 8 for r in listed)  # one row per item, always the same columns
    assert [r[0] for r in env.rows("ed", "library", "list", "--kind", "audio")] == [str(audio_id)]

    assert env.rows("ed", "library", "submit", str(audio_id))[0][2] == "submitted"
    assert env.rows("duyet", "library", "approve", str(audio_id))[0][2] == "approved"
    env.ok("ed", "library", "submit", str(text_id))
    assert env.rows("duyet", "library", "reject", str(text_id), "--reason", "Sai giờ họp")[0][2] == "rejected"
    shown = dict(line.split("\t", 1) for line in env.ok("ed", "library", "show", str(text_id)).splitlines())
    assert (shown["state"], shown["reason"], shown["reviewed_by"]) == ("rejected", "Sai giờ họp", "duyet")
    assert shown["reviewed_at"].endswith("+07:00")  # shown in Asia/Ho_Chi_Minh
    assert env.json("ed", "library", "show", str(audio_id)) == env.api("ed", "GET", f"/api/v1/library/{audio_id}")
    assert [r[0] for r in env.rows("ed", "library", "list", "--state", "approved")] == [str(audio_id)]

    assert env.ok("ed", "library", "delete", str(image_id)).strip() == f"deleted library item {image_id}"
    env.fails("ed", "library", "show", str(image_id), status="404 Not found:")


def test_library_errors_are_one_line(env: Env) -> None:
    (text,) = env.rows("ed", "library", "text", "Họp tổ", "Họp tổ dân phố lúc 19 giờ.")
    line = env.fails("ed", "library", "upload", write_file(env, "not-audio.wav", b"RIFF this is no audio at all"),
                     status="422 Invalid input:")
    assert "'not-audio.wav' is not usable audio" in line
    line = env.fails("ed", "library", "image", write_file(env, "broken.png", PNG[:30]), status="422 Invalid input:")
    assert "broken.png" in line
    env.fails("ed", "library", "upload", str(env.tmp / "missing.wav"), status="Error: Invalid value", exit_code=2)
    env.fails("ed", "library", "approve", text[0], status="403 Forbidden:")        # an editor does not approve
    owned = env.rows("lan", "library", "text", "Của Lan", "Nội dung")[0][0]
    env.ok("lan", "library", "submit", owned)
    line = env.fails("lan", "library", "approve", owned, status="403 Forbidden:")  # never one's own item
    assert "\n" not in line
    env.fails("xem", "library", "text", "Tiêu đề", "Nội dung", status="403 Forbidden:")
    env.fails("ed", "library", "submit", "999999", status="404 Not found:")
    env.fails("ed", "library", "reject", text[0], status="Error: Missing option '--reason'", exit_code=2)
    env.fails(None, "library", "list", status="401 Authentication required:")
    env.fails("ed", "library", "text", "", "x", status="422 Invalid input:")


def test_playlists_create_and_list(env: Env) -> None:
    first = library_item(env.cp, zone="490", kind="audio", duration_s=0.3, state="approved")
    second = library_item(env.cp, zone="490", kind="audio", duration_s=0.4, state="draft")
    (row,) = env.rows("ed", "playlists", "create", "Buổi sáng", str(second), str(first))
    assert row[1:3] == ["playlist", "draft"]
    listed = env.rows("xem", "playlists", "list")
    assert [(r[0], r[-1]) for r in listed] == [(row[0], f"{second},{first}")]  # members in playing order
    assert env.json("xem", "playlists", "list")[0]["members"] == [second, first]
    line = env.fails("ed", "playlists", "create", "Sai", str(first), "999999", status="404 Not found:")
    assert "999999" in line
    env.fails("ed", "playlists", "create", "Trống", status="Error: Missing argument", exit_code=2)
