"""Attribution codes: signed, compact, unguessable; forged or altered codes are rejected."""

from __future__ import annotations

import base64

import pytest

from alliance.codes import Attribution, CodeSigner, InvalidCode


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
    "junk", ["", "abc", "not a code at all!", "A" * 300, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
)
def test_junk_is_not_a_code(junk: str) -> None:
    with pytest.raises(InvalidCode):
        CodeSigner("secret").parse(junk)
