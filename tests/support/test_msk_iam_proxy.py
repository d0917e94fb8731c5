#!/usr/bin/env python3
"""Proves that msk_iam_proxy.py validates MSK IAM tokens like MSK would, before the Rust
integration tests rely on it.

1. Offline: the proxy's own SigV4 check accepts the golden tokens made by the official signer
   (tests/fixtures/msk_iam/tokens.json) at their signing time and refuses them once expired,
   with a wrong secret, or tampered with; GS2 and ApiVersions handling.
2. End to end, with librdkafka (confluent-kafka) authenticating through the proxy to tansu using
   tokens from the official signer (aws-msk-iam-sasl-signer-python): produce and consume; a wrong
   secret and an expired token are refused and surface as authentication errors; with short
   session lifetimes the client re-authenticates several times, busy and idle, with fresh tokens.

Needs: python with `confluent-kafka` and `aws-msk-iam-sasl-signer-python`; the tansu binary
(env TANSU_BIN, else $LOGFERRY_CACHE/bin/tansu, else ~/.cache/logferry/bin/tansu, else on PATH); the fixtures in
tests/fixtures/msk_iam of this repository.
Prints `PASS`/`FAIL` per test and a final `N passed, N failed` line; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import calendar
import json
import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import msk_iam_proxy as proxy_mod  # noqa: E402
from free_port import free_port  # noqa: E402

REPO = HERE.parent.parent
AKID = "AKIAIOSFODNN7LOGFERRY"
SECRET = "fake/secret+key=for/logferry/tests0123456"
REGION = "us-east-1"


def golden_cases() -> list[dict]:
    cases = json.loads((REPO / "tests" / "fixtures" / "msk_iam" / "tokens.json").read_text())
    assert len(cases) >= 3, "too few golden cases"
    return cases


def epoch(rfc3339: str) -> float:
    return float(calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")))


def creds_of(case: dict, secret: str | None = None) -> dict:
    return {
        case["access_key_id"]: proxy_mod.Credential(
            secret=secret or case["secret_access_key"], session_token=case["session_token"]
        )
    }


def refusal(token: str, creds: dict, now: float, **kw) -> str | None:
    try:
        proxy_mod.validate_token(token, creds, now, **kw)
        return None
    except proxy_mod.AuthRefused as e:
        return e.reason


def retoken(case: dict, edit) -> str:
    """Decodes a golden token, edits its URL text, re-encodes it."""
    url = base64.urlsafe_b64decode(case["token"] + "=" * (-len(case["token"]) % 4)).decode()
    return base64.urlsafe_b64encode(edit(url).encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- offline tests


def test_golden_tokens_are_accepted_at_signing_time():
    for case in golden_cases():
        now = epoch(case["signing_time"]) + 10
        accepted = proxy_mod.validate_token(case["token"], creds_of(case), now, case["region"])
        assert accepted.signature == case["signature"], case["name"]
        assert accepted.expires_at * 1000 == case["expiry_ms"], case["name"]
        assert accepted.region == case["region"]


def test_golden_tokens_expire_after_900_seconds():
    for case in golden_cases():
        signed = epoch(case["signing_time"])
        assert refusal(case["token"], creds_of(case), signed + 899) is None
        assert refusal(case["token"], creds_of(case), signed + 900) == "token_expired"
        assert refusal(case["token"], creds_of(case), time.time()) == "token_expired"
        assert refusal(case["token"], creds_of(case), signed - 400) == "token_not_yet_valid"


def test_wrong_secret_or_unknown_key_is_refused():
    for case in golden_cases():
        now = epoch(case["signing_time"]) + 10
        assert refusal(case["token"], creds_of(case, secret="wrong"), now) == "signature_mismatch"
        assert refusal(case["token"], {"AKIAOTHER": proxy_mod.Credential("x")}, now) == "unknown_access_key"


def test_session_token_must_match_when_known():
    case = golden_cases()[0]
    now = epoch(case["signing_time"]) + 10
    creds = {case["access_key_id"]: proxy_mod.Credential(case["secret_access_key"], "other-token")}
    assert refusal(case["token"], creds, now) == "wrong_session_token"
    no_token_case = next(c for c in golden_cases() if c["session_token"] is None)
    creds = {
        no_token_case["access_key_id"]: proxy_mod.Credential(no_token_case["secret_access_key"], "required")
    }
    assert (
        refusal(no_token_case["token"], creds, epoch(no_token_case["signing_time"]) + 10)
        == "wrong_session_token"
    )


def test_tampered_tokens_are_refused():
    case = golden_cases()[0]
    now = epoch(case["signing_time"]) + 10
    creds = creds_of(case)
    region = case["region"]
    edits = {
        "wrong_host": lambda u: u.replace(f"kafka.{region}.", "kafka.eu-west-3."),
        "wrong_action": lambda u: u.replace("kafka-cluster%3AConnect", "kafka-cluster%3ADescribeCluster"),
        "wrong_service": lambda u: u.replace("%2Fkafka-cluster%2F", "%2Fkafka%2F"),
        "wrong_signed_headers": lambda u: u.replace(
            "X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx-amz-date"
        ),
        "bad_expires": lambda u: u.replace("X-Amz-Expires=900", "X-Amz-Expires=901"),
        "signature_mismatch": lambda u: u.replace("X-Amz-Expires=900", "X-Amz-Expires=899"),
        "malformed_token": lambda u: u.replace("https://", "http://"),
    }
    for expected, edit in edits.items():
        got = refusal(retoken(case, edit), creds, now)
        assert got == expected, f"{expected}: got {got}"
    # The region check, and a serverless proxy wants the serverless host.
    assert refusal(case["token"], creds, now, region="eu-west-1") == "wrong_region"
    assert refusal(case["token"], creds, now, serverless=True) == "wrong_host"
    # User-Agent is not signed: changing it keeps the token valid.
    ua = retoken(case, lambda u: u.replace("aws-msk-iam-sasl-signer-python%2F1.0.2", "logferry%2F9.9.9"))
    assert refusal(ua, creds, now) is None
    assert refusal(case["token"] + "=", creds, now) == "malformed_token"
    assert refusal("not a token", creds, now) == "malformed_token"


def test_gs2_client_first_message_parsing():
    token = "abc_DEF-123"
    assert proxy_mod.parse_oauthbearer_client_first(f"n,,\x01auth=Bearer {token}\x01\x01".encode()) == token
    with_ext = f"n,a=user,\x01host=x\x01auth=bearer {token}\x01ext=1\x01\x01".encode()
    assert proxy_mod.parse_oauthbearer_client_first(with_ext) == token
    for bad in (
        b"",
        f"auth=Bearer {token}\x01\x01".encode(),
        f"n,,\x01auth=Bearer {token}\x01".encode(),
        b"n,,\x01auth=Basic xyz\x01\x01",
        b"n,,\x01host=x\x01\x01",
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
        b"\xff\xfe",
    ):
        try:
            proxy_mod.parse_oauthbearer_client_first(bad)
        except proxy_mod.AuthRefused as e:
            assert e.reason == "malformed_sasl_message"
        else:
            raise AssertionError(f"accepted {bad!r}")


def _api_versions_entries(body: bytes, version: int) -> dict[int, tuple[int, int]]:
    cur = proxy_mod.Cursor(body)
    cur.int32()
    assert cur.int16() == 0
    flexible = version >= 3
    count = cur.uvarint() - 1 if flexible else cur.int32()
    out = {}
    for _ in range(count):
        key, lo, hi = cur.int16(), cur.int16(), cur.int16()
        if flexible:
            cur.skip_tagged_fields()
        out[key] = (lo, hi)
    throttle = cur.int32() if version >= 1 else None
    if flexible:
        cur.skip_tagged_fields()
    assert cur.pos == len(body), "trailing bytes"
    return out, throttle


def test_api_versions_rewrite_adds_sasl():
    e = proxy_mod
    for version in (0, 1, 2, 3, 4):
        flexible = version >= 3
        entries = [(0, 0, 9), (3, 0, 12), (17, 0, 0), (18, 0, 4)]
        body = e.enc_int32(77) + e.enc_int16(0)
        body += e.enc_uvarint(len(entries) + 1) if flexible else e.enc_int32(len(entries))
        for key, lo, hi in entries:
            body += (
                e.enc_int16(key) + e.enc_int16(lo) + e.enc_int16(hi) + (e.enc_uvarint(0) if flexible else b"")
            )
        if version >= 1:
            body += e.enc_int32(5)
        if flexible:
            body += e.enc_uvarint(1) + e.enc_uvarint(0) + e.enc_uvarint(2) + b"\x00\x07"  # a tagged field
        rewritten = e.add_sasl_to_api_versions(body, version)
        got, throttle = _api_versions_entries(rewritten, version)
        assert got == {0: (0, 9), 3: (0, 12), 17: (0, 1), 18: (0, 4), 36: (0, 2)}, (version, got)
        assert throttle == (5 if version >= 1 else None)
    error = e.enc_int32(1) + e.enc_int16(35) + e.enc_int32(0)
    assert e.add_sasl_to_api_versions(error, 3) == error


def test_official_signer_tokens_validate_now():
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(REGION)
    accepted = proxy_mod.validate_token(token, {AKID: proxy_mod.Credential(SECRET)}, time.time(), REGION)
    assert abs(accepted.expires_at * 1000 - expiry_ms) < 1
    assert refusal(token, {AKID: proxy_mod.Credential(SECRET + "x")}, time.time()) == "signature_mismatch"


# --------------------------------------------------------------------------- end-to-end tests


def find_tansu() -> str:
    for candidate in (
        os.environ.get("TANSU_BIN"),
        os.environ.get("LOGFERRY_CACHE") and str(Path(os.environ["LOGFERRY_CACHE"]) / "bin" / "tansu"),
        str(Path.home() / ".cache" / "logferry" / "bin" / "tansu"),
        shutil.which("tansu"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("tansu not found: set TANSU_BIN or install it (see TESTING.md)")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Stack:
    """tansu behind one proxy; tansu advertises the proxy's address so every client connection,
    bootstrap or not, goes through the proxy."""

    def __init__(self, tmp: Path, proxy_args: list[str], secret: str = SECRET, more_credentials=None):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.log_files = []
        self.proxy_port = free_port()
        self.broker_port = free_port()
        self.stats_file = tmp / f"stats-{self.proxy_port}.json"
        self.proxy_log = tmp / f"proxy-{self.proxy_port}.log"
        tansu = find_tansu()
        self.procs.append(
            subprocess.Popen(
                [
                    tansu,
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{self.broker_port}",
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{self.proxy_port}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=subprocess.DEVNULL,
                stderr=self.log_file(tmp / f"tansu-{self.broker_port}.log"),
            )
        )
        wait_port(self.broker_port)
        credentials = {AKID: secret, **(more_credentials or {})}
        env = dict(os.environ, MSK_IAM_PROXY_CREDENTIALS=json.dumps(credentials))
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "msk_iam_proxy.py"),
                "--listen",
                f"127.0.0.1:{self.proxy_port}",
                "--upstream",
                f"127.0.0.1:{self.broker_port}",
                "--region",
                REGION,
                "--stats-file",
                str(self.stats_file),
                *proxy_args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log_file(self.proxy_log),
            text=True,
        )
        self.procs.append(proxy)
        line = proxy.stdout.readline()
        if not line.startswith("{"):
            raise RuntimeError(f"proxy did not start: {self.proxy_log.read_text()}")
        assert json.loads(line)["listening"] == f"127.0.0.1:{self.proxy_port}"

    def log_file(self, path: Path):
        f = open(path, "wb")
        self.log_files.append(f)
        return f

    def create_topic(self, name: str, partitions: int = 1) -> None:
        subprocess.run(
            [
                find_tansu(),
                "topic",
                "create",
                "--broker",
                f"tcp://127.0.0.1:{self.broker_port}",
                "--partitions",
                str(partitions),
                name,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stats(self) -> dict:
        return json.loads(self.stats_file.read_text())

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        for f in self.log_files:
            f.close()


class Client:
    """librdkafka settings shared by producers and consumers, with tokens from the official
    signer. `token_lifetime_s` shortens the lifetime reported to librdkafka, so it refreshes."""

    def __init__(self, stack: Stack, token_lifetime_s: float | None = None):
        self.stack = stack
        self.token_lifetime_s = token_lifetime_s
        self.oauth_calls = 0
        self.errors: list = []

    def oauth_cb(self, _config):
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        self.oauth_calls += 1
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(REGION)
        expiry = expiry_ms / 1000
        if self.token_lifetime_s is not None:
            expiry = time.time() + self.token_lifetime_s
        return token, expiry

    def error_cb(self, err):
        self.errors.append(err)

    @staticmethod
    def logger() -> logging.Logger:
        """librdkafka's log lines (one per refused reconnect) go to a buffer shown on failure."""
        log = logging.getLogger("librdkafka")
        log.propagate = False
        if not log.handlers:
            log.addHandler(logging.handlers.BufferingHandler(capacity=10_000))
        return log

    def config(self, **extra) -> dict:
        return {
            "bootstrap.servers": f"127.0.0.1:{self.stack.proxy_port}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": self.oauth_cb,
            "error_cb": self.error_cb,
            "reconnect.backoff.ms": 200,
            "logger": self.logger(),
            **extra,
        }

    def auth_errors(self) -> list:
        from confluent_kafka import KafkaError

        return [e for e in self.errors if e.code() == KafkaError._AUTHENTICATION]


def produce(client: Client, topic: str, values: list[bytes], timeout: float = 20.0) -> list:
    from confluent_kafka import Producer

    delivered: list = []
    producer = Producer(client.config(**{"message.timeout.ms": int(timeout * 1000)}))
    for v in values:
        producer.produce(topic, v, on_delivery=lambda err, msg: delivered.append((err, msg.value())))
    producer.flush(timeout + 5)
    return delivered


def consume(client: Client, topic: str, want: int, timeout: float = 30.0) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        client.config(**{"group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_e2e_produce_and_consume_through_the_proxy(tmp: Path):
    stack = Stack(tmp, ["--no-reauth"])
    try:
        stack.create_topic("logs")
        client = Client(stack)
        values = [f"record-{i}".encode() for i in range(20)]
        delivered = produce(client, "logs", values)
        assert [e for e, _ in delivered] == [None] * len(values), delivered
        got = consume(client, "logs", len(values))
        assert sorted(got) == sorted(values), got
        stats = stack.stats()
        assert stats["auth_ok"] >= 2, stats  # producer and consumer at least
        assert stats["auth_failed"] == 0 and stats["unauthenticated_requests"] == 0, stats
        assert stats["requests_relayed"] > 0 and stats["principals"] == [AKID], stats
        assert not client.auth_errors(), client.errors
        return stats
    finally:
        stack.close()


def _assert_refused(stack: Stack, client: Client, reason: str) -> dict:
    delivered = produce(client, "logs", [b"never"], timeout=4)
    assert delivered and all(err is not None for err, _ in delivered), delivered
    stats = stack.stats()
    assert stats["auth_ok"] == 0 and stats["requests_relayed"] == 0, stats
    assert stats["auth_failed"] >= 1 and set(stats["failures_by_reason"]) == {reason}, stats
    errors = client.auth_errors()
    assert errors, f"no authentication error reached the client: {client.errors}"
    assert "MSK IAM authentication failed" in errors[0].str(), errors[0].str()
    log = stack.proxy_log.read_text()
    assert f"REFUSED ({reason})" in log, log
    assert SECRET not in log and "wrong-secret" not in log, "secret in the proxy log"
    return stats


def test_e2e_wrong_secret_is_refused(tmp: Path):
    stack = Stack(tmp, [], secret="wrong-secret")
    try:
        stack.create_topic("logs")
        return _assert_refused(stack, Client(stack), "signature_mismatch")
    finally:
        stack.close()


def test_e2e_expired_token_is_refused(tmp: Path):
    stack = Stack(tmp, ["--clock-offset", "1000"])  # the proxy lives 1000 s ahead: 900 s tokens are stale
    try:
        stack.create_topic("logs")
        return _assert_refused(stack, Client(stack), "token_expired")
    finally:
        stack.close()


def test_e2e_client_reauthenticates_busy_and_idle(tmp: Path):
    stack = Stack(tmp, ["--max-reauth-ms", "3000"])
    try:
        stack.create_topic("logs")
        from confluent_kafka import Producer

        client = Client(stack, token_lifetime_s=4)
        delivered: list = []
        producer = Producer(client.config(**{"message.timeout.ms": 20000, "linger.ms": 5}))

        def send(value: bytes) -> None:
            producer.produce("logs", value, on_delivery=lambda err, msg: delivered.append(err))

        sent = 0
        busy_until = time.monotonic() + 7
        while time.monotonic() < busy_until:  # busy: a record every 0.3 s
            send(f"busy-{sent}".encode())
            sent += 1
            producer.poll(0.3)
        busy_stats = stack.stats()
        idle_until = time.monotonic() + 7
        while time.monotonic() < idle_until:  # idle: nothing to send, callbacks still served
            producer.poll(0.2)
        idle_stats = stack.stats()
        for i in range(5):
            send(f"after-idle-{i}".encode())
            sent += 1
        producer.flush(20)

        assert delivered == [None] * sent, delivered
        stats = stack.stats()
        assert stats["auth_failed"] == 0, stats
        assert stats["sessions_expired"] == 0 and stats["late_reauths"] == 0, stats
        assert busy_stats["reauth_ok"] >= 2, busy_stats
        assert idle_stats["reauth_ok"] >= busy_stats["reauth_ok"] + 2, (busy_stats, idle_stats)
        assert stats["distinct_tokens"] >= 3, stats  # refreshed tokens were used to re-authenticate
        assert client.oauth_calls >= 3, client.oauth_calls
        assert stats["connections"] <= 4, stats  # re-authenticated in place, not reconnected
        assert not client.errors, client.errors
        stats["oauth_cb_calls"] = client.oauth_calls
        return stats
    finally:
        stack.close()


class RawKafka:
    """A hand-built Kafka client for the protocol corners librdkafka does not show: requests
    before authentication, other mechanisms, SaslHandshake v0, SaslAuthenticate v0-v2, a client
    that does not re-authenticate, and a principal change on re-authentication."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(proxy_mod.frame(payload))

    def recv_frame(self) -> bytes | None:
        """A response frame, or None when the proxy closed the connection."""
        size = self._recv_exactly(4)
        if size is None:
            return None
        body = self._recv_exactly(int.from_bytes(size, "big"))
        assert body is not None, "connection closed mid-frame"
        return body

    def _recv_exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not data, "connection closed mid-frame"
                return None
            data += chunk
        return data

    def request(self, api_key: int, version: int, body: bytes, flexible: bool = False) -> bytes | None:
        """Sends a request; returns the response after the correlation id (and header tags)."""
        e = proxy_mod
        self.correlation_id += 1
        header = e.enc_int16(api_key) + e.enc_int16(version) + e.enc_int32(self.correlation_id)
        header += e.enc_string("raw-test") + (e.enc_uvarint(0) if flexible else b"")
        self.send_frame(header + body)
        response = self.recv_frame()
        if response is None:
            return None
        cur = e.Cursor(response)
        assert cur.int32() == self.correlation_id
        if flexible and api_key != proxy_mod.API_API_VERSIONS:
            cur.skip_tagged_fields()
        return response[cur.pos :]

    def handshake(self, mechanism: str = "OAUTHBEARER", version: int = 1) -> int:
        response = self.request(17, version, proxy_mod.enc_string(mechanism))
        assert response is not None, "closed on SaslHandshake"
        cur = proxy_mod.Cursor(response)
        error = cur.int16()
        assert cur.int32() == 1 and cur.nullable_string() == "OAUTHBEARER"
        return error

    def authenticate(self, token: str, version: int = 1) -> tuple[int, str | None, int] | None:
        e = proxy_mod
        message = f"n,,\x01auth=Bearer {token}\x01\x01".encode()
        if version >= 2:
            body = e.enc_uvarint(len(message) + 1) + message + e.enc_uvarint(0)
        else:
            body = e.enc_int32(len(message)) + message
        response = self.request(36, version, body, flexible=version >= 2)
        if response is None:
            return None
        cur = e.Cursor(response)
        error = cur.int16()
        if version >= 2:
            n = cur.uvarint()
            text = None if n == 0 else cur.take(n - 1).decode()
            assert cur.uvarint() == 1, "non-empty auth bytes"
        else:
            text = cur.nullable_string()
            assert cur.int32() == 0, "non-empty auth bytes"
        lifetime = cur.int64() if version >= 1 else 0
        if version >= 2:
            cur.skip_tagged_fields()
        assert cur.pos == len(response), "trailing bytes"
        return error, text, lifetime

    def metadata(self) -> bytes | None:
        return self.request(3, 1, proxy_mod.enc_int32(-1))  # v1, all topics


def official_token(access_key_id: str = AKID, secret: str = SECRET) -> str:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    saved = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = access_key_id, secret
    try:
        return MSKAuthTokenProvider.generate_auth_token(REGION)[0]
    finally:
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = saved


def test_e2e_protocol_corners(tmp: Path):
    other_key, other_secret = "AKIAOTHERPRINCIPAL01", "other-secret"
    stack = Stack(tmp, ["--max-reauth-ms", "1500"], more_credentials={other_key: other_secret})
    clients = []

    def connect() -> RawKafka:
        clients.append(RawKafka(stack.proxy_port))
        return clients[-1]

    try:
        token = official_token()
        # A request before authentication closes the connection.
        assert connect().metadata() is None
        assert stack.stats()["unauthenticated_requests"] == 1

        # ApiVersions comes from the broker, with the SASL APIs added; other mechanisms are refused.
        c = connect()
        software = proxy_mod.enc_compact_nullable_string("raw-test")
        for version in (0, 3):
            body = software + software + proxy_mod.enc_uvarint(0) if version >= 3 else b""
            response = c.request(18, version, body, flexible=version >= 3)
            apis, _ = _api_versions_entries(proxy_mod.enc_int32(0) + response, version)
            assert apis[17] == (0, 1) and apis[36] == (0, 2), apis
            assert 0 in apis and 3 in apis, "the broker's APIs are missing"
        assert c.handshake("PLAIN") == proxy_mod.ERR_UNSUPPORTED_SASL_MECHANISM
        assert c.metadata() is None
        assert stack.stats()["handshake_refused"] == 1

        # SaslAuthenticate v0, v1, v2 all work and relay afterwards.
        for version in (0, 1, 2):
            c = connect()
            assert c.handshake() == 0
            error, text, lifetime = c.authenticate(token, version)
            assert (error, text) == (0, None), text
            assert (0 < lifetime <= 1500) if version >= 1 else lifetime == 0, lifetime
            assert c.metadata() is not None

        # SaslHandshake v0: the token follows as a bare frame, and so does the (empty) answer.
        c = connect()
        assert c.handshake(version=0) == 0
        c.send_frame(f"n,,\x01auth=Bearer {token}\x01\x01".encode())
        assert c.recv_frame() == b""
        assert c.metadata() is not None

        # SaslAuthenticate without SaslHandshake is an illegal state.
        assert connect().authenticate(token)[0] == proxy_mod.ERR_ILLEGAL_SASL_STATE

        # Re-authentication in place; then a client that lets its session lapse is cut off.
        c = connect()
        assert c.handshake() == 0 and c.authenticate(token)[0] == 0
        before = stack.stats()["reauth_ok"]
        assert c.handshake() == 0 and c.authenticate(token)[0] == 0
        assert stack.stats()["reauth_ok"] == before + 1
        assert c.metadata() is not None
        time.sleep(1.6)
        assert c.metadata() is None
        assert stack.stats()["sessions_expired"] == 1

        # Re-authenticating as somebody else is refused with SASL_AUTHENTICATION_FAILED.
        c = connect()
        assert c.handshake() == 0 and c.authenticate(token, 2)[0] == 0
        assert c.handshake() == 0
        error, text, _ = c.authenticate(official_token(other_key, other_secret), 2)
        assert error == proxy_mod.ERR_SASL_AUTHENTICATION_FAILED and "re-authentication" in text, text
        assert c.metadata() is None

        # A garbage token gets a readable error, not a hang.
        c = connect()
        assert c.handshake() == 0
        error, text, _ = c.authenticate("bm90LWEtdXJs")
        assert error == proxy_mod.ERR_SASL_AUTHENTICATION_FAILED and "MSK IAM" in text, text

        stats = stack.stats()
        assert stats["failures_by_reason"] == {
            "illegal_sasl_state": 1,
            "principal_changed": 1,
            "malformed_token": 1,
        }, stats
        log = stack.proxy_log.read_text()
        assert token not in log and SECRET not in log and other_secret not in log
        return stats
    finally:
        for c in clients:
            c.close()
        stack.close()


# --------------------------------------------------------------------------- runner


def main() -> int:
    os.environ.update(
        AWS_ACCESS_KEY_ID=AKID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_") and callable(fn)]
    only = sys.argv[1:]
    passed = failed = 0
    keep = os.environ.get("MSK_IAM_PROXY_TEST_DIR")  # keep logs and stats there for debugging
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="msk-iam-proxy-test-", dir=keep) as tmp:
        for name, fn in tests:
            if only and not any(o in name for o in only):
                continue
            started = time.monotonic()
            librdkafka_log = Client.logger().handlers[0]
            librdkafka_log.flush()
            try:
                if fn.__code__.co_argcount:
                    case_dir = Path(tmp) / name
                    case_dir.mkdir()
                    summary = fn(case_dir)
                else:
                    summary = fn()
            except Exception:  # noqa: BLE001 - report every failure and go on
                failed += 1
                print(f"FAIL {name} ({time.monotonic() - started:.1f} s)")
                traceback.print_exc(file=sys.stdout)
                for log in sorted(Path(tmp, name).glob("proxy-*.log")) if Path(tmp, name).exists() else []:
                    print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-15:]))
                lines = [r.getMessage() for r in librdkafka_log.buffer[-15:]]
                if lines:
                    print("--- librdkafka log (tail)\n" + "\n".join(lines))
            else:
                passed += 1
                print(f"PASS {name} ({time.monotonic() - started:.1f} s)")
                if summary:
                    print(f"     proxy stats: {json.dumps(summary)}")
            sys.stdout.flush()
        if keep:
            shutil.copytree(tmp, Path(keep) / "last", dirs_exist_ok=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
