#!/usr/bin/env python3
"""A Kafka proxy that authenticates clients with MSK IAM (SASL/OAUTHBEARER) tokens.

No local broker validates MSK IAM tokens, so the integration tests put this proxy in front of a
plain broker (tansu). It answers ApiVersions (advertising SASL support), SaslHandshake and
SaslAuthenticate itself, checks the OAUTHBEARER token the way MSK does -- a base64url presigned
SigV4 URL for `kafka-cluster:Connect` -- and recomputes the signature with plain hmac/hashlib from
the known secret, independently of the library that signed it. Once a client is authenticated,
every other request is relayed unchanged to the upstream broker and the answers come back
unchanged (ApiVersions answers get the SASL APIs added).

Re-authentication (KIP-368) is supported: a successful SaslAuthenticate (v1+) returns
session_lifetime_ms = min(token's remaining validity, --max-reauth-ms); the client must
re-authenticate on the same connection before then, or the proxy closes the connection at its
next request, as a Kafka broker does.

Run:
    MSK_IAM_PROXY_CREDENTIALS='{"AKID": "secret"}' \\
    python3 msk_iam_proxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:9092 \\
        [--region us-east-1] [--serverless] [--max-reauth-ms N] [--no-reauth] \\
        [--clock-offset SECONDS] [--stats-file PATH]

Credentials: env MSK_IAM_PROXY_CREDENTIALS, a JSON object mapping access key id to either the
secret key or {"secret": ..., "session_token": ... (required in tokens when given),
"principal": ... (identity that must not change on re-authentication; default: the key id)}.
`--credential AKID:SECRET` also works (visible in `ps`; prefer the environment).

Output: one JSON line `{"listening": "127.0.0.1:PORT"}` on stdout once ready. Every auth decision
is logged to stderr (never a secret, token or signature). Counters: written as JSON to
--stats-file after every change, and printed to stderr as `STATS {...}` on SIGUSR1 and on exit.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import calendar
import hashlib
import hmac
import json
import os
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

# Kafka API keys handled here.
API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36

# Kafka error codes.
ERR_NONE = 0
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_ILLEGAL_SASL_STATE = 34
ERR_SASL_AUTHENTICATION_FAILED = 58

# Versions this proxy implements and advertises for the SASL APIs.
SASL_HANDSHAKE_VERSIONS = (0, 1)
SASL_AUTHENTICATE_VERSIONS = (0, 2)

MAX_FRAME = 100 * 1024 * 1024
TOKEN_MAX_EXPIRES = 900
CLOCK_SKEW_ALLOWED = 300
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def log(message: str) -> None:
    print(f"msk-iam-proxy: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- token validation


class AuthRefused(Exception):
    """A token that must be refused; `reason` is a stable code, `detail` is for humans."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Credential:
    secret: str
    session_token: str | None = None
    principal: str | None = None


@dataclass(frozen=True)
class AcceptedToken:
    access_key_id: str
    principal: str
    region: str
    expires_at: float  # epoch seconds
    signature: str


def parse_credentials(text: str) -> dict[str, Credential]:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("credentials must be a JSON object mapping access key id to secret")
    creds = {}
    for key_id, value in raw.items():
        if isinstance(value, str):
            creds[key_id] = Credential(secret=value)
        elif isinstance(value, dict) and isinstance(value.get("secret"), str):
            creds[key_id] = Credential(
                secret=value["secret"],
                session_token=value.get("session_token"),
                principal=value.get("principal"),
            )
        else:
            raise ValueError(f"credential for {key_id!r} must be a secret string or an object with 'secret'")
    return creds


def parse_oauthbearer_client_first(message: bytes) -> str:
    """Returns the bearer token of an RFC 7628 client-first message
    `gs2-header \\x01 auth=Bearer <token> \\x01 [key=value \\x01]* \\x01`."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthRefused("malformed_sasl_message", "client message is not UTF-8") from None
    gs2, sep, rest = text.partition("\x01")
    if not sep:
        raise AuthRefused("malformed_sasl_message", "no \\x01 after the GS2 header")
    if not (gs2.startswith("n,") or gs2.startswith("y,")) or not gs2.endswith(","):
        raise AuthRefused("malformed_sasl_message", "GS2 header must be 'n,[a=authzid],'")
    if not rest.endswith("\x01\x01") and rest != "\x01":
        raise AuthRefused("malformed_sasl_message", "message must end with \\x01\\x01")
    pairs = rest[:-2].split("\x01") if rest.endswith("\x01\x01") else []
    auth = None
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise AuthRefused("malformed_sasl_message", "key/value pair without '='")
        if key == "auth":
            auth = value
    if auth is None:
        raise AuthRefused("malformed_sasl_message", "no auth=Bearer <token> pair")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthRefused("malformed_sasl_message", "auth value must be 'Bearer <token>'")
    return token.strip()


def _uri_encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _hmac(key: bytes, data: str) -> bytes:
    return hmac.new(key, data.encode("utf-8"), hashlib.sha256).digest()


def sigv4_query_signature(
    secret: str, host: str, params: list[tuple[str, str]], amz_date: str, scope: str
) -> str:
    """SigV4 signature of a presigned `GET https://<host>/?<params>` with only `host` signed and the
    empty-body payload hash, per the AWS SigV4 documentation."""
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_uri_encode(k), _uri_encode(v)) for k, v in params)
    )
    canonical_request = "\n".join(["GET", "/", canonical_query, f"host:{host}", "", "host", EMPTY_SHA256])
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    date, region, service, terminator = scope.split("/")
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    key = _hmac(key, terminator)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def validate_token(
    token: str,
    credentials: dict[str, Credential],
    now: float,
    region: str | None = None,
    serverless: bool = False,
) -> AcceptedToken:
    """Checks an MSK IAM token like MSK does; raises AuthRefused with a reason code."""
    try:
        padded = token + "=" * (-len(token) % 4)
        if any(c in token for c in "+/="):
            raise ValueError("not base64url without padding")
        url = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        raise AuthRefused("malformed_token", "token is not an unpadded base64url URL") from None

    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or parts.path != "/" or parts.fragment or parts.username:
        raise AuthRefused("malformed_token", "token URL must be https://<host>/?<query>")
    host = parts.hostname or ""

    params: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for pair in parts.query.split("&") if parts.query else []:
        raw_key, eq, raw_value = pair.partition("=")
        if not eq:
            raise AuthRefused("malformed_token", "query parameter without '='")
        key = urllib.parse.unquote(raw_key, errors="strict")
        value = urllib.parse.unquote(raw_value, errors="strict")
        if key in seen:
            raise AuthRefused("malformed_token", f"duplicate query parameter {key}")
        seen[key] = value
        if key not in ("X-Amz-Signature", "User-Agent"):
            params.append((key, value))

    def required(name: str) -> str:
        if name not in seen:
            raise AuthRefused("malformed_token", f"missing {name}")
        return seen[name]

    if required("Action") != "kafka-cluster:Connect":
        raise AuthRefused("wrong_action", f"Action is {seen['Action']!r}, not kafka-cluster:Connect")
    if required("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise AuthRefused("wrong_algorithm", f"X-Amz-Algorithm is {seen['X-Amz-Algorithm']!r}")
    if required("X-Amz-SignedHeaders") != "host":
        raise AuthRefused(
            "wrong_signed_headers", f"X-Amz-SignedHeaders is {seen['X-Amz-SignedHeaders']!r}, not host"
        )

    credential = required("X-Amz-Credential").split("/")
    if len(credential) != 5:
        raise AuthRefused(
            "bad_credential_scope", "X-Amz-Credential is not <key>/<date>/<region>/<service>/aws4_request"
        )
    key_id, scope_date, scope_region, service, terminator = credential
    if service != "kafka-cluster":
        raise AuthRefused("wrong_service", f"signed for service {service!r}, not kafka-cluster")
    if terminator != "aws4_request":
        raise AuthRefused("bad_credential_scope", "credential scope does not end with aws4_request")
    if region is not None and scope_region != region:
        raise AuthRefused("wrong_region", f"signed for region {scope_region!r}, expected {region!r}")
    expected_host = f"{'kafka-serverless' if serverless else 'kafka'}.{scope_region}.amazonaws.com"
    if host != expected_host or parts.port is not None:
        raise AuthRefused("wrong_host", f"token names host {parts.netloc!r}, expected {expected_host!r}")

    amz_date = required("X-Amz-Date")
    try:
        signed_at = float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise AuthRefused("malformed_token", f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ") from None
    if amz_date[:8] != scope_date:
        raise AuthRefused("bad_credential_scope", "credential scope date differs from X-Amz-Date")
    expires_text = required("X-Amz-Expires")
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= TOKEN_MAX_EXPIRES:
        raise AuthRefused("bad_expires", f"X-Amz-Expires {expires_text!r} is not 1..{TOKEN_MAX_EXPIRES}")
    expires_at = signed_at + int(expires_text)
    if now >= expires_at:
        raise AuthRefused(
            "token_expired", f"token expired {now - expires_at:.0f} s ago (signed at {amz_date})"
        )
    if signed_at > now + CLOCK_SKEW_ALLOWED:
        raise AuthRefused("token_not_yet_valid", f"token signed {signed_at - now:.0f} s in the future")

    cred = credentials.get(key_id)
    if cred is None:
        raise AuthRefused("unknown_access_key", f"access key {key_id} is not known")
    token_session = seen.get("X-Amz-Security-Token")
    if cred.session_token is not None and token_session != cred.session_token:
        raise AuthRefused(
            "wrong_session_token",
            (
                "X-Amz-Security-Token missing"
                if token_session is None
                else "X-Amz-Security-Token does not match"
            ),
        )

    expected = sigv4_query_signature(
        cred.secret, host, params, amz_date, f"{scope_date}/{scope_region}/{service}/{terminator}"
    )
    if not hmac.compare_digest(expected, required("X-Amz-Signature")):
        raise AuthRefused("signature_mismatch", f"signature does not match the secret of {key_id}")

    return AcceptedToken(
        access_key_id=key_id,
        principal=cred.principal or key_id,
        region=scope_region,
        expires_at=expires_at,
        signature=expected,
    )


# --------------------------------------------------------------------------- Kafka wire format


class Truncated(Exception):
    pass


class Cursor:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Truncated()
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return int.from_bytes(self.take(2), "big", signed=True)

    def int32(self) -> int:
        return int.from_bytes(self.take(4), "big", signed=True)

    def int64(self) -> int:
        return int.from_bytes(self.take(8), "big", signed=True)

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise Truncated()

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def enc_int16(v: int) -> bytes:
    return v.to_bytes(2, "big", signed=True)


def enc_int32(v: int) -> bytes:
    return v.to_bytes(4, "big", signed=True)


def enc_int64(v: int) -> bytes:
    return v.to_bytes(8, "big", signed=True)


def enc_uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def enc_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return enc_int16(len(b)) + b


def enc_nullable_string(s: str | None) -> bytes:
    return enc_int16(-1) if s is None else enc_string(s)


def enc_compact_nullable_string(s: str | None) -> bytes:
    if s is None:
        return enc_uvarint(0)
    b = s.encode("utf-8")
    return enc_uvarint(len(b) + 1) + b


@dataclass
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    body_offset: int


def is_flexible(api_key: int, version: int) -> bool:
    """Flexible (tagged-field) versions of the APIs this proxy parses."""
    if api_key == API_API_VERSIONS:
        return version >= 3
    if api_key == API_SASL_AUTHENTICATE:
        return version >= 2
    return False  # SaslHandshake never is; other APIs are relayed unparsed


def parse_request_header(frame: bytes) -> RequestHeader:
    cur = Cursor(frame)
    api_key, api_version, correlation_id = cur.int16(), cur.int16(), cur.int32()
    if api_key in (API_API_VERSIONS, API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE):
        cur.nullable_string()  # client_id (never compact, even in header v2)
        if is_flexible(api_key, api_version):
            cur.skip_tagged_fields()
    return RequestHeader(api_key, api_version, correlation_id, cur.pos)


def frame(payload: bytes) -> bytes:
    return enc_int32(len(payload)) + payload


def sasl_handshake_response(correlation_id: int, error: int) -> bytes:
    body = enc_int16(error) + enc_int32(1) + enc_string("OAUTHBEARER")
    return frame(enc_int32(correlation_id) + body)


def sasl_authenticate_response(
    correlation_id: int, version: int, error: int, message: str | None, session_lifetime_ms: int
) -> bytes:
    if version >= 2:
        payload = (
            enc_int32(correlation_id)
            + enc_uvarint(0)  # response header v1 tagged fields
            + enc_int16(error)
            + enc_compact_nullable_string(message)
            + enc_uvarint(1)  # empty compact bytes: the OAUTHBEARER server final message
            + enc_int64(session_lifetime_ms)
            + enc_uvarint(0)
        )
    else:
        payload = enc_int32(correlation_id) + enc_int16(error) + enc_nullable_string(message) + enc_int32(0)
        if version >= 1:
            payload += enc_int64(session_lifetime_ms)
    return frame(payload)


def sasl_authenticate_auth_bytes(frame_bytes: bytes, header: RequestHeader) -> bytes:
    cur = Cursor(frame_bytes, header.body_offset)
    if is_flexible(API_SASL_AUTHENTICATE, header.api_version):
        n = cur.uvarint() - 1
        return b"" if n < 0 else cur.take(n)
    n = cur.int32()
    return b"" if n < 0 else cur.take(n)


def add_sasl_to_api_versions(response: bytes, version: int) -> bytes:
    """Rewrites an upstream ApiVersions response (without the size prefix) so it advertises the
    SASL APIs this proxy implements. Error responses pass unchanged."""
    cur = Cursor(response)
    correlation_id = cur.int32()  # ApiVersions responses always use header v0
    error_start = cur.pos
    error = cur.int16()
    if error != ERR_NONE:
        return response
    flexible = version >= 3
    count = cur.uvarint() - 1 if flexible else cur.int32()
    entries: dict[int, bytes] = {}
    for _ in range(max(count, 0)):
        start = cur.pos
        key = cur.int16()
        cur.int16()
        cur.int16()
        if flexible:
            cur.skip_tagged_fields()
        entries[key] = response[start : cur.pos]
    rest = response[cur.pos :]
    tail = enc_uvarint(0) if flexible else b""
    entries[API_SASL_HANDSHAKE] = (
        enc_int16(API_SASL_HANDSHAKE)
        + enc_int16(SASL_HANDSHAKE_VERSIONS[0])
        + enc_int16(SASL_HANDSHAKE_VERSIONS[1])
        + tail
    )
    entries[API_SASL_AUTHENTICATE] = (
        enc_int16(API_SASL_AUTHENTICATE)
        + enc_int16(SASL_AUTHENTICATE_VERSIONS[0])
        + enc_int16(SASL_AUTHENTICATE_VERSIONS[1])
        + tail
    )
    array = (enc_uvarint(len(entries) + 1) if flexible else enc_int32(len(entries))) + b"".join(
        entries[k] for k in sorted(entries)
    )
    return enc_int32(correlation_id) + response[error_start : error_start + 2] + array + rest


# --------------------------------------------------------------------------- the proxy


@dataclass
class Config:
    upstream_host: str
    upstream_port: int
    credentials: dict[str, Credential]
    region: str | None = None
    serverless: bool = False
    max_reauth_ms: int = 0  # 0: the token's remaining validity alone bounds the session
    reauth: bool = True
    clock_offset: float = 0.0
    stats_file: str | None = None

    def now(self) -> float:
        return time.time() + self.clock_offset


@dataclass
class Stats:
    connections: int = 0
    auth_ok: int = 0
    reauth_ok: int = 0
    auth_failed: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    handshakes: int = 0
    handshake_refused: int = 0
    unauthenticated_requests: int = 0
    sessions_expired: int = 0
    late_reauths: int = 0
    requests_relayed: int = 0
    distinct_tokens: set[str] = field(default_factory=set)
    principals: set[str] = field(default_factory=set)

    def as_json(self) -> dict:
        return {
            "connections": self.connections,
            "auth_ok": self.auth_ok,
            "reauth_ok": self.reauth_ok,
            "auth_failed": self.auth_failed,
            "failures_by_reason": dict(sorted(self.failures_by_reason.items())),
            "handshakes": self.handshakes,
            "handshake_refused": self.handshake_refused,
            "unauthenticated_requests": self.unauthenticated_requests,
            "sessions_expired": self.sessions_expired,
            "late_reauths": self.late_reauths,
            "requests_relayed": self.requests_relayed,
            "distinct_tokens": len(self.distinct_tokens),
            "principals": sorted(self.principals),
        }


class Proxy:
    def __init__(self, config: Config):
        self.config = config
        self.stats = Stats()
        self.next_conn_id = 0
        self.open_connections: set[Connection] = set()

    def publish_stats(self) -> None:
        if not self.config.stats_file:
            return
        tmp = f"{self.config.stats_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.stats.as_json(), f)
        os.replace(tmp, self.config.stats_file)

    def dump_stats(self) -> None:
        print("STATS " + json.dumps(self.stats.as_json()), file=sys.stderr, flush=True)

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.next_conn_id += 1
        conn = Connection(self, self.next_conn_id, client_r, client_w)
        self.open_connections.add(conn)
        self.stats.connections += 1
        self.publish_stats()
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # the proxy is shutting down; end quietly
        finally:
            conn.close()
            self.open_connections.discard(conn)

    def close_all(self) -> None:
        for conn in list(self.open_connections):
            conn.close()


class Connection:
    def __init__(self, proxy: Proxy, conn_id: int, client_r, client_w):
        self.proxy = proxy
        self.config = proxy.config
        self.stats = proxy.stats
        self.client_r = client_r
        self.client_w = client_w
        peer = client_w.get_extra_info("peername")
        self.name = f"conn#{conn_id} {peer[0]}:{peer[1]}" if peer else f"conn#{conn_id}"
        self.upstream_w: asyncio.StreamWriter | None = None
        self.pump: asyncio.Task | None = None
        self.handshake_version: int | None = None  # set between SaslHandshake and SaslAuthenticate
        self.principal: str | None = None
        self.session_expires_at: float | None = None  # epoch seconds; None: no limit
        self.pending_api_versions: dict[int, int] = {}  # correlation id -> request version
        self.relayed = 0

    async def run(self) -> None:
        try:
            upstream_r, self.upstream_w = await asyncio.open_connection(
                self.config.upstream_host, self.config.upstream_port
            )
        except OSError as e:
            upstream = f"{self.config.upstream_host}:{self.config.upstream_port}"
            log(f"{self.name}: upstream {upstream} unreachable: {e}")
            return
        self.pump = asyncio.create_task(self.pump_upstream(upstream_r))
        try:
            while True:
                payload = await read_frame(self.client_r)
                if payload is None:
                    log(f"{self.name}: client closed the connection ({self.describe()})")
                    return
                if not await self.on_client_frame(payload):
                    return
        except (ConnectionError, Truncated, asyncio.IncompleteReadError) as e:
            log(f"{self.name}: connection lost: {type(e).__name__} ({self.describe()})")

    def describe(self) -> str:
        who = f"authenticated as {self.principal}" if self.principal else "not authenticated"
        return f"{who}, {self.relayed} requests relayed"

    def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        for w in (self.client_w, self.upstream_w):
            if w is not None:
                w.close()

    async def send_client(self, data: bytes) -> None:
        self.client_w.write(data)
        await self.client_w.drain()

    async def on_client_frame(self, payload: bytes) -> bool:
        """Handles one request from the client; False closes the connection."""
        if self.handshake_version == 0:
            # SaslHandshake v0: the next frame is the raw SASL message, without a Kafka header.
            self.handshake_version = None
            ok, _ = self.authenticate(payload)
            if ok:
                await self.send_client(frame(b""))
            return ok

        header = parse_request_header(payload)
        if header.api_key == API_API_VERSIONS:
            self.pending_api_versions[header.correlation_id] = header.api_version
            return await self.relay(payload)
        if header.api_key == API_SASL_HANDSHAKE:
            return await self.on_handshake(payload, header)
        if header.api_key == API_SASL_AUTHENTICATE:
            return await self.on_authenticate(payload, header)

        if self.principal is None:
            self.stats.unauthenticated_requests += 1
            self.proxy.publish_stats()
            log(f"{self.name}: refused: API key {header.api_key} before SASL authentication; closing")
            return False
        if self.session_expires_at is not None and self.config.now() >= self.session_expires_at:
            self.stats.sessions_expired += 1
            self.proxy.publish_stats()
            log(
                f"{self.name}: session of {self.principal} expired "
                f"{self.config.now() - self.session_expires_at:.1f} s ago without re-authentication; closing"
            )
            return False
        self.stats.requests_relayed += 1
        self.relayed += 1
        return await self.relay(payload)

    async def relay(self, payload: bytes) -> bool:
        assert self.upstream_w is not None
        self.upstream_w.write(frame(payload))
        await self.upstream_w.drain()
        return True

    async def on_handshake(self, payload: bytes, header: RequestHeader) -> bool:
        cur = Cursor(payload, header.body_offset)
        mechanism = cur.nullable_string()
        self.stats.handshakes += 1
        if header.api_version > SASL_HANDSHAKE_VERSIONS[1]:
            log(f"{self.name}: refused: SaslHandshake v{header.api_version} is not supported; closing")
            self.stats.handshake_refused += 1
            self.proxy.publish_stats()
            return False
        if mechanism != "OAUTHBEARER":
            self.stats.handshake_refused += 1
            self.proxy.publish_stats()
            log(f"{self.name}: refused: SASL mechanism {mechanism!r}, only OAUTHBEARER is enabled; closing")
            await self.send_client(
                sasl_handshake_response(header.correlation_id, ERR_UNSUPPORTED_SASL_MECHANISM)
            )
            return False
        self.handshake_version = header.api_version
        if self.session_expires_at is not None and self.config.now() >= self.session_expires_at:
            self.stats.late_reauths += 1
            late_ms = (self.config.now() - self.session_expires_at) * 1000
            log(
                f"{self.name}: re-authentication of {self.principal} started {late_ms:.0f} ms after its session expired"
            )
        self.proxy.publish_stats()
        await self.send_client(sasl_handshake_response(header.correlation_id, ERR_NONE))
        return True

    async def on_authenticate(self, payload: bytes, header: RequestHeader) -> bool:
        version = header.api_version
        if version > SASL_AUTHENTICATE_VERSIONS[1]:
            log(f"{self.name}: refused: SaslAuthenticate v{version} is not supported; closing")
            return False
        if self.handshake_version is None:
            self.count_failure("illegal_sasl_state")
            log(f"{self.name}: auth refused: SaslAuthenticate without a preceding SaslHandshake; closing")
            await self.send_client(
                sasl_authenticate_response(
                    header.correlation_id,
                    version,
                    ERR_ILLEGAL_SASL_STATE,
                    "SaslAuthenticate must follow SaslHandshake",
                    0,
                )
            )
            return False
        self.handshake_version = None
        ok, result = self.authenticate(sasl_authenticate_auth_bytes(payload, header))
        if not ok:
            await self.send_client(
                sasl_authenticate_response(
                    header.correlation_id, version, ERR_SASL_AUTHENTICATION_FAILED, result, 0
                )
            )
            return False
        lifetime_ms = int(result) if version >= 1 else 0
        await self.send_client(
            sasl_authenticate_response(header.correlation_id, version, ERR_NONE, None, lifetime_ms)
        )
        return True

    def count_failure(self, reason: str) -> None:
        self.stats.auth_failed += 1
        self.stats.failures_by_reason[reason] = self.stats.failures_by_reason.get(reason, 0) + 1
        self.proxy.publish_stats()

    def authenticate(self, message: bytes) -> tuple[bool, str | int]:
        """Validates a client-first message. Returns (True, session lifetime ms) or
        (False, error message for the client)."""
        reauth = self.principal is not None
        kind = "re-authentication" if reauth else "authentication"
        now = self.config.now()
        try:
            if message == b"\x01":
                raise AuthRefused("client_aborted", "client aborted the SASL exchange")
            token = parse_oauthbearer_client_first(message)
            accepted = validate_token(
                token, self.config.credentials, now, self.config.region, self.config.serverless
            )
            if reauth and accepted.principal != self.principal:
                raise AuthRefused(
                    "principal_changed",
                    f"re-authentication as {accepted.principal} on a connection of {self.principal}",
                )
        except AuthRefused as refused:
            self.count_failure(refused.reason)
            log(f"{self.name}: {kind} REFUSED ({refused.reason}): {refused.detail}; closing")
            return False, f"MSK IAM {kind} failed: {refused.detail}"

        remaining_ms = max(0, int((accepted.expires_at - now) * 1000))
        if not self.config.reauth:
            lifetime_ms = 0
            self.session_expires_at = None
        else:
            lifetime_ms = remaining_ms
            if self.config.max_reauth_ms > 0:
                lifetime_ms = min(lifetime_ms, self.config.max_reauth_ms)
            self.session_expires_at = now + lifetime_ms / 1000
        self.principal = accepted.principal
        if reauth:
            self.stats.reauth_ok += 1
        else:
            self.stats.auth_ok += 1
        self.stats.distinct_tokens.add(accepted.signature)
        self.stats.principals.add(accepted.principal)
        self.proxy.publish_stats()
        log(
            f"{self.name}: {kind} ACCEPTED for {accepted.principal} (key {accepted.access_key_id}, "
            f"region {accepted.region}); token valid {remaining_ms / 1000:.0f} s more; "
            f"session_lifetime_ms={lifetime_ms}"
        )
        return True, lifetime_ms

    async def pump_upstream(self, upstream_r: asyncio.StreamReader) -> None:
        try:
            while True:
                payload = await read_frame(upstream_r)
                if payload is None:
                    break
                correlation_id = int.from_bytes(payload[:4], "big", signed=True)
                version = self.pending_api_versions.pop(correlation_id, None)
                if version is not None:
                    payload = add_sasl_to_api_versions(payload, version)
                await self.send_client(frame(payload))
            log(f"{self.name}: upstream closed the connection ({self.describe()})")
        except (ConnectionError, Truncated, asyncio.IncompleteReadError) as e:
            log(f"{self.name}: upstream connection lost: {type(e).__name__} ({self.describe()})")
        finally:
            self.client_w.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size_bytes = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    size = int.from_bytes(size_bytes, "big", signed=True)
    if size < 4 or size > MAX_FRAME:
        raise Truncated()
    return await reader.readexactly(size)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def load_config(args: argparse.Namespace) -> Config:
    credentials: dict[str, Credential] = {}
    env = os.environ.get("MSK_IAM_PROXY_CREDENTIALS")
    if env:
        credentials.update(parse_credentials(env))
    for item in args.credential or []:
        key_id, sep, secret = item.partition(":")
        if not sep:
            raise SystemExit("--credential must be AKID:SECRET")
        credentials[key_id] = Credential(secret=secret)
    if not credentials:
        raise SystemExit("no credentials: set MSK_IAM_PROXY_CREDENTIALS or --credential")
    upstream_host, upstream_port = parse_address(args.upstream)
    return Config(
        upstream_host=upstream_host,
        upstream_port=upstream_port,
        credentials=credentials,
        region=args.region,
        serverless=args.serverless,
        max_reauth_ms=args.max_reauth_ms,
        reauth=not args.no_reauth,
        clock_offset=args.clock_offset,
        stats_file=args.stats_file,
    )


async def serve(args: argparse.Namespace) -> None:
    proxy = Proxy(load_config(args))
    listen_host, listen_port = parse_address(args.listen)
    server = await asyncio.start_server(proxy.handle, listen_host, listen_port)
    host, port = server.sockets[0].getsockname()[:2]
    proxy.publish_stats()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, proxy.dump_stats)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    log(f"listening on {host}:{port}, relaying to {args.upstream}")
    await stop
    server.close()
    proxy.close_all()
    await server.wait_closed()
    proxy.dump_stats()
    proxy.publish_stats()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="address to listen on (port 0: any free port)"
    )
    parser.add_argument("--upstream", required=True, help="host:port of the Kafka broker to relay to")
    parser.add_argument("--region", help="region tokens must be signed for (default: any)")
    parser.add_argument("--serverless", action="store_true", help="expect the kafka-serverless host")
    parser.add_argument(
        "--max-reauth-ms",
        type=int,
        default=0,
        help="cap on session lifetime (KIP-368); 0: token validity only",
    )
    parser.add_argument(
        "--no-reauth", action="store_true", help="session_lifetime_ms=0, never expire sessions"
    )
    parser.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to the proxy's clock")
    parser.add_argument("--stats-file", help="JSON counters, rewritten after every change")
    parser.add_argument(
        "--credential", action="append", help="AKID:SECRET (prefer MSK_IAM_PROXY_CREDENTIALS)"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
