"""A forward protocol v1 client with the secure-forward handshake, written from the protocol
specification (Forward Protocol Specification v1, "Handshake Messages") for tests/forward_secure.rs.

Why not fluent-logger: the Python fluent-logger (0.11) has neither TLS nor the shared_key
handshake (its sender writes msgpack to a plain socket), so it cannot be the client here. This
one uses only the standard library's ssl and hashlib plus msgpack, independently of logferry's
code: the digests it sends, and the one it checks in the PONG, are computed here.

Usage: secure_forward_client.py HOST PORT [--tls] [--ca FILE] [--cert FILE --key FILE]
       [--shared-key KEY] [--hostname NAME] [--username U --password P] [--count N] [--tag T]
       [--no-handshake]

Prints one JSON line: {"helo": {...}, "pong": [...], "pong_digest_ok": bool, "acked": n,
"error": str|null}. Exit status 0 when every record was acknowledged, 1 otherwise.
"""

import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import time

import msgpack


def sha512_hex(*parts):
    h = hashlib.sha512()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def as_bytes(v):
    return v if isinstance(v, bytes) else v.encode()


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=True)

    def read(self):
        """The next msgpack value from the server, or raises EOFError."""
        while True:
            for value in self.unpacker:
                return value
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.unpacker.feed(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--shared-key")
    ap.add_argument("--hostname", default="python-client")
    ap.add_argument("--username", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--tag", default="py.secure")
    ap.add_argument("--no-handshake", action="store_true")
    args = ap.parse_args()

    out = {"helo": None, "pong": None, "pong_digest_ok": None, "acked": 0, "error": None}
    try:
        sock = socket.create_connection((args.host, args.port), timeout=20)
        if args.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(args.ca)
            if args.cert:
                ctx.load_cert_chain(args.cert, args.key)
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        conn = Conn(sock)
        if args.shared_key is not None and not args.no_handshake:
            helo = conn.read()
            assert helo[0] == b"HELO", helo
            options = {k.decode(): v for k, v in helo[1].items()}
            out["helo"] = {
                "nonce_len": len(options["nonce"]),
                "auth_len": len(options.get("auth", b"")),
                "keepalive": options.get("keepalive"),
            }
            nonce = as_bytes(options["nonce"])
            auth = as_bytes(options.get("auth", b""))
            salt = os.urandom(16)
            hostname = args.hostname.encode()
            key = args.shared_key.encode()
            digest = sha512_hex(salt, hostname, nonce, key)
            password_digest = ""
            if auth:
                password_digest = sha512_hex(auth, args.username.encode(), args.password.encode())
            ping = ["PING", args.hostname, salt, digest, args.username, password_digest]
            sock.sendall(msgpack.packb(ping, use_bin_type=True))
            pong = conn.read()
            out["pong"] = [v.decode() if isinstance(v, bytes) else v for v in pong]
            if pong[1] is not True:
                out["error"] = "authentication failed: %s" % pong[2].decode()
                print(json.dumps(out))
                return 1
            expected = sha512_hex(salt, pong[3], nonce, key)
            out["pong_digest_ok"] = pong[4].decode() == expected
            if not out["pong_digest_ok"]:
                out["error"] = "the server's PONG digest is wrong"
                print(json.dumps(out))
                return 1
        elif args.no_handshake:
            pass
        # Message mode with an ack per record, as fluent-logger's sender does with acks.
        for i in range(args.count):
            chunk = "c%d" % i
            message = [args.tag, int(time.time()), {"seq": i, "log": "secure %d" % i}, {"chunk": chunk}]
            sock.sendall(msgpack.packb(message, use_bin_type=True))
            ack = conn.read()
            if not isinstance(ack, dict) or ack.get(b"ack") != chunk.encode():
                out["error"] = "unexpected answer %r" % (ack,)
                break
            out["acked"] += 1
        sock.close()
    except (OSError, EOFError, ssl.SSLError, AssertionError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(out))
    return 0 if out["acked"] == args.count and out["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
