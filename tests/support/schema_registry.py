"""A Confluent schema registry stand-in with the REST calls logferry and confluent-kafka's
AvroDeserializer use:

  POST /subjects/{subject}/versions  register (an identical schema keeps its id) -> {"id"}
  POST /subjects/{subject}           look up a schema under a subject -> {"subject","id","version","schema"}
  GET  /schemas/ids/{id}             the schema of an id -> {"schema"}
  GET  /subjects, GET /subjects/{subject}/versions

Schemas are compared as parsed JSON. With --state FILE the registry keeps its schemas there, so
a restarted registry (an outage in a test) answers with the same ids. With --user/--password,
requests without that basic auth get 401. Prints "listening <port>" once it serves; counts the
requests it answered per call in --stats-file.
"""

import argparse
import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LOCK = threading.RLock()


class State:
    def __init__(self, path):
        self.path = path
        self.schemas = []  # id - 1 -> schema text
        self.subjects = {}  # subject -> [id, ...]
        self.stats = {}
        if path and os.path.exists(path):
            data = json.load(open(path))
            self.schemas, self.subjects = data["schemas"], data["subjects"]

    def save(self):
        if self.path:
            tmp = self.path + ".tmp"
            json.dump({"schemas": self.schemas, "subjects": self.subjects}, open(tmp, "w"))
            os.replace(tmp, self.path)

    def find(self, schema):
        parsed = json.loads(schema)
        for i, s in enumerate(self.schemas):
            if json.loads(s) == parsed:
                return i + 1
        return None


def handler(state, auth, stats_file):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body, call):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            with LOCK:
                key = f"{call}_{status}"
                state.stats[key] = state.stats.get(key, 0) + 1
                if stats_file:
                    json.dump(state.stats, open(stats_file, "w"))

        def authorized(self):
            if auth is None:
                return True
            if self.headers.get("Authorization") == auth:
                return True
            self.reply(401, {"error_code": 40101, "message": "Unauthorized"}, "auth")
            return False

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            if not self.authorized():
                return
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            with LOCK:
                if parts[:2] == ["schemas", "ids"] and len(parts) == 3:
                    i = int(parts[2])
                    if 1 <= i <= len(state.schemas):
                        return self.reply(200, {"schema": state.schemas[i - 1]}, "get_by_id")
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"}, "get_by_id")
                if parts == ["subjects"]:
                    return self.reply(200, sorted(state.subjects), "subjects")
                if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                    ids = state.subjects.get(parts[1])
                    if ids is None:
                        return self.reply(404, {"error_code": 40401, "message": "Subject not found"}, "versions")
                    return self.reply(200, list(range(1, len(ids) + 1)), "versions")
            self.reply(404, {"error_code": 404, "message": "not found"}, "unknown")

        def do_POST(self):
            if not self.authorized():
                return
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            if not parts or parts[0] != "subjects" or len(parts) not in (2, 3):
                return self.reply(404, {"error_code": 404, "message": "not found"}, "unknown")
            subject = parts[1]
            schema = self.body().get("schema", "")
            try:
                json.loads(schema)
            except ValueError:
                return self.reply(422, {"error_code": 42201, "message": "Invalid schema"}, "register")
            with LOCK:
                found = state.find(schema)
                if len(parts) == 3 and parts[2] == "versions":
                    if found is None:
                        state.schemas.append(schema)
                        found = len(state.schemas)
                    ids = state.subjects.setdefault(subject, [])
                    if found not in ids:
                        ids.append(found)
                    state.save()
                    return self.reply(200, {"id": found}, "register")
                ids = state.subjects.get(subject)
                if ids is None:
                    return self.reply(404, {"error_code": 40401, "message": "Subject not found"}, "lookup")
                if found is None or found not in ids:
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"}, "lookup")
                return self.reply(200, {"subject": subject, "id": found, "version": ids.index(found) + 1,
                                        "schema": state.schemas[found - 1]}, "lookup")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state")
    p.add_argument("--stats-file")
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()
    auth = None
    if a.user:
        auth = "Basic " + base64.b64encode(f"{a.user}:{a.password or ''}".encode()).decode()
    state = State(a.state)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), handler(state, auth, a.stats_file))
    print(f"listening {a.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
