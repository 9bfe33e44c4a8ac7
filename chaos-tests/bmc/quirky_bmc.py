"""A BMC for Leasehold's tests and demo: the sushy-tools Redfish emulator (the one OpenStack
Ironic and Metal3 test with), fake driver, behind a thin WSGI layer that adds what vendors'
BMCs do and the emulator does not, each switched on per test:

- a session service (login, X-Auth-Token, sessions that expire), where the emulator has
  only basic auth;
- ETags on a system, with If-Match checked on PATCH (412 when stale);
- resets refused with 409 (a power operation in progress), or accepted with 202 and a task
  monitor that runs a while and then completes or fails;
- transient 503s with Retry-After.

The emulator itself keeps the machines' power and boot state; this layer only answers
around it. POST /quirks with a JSON object changes the switches; GET /quirks shows them
with what the layer counted (logins, requests by auth kind, 412s, resets).

Started by the harness (chaos-tests/src/harness/bmc.rs); the password comes in
QUIRKY_BMC_PASSWORD, never on the command line.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time

import bcrypt
import webob

from sushy_tools.emulator import main as emulator

SYSTEM = re.compile(r"^/redfish/v1/Systems/([^/]+)$")
RESET = re.compile(r"^/redfish/v1/Systems/([^/]+)/Actions/ComputerSystem\.Reset$")
SYSTEM_PREFIX = re.compile(r"^/redfish/v1/Systems/([^/]+)")
MONITOR = re.compile(r"^/redfish/v1/TaskService/TaskMonitors/(\d+)$")
SESSION = re.compile(r"^/redfish/v1/SessionService/Sessions/(\w+)$")


def redfish_error(status, message, headers=None):
    body = {
        "error": {
            "code": "Base.1.0.GeneralError",
            "message": message,
            "@Message.ExtendedInfo": [{"Message": message}],
        }
    }
    response = webob.Response(
        status=status, content_type="application/json", json_body=body
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_response(status, body, headers=None):
    response = webob.Response(
        status=status, content_type="application/json", json_body=body
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class QuirkLayer:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.settings = {
            "sessions": False,
            "etags": False,
            "reset_conflicts": 0,
            "reset_task_polls": 0,
            "reset_task_fails": False,
            "unavailable": 0,
            "stale_etags": 0,
        }
        self.stats = {
            "logins": 0,
            "session_requests": 0,
            "basic_requests": 0,
            "precondition_failed": 0,
            "patches": 0,
            "resets": [],
            "logouts": 0,
            # Every request that changes a machine, with when it arrived (wall clock, ms;
            # CLOCK_MONOTONIC, ns, as the gateway's audit records and the node logs have
            # it): what control-plane overhead is measured against.
            "changes": [],
            # When each request to a system (or below it) arrived, CLOCK_MONOTONIC ns by
            # system: when a client first turned to a machine, whatever it asked.
            "arrivals": {},
        }
        self.sessions = {}  # token -> (id, basic header)
        self.tasks = {}  # id -> polls left
        self.generation = 0
        self.next_id = 1

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        try:
            response = self.handle(request)
        except Exception as error:  # a test's BMC must say what went wrong, not hang
            response = redfish_error(500, f"quirk layer: {error!r}")
        return response(environ, start_response)

    def inner(self, request):
        return request.get_response(self.app)

    def handle(self, request):
        path = request.path_info.rstrip("/") or "/"
        method = request.method
        if path == "/quirks":
            with self.lock:
                if method == "POST":
                    changes = request.json
                    if changes.pop("expire_sessions", False):
                        self.sessions.clear()
                    self.settings.update(changes)
                    return webob.Response(status=204)
                return json_response(200, {"settings": self.settings, "stats": self.stats})

        with self.lock:
            if self.settings["unavailable"] > 0 and path.startswith("/redfish/v1/Systems"):
                self.settings["unavailable"] -= 1
                return redfish_error(
                    503, "The service is temporarily unavailable", {"Retry-After": "0"}
                )
            sessions_on = self.settings["sessions"]

        if sessions_on:
            answer = self.sessions_layer(request, path, method)
            if answer is not None:
                return answer
        elif "X-Auth-Token" not in request.headers:
            with self.lock:
                self.stats["basic_requests"] += 1

        system = SYSTEM.match(path)
        reset = RESET.match(path)
        below = SYSTEM_PREFIX.match(path)
        if below:
            with self.lock:
                self.stats["arrivals"].setdefault(below.group(1), []).append(time.monotonic_ns())
        if (system and method == "PATCH") or (reset and method == "POST"):
            with self.lock:
                self.stats["changes"].append(
                    {
                        "wall_ms": int(time.time() * 1000),
                        "mono_ns": time.monotonic_ns(),
                        "system": (system or reset).group(1),
                        "kind": "patch" if system else "reset",
                        "reset": (request.json or {}).get("ResetType") if reset else None,
                    }
                )
        if system and self.settings["etags"]:
            if method == "GET":
                response = self.inner(request)
                if response.status_code == 200:
                    response.headers["ETag"] = self.etag(response.json)
                return response
            if method == "PATCH":
                probe = webob.Request.blank(path, headers=dict(request.headers))
                probe.method = "GET"
                current = self.inner(probe)
                with self.lock:
                    self.stats["patches"] += 1
                    if self.settings["stale_etags"] > 0:
                        # Another client changed the system between this client's read and
                        # its write.
                        self.settings["stale_etags"] -= 1
                        self.generation += 1
                    etag = self.etag(current.json) if current.status_code == 200 else None
                    given = request.headers.get("If-Match")
                    if given is not None and etag is not None and given != etag:
                        self.stats["precondition_failed"] += 1
                        return redfish_error(
                            412, "The ETag given in If-Match does not match the resource"
                        )

        if reset and method == "POST":
            with self.lock:
                self.stats["resets"].append((request.json or {}).get("ResetType"))
                if self.settings["reset_conflicts"] > 0:
                    self.settings["reset_conflicts"] -= 1
                    return redfish_error(
                        409, "A power operation is already in progress; try again later"
                    )
                polls = self.settings["reset_task_polls"]
                fails = self.settings["reset_task_fails"]
            if polls > 0 or fails:
                response = self.inner(request)
                if response.status_code >= 300:
                    return response
                with self.lock:
                    task = self.next_id
                    self.next_id += 1
                    self.tasks[task] = {"polls": polls, "fails": fails}
                return webob.Response(
                    status=202,
                    headers={"Location": f"/redfish/v1/TaskService/TaskMonitors/{task}"},
                )

        monitor = MONITOR.match(path)
        if monitor and method == "GET":
            with self.lock:
                task = self.tasks.get(int(monitor.group(1)))
                if task is None:
                    return redfish_error(404, "No such task monitor")
                if task["polls"] > 0:
                    task["polls"] -= 1
                    return webob.Response(status=202, headers={"Retry-After": "0"})
            if task["fails"]:
                return json_response(
                    200,
                    {
                        "@odata.type": "#Task.v1_4_3.Task",
                        "TaskState": "Exception",
                        "TaskStatus": "Critical",
                        "Messages": [{"Message": "The power controller reported a fault"}],
                    },
                )
            return webob.Response(status=204)

        return self.inner(request)

    def sessions_layer(self, request, path, method):
        if path == "/redfish/v1" and method == "GET":
            response = self.inner(request)
            body = response.json
            body["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
            body.setdefault("Links", {})["Sessions"] = {
                "@odata.id": "/redfish/v1/SessionService/Sessions"
            }
            return json_response(200, body)
        if path == "/redfish/v1/SessionService/Sessions" and method == "POST":
            given = request.json or {}
            user = given.get("UserName", "")
            password = given.get("Password", "")
            header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            probe = webob.Request.blank("/redfish/v1/Systems", headers={"Authorization": header})
            if self.inner(probe).status_code == 401:
                return redfish_error(401, "Invalid user name or password")
            with self.lock:
                token = secrets.token_hex(16)
                session = str(self.next_id)
                self.next_id += 1
                self.sessions[token] = (session, header)
                self.stats["logins"] += 1
            return json_response(
                201,
                {"@odata.id": f"/redfish/v1/SessionService/Sessions/{session}", "Id": session},
                {
                    "X-Auth-Token": token,
                    "Location": f"/redfish/v1/SessionService/Sessions/{session}",
                },
            )
        token = request.headers.get("X-Auth-Token")
        if token is None:
            with self.lock:
                self.stats["basic_requests"] += 1
            return None
        with self.lock:
            known = self.sessions.get(token)
            if known is None:
                return redfish_error(401, "The session has expired")
            self.stats["session_requests"] += 1
            deleted = SESSION.match(path)
            if deleted and method == "DELETE" and deleted.group(1) == known[0]:
                del self.sessions[token]
                self.stats["logouts"] += 1
                return webob.Response(status=204)
        request.headers["Authorization"] = known[1]
        del request.headers["X-Auth-Token"]
        return None

    def etag(self, system):
        text = json.dumps(system.get("Boot", {}), sort_keys=True) + str(self.generation)
        return '"' + hashlib.sha256(text.encode()).hexdigest()[:16] + '"'


def main():
    parser = argparse.ArgumentParser("quirky-bmc")
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--auth-file", required=True)
    parser.add_argument("--ssl-certificate")
    parser.add_argument("--ssl-key")
    args = parser.parse_args()

    password = os.environ.get("QUIRKY_BMC_PASSWORD")
    if not password:
        sys.exit("quirky-bmc: QUIRKY_BMC_PASSWORD is not set")
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    with open(args.auth_file, "w") as auth:
        auth.write(f"{args.user}:{digest}\n")

    app = emulator.app
    app.configure(config_file=args.config)
    app.config["SUSHY_EMULATOR_FAKE_DRIVER"] = True
    app.config["SUSHY_EMULATOR_AUTH_FILE"] = args.auth_file
    app.configure()  # installs the emulator's basic-auth middleware for the file above
    app.wsgi_app = QuirkLayer(app.wsgi_app)

    context = None
    if args.ssl_certificate and args.ssl_key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.ssl_certificate, args.ssl_key)
    app.run(host=args.host, port=args.port, ssl_context=context, threaded=True)


if __name__ == "__main__":
    main()
