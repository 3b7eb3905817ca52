"""SRTP against RFC 3711 appendix B, and an independent check that libsrtp computes exactly that.

B.2 checks the AES-CM keystream with the IV of RFC 3711 section 4.1.1 and B.3 the key derivation of section
4.3, both computed here with AES-CTR from `cryptography`. Then packets protected by :mod:`loa.protocol.srtp`
(libsrtp) are decrypted and authenticated with those independently derived session keys: byte-exact agreement
shows libsrtp implements the RFC as the spec uses it (key ‖ salt order, labels, IV, tag over ROC).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from loa.protocol.rtcp import SenderReport, build_rtcp
from loa.protocol.rtp import RtpPacket
from loa.protocol.srtp import StreamProtector, StreamUnprotector

# RFC 3711 appendix B.2 (test-vector values only)
B2_SESSION_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
B2_SESSION_SALT = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
B2_KEYSTREAM_START = {
    0x0000: "E03EAD0935C95E80E166B16DD92B4EB4",
    0x0001: "D23513162B02D0F72A43A2FE4A5F97AB",
    0x0002: "41E95B3BB0A2E8DD477901E4FCA894C0",
    0xFEFF: "EC8CDF7398607CB0F2D21675EA9EA1E4",
    0xFF00: "362B7C3C6773516318A077D7FC5073AE",
    0xFF01: "6A2CC3787889374FBEB4C81B17BA6C44",
}
B2_SEGMENT_BLOCKS = 65282

# RFC 3711 appendix B.3
B3_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY = bytes.fromhex(
    "CEBE321F6FF7716B6FD4AB49AF256A15"
    "6D38BAA48F0A0ACF3C34E2359E6CDBCE"
    "E049646C43D9327AD175578EF7227098"
    "6371C10C9A369AC2F94A8C5FBCDDDC25"
    "6D6E919A48B610EF17C2041E47403576"
    "6B68642C59BBFC2F34DB60DBDFB2"
)


def aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    """AES in counter mode from a 128-bit initial counter (RFC 3711 section 4.1.1)."""
    enc = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return enc.update(data) + enc.finalize()


def srtp_iv(salt: bytes, ssrc: int, index: int) -> int:
    """IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    return (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 section 4.3 with key_derivation_rate 0: AES-CM of (label || 0^48) XOR master_salt, times 2^16."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm(master_key, x << 16, bytes(length))


def session_keys(master: bytes, *, rtcp: bool = False) -> tuple[bytes, bytes, bytes]:
    base = 3 if rtcp else 0
    key, salt = master[:16], master[16:]
    return derive(key, salt, base, 16), derive(key, salt, base + 1, 20), derive(key, salt, base + 2, 14)


def test_b2_aes_cm_keystream() -> None:
    iv = srtp_iv(B2_SESSION_SALT, 0, 0)
    assert iv.to_bytes(16, "big").hex().upper() == "F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"
    stream = aes_cm(B2_SESSION_KEY, iv, bytes(16 * B2_SEGMENT_BLOCKS))
    for block, expected in B2_KEYSTREAM_START.items():
        assert stream[16 * block : 16 * block + 16].hex().upper() == expected


def test_b3_key_derivation() -> None:
    assert derive(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16) == B3_CIPHER_KEY
    assert derive(B3_MASTER_KEY, B3_MASTER_SALT, 2, 14) == B3_CIPHER_SALT
    assert derive(B3_MASTER_KEY, B3_MASTER_SALT, 1, 94) == B3_AUTH_KEY


def _check_srtp(master: bytes, srtp: bytes, plain: bytes, roc: int) -> None:
    enc_key, auth_key, salt = session_keys(master)
    ssrc, seq = struct.unpack_from("!I", plain, 8)[0], struct.unpack_from("!H", plain, 2)[0]
    body, tag = srtp[:-10], srtp[-10:]
    assert body[:12] == plain[:12]  # the header stays in clear
    index = (roc << 16) | seq
    assert aes_cm(enc_key, srtp_iv(salt, ssrc, index), body[12:]) == plain[12:]
    expected = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:10]
    assert tag == expected


def test_libsrtp_uses_the_rfc_keys_iv_and_tag_for_rtp() -> None:
    master = B3_MASTER_KEY + B3_MASTER_SALT
    protector = StreamProtector(master)
    ssrc = 0xCAFEBABE
    for seq, roc in [(65534, 0), (65535, 0), (0, 1), (1, 1)]:
        plain = RtpPacket(111, seq, seq * 960 & 0xFFFFFFFF, ssrc, bytes(range(seq % 7, seq % 7 + 53))).to_bytes()
        _check_srtp(master, protector.protect(plain), plain, roc)


def test_libsrtp_uses_the_rfc_keys_iv_and_tag_for_rtcp() -> None:
    master = B3_MASTER_KEY + B3_MASTER_SALT
    enc_key, auth_key, salt = session_keys(master, rtcp=True)
    protector = StreamProtector(master)
    for expected_index in (1, 2):
        plain = build_rtcp([SenderReport(0x01020304, 0xE8A0F2C0_00000000 + expected_index, 7, 8, 9)])
        srtcp = protector.protect_rtcp(plain)
        assert srtcp[:8] == plain[:8]
        body, trailer, tag = srtcp[:-14], srtcp[-14:-10], srtcp[-10:]
        e_and_index = int.from_bytes(trailer, "big")
        assert e_and_index == 0x80000000 | expected_index  # encrypted, SRTCP index counting from 1
        assert aes_cm(enc_key, srtp_iv(salt, 0x01020304, expected_index), body[8:]) == plain[8:]
        assert tag == hmac.new(auth_key, body + trailer, hashlib.sha1).digest()[:10]
        assert StreamUnprotector(master).unprotect_rtcp(srtcp) == plain


def test_a_packet_built_by_the_rfc_construction_is_accepted_by_libsrtp() -> None:
    master = bytes(range(100, 130))
    enc_key, auth_key, salt = session_keys(master)
    plain = RtpPacket(111, 4242, 123456, 0x0BADCAFE, b"independent", marker=True).to_bytes()
    body = plain[:12] + aes_cm(enc_key, srtp_iv(salt, 0x0BADCAFE, 4242), plain[12:])
    srtp = body + hmac.new(auth_key, body + bytes(4), hashlib.sha1).digest()[:10]
    assert StreamUnprotector(master).unprotect(srtp) == plain
