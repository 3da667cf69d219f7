"""A TEST DOUBLE of a Confluent-compatible schema registry, for kappa's tests only.

No real registry server installs from the package registries these machines reach (Karapace is not
on PyPI; Confluent's and Apicurio's are Java), so the tests run this small stand-in. It speaks the
part of the documented Confluent Schema Registry REST API that producers' serializers and kappa
use, and nothing else:

  POST /subjects/{subject}/versions     register (same schema text -> same id, across subjects)
  POST /subjects/{subject}              look a schema up under a subject
  GET  /schemas/ids/{id}                a schema by id (schemaType omitted for AVRO, as Confluent does)
  GET  /subjects                        subject names
  GET  /subjects/{subject}/versions     version numbers
  GET  /subjects/{subject}/versions/{n|latest}
  GET  /config, /config/{subject}       compatibility level (always BACKWARD: it checks nothing)

Errors are Confluent's: 40401 subject not found, 40402 version not found, 40403 schema not found,
401 without the basic-auth credentials given by --user. A test can take it down without closing the
connections clients keep open (`server.registry.down = True`): every request is then answered 503. kappa relies on nothing beyond that API,
so it works unchanged against Confluent's server, Karapace, Redpanda's or Apicurio's ccompat API.

Run: python tests/registry/test_registry.py [--port 0] [--user NAME:PASSWORD]
It prints `listening on http://127.0.0.1:PORT` on stdout once it accepts connections.
"""

import argparse
import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.ids = {}  # (schemaType, schema text, references json) -> id
        self.schemas = {}  # id -> dict(schema, schemaType, references)
        self.subjects = {}  # subject -> [id per version, in order]
        self.down = False  # when set, every request is answered 503, as an overloaded registry does

    @staticmethod
    def key(body):
        """What makes two registrations the same schema: type, text and references."""
        references = body.get("references") or []
        return body.get("schemaType", "AVRO"), body["schema"], json.dumps(references, sort_keys=True)

    def register(self, subject, body):
        key = self.key(body)
        schema_type, references = key[0], body.get("references") or []
        with self.lock:
            schema_id = self.ids.get(key)
            if schema_id is None:
                schema_id = len(self.ids) + 1
                self.ids[key] = schema_id
                self.schemas[schema_id] = {
                    "schema": body["schema"],
                    "schemaType": schema_type,
                    "references": references,
                }
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id, versions.index(schema_id) + 1

    def lookup(self, subject, body):
        with self.lock:
            schema_id = self.ids.get(self.key(body))
            versions = self.subjects.get(subject)
            if versions is None:
                return None, 40401
            if schema_id not in versions:
                return None, 40403
            return self.version(subject, versions.index(schema_id) + 1), None

    def version(self, subject, number):
        schema_id = self.subjects[subject][number - 1]
        out = {"subject": subject, "version": number, "id": schema_id}
        out.update(self.public(schema_id))
        return out

    def public(self, schema_id):
        stored = self.schemas[schema_id]
        out = {"schema": stored["schema"]}
        if stored["schemaType"] != "AVRO":
            out["schemaType"] = stored["schemaType"]
        if stored["references"]:
            out["references"] = stored["references"]
        return out


def handler_for(registry, credentials):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status, code, message):
            self.reply(status, {"error_code": code, "message": message})

        def authorized(self):
            if registry.down:
                self.error(503, 50003, "registry unavailable (taken down by the test)")
                return False
            if credentials is None:
                return True
            expected = "Basic " + base64.b64encode(credentials.encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            self.error(401, 401, "Unauthorized")
            return False

        def path_parts(self):
            path = self.path.split("?", 1)[0]
            return [p for p in path.split("/") if p]

        def do_GET(self):
            if not self.authorized():
                return
            parts = [unquote(p) for p in self.path_parts()]
            if parts[:2] == ["schemas", "ids"] and len(parts) == 3:
                try:
                    schema_id = int(parts[2])
                except ValueError:
                    return self.error(404, 40403, "Schema not found")
                with registry.lock:
                    if schema_id not in registry.schemas:
                        return self.error(404, 40403, f"Schema {schema_id} not found")
                    return self.reply(200, registry.public(schema_id))
            if parts == ["subjects"]:
                with registry.lock:
                    return self.reply(200, sorted(registry.subjects))
            if parts and parts[0] == "config":
                return self.reply(200, {"compatibilityLevel": "BACKWARD"})
            if len(parts) >= 3 and parts[0] == "subjects" and parts[2] == "versions":
                subject = parts[1]
                with registry.lock:
                    versions = registry.subjects.get(subject)
                    if versions is None:
                        return self.error(404, 40401, f"Subject '{subject}' not found.")
                    if len(parts) == 3:
                        return self.reply(200, list(range(1, len(versions) + 1)))
                    wanted = parts[3]
                    if wanted in ("latest", "-1"):
                        number = len(versions)
                    elif re.fullmatch(r"[0-9]+", wanted) and 1 <= int(wanted) <= len(versions):
                        number = int(wanted)
                    else:
                        return self.error(404, 40402, f"Version {wanted} not found.")
                    return self.reply(200, registry.version(subject, number))
            self.error(404, 404, "HTTP 404 Not Found")

        def do_POST(self):
            if not self.authorized():
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self.error(400, 400, "invalid JSON")
            parts = [unquote(p) for p in self.path_parts()]
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                schema_id, _ = registry.register(parts[1], body)
                return self.reply(200, {"id": schema_id})
            if len(parts) == 2 and parts[0] == "subjects":
                found, code = registry.lookup(parts[1], body)
                if found is None:
                    return self.error(404, code, "not found")
                return self.reply(200, found)
            self.error(404, 404, "HTTP 404 Not Found")

    return Handler


def serve(port=0, credentials=None):
    """Starts the registry on 127.0.0.1:port in a thread; returns (server, url)."""
    registry = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(registry, credentials))
    server.daemon_threads = True
    server.registry = registry
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", help="NAME:PASSWORD required as basic auth")
    args = parser.parse_args()
    server, url = serve(args.port, args.user)
    print(f"listening on {url}", flush=True)
    threading.Event().wait()
