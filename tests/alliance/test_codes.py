"""Attribution codes: signed, compact, unguessable; forged or altered codes are rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from alliance.codes import Attribution, CodeKeyring, CodeSigner, InvalidCode, _pack_field


def test_code_round_trips_merchant_store_and_staff() -> None:
    signer = CodeSigner("secret")
    a = Attribution("mer_0123456789abcdef", "sto_00000000000000aa", "stf_ffffffffffffffff")
    code = signer.sign(a)
    assert signer.parse(code) == a
    assert len(code) <= 70 and code.replace("-", "").replace("_", "").isalnum()


def test_code_carries_non_roomfeed_ids_too() -> None:
    signer = CodeSigner("secret")
    a = Attribution("m42", None, "staff:7")
    assert signer.parse(signer.sign(a)) == a


def test_an_id_is_packed_short_only_when_all_of_it_is_a_roomfeed_id() -> None:
    """`mer_<16 hex>` packs into 9 bytes; the same with a trailing line break is another id, carried as
    written (a `$` pattern had packed it as the id without the line break)."""
    signer = CodeSigner("secret")
    for odd in ("mer_0123456789abcdef\n", "mer_0123456789abcdef0", "xmer_0123456789abcdef"):
        assert signer.parse(signer.sign(Attribution(odd))) == Attribution(odd)
    assert _pack_field("mer_0123456789abcdef\n") != _pack_field("mer_0123456789abcdef")


def test_two_codes_for_the_same_store_differ() -> None:
    signer = CodeSigner("secret")
    a = Attribution("mer_0123456789abcdef", "sto_00000000000000aa")
    assert signer.sign(a) != signer.sign(a)


def test_forged_code_signed_with_another_secret_is_rejected() -> None:
    forged = CodeSigner("attacker").sign(Attribution("mer_0123456789abcdef"))
    with pytest.raises(InvalidCode):
        CodeSigner("secret").parse(forged)


def test_altered_code_is_rejected_whichever_byte_changes() -> None:
    signer = CodeSigner("secret")
    code = signer.sign(Attribution("mer_0123456789abcdef", "sto_00000000000000aa"))
    raw = bytearray(base64.urlsafe_b64decode(code + "=" * (-len(code) % 4)))
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
        with pytest.raises(InvalidCode):
            signer.parse(text)


@pytest.mark.parametrize(
    "junk",
    ["", "abc", "not a code at all!", "A" * 300, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "A" * 40 + "\n"],
)
def test_junk_is_not_a_code(junk: str) -> None:
    with pytest.raises(InvalidCode):
        CodeSigner("secret").parse(junk)


def test_a_code_has_one_spelling() -> None:
    """The last base64url character of a code carries spare bits: every other spelling that decodes
    to the same bytes is refused (it would count opens and be listed as a phantom code)."""
    signer = CodeSigner("secret")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(20):
        code = signer.sign(Attribution("mer_0123456789abcdef", "sto_00000000000000aa"))
        assert signer.parse(code)
        raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        spellings = [
            code[:-1] + c
            for c in alphabet
            if base64.urlsafe_b64decode(code[:-1] + c + "=" * (-len(code) % 4)) == raw
        ]
        assert code in spellings
        for other in spellings:
            if other != code:
                with pytest.raises(InvalidCode):
                    signer.parse(other)
        with pytest.raises(InvalidCode):
            signer.parse(code + "=" * (-len(code) % 4) if len(code) % 4 else code + "A")


def test_codes_rotate_printed_codes_verify_until_their_key_is_retired() -> None:
    a = Attribution("mer_0123456789abcdef", "sto_00000000000000aa")
    # A code printed before key ids: version 1, no key-id byte, verified with key 0.
    payload = (
        bytes([1]) + bytes(6) + b"".join(_pack_field(f) for f in (a.merchant_id, a.store_id, a.staff_id))
    )
    mac = hmac.new(b"the-old-secret", payload, hashlib.sha256).digest()[:12]
    legacy_code = base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()
    assert CodeSigner("the-old-secret").parse(legacy_code) == a
    before = CodeSigner(CodeKeyring.parse("1:first", "the-old-secret"))
    printed = before.sign(a)
    rotated = CodeSigner(CodeKeyring.parse("2:second,1:first,0:the-old-secret", ""))
    fresh = rotated.sign(a)
    assert rotated.parse(printed) == a and rotated.parse(fresh) == a and rotated.parse(legacy_code) == a
    assert base64.urlsafe_b64decode(fresh + "=" * (-len(fresh) % 4))[:2] == bytes([2, 2])
    retired = CodeSigner(CodeKeyring.parse("2:second", ""))
    assert retired.parse(fresh) == a
    for old in (printed, legacy_code):
        with pytest.raises(InvalidCode, match="retired"):
            retired.parse(old)
