#!/usr/bin/env python3
"""Behaviour test of the fake Comet Server: starts the binary on a free port,
drives every endpoint, fault kind and control route, then checks that SIGTERM
ends it with exit 0. Usage: smoke_test.py [path/to/fake-comet]"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

BIN = sys.argv[1] if len(sys.argv) > 1 else "bin/fake-comet"
AUTH = {"Username": "admin", "AuthType": "Password", "Password": "admin-secret"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Fake:
    def __init__(self, *flags):
        self.port = free_port()
        self.proc = subprocess.Popen([BIN, "--port", str(self.port), *flags],
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "fake-comet listening on 127.0.0.1:%d" % self.port in line, line

    def raw(self, method, path, body=b"", ctype="application/x-www-form-urlencoded",
            timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def call(self, endpoint, auth=AUTH, **params):
        body = urllib.parse.urlencode({**auth, **params}).encode()
        status, data = self.raw("POST", "/api/v1/admin/" + endpoint, body)
        return status, (json.loads(data) if data else None)

    def api(self, endpoint, **params):
        status, obj = self.call(endpoint, **params)
        check(status == 200, "%s HTTP %d" % (endpoint, status))
        return obj

    def state(self):
        return json.loads(self.raw("GET", "/__fake/state")[1])

    def config(self, **cfg):
        status, data = self.raw("POST", "/__fake/config", json.dumps(cfg).encode(),
                                "application/json")
        return status, json.loads(data)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        rest = self.proc.stderr.read()
        check(rc == 0, "exit code %d on SIGTERM: %s" % (rc, rest[-2000:]))
        check("ERROR: AddressSanitizer" not in rest and "LeakSanitizer" not in rest and "runtime error" not in rest,
              "sanitizer report: " + rest[-2000:])


def test_users(f):
    v = f.api("meta/version")
    check(v["Version"] == "25.9.8" and v["AuthenticationRole"] is True and
          "ServerStartHash" in v and "CurrentTime" in v, "meta/version fields")
    check(f.api("add-user", TargetUser="alice", TargetPassword="secret123",
                StoreRecoveryCode="1") == {"Status": 200, "Message": "OK"}, "add-user ok")
    check(f.api("add-user", TargetUser="alice", TargetPassword="x")["Status"] == 400,
          "add-user duplicate is 400")
    check(f.api("add-user", TargetUser="bob", TargetPassword="pw",
                RequirePasswordChange="1")["Status"] == 200, "add-user bob")
    check(f.api("list-users") == ["alice", "bob"], "list-users")
    full = f.api("list-users-full")
    check(set(full) == {"alice", "bob"}, "list-users-full keys")

    p = f.api("get-user-profile", TargetUser="alice")
    for k in ("Destinations", "Sources", "BackupRules", "Devices", "Policy"):
        check(p[k] == {}, "new profile %s is {}" % k)
    check(p["Emails"] == [] and p["PasswordRecovery"] != "" and p["Username"] == "alice"
          and p["IsSuspended"] is False and p["MaximumDevices"] == 0
          and p["PolicyID"] == "" and p["CreationGUID"], "new profile fields")
    check(full["bob"]["PasswordRecovery"] == "" and full["bob"]["RequirePasswordChange"] is True,
          "bob without recovery code, must change password")
    check(f.api("get-user-profile", TargetUser="nobody") ==
          {"Status": 400, "Message": "User not found"}, "missing user 400")
    check(f.api("get-user-profile-and-hash", TargetUser="nobody")["Status"] == 400,
          "missing user and hash 400")

    ph = f.api("get-user-profile-and-hash", TargetUser="alice")
    check(ph["Status"] == 200 and ph["ProfileHash"] and ph["Profile"] == p, "profile and hash")
    prof = ph["Profile"]
    prof["IsSuspended"] = True
    prof["ExtraUnknown"] = {"keep": [1, 2]}
    r = f.api("set-user-profile-hash", TargetUser="alice", ProfileData=json.dumps(prof),
              RequireHash="stale")
    check(r == {"Status": 400, "Message": "hash mismatch"}, "stale hash rejected")
    check(f.api("get-user-profile", TargetUser="alice")["IsSuspended"] is False,
          "stale write stored nothing")
    r = f.api("set-user-profile-hash", TargetUser="alice", ProfileData=json.dumps(prof),
              RequireHash=ph["ProfileHash"])
    check(r["Status"] == 200 and r["ProfileHash"] != ph["ProfileHash"] and r["Profile"] == prof,
          "set with current hash stored, new hash")
    check(f.api("get-user-profile", TargetUser="alice")["ExtraUnknown"] == {"keep": [1, 2]},
          "unknown fields kept")
    h = r["ProfileHash"]
    for bad, why in ((json.dumps(dict(prof, Destinations=[])), "[] for map"),
                     ("[]", "non-object"), ("not json", "not json"),
                     (json.dumps(dict(prof, Username="mallory")), "other Username")):
        r = f.api("set-user-profile-hash", TargetUser="alice", ProfileData=bad, RequireHash=h)
        check(r["Status"] == 400, "set rejects " + why)
    check(f.api("get-user-profile-and-hash", TargetUser="alice")["ProfileHash"] == h,
          "rejected sets leave the hash")
    # Whole replacement, no merge.
    r = f.api("set-user-profile-hash", TargetUser="alice",
              ProfileData=json.dumps({"Username": "alice"}), RequireHash=h)
    check(r["Status"] == 200 and r["Profile"] == {"Username": "alice"}, "no merge")
    h = r["ProfileHash"]
    r = f.api("set-user-profile-hash", TargetUser="alice", ProfileData=json.dumps(prof),
              RequireHash=h)
    h = r["ProfileHash"]

    r = f.api("request-storage-vault", TargetUser="alice", StorageProvider="1003-eu")
    check(r["Status"] == 200 and r["ProfileHash"] != h, "vault ok, hash changed")
    d = r["Profile"]["Destinations"].get(r["DestinationID"])
    check(d is not None and d["Description"] == "Comet Storage EU" and
          d["DestinationType"] == 1003 and d["StorageLimitEnabled"] is False and
          d["StorageLimitBytes"] == 0, "vault destination")
    r = f.api("request-storage-vault", TargetUser="alice", StorageProvider="1003-eu")
    check(len(r["Profile"]["Destinations"]) == 2, "each vault call adds one")
    check(f.api("request-storage-vault", TargetUser="alice", StorageProvider="nope")["Status"]
          == 400, "vault unknown provider")
    check(f.api("request-storage-vault", TargetUser="zed", StorageProvider="1003-eu")["Status"]
          == 400, "vault unknown user")
    check(f.api("request-storage-vault-providers") ==
          {"1003-default": "Comet Storage", "1003-eu": "Comet Storage EU"}, "providers")

    before = f.api("get-user-profile-and-hash", TargetUser="alice")
    check(f.api("reset-user-password", TargetUser="alice", NewPassword="n3w")["Status"] == 200,
          "reset with recovery code")
    after = f.api("get-user-profile-and-hash", TargetUser="alice")
    check(after["ProfileHash"] != before["ProfileHash"] and
          after["Profile"]["PasswordRecovery"] != before["Profile"]["PasswordRecovery"],
          "reset: new hash and recovery code")
    check(f.api("reset-user-password", TargetUser="bob", NewPassword="n")["Status"] == 400,
          "reset without recovery code needs old password")
    check(f.api("reset-user-password", TargetUser="bob", NewPassword="n",
                OldPassword="wrong")["Status"] == 400, "reset wrong old password")
    check(f.api("reset-user-password", TargetUser="bob", NewPassword="n",
                OldPassword="pw")["Status"] == 200, "reset right old password")
    check(f.api("reset-user-password", TargetUser="zed", NewPassword="n")["Status"] == 400,
          "reset missing user")
    st = f.state()
    check(st["users"]["alice"]["password"] == "n3w" and st["users"]["bob"]["password"] == "n" and
          st["users"]["alice"]["has_recovery_code"] is True and
          st["users"]["bob"]["has_recovery_code"] is False, "state passwords")
    check(st["users"]["alice"]["profile_hash"] == after["ProfileHash"], "state hash")

    check(f.api("delete-user", TargetUser="bob")["Status"] == 200, "delete-user")
    check(f.api("delete-user", TargetUser="bob")["Status"] == 400, "delete missing user")
    check(f.api("list-users") == ["alice"], "list-users after delete")
    check(f.api("add-user", TargetUser="x", TargetPassword="")["Status"] == 400, "empty password")
    check(f.api("add-user", TargetPassword="x")["Status"] == 400, "missing TargetUser")


def test_policies(f):
    pol = {"Description": "WHMCS_1", "Policy": {"PreventDeleteStorageVault": True}}
    check(f.api("policies/get", PolicyID="WHMCS_1") .get("PolicyHash") is None,
          "unknown policy has no hash")
    check(f.api("policies/set", PolicyID="WHMCS_1", Policy=json.dumps(pol)) ==
          {"Status": 200, "Message": "OK"}, "policies/set create")
    g = f.api("policies/get", PolicyID="WHMCS_1")
    check(g["Policy"] == pol and g["PolicyHash"], "policies/get")
    check(f.api("policies/set", PolicyID="WHMCS_1", Policy=json.dumps(pol),
                CheckPolicyHash="stale")["Status"] == 400, "CheckPolicyHash stale")
    check(f.api("policies/set", PolicyID="WHMCS_1", Policy=json.dumps(pol),
                CheckPolicyHash=g["PolicyHash"])["Status"] == 200, "CheckPolicyHash current")
    check(f.api("policies/get", PolicyID="WHMCS_1")["PolicyHash"] != g["PolicyHash"],
          "policy hash changes")
    n = f.api("policies/new", Policy=json.dumps({"Description": "other"}))
    check(n["Status"] == 200 and n["PolicyHash"] and "PolicyID" not in n, "policies/new")
    lst = f.api("policies/list")
    check(lst.get("WHMCS_1") == "WHMCS_1" and len(lst) == 2, "policies/list")
    check(f.api("policies/set", PolicyID="p", Policy="[]")["Status"] == 400, "policy not object")


def test_auth_and_routes(f):
    for bad in ({**AUTH, "Password": "no"}, {**AUTH, "Username": "root"},
                {**AUTH, "AuthType": "SessionKey"}, {}):
        status, r = f.call("meta/version", auth=bad)
        check(status == 200 and r == {"Status": 403, "Message": "Unauthorised"}, "auth %r" % bad)
    check(f.raw("POST", "/api/v1/admin/nope")[0] == 404, "unknown endpoint 404")
    check(f.raw("GET", "/__fake/health")[0] == 200, "health")
    check(f.raw("GET", "/elsewhere")[0] == 404, "other path 404")
    # A large, percent-encoded ProfileData survives the form decoding.
    ph = f.api("get-user-profile-and-hash", TargetUser="alice")
    prof = ph["Profile"]
    prof["Sources"] = {"s%d" % i: {"Description": "src &=+%% é %d" % i} for i in range(400)}
    r = f.api("set-user-profile-hash", TargetUser="alice", ProfileData=json.dumps(prof),
              RequireHash=ph["ProfileHash"])
    check(r["Status"] == 200 and r["Profile"]["Sources"] == prof["Sources"], "large profile")


def test_faults(f):
    status, cfg = f.config(error_rate=1, error_kind="http500")
    check(status == 200 and cfg["error_rate"] == 1 and cfg["error_kind"] == "http500",
          "config reply")
    status, body = f.raw("POST", "/api/v1/admin/meta/version")
    check(status == 500 and body.startswith(b"<html>"), "http500")
    f.config(error_kind="status500")
    check(f.call("meta/version") == (200, {"Status": 500, "Message": "Internal error"}),
          "status500")
    f.config(error_kind="empty")
    check(f.raw("POST", "/api/v1/admin/meta/version") == (200, b""), "empty")
    f.config(error_kind="notjson")
    check(f.raw("POST", "/api/v1/admin/meta/version") == (200, b"<html>oops</html>"), "notjson")
    for kind in ("reset", "hang"):
        f.config(error_kind=kind, hang_ms=200)
        try:
            f.raw("POST", "/api/v1/admin/meta/version")
            check(False, kind + " answered")
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
    f.config(error_kind="fail_after_commit")
    try:
        f.call("add-user", TargetUser="committed", TargetPassword="pw")
        check(False, "fail_after_commit answered")
    except (ConnectionError, http.client.HTTPException, OSError):
        pass
    f.config(error_rate=0)
    check("committed" in f.api("list-users"), "fail_after_commit committed")
    # Limited to endpoints.
    f.config(error_rate=1, error_kind="status500", error_endpoints=["add-user"])
    check(f.api("list-users")[0] == "alice", "fault limited to endpoints")
    check(f.api("add-user", TargetUser="q", TargetPassword="q")["Status"] == 500, "fault on add-user")
    check(f.raw("GET", "/__fake/health")[0] == 200, "control routes never fault")
    status, _ = f.config(error_kind="bogus")
    check(status == 400, "bad error_kind rejected")
    status, _ = f.config(error_rate=2)
    check(status == 400, "bad error_rate rejected")
    status, cfg = f.config(error_rate=0, error_endpoints=[], latency_ms=30, jitter_ms=10)
    t = time.monotonic()
    f.api("meta/version")
    check(time.monotonic() - t >= 0.03, "latency applied")
    f.config(error_rate=1, error_kind="mixed", hang_ms=50, latency_ms=0, jitter_ms=0)
    for _ in range(20):
        try:
            f.raw("POST", "/api/v1/admin/meta/version")
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
    st = f.state()
    check(st["faults"] >= 28 and st["calls"]["meta/version"] >= 30,
          "fault and call counters: %r %r" % (st["faults"], st["calls"]))
    status, _ = f.raw("POST", "/__fake/reset", b"", "application/json")
    st = f.state()
    check(status == 200 and st["users"] == {} and st["policies"] == {} and st["calls"] == {}
          and st["faults"] == 0 and st["user_count"] == 0, "reset")
    check(f.api("meta/version")["Version"] == "25.9.8", "faults off after reset")


def test_concurrency(f, clients=128, calls=20):
    errors = []

    def worker(n):
        try:
            c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
            for i in range(calls):
                body = urllib.parse.urlencode({**AUTH, "TargetUser": "u%d_%d" % (n, i),
                                               "TargetPassword": "pw"})
                c.request("POST", "/api/v1/admin/add-user", body=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
                r = c.getresponse()
                if json.loads(r.read())["Status"] != 200:
                    errors.append("status")
            c.close()
        except Exception as e:  # noqa: BLE001 - any failure counts
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "concurrency errors: %s" % errors[:3])
    check(f.state()["user_count"] == clients * calls, "all concurrent adds stored")


def test_switches():
    f = Fake("--auth-http-403", "--missing-user-403", "--old-set-reply", "--conflict-status",
             "409", "--providers", "p1=One,p2=Two", "--admin-user", "root",
             "--admin-password", "pw")
    auth = {"Username": "root", "AuthType": "Password", "Password": "pw"}
    check(f.call("meta/version")[0] == 403, "--auth-http-403")
    check(f.call("get-user-profile", auth=auth, TargetUser="x")[1] ==
          {"Status": 403, "Message": "Unauthorised"}, "--missing-user-403")
    f.call("add-user", auth=auth, TargetUser="a", TargetPassword="p")
    ph = f.call("get-user-profile-and-hash", auth=auth, TargetUser="a")[1]
    r = f.call("set-user-profile-hash", auth=auth, TargetUser="a",
               ProfileData=json.dumps(ph["Profile"]), RequireHash="x")[1]
    check(r["Status"] == 409, "--conflict-status")
    r = f.call("set-user-profile-hash", auth=auth, TargetUser="a",
               ProfileData=json.dumps(ph["Profile"]), RequireHash=ph["ProfileHash"])[1]
    check(r == {"Status": 200, "Message": "OK"}, "--old-set-reply")
    check(f.call("request-storage-vault-providers", auth=auth)[1] == {"p1": "One", "p2": "Two"},
          "--providers")
    f.stop()
    f = Fake("--error-rate", "1", "--error-kind", "notjson", "--error-endpoints",
             "meta/version,list-users", "--latency-ms", "1")
    check(f.raw("POST", "/api/v1/admin/list-users")[1] == b"<html>oops</html>", "faults by flag")
    check(f.api("request-storage-vault-providers")["1003-default"] == "Comet Storage",
          "default providers")
    f.stop()
    for bad in (["--error-kind", "nope"], ["--port", "x"], ["--error-rate", "1.5"],
                ["--error-endpoints", "nope"], ["--frobnicate"], ["--providers", "x"]):
        p = subprocess.run([BIN, *bad], capture_output=True, text=True, timeout=10)
        check(p.returncode == 2 and p.stderr.strip(), "bad flag %r exits 2" % bad)


def test_delays_do_not_block():
    # One server thread: 20 clients with 200 ms latency each must overlap.
    f = Fake("--threads", "1", "--latency-ms", "200")
    results = []
    t = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(f.call("meta/version")[0]))
               for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.monotonic() - t
    check(results == [200] * 20 and 0.2 <= took < 1.5, "latency overlaps: %.2fs" % took)
    # Stop while calls hang: the connections are dropped and exit is quick.
    f.config(latency_ms=0, error_rate=1, error_kind="hang", hang_ms=60000)
    dropped = []

    def hang():
        try:
            f.raw("POST", "/api/v1/admin/list-users", timeout=30)
        except (ConnectionError, http.client.HTTPException, OSError):
            dropped.append(1)

    threads = [threading.Thread(target=hang) for _ in range(5)]
    for th in threads:
        th.start()
    time.sleep(0.3)
    t = time.monotonic()
    f.stop()
    for th in threads:
        th.join()
    check(time.monotonic() - t < 5 and len(dropped) == 5, "stop during hangs")


def main():
    f = Fake()
    try:
        test_users(f)
        test_policies(f)
        test_auth_and_routes(f)
        test_faults(f)
        test_concurrency(f)
    finally:
        f.stop()
    test_switches()
    test_delays_do_not_block()
    print("fake-comet smoke test: %s (%d failures)" % ("FAIL" if failures else "OK", len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
