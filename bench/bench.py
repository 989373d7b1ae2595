#!/usr/bin/env python3
"""make bench: measures the pipeline against the synchronous baseline and the
broker ceiling in one run, on the RabbitMQ and Redis that scripts/bench.sh
started (their addresses come from the environment), and writes one JSON
result, a table and a PNG.

Every number printed is measured in this run; the only inputs are the
configuration matrix below and the job mix.
"""
import argparse
import base64
import http.client
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

# Job mix of issue 5: a flash sale is mostly creates.
MIX = [("create", 0.70), ("suspend", 0.10), ("change_package", 0.10),
       ("change_password", 0.05), ("terminate", 0.05)]
LATENCIES_MS = [0, 20]
WORKERS = [1, 2, 4]
INFLIGHT = [1, 8, 32, 128]
# Retry tiers of the bench config: short, so nothing in the runs waits long.
RETRY_TIERS = "1000,5000,30000"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-secret"
# A run is sized to take about this long at the rate we expect; the
# measured rate is what is reported (sizing never enters a result).
RUN_SECONDS = 5.0
MIN_JOBS, MAX_JOBS = 60, 6000
CEILING_JOBS = 10000
HANDOFF_JOBS = 2000  # p99 is then the 20th slowest, not the 5th
POLICY = "WHMCS_bench_policy"

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- processes we start (stopped by pid only) -----------------------------

class Proc:
    def __init__(self, argv, logpath, env=None):
        self.logf = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=self.logf,
                                  env=env, start_new_session=True)
        self.pid = self.p.pid

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()
        return self.p.returncode


def service_pids():
    """RabbitMQ's and Redis's pids, from the directory scripts/services.sh
    started them in (empty when unknown: their CPU is then not reported)."""
    d = os.environ.get("COMET_RABBITMQ_DIR", "")
    out = {}
    for name, rel in (("rabbitmq", "rabbitmq/rabbit.pid"), ("redis", "redis/redis.pid")):
        try:
            with open(os.path.join(d, rel)) as f:
                pid = int("".join(ch for ch in f.read() if ch.isdigit()))
            proc_cpu_s(pid)
            out[name] = pid
        except (OSError, ValueError):
            pass
    return out


def proc_cpu_s(pid):
    """utime + stime of a process in seconds (/proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---- the fake Comet ---------------------------------------------------------

class Fake:
    def __init__(self, ctx, latency_ms):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.latency_ms = latency_ms
        self.proc = Proc([ctx.bin("fake-comet"), "--port", str(self.port), "--threads", "8",
                          "--latency-ms", str(latency_ms),
                          "--admin-user", ADMIN_USER, "--admin-password", ADMIN_PASSWORD],
                         os.path.join(ctx.work, f"fake-{latency_ms}ms.log"))
        self.conn = None
        for _ in range(200):
            try:
                self.get("/__fake/health")
                return
            except OSError:
                self.conn = None
                time.sleep(0.05)
        raise RuntimeError("fake-comet did not start")

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self.conn

    def request(self, method, path, body=None, ctype="application/json"):
        for attempt in range(2):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers={"Content-Type": ctype} if body else {})
                r = c.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def get(self, path):
        return json.loads(self.request("GET", path)[1])

    def post(self, path, obj):
        st, data = self.request("POST", path, json.dumps(obj))
        if st != 200:
            raise RuntimeError(f"fake {path}: {st} {data[:200]!r}")

    def set_latency(self, ms):
        self.post("/__fake/config", {"latency_ms": ms})

    def reset(self):
        """Empties the fake; reset also clears the latency, so it is put back."""
        self.post("/__fake/reset", {})
        self.set_latency(self.latency_ms)

    def add_user(self, name, password):
        form = urllib.parse.urlencode({"Username": ADMIN_USER, "AuthType": "Password",
                                       "Password": ADMIN_PASSWORD, "TargetUser": name,
                                       "TargetPassword": password, "StoreRecoveryCode": "1"})
        st, data = self.request("POST", "/api/v1/admin/add-user", form,
                                "application/x-www-form-urlencoded")
        if st != 200 or json.loads(data).get("Status") != 200:
            raise RuntimeError(f"add-user {name}: {st} {data[:200]!r}")

    def calls(self):
        return sum(self.get("/__fake/state").get("calls", {}).values())

    def stop(self):
        if self.conn:
            self.conn.close()
        self.proc.stop()


# ---- job streams ----------------------------------------------------------------

def make_batch(ctx, fake, n, tag, precreate=True):
    """Writes n mixed jobs (exact proportions, shuffled) as JSON lines and
    creates on the fake, at 0 ms, the accounts the non-create jobs act on.
    Returns the batch path and the action counts."""
    counts = {a: int(round(n * p)) for a, p in MIX}
    counts["create"] += n - sum(counts.values())
    actions = [a for a, _ in MIX for _ in range(counts[a])]
    random.Random(tag).shuffle(actions)
    run = ctx.next_run()
    path = os.path.join(ctx.work, f"batch-{tag}.jsonl")
    fake.reset()
    fake.set_latency(0)
    with open(path, "w") as f:
        for i, action in enumerate(actions):
            sid = run * 100000 + i + 1
            user = f"b{run}-{i}"
            spec = {"action": action, "service_id": sid,
                    "account": {"username": user, "custom_username": True},
                    "server": {"url": fake.url}}
            product = {"policy_group": POLICY, "storage_provider": "1003-default",
                       "require_password_change": False}
            quotas = {"number_of_devices": 5, "protected_item_quota_gb": 100,
                      "storage_vault_quota_gb": 500}
            if action == "create":
                spec.update(client={"email": f"{user}@example.com", "firstname": "Bench"},
                            product=product, quotas=quotas, password=f"pw-{user}-create")
            else:
                if precreate:
                    fake.add_user(user, f"pw-{user}-old")
                if action == "change_package":
                    spec.update(product=product, quotas=dict(quotas, number_of_devices=10))
                elif action == "change_password":
                    spec["password"] = f"pw-{user}-new"
            f.write(json.dumps(spec) + "\n")
    fake.set_latency(fake.latency_ms)
    return path, counts


# ---- context: config, binaries, queues ----------------------------------------------

class Ctx:
    def __init__(self, args):
        self.bindir = os.path.abspath(args.bin)
        self.work = args.work
        self.run_no = int(time.time()) % 100000
        key = base64.b64encode(os.urandom(32)).decode()
        keyfile = os.path.join(self.work, "k1.key")
        pwfile = os.path.join(self.work, "comet-admin.pw")
        for path, text in ((keyfile, key), (pwfile, ADMIN_PASSWORD)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
        self.keyfile, self.pwfile = keyfile, pwfile
        self.base_env = dict(os.environ)

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def next_run(self):
        self.run_no += 1
        return self.run_no

    def config_for(self, fake_url):
        """The worker/tool config for one fake (keys, server, retry tiers),
        written the way tests/integration/harness.h does."""
        path = os.path.join(self.work, f"bench-{fake_url.rsplit(':', 1)[1]}.conf")
        with open(path, "w") as f:
            f.write(f"""log = {{ level = "info"; format = "json"; }};
worker = {{ grace_seconds = 10; }};
retry = {{ max_attempts = 4; tiers_ms = "{RETRY_TIERS}"; }};
comet = {{ connect_timeout_ms = 2000; timeout_ms = 10000; }};
keys = ( {{ id = "k1"; file = "{self.keyfile}"; }} );
servers = ( {{ url = "{fake_url}"; username = "{ADMIN_USER}"; password_file = "{self.pwfile}"; }} );
""")
        return path

    def tool(self, cfg, *args, check=True, timeout=600):
        r = subprocess.run([self.bin("comet-bench"), args[0], "-c", cfg, *args[1:]],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"comet-bench {args[0]}: rc {r.returncode}: {r.stderr.strip()}")
        return r

    def start_workers(self, cfg, n, inflight, prefix, argv=None):
        env = dict(self.base_env, COMET_WORKER_CONCURRENCY=str(inflight),
                   COMET_AMQP_PREFETCH=str(inflight), COMET_REDIS_PREFIX=prefix)
        procs = [Proc(argv or [self.bin("comet-worker"), "-c", cfg],
                      os.path.join(self.work, f"worker-{prefix.rstrip(':')}-{i}.log"), env)
                 for i in range(n)]
        try:
            self.tool(cfg, "consumers", "--want", str(n), "--timeout-ms", "30000")
        except Exception:
            for p in procs:
                p.stop()
            raise
        return procs

    def enqueue(self, cfg, batch, tag, timeout_s):
        summary = os.path.join(self.work, f"summary-{tag}.json")
        lat = os.path.join(self.work, f"latencies-{tag}.txt")
        t = time.monotonic()
        r = subprocess.run([self.bin("comet-enqueue"), "-c", cfg, "--batch", batch, "--wait",
                            "--quiet", "--timeout", str(timeout_s), "--summary-json", summary,
                            "--latencies", lat], capture_output=True, text=True,
                           timeout=timeout_s + 60)
        wall = time.monotonic() - t
        if r.returncode not in (0, 1) or not os.path.exists(summary):
            raise RuntimeError(f"comet-enqueue rc {r.returncode}: {r.stderr.strip()[-500:]}")
        with open(summary) as f:
            s = json.load(f)
        lats = []
        statuses = {}
        with open(lat) as f:
            for line in f:
                parts = line.split()
                statuses[parts[2]] = statuses.get(parts[2], 0) + 1
                if parts[2] != "timeout":
                    lats.append(int(parts[3]))
        lats.sort()
        return s, lats, statuses, wall


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 1)) - 1))
    return sorted_vals[i]


# ---- the phases ---------------------------------------------------------------------------

def expected_rate(latency_ms, workers, inflight):
    """Only sizes a run (jobs to publish); never reported."""
    per_job_s = 0.0025 + latency_ms * 5 / 1000.0
    return min(workers * inflight / per_job_s, 1500.0)


def e2e_run(ctx, fake, cfg, latency_ms, workers, inflight):
    n = int(max(MIN_JOBS, min(MAX_JOBS, expected_rate(latency_ms, workers, inflight) * RUN_SECONDS)))
    tag = f"e2e-{latency_ms}ms-w{workers}-f{inflight}"
    ctx.tool(cfg, "purge")
    batch, counts = make_batch(ctx, fake, n, tag)
    calls0 = fake.calls()
    procs = ctx.start_workers(cfg, workers, inflight, f"bench{ctx.next_run()}:")
    others = dict(service_pids(), fake_comet=fake.proc.pid)
    try:
        cpu0 = [proc_cpu_s(p.pid) for p in procs]
        other0 = {k: proc_cpu_s(pid) for k, pid in others.items()}
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s, lats, statuses, wall = ctx.enqueue(cfg, batch, tag, timeout_s=300)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = [proc_cpu_s(p.pid) for p in procs]
        other1 = {k: proc_cpu_s(pid) for k, pid in others.items()}
        hwm = [proc_hwm_kib(p.pid) for p in procs]
    finally:
        for p in procs:
            p.stop()
    calls = fake.calls() - calls0
    done = len(lats)
    cpu = sum(cpu1) - sum(cpu0)
    row = {
        "latency_ms": latency_ms, "workers": workers, "inflight_per_process": inflight,
        "inflight_total": workers * inflight, "jobs": n, "mix": counts,
        "statuses": statuses, "seconds": s["seconds"], "jobs_per_second": s["jobs_per_second"],
        "latency_ms_p50": pct(lats, 0.50), "latency_ms_p95": pct(lats, 0.95),
        "latency_ms_p99": pct(lats, 0.99), "comet_calls": calls,
        "comet_calls_per_job": calls / done if done else None,
        "worker_cpu_seconds_per_1000_jobs": cpu / done * 1000 if done else None,
        "worker_rss_hwm_mib_max": max(hwm) / 1024.0,
    }
    if done:
        # Where the machine's CPU went during the burst, per job: the
        # pipeline's parts share these 2 cores with the fake Comet and the
        # load generator (comet-enqueue: publishes, then collects results).
        per = {"worker": cpu, **{k: other1[k] - other0[k] for k in others},
               "comet_enqueue": (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)}
        row["cpu_ms_per_job"] = {k: v / done * 1000 for k, v in per.items()}
        row["cpu_ms_per_job"]["total"] = sum(per.values()) / done * 1000
        row["cpu_busy_fraction"] = sum(per.values()) / (s["seconds"] * os.cpu_count()) if s["seconds"] else None
    if latency_ms > 0 and done and calls:
        # The in-flight bound: in-flight jobs / Comet time per job.
        row["inflight_bound_jobs_per_second"] = workers * inflight / (calls / done * latency_ms / 1000.0)
        row["ratio_inflight_bound"] = row["jobs_per_second"] / row["inflight_bound_jobs_per_second"]
    log(f"{tag}: {n} jobs, {row['jobs_per_second']:.1f} jobs/s, p50 {row['latency_ms_p50']} ms, "
        f"p99 {row['latency_ms_p99']} ms, {statuses}")
    return row


def sequential_run(ctx, fake, cfg, latency_ms):
    # The synchronous module does ~225 creates/s at 0 ms and ~7/s at 20 ms
    # here: a few seconds of work either way.
    n = 800 if latency_ms == 0 else 60
    tag = f"seq-{latency_ms}ms"
    batch, counts = make_batch(ctx, fake, n, tag)
    out = os.path.join(ctx.work, f"{tag}.json")
    ctx.tool(cfg, "sequential", "--batch", batch, "--out", out)
    with open(out) as f:
        r = json.load(f)
    r.update(latency_ms=latency_ms, mix=counts)
    log(f"{tag}: {n} jobs, {r['jobs_per_second']:.1f} jobs/s, {r['comet_calls']} calls, "
        f"{r['succeeded']} succeeded")
    # The same stream through the PHP replica of the module's calls (curl
    # handle per call), in the same run: shows the C baseline is not a
    # slower stand-in for what the module itself does.
    batch, _ = make_batch(ctx, fake, n, tag + "-php")
    php_out = os.path.join(ctx.work, f"{tag}-php.json")
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run(["php", os.path.join(here, "php-sequential.php"), "--batch", batch,
                        "--server", fake.url, "--username", ADMIN_USER, "--password-file", ctx.pwfile,
                        "--connect-timeout-ms", "2000", "--timeout-ms", "10000", "--out", php_out],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"php-sequential.php: rc {p.returncode}: {p.stderr.strip()[-500:]}")
    with open(php_out) as f:
        r["php"] = json.load(f)
    log(f"{tag}-php: {n} jobs, {r['php']['jobs_per_second']:.1f} jobs/s, "
        f"{r['php']['comet_calls']} calls, {r['php']['succeeded']} succeeded")
    return r


def ceiling_run(ctx, fake, cfg, processes, prefetch):
    tag = f"ceiling-p{processes}"
    ctx.tool(cfg, "purge")
    batch, counts = make_batch(ctx, fake, CEILING_JOBS, tag, precreate=False)
    procs = ctx.start_workers(cfg, processes, prefetch, "ceiling:",
                              argv=[ctx.bin("comet-bench"), "echo", "-c", cfg,
                                    "--prefetch", str(prefetch)])
    try:
        s, lats, statuses, wall = ctx.enqueue(cfg, batch, tag, timeout_s=120)
    finally:
        for p in procs:
            p.stop()
    r = {"processes": processes, "prefetch": prefetch, "jobs": CEILING_JOBS,
         "jobs_per_second": s["jobs_per_second"], "seconds": s["seconds"],
         "latency_ms_p50": pct(lats, 0.5), "latency_ms_p99": pct(lats, 0.99), "statuses": statuses}
    log(f"{tag}: {r['jobs_per_second']:.0f} jobs/s")
    return r


def handoff_runs(ctx, fake, cfg):
    """Hand-off with a worker consuming, Comet up, then Comet stopped."""
    out = {}
    ctx.tool(cfg, "purge")
    procs = ctx.start_workers(cfg, 1, 32, f"handoff{ctx.next_run()}:")
    try:
        for state in ("comet_up", "comet_down"):
            if state == "comet_down":
                fake.stop()
            path = os.path.join(ctx.work, f"handoff-{state}.json")
            ctx.tool(cfg, "handoff", "--url", fake.url, "--n", str(HANDOFF_JOBS), "--out", path)
            with open(path) as f:
                out[state] = json.load(f)
            log(f"handoff {state}: p50 {out[state]['p50_ms']:.2f} ms, p99 {out[state]['p99_ms']:.2f} ms")
            # The PHP module's own publisher: its default transport (php-amqp,
            # persistent connection) and the php-amqplib fallback.
            php_path = os.path.join(ctx.work, f"handoff-php-{state}.json")
            r = subprocess.run(["php", os.path.join(os.path.dirname(os.path.abspath(__file__)), "php-handoff.php"),
                                os.environ["COMET_AMQP_URL"], ctx.keyfile, "k1", fake.url,
                                str(HANDOFF_JOBS), php_path], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"php-handoff: rc {r.returncode}: {r.stderr.strip()}")
            with open(php_path) as f:
                out["php_" + state] = json.load(f)
            log(f"handoff php {state}: p50 {out['php_' + state]['p50_ms']:.2f} ms, "
                f"p99 {out['php_' + state]['p99_ms']:.2f} ms")
    finally:
        for p in procs:
            p.stop()
        ctx.tool(cfg, "purge", check=False)
    return out


# ---- report -------------------------------------------------------------------------------

def seq_rate(r):
    """The sequential baseline at one latency: the faster of C and PHP."""
    return max(r["jobs_per_second"], r.get("php", {}).get("jobs_per_second", 0))


def fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def table(res):
    lines = []
    seq = {r["latency_ms"]: r for r in res["sequential"]}
    ceil = res["broker_ceiling_jobs_per_second"]
    h = res["handoff"]
    lines.append("(a) hand-off: build + seal + sign + publish one create job, wait for its confirm "
                 f"({HANDOFF_JOBS} jobs, comet-bench handoff = comet-enqueue's library path)")
    for k in ("comet_up", "comet_down"):
        lines.append(f"    {k:<11} p50 {h[k]['p50_ms']:.3f} ms   p95 {h[k]['p95_ms']:.3f} ms   "
                     f"p99 {h[k]['p99_ms']:.3f} ms   max {h[k]['max_ms']:.3f} ms   "
                     f"(publish+confirm alone: p50 {h[k]['publish_confirm_only']['p50_ms']:.3f} ms, "
                     f"p99 {h[k]['publish_confirm_only']['p99_ms']:.3f} ms)")
    if "php_comet_up" in h:
        lines.append("    the WHMCS module's publisher (bench/php-handoff.php: seal + sign + publish with confirm "
                     "through the module's JobPublisher, one long-lived PHP process standing in for one php-fpm worker)")
        lines.append(f"    module default transport: {h['php_comet_up'].get('transport', 'amqplib')}")
        for k in ("comet_up", "comet_down"):
            x = h["php_" + k]
            for sub, label in (("ext_persistent", "php-amqp, persistent connection"),
                               ("amqplib_per_request", "php-amqplib, connection per request")):
                if sub in x:
                    y = x[sub]
                    lines.append(f"    php {k:<10} p50 {y['p50_ms']:.3f} ms   p95 {y['p95_ms']:.3f} ms   "
                                 f"p99 {y['p99_ms']:.3f} ms   max {y['max_ms']:.3f} ms   ({label})")
    lines.append("")
    lines.append("(c) sequential baseline: comet-bench sequential, the original module's Comet calls "
                 "in-process, one job at a time, a new TCP connection per call")
    for r in res["sequential"]:
        lines.append(f"    {r['latency_ms']:>2} ms Comet: {r['jobs_per_second']:8.1f} jobs/s  "
                     f"job p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                     f"({r['jobs']} jobs, {r['comet_calls'] / r['jobs']:.2f} calls/job)")
        if "php" in r:
            x = r["php"]
            lines.append(f"          PHP: {x['jobs_per_second']:8.1f} jobs/s  job p50 {x['p50_ms']:.1f} ms  "
                         f"p95 {x['p95_ms']:.1f} ms  p99 {x['p99_ms']:.1f} ms  "
                         f"({x['jobs']} jobs, {x['comet_calls'] / x['jobs']:.2f} calls/job; "
                         "bench/php-sequential.php, the same calls from PHP, curl handle per call)")
    lines.append("    xseq and the targets use the faster of the two at each latency.")
    lines.append("")
    lines.append("(d) broker ceiling: job -> result -> ack with no Comet work (comet-bench echo, "
                 "pipelined confirms), same topology")
    for r in res["ceiling"]:
        lines.append(f"    {r['processes']} process(es) x prefetch {r['prefetch']}: "
                     f"{r['jobs_per_second']:8.0f} jobs/s ({r['jobs']} jobs)")
    lines.append(f"    ceiling = {ceil:.0f} jobs/s")
    lines.append("")
    lines.append("(b)+(e) end to end: burst of N mixed jobs published at once (comet-enqueue --batch "
                 "--wait); latency = publish -> terminal result")
    hdr = (f"{'comet':>5} {'proc':>4} {'infl':>4} {'jobs':>5} {'jobs/s':>8} {'p50ms':>7} {'p95ms':>7} "
           f"{'p99ms':>7} {'xseq':>7} {'xceil':>6} {'xbound':>6} {'calls/j':>7} {'cpu s/1k':>8} {'RSS MiB':>7}")
    lines.append(hdr)
    for r in res["e2e"]:
        s = seq.get(r["latency_ms"])
        lines.append(
            f"{r['latency_ms']:>3}ms {r['workers']:>4} {r['inflight_per_process']:>4} {r['jobs']:>5} "
            f"{r['jobs_per_second']:8.1f} {fmt(r['latency_ms_p50'], 'd'):>7} "
            f"{fmt(r['latency_ms_p95'], 'd'):>7} {fmt(r['latency_ms_p99'], 'd'):>7} "
            f"{r['jobs_per_second'] / seq_rate(s) if s else 0:7.1f} "
            f"{r['jobs_per_second'] / ceil:6.2f} {fmt(r.get('ratio_inflight_bound'), '.2f'):>6} "
            f"{fmt(r['comet_calls_per_job'], '.2f'):>7} {fmt(r['worker_cpu_seconds_per_1000_jobs'], '.2f'):>8} "
            f"{r['worker_rss_hwm_mib_max']:7.1f}")
    lines.append("xseq = jobs/s / sequential at the same Comet latency; xceil = jobs/s / broker ceiling; "
                 "xbound = jobs/s / (in-flight jobs / (Comet calls per job x latency)), 20 ms only")
    lines.append("cpu s/1k = worker CPU seconds (utime+stime, all processes) per 1,000 jobs; "
                 "RSS = VmHWM of the largest worker process")
    lines.append("")
    lines.append("CPU per job by process (ms; the whole machine during the burst, 1 process x 128 in flight):")
    for r in res["e2e"]:
        c = r.get("cpu_ms_per_job")
        if c and r["workers"] == 1 and r["inflight_per_process"] == 128:
            parts = "  ".join(f"{k} {v:.3f}" for k, v in c.items() if k != "total")
            busy = r.get("cpu_busy_fraction")
            lines.append(f"    {r['latency_ms']:>2} ms Comet: total {c['total']:.3f} ms/job = {parts}; "
                         f"CPUs busy {busy * 100 if busy else 0:.0f}%")
    lines.append("")
    lines.append("targets (issue 5; reported, not asserted):")
    for t in res["targets"]:
        lines.append(f"    [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}")
    return "\n".join(lines)


def targets(res):
    out = []
    seq = {r["latency_ms"]: seq_rate(r) for r in res["sequential"]}
    ceil = res["broker_ceiling_jobs_per_second"]

    def row(lat, w, f):
        for r in res["e2e"]:
            if (r["latency_ms"], r["workers"], r["inflight_per_process"]) == (lat, w, f):
                return r
        return None

    r20 = row(20, 1, 128)
    if r20:
        b = r20.get("ratio_inflight_bound") or 0
        out.append({"target": "20 ms, 1 process, 128 in flight: >= 90% of the in-flight bound",
                    "measured": f"{b * 100:.0f}% ({r20['jobs_per_second']:.1f} of "
                                f"{r20.get('inflight_bound_jobs_per_second', 0):.1f} jobs/s)",
                    "met": b >= 0.90})
        x = r20["jobs_per_second"] / seq[20]
        out.append({"target": "20 ms, 1 process, 128 in flight: >= 100x sequential",
                    "measured": f"{x:.1f}x ({r20['jobs_per_second']:.1f} vs {seq[20]:.1f} jobs/s)",
                    "met": x >= 100})
    best0 = max((r for r in res["e2e"] if r["latency_ms"] == 0), key=lambda r: r["jobs_per_second"],
                default=None)
    if best0:
        where = f"{best0['workers']} proc x {best0['inflight_per_process']}"
        x = best0["jobs_per_second"] / seq[0]
        out.append({"target": "0 ms: >= 10x sequential",
                    "measured": f"{x:.1f}x ({best0['jobs_per_second']:.0f} vs {seq[0]:.0f} jobs/s, best: {where})",
                    "met": x >= 10})
        c = best0["jobs_per_second"] / ceil
        out.append({"target": "0 ms: >= 25% of the broker ceiling",
                    "measured": f"{c * 100:.0f}% ({best0['jobs_per_second']:.0f} of {ceil:.0f} jobs/s, best: {where})",
                    "met": c >= 0.25})
    for k in ("comet_up", "comet_down"):
        p = res["handoff"][k]["p99_ms"]
        out.append({"target": f"hand-off p99 <= 5 ms ({k.replace('_', ' ')})",
                    "measured": f"{p:.2f} ms", "met": p <= 5})
        if "php_" + k in res["handoff"]:
            x = res["handoff"]["php_" + k]
            p = x["p99_ms"]
            out.append({"target": f"hand-off p99 <= 5 ms, PHP module publisher ({k.replace('_', ' ')})",
                        "measured": f"{p:.2f} ms ({x.get('transport', 'amqplib')}, the module's default)",
                        "met": p <= 5})
    rss = [r["worker_rss_hwm_mib_max"] for r in res["e2e"] if r["inflight_per_process"] == 128]
    if rss:
        out.append({"target": "worker RSS <= 32 MiB at 128 in flight",
                    "measured": f"{max(rss):.1f} MiB (largest of {len(rss)} runs)", "met": max(rss) <= 32})
    return out


def write_plot_data(res, outdir, stem):
    """TSV files for bench/plot.gp: one block per (latency, workers)."""
    path = os.path.join(outdir, f"{stem}.dat")
    with open(path, "w") as f:
        for lat in LATENCIES_MS:
            for w in WORKERS:
                f.write(f"# latency {lat} workers {w}\n")
                for r in res["e2e"]:
                    if r["latency_ms"] == lat and r["workers"] == w:
                        f.write(f"{r['inflight_per_process']} {r['inflight_total']} {r['jobs_per_second']:.2f} "
                                f"{r['latency_ms_p50']} {r['latency_ms_p95']} {r['latency_ms_p99']}\n")
                f.write("\n\n")
    return path


def only_points(args):
    """Runs just the named end to end points and prints their rows as JSON
    (for before/after measurements of one configuration)."""
    ctx = Ctx(args)
    points = [tuple(int(x) for x in p.split(":")) for p in args.only.split(",")]
    fakes = {}
    try:
        for lat, w, f in points:
            if lat not in fakes:
                fakes[lat] = Fake(ctx, lat)
            fake = fakes[lat]
            row = e2e_run(ctx, fake, ctx.config_for(fake.url), lat, w, f)
            print(json.dumps(row), flush=True)
    finally:
        for fake in fakes.values():
            fake.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", default="bin")
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    ap.add_argument("--only", help="profiling aid: only these end to end points, "
                    "LAT:PROCS:INFLIGHT[,...]; no table, no results written")
    args = ap.parse_args()
    if args.only:
        return only_points(args)
    global WORKERS, INFLIGHT, RUN_SECONDS
    if args.quick:
        INFLIGHT, RUN_SECONDS = [1, 32], 1.5
    os.makedirs(args.results, exist_ok=True)
    ctx = Ctx(args)
    res = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
           "mix": dict(MIX), "e2e": [], "sequential": [], "ceiling": []}

    for lat in LATENCIES_MS:
        fake = Fake(ctx, lat)
        cfg = ctx.config_for(fake.url)
        try:
            if lat == 0:
                for procs in (1, 4):
                    res["ceiling"].append(ceiling_run(ctx, fake, cfg, procs, 128))
            res["sequential"].append(sequential_run(ctx, fake, cfg, lat))
            for w in WORKERS:
                for f in INFLIGHT:
                    res["e2e"].append(e2e_run(ctx, fake, cfg, lat, w, f))
            if lat == 0:
                res["handoff"] = handoff_runs(ctx, fake, cfg)  # stops the fake
        finally:
            fake.stop()
    res["broker_ceiling_jobs_per_second"] = max(r["jobs_per_second"] for r in res["ceiling"])
    res["targets"] = targets(res)
    res["seconds"] = time.monotonic() - T0

    stem = "bench-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    text = table(res)
    res["table"] = text.split("\n")
    with open(os.path.join(args.results, f"{stem}.json"), "w") as f:
        json.dump(res, f, indent=2)
    dat = write_plot_data(res, args.results, stem)
    png = os.path.join(args.results, f"{stem}.png")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["gnuplot", "-e", f"datafile='{dat}'; outfile='{png}'; "
                    f"ceiling={res['broker_ceiling_jobs_per_second']:.1f}; "
                    f"seq0={seq_rate([r for r in res['sequential'] if r['latency_ms'] == 0][0]):.2f}; "
                    f"seq20={seq_rate([r for r in res['sequential'] if r['latency_ms'] == 20][0]):.2f}",
                    os.path.join(here, "plot.gp")], check=True)
    for name in ("latest.json", "latest.png", "latest.dat"):
        link = os.path.join(args.results, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"{stem}.{name.split('.')[1]}", link)
    print(text)
    print(f"\nresults: {args.results}/{stem}.json, plot: {png} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
