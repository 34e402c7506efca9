"""Attribution codes: compact, URL-safe, HMAC-signed tokens naming a merchant (and store, staff).

A code carries what it attributes, so `parse` needs no database round trip and a forged or
altered code fails its signature. Layout before base64url: version byte, (version 2) a key-id byte,
6 random bytes (so two codes for the same store differ and none can be guessed), three fields
(merchant, store, staff), then the first 12 bytes of HMAC-SHA256(key, everything before). A field
that is a roomfeed id (`mer_<16 hex>`) packs into 9 bytes; any other id is stored as its text.

Keys rotate (`settings.code_keys`, a keyring of kids 0..255: the first signs, all verify), so a
printed QR code keeps working until its key is retired. Version-1 codes (printed before key ids)
verify with key 0. A code has one spelling: base64url without padding whose unused low bits are
zero; any other string that decodes to the same bytes is refused, so it is never counted or listed.
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
from roomfeed.paging import keyset_page
from roomfeed.settings import Settings

VERSION = 2
LEGACY_VERSION = 1  # no key-id byte: verified with key 0
MAC_BYTES = 12
NONCE_BYTES = 6
_PACKED = re.compile(r"(mer|sto|stf)_([0-9a-f]{16})")
_PREFIXES = ("mer", "sto", "stf")
_ABSENT, _TEXT, _HEX_ID = 0, 1, 2
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{20,200}")


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
    match = _PACKED.fullmatch(value)
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


@dataclass(frozen=True)
class CodeKeyring:
    """Code keys by id (0..255): the first signs, every one verifies."""

    keys: tuple[tuple[int, bytes], ...]

    @classmethod
    def parse(cls, text: str, legacy_secret: str) -> CodeKeyring:
        if not text.strip():
            return cls(((0, legacy_secret.encode()),))
        keys: list[tuple[int, bytes]] = []
        for part in text.split(","):
            kid, sep, secret = part.strip().partition(":")
            if not sep or not secret or not (kid.isascii() and kid.isdigit()) or not 0 <= int(kid) <= 255:
                raise ValueError("ROOMFEED_CODE_KEYS is kid:secret[,kid:secret...] with kids 0..255")
            if any(int(kid) == k for k, _ in keys):
                raise ValueError(f"code key id {kid} appears twice")
            keys.append((int(kid), secret.encode()))
        return cls(tuple(keys))

    @property
    def signing(self) -> tuple[int, bytes]:
        return self.keys[0]

    def get(self, kid: int) -> bytes | None:
        return next((secret for k, secret in self.keys if k == kid), None)

    def kids(self) -> list[int]:
        return [k for k, _ in self.keys]


def code_keyring(settings: Settings) -> CodeKeyring:
    return CodeKeyring.parse(settings.code_keys, settings.code_secret)


class CodeSigner:
    """Signs and verifies codes; pure (no I/O), so the feed can parse a code on its hot path."""

    def __init__(self, keys: str | CodeKeyring) -> None:
        self.ring = keys if isinstance(keys, CodeKeyring) else CodeKeyring(((0, keys.encode()),))

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, attribution: Attribution, nonce: bytes | None = None) -> str:
        kid, key = self.ring.signing
        payload = (
            bytes([VERSION, kid])
            + (nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES))
            + _pack_field(attribution.merchant_id)
            + _pack_field(attribution.store_id)
            + _pack_field(attribution.staff_id)
        )
        return _b64(payload + self._mac(key, payload))

    def parse(self, code: str) -> Attribution:
        if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
            raise InvalidCode("this code is not a roomfeed attribution code")
        try:
            raw = _unb64(code)
        except ValueError:
            raise InvalidCode("this code is not a roomfeed attribution code") from None
        if _b64(raw) != code:  # one spelling per code: spare bits set, or a length no encoder makes
            raise InvalidCode("this code is not a roomfeed attribution code")
        if len(raw) < 2 + NONCE_BYTES + 3 + MAC_BYTES:
            raise InvalidCode("this code is not a roomfeed attribution code")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if payload[0] == VERSION:
            kid, header = payload[1], 2
        elif payload[0] == LEGACY_VERSION:
            kid, header = 0, 1
        else:
            raise InvalidCode("this code is forged or altered")
        key = self.ring.get(kid)
        if key is None:  # a retired (or unknown) key
            raise InvalidCode("this code's key has been retired")
        if not hmac.compare_digest(mac, self._mac(key, payload)):
            raise InvalidCode("this code is forged or altered")
        try:
            pos = header + NONCE_BYTES
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
        self.signer = CodeSigner(code_keyring(settings))

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

    async def record_open(self, code: str, device: str | None = None) -> int:
        """Count an open (a scan of the landing page, a session started from the code) once per
        device; returns the code's open count. Without a device every call counts."""
        attribution = self.parse(code)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO attribution_codes (code, merchant_id, store_id, staff_id)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO NOTHING""",
                code,
                attribution.merchant_id,
                attribution.store_id,
                attribution.staff_id,
            )
            first = (
                await conn.fetchval(
                    """INSERT INTO code_opens (code, device_hash) VALUES ($1, $2)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    code,
                    hashlib.sha256(device.encode()).digest(),
                )
                if device is not None
                else True
            )
            opens = await conn.fetchval(
                "UPDATE attribution_codes SET opens = opens + $2 WHERE code = $1 RETURNING opens",
                code,
                1 if first else 0,
            )
        return int(opens)

    async def list(
        self, merchant_id: str, limit: int = 100, after: str | None = None
    ) -> tuple[list[CodeInfo], str | None]:
        """The merchant's codes, newest first: a page after the cursor `after` and the next one's."""
        rows, following = await keyset_page(
            self.pool,
            """SELECT code, merchant_id, store_id, staff_id, opens, created_at FROM attribution_codes
               WHERE merchant_id = $1
                 AND ($2::timestamptz IS NULL OR created_at < $2 OR (created_at = $2 AND code > $3::text))
               ORDER BY created_at DESC, code LIMIT $4""",
            (merchant_id,),
            after=after,
            limit=limit,
            key=("created_at", "code"),
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
        ], following


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
