"""Attribution codes: compact, URL-safe, HMAC-signed tokens naming a merchant (and store, staff).

A code carries what it attributes, so `parse` needs no database round trip and a forged or
altered code fails its signature. Layout before base64url: version byte, 6 random bytes (so two
codes for the same store differ and none can be guessed), three fields (merchant, store, staff),
then the first 12 bytes of HMAC-SHA256(settings.code_secret, everything before). A field that is
a roomfeed id (`mer_<16 hex>`) packs into 9 bytes; any other id is stored as its text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
from dataclasses import dataclass

import asyncpg

from roomfeed.errors import NotFound
from roomfeed.settings import Settings

VERSION = 1
MAC_BYTES = 12
NONCE_BYTES = 6
_PACKED = re.compile(r"^(mer|sto|stf)_([0-9a-f]{16})$")
_PREFIXES = ("mer", "sto", "stf")
_ABSENT, _TEXT, _HEX_ID = 0, 1, 2
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{20,200}$")


class InvalidCode(NotFound):
    """A code that is malformed, forged or altered; answers 404 like any unknown object."""

    code = "invalid_code"


@dataclass(frozen=True)
class Attribution:
    merchant_id: str
    store_id: str | None = None
    staff_id: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pack_field(value: str | None) -> bytes:
    if value is None:
        return bytes([_ABSENT])
    match = _PACKED.match(value)
    if match:
        return bytes([_HEX_ID, _PREFIXES.index(match.group(1))]) + bytes.fromhex(match.group(2))
    raw = value.encode()
    if len(raw) > 64:
        raise ValueError("ids are at most 64 characters")
    return bytes([_TEXT, len(raw)]) + raw


def _unpack_field(data: bytes, pos: int) -> tuple[str | None, int]:
    tag = data[pos]
    if tag == _ABSENT:
        return None, pos + 1
    if tag == _HEX_ID:
        prefix = _PREFIXES[data[pos + 1]]
        body = data[pos + 2 : pos + 10]
        if len(body) != 8:
            raise ValueError("truncated id")
        return f"{prefix}_{body.hex()}", pos + 10
    if tag == _TEXT:
        length = data[pos + 1]
        body = data[pos + 2 : pos + 2 + length]
        if len(body) != length:
            raise ValueError("truncated id")
        return body.decode(), pos + 2 + length
    raise ValueError("unknown field tag")


class CodeSigner:
    """Signs and verifies codes; pure (no I/O), so the feed can parse a code on its hot path."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, attribution: Attribution, nonce: bytes | None = None) -> str:
        payload = (
            bytes([VERSION])
            + (nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES))
            + _pack_field(attribution.merchant_id)
            + _pack_field(attribution.store_id)
            + _pack_field(attribution.staff_id)
        )
        return _b64(payload + self._mac(payload))

    def parse(self, code: str) -> Attribution:
        if not isinstance(code, str) or not CODE_PATTERN.match(code):
            raise InvalidCode("this code is not a roomfeed attribution code")
        try:
            raw = _unb64(code)
        except ValueError:
            raise InvalidCode("this code is not a roomfeed attribution code") from None
        if len(raw) < 1 + NONCE_BYTES + 3 + MAC_BYTES:
            raise InvalidCode("this code is not a roomfeed attribution code")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)) or payload[0] != VERSION:
            raise InvalidCode("this code is forged or altered")
        try:
            pos = 1 + NONCE_BYTES
            merchant_id, pos = _unpack_field(payload, pos)
            store_id, pos = _unpack_field(payload, pos)
            staff_id, pos = _unpack_field(payload, pos)
        except (ValueError, IndexError, UnicodeDecodeError):
            raise InvalidCode("this code is malformed") from None
        if merchant_id is None or pos != len(payload):
            raise InvalidCode("this code is malformed")
        return Attribution(merchant_id, store_id, staff_id)


@dataclass(frozen=True)
class CodeInfo:
    code: str
    url: str
    merchant_id: str
    store_id: str | None
    staff_id: str | None
    opens: int
    created_at: float


LANDING_PATH = "/c/"


class CodeBook:
    """Issues, parses and counts a merchant's attribution codes (table `attribution_codes`)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.signer = CodeSigner(settings.code_secret)

    def url(self, code: str) -> str:
        return self.settings.public_base_url.rstrip("/") + LANDING_PATH + code

    def parse(self, code: str) -> Attribution:
        return self.signer.parse(code)

    async def issue(self, attribution: Attribution) -> CodeInfo:
        code = self.signer.sign(attribution)
        row = await self.pool.fetchrow(
            """INSERT INTO attribution_codes (code, merchant_id, store_id, staff_id)
               VALUES ($1, $2, $3, $4) RETURNING created_at""",
            code,
            attribution.merchant_id,
            attribution.store_id,
            attribution.staff_id,
        )
        assert row is not None
        return CodeInfo(
            code,
            self.url(code),
            attribution.merchant_id,
            attribution.store_id,
            attribution.staff_id,
            0,
            row["created_at"].timestamp(),
        )

    async def record_open(self, code: str) -> int:
        """Count one open (a session started from the code); returns the new count."""
        attribution = self.parse(code)
        opens = await self.pool.fetchval(
            """INSERT INTO attribution_codes (code, merchant_id, store_id, staff_id, opens)
               VALUES ($1, $2, $3, $4, 1)
               ON CONFLICT (code) DO UPDATE SET opens = attribution_codes.opens + 1
               RETURNING opens""",
            code,
            attribution.merchant_id,
            attribution.store_id,
            attribution.staff_id,
        )
        return int(opens)

    async def list(self, merchant_id: str, limit: int = 500) -> list[CodeInfo]:
        rows = await self.pool.fetch(
            """SELECT code, merchant_id, store_id, staff_id, opens, created_at FROM attribution_codes
               WHERE merchant_id = $1 ORDER BY created_at DESC LIMIT $2""",
            merchant_id,
            limit,
        )
        return [
            CodeInfo(
                r["code"],
                self.url(r["code"]),
                r["merchant_id"],
                r["store_id"],
                r["staff_id"],
                r["opens"],
                r["created_at"].timestamp(),
            )
            for r in rows
        ]


def qr_png(text: str) -> bytes:
    """A QR image of `text` (the landing URL), as PNG bytes."""
    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    image = qr.make_image(fill_color="black", back_color="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
