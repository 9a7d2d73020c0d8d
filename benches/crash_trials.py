#!/usr/bin/env python3
"""Crash trials for Vigil: load, SIGKILL at a random moment, restart, count.

Each run starts from the data directory the previous run left behind (one directory for the
whole trial, so every recovery replays a WAL and a Parquet store that keep growing, as in a
deployment that crashes now and then):

1. `vigil serve` is running (the first run starts it; later runs use the server the previous
   run restarted). N sender threads POST OTLP/HTTP JSON logs requests to /v1/logs, 256-512
   records each. Every record carries `trial.run` (r07), `trial.req` (r07-c3-q00012, one per
   request) and `trial.id` (r07-c3-q00012-i045, one per record). A request counts as
   acknowledged only on HTTP 200 without a partial success; 429/503 are not acknowledged and
   the sender continues after Retry-After; a connection error ends the sender.
2. After a random delay (seeded), the server gets SIGKILL while requests are in flight.
3. The server is restarted on the same data directory. Recovery time is measured from process
   start to /readyz answering 200 (Vigil is ready once the replayed WAL is compacted again),
   and to the first successful query of the `logs` table.
4. Through the query API: per request of this run, rows and distinct `trial.id`s stored. An
   acknowledged request must have all its records, each once (lost = acknowledged records not
   stored; duplicates = rows - distinct ids). Stored records of requests that were not
   acknowledged (in flight at the kill) are allowed and reported. Then, across all runs so
   far, rows and distinct ids per run: no duplicates anywhere, and no earlier run's count may
   change after a later crash.

After the last run the server is stopped with SIGTERM and the data directory is read offline
with `vigil query --data-dir`, which must give the same counts.

Exit status: 0 if no acknowledged record was lost and nothing was duplicated, 1 otherwise,
2 if the trial could not run (server did not start, query failed, ...).

Usage (Python 3.11 standard library only):

    cargo build --release -p vigil-collector --bin vigil
    python3 benches/crash_trials.py --vigil target/release/vigil --runs 20 --seed 1 --concurrency 6

The server's config is written to the work directory: listeners on 127.0.0.1 port 0, auth off,
wal_sync = "always" (the default), storage.segment_max_age = --segment-max-age (500ms, so that
kills also land during compactions), everything else at its default. --json prints every run
and the summary as JSON; --work-dir keeps the data directory and the server logs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

SERVICE = "crash-trial"


class TrialError(Exception):
    """The trial itself could not proceed (not a durability finding)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The server


def config_text(data_dir: str, segment_max_age: str, query_timeout: str) -> str:
    # Loopback listeners on ephemeral ports, auth off (no keys_file, as in the e2e harness),
    # the default WAL policy (wal_sync = "always": fsync before acknowledging), shipped
    # redaction and detector. Shorter segments than the 60 s default so that compactions run,
    # and are interrupted, during the load as well as after each restart.
    return f"""version = 1

[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
api_addr = "127.0.0.1:0"
shutdown_timeout = "30s"

[storage]
data_dir = {json.dumps(data_dir)}
wal_sync = "always"
segment_max_age = {json.dumps(segment_max_age)}

[query]
timeout = {json.dumps(query_timeout)}
"""


@dataclass
class Server:
    proc: subprocess.Popen
    http: tuple[str, int]
    api: tuple[str, int]
    grpc: tuple[str, int]
    log_path: str
    started: float  # time.monotonic() just before spawning
    ready_s: float = 0.0  # spawn -> /readyz 200
    query_s: float = 0.0  # spawn -> first successful query of `logs`

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def http_get_status(addr: tuple[str, int], path: str, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def query_api(addr: tuple[str, int], sql: str, timeout: float = 600.0) -> dict:
    body = json.dumps({"sql": sql, "format": "json"}).encode()
    req = urllib.request.Request(
        f"http://{addr[0]}:{addr[1]}/api/v1/query",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise TrialError(f"query failed ({e.code}): {e.read().decode(errors='replace')}\n{sql}")


def start_server(vigil: str, config: str, work: str, tag: str, timeout: float) -> Server:
    addr_file = os.path.join(work, f"addrs-{tag}.json")
    log_path = os.path.join(work, f"vigil-{tag}.log")
    if os.path.exists(addr_file):
        os.remove(addr_file)
    env = dict(os.environ, VIGIL_LOG=os.environ.get("VIGIL_LOG", "info"))
    started = time.monotonic()
    proc = subprocess.Popen(
        [vigil, "serve", "--config", config, "--addr-file", addr_file],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),
        env=env,
    )
    deadline = started + timeout

    def check_alive() -> None:
        if proc.poll() is not None:
            raise TrialError(f"vigil exited during start-up ({proc.returncode}):\n{tail(log_path)}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TrialError(f"vigil not ready within {timeout}s:\n{tail(log_path)}")

    addrs = None
    while addrs is None:
        try:
            with open(addr_file, encoding="utf-8") as f:
                addrs = json.load(f)
        except (OSError, ValueError):
            check_alive()
            time.sleep(0.005)
    server = Server(
        proc=proc,
        http=parse_addr(addrs["http"]),
        api=parse_addr(addrs["api"]),
        grpc=parse_addr(addrs["grpc"]),
        log_path=log_path,
        started=started,
    )
    while http_get_status(server.api, "/readyz") != 200:
        check_alive()
        time.sleep(0.01)
    server.ready_s = time.monotonic() - started
    while True:
        try:
            query_api(server.api, "SELECT count(*) FROM logs", timeout=max(1.0, deadline - time.monotonic()))
            break
        except (TrialError, OSError):
            check_alive()
            time.sleep(0.01)
    server.query_s = time.monotonic() - started
    return server


def parse_addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def stop_term(server: Server, timeout: float = 120.0) -> int:
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise TrialError(f"vigil did not exit within {timeout}s of SIGTERM")


# ---------------------------------------------------------------------------------------------
# The load


RECORD = (
    '{{"timeUnixNano":"{t}","severityNumber":9,"severityText":"INFO",'
    '"body":{{"stringValue":"crash-trial record {id}"}},'
    '"attributes":['
    '{{"key":"trial.run","value":{{"stringValue":"{run}"}}}},'
    '{{"key":"trial.req","value":{{"stringValue":"{req}"}}}},'
    '{{"key":"trial.id","value":{{"stringValue":"{id}"}}}},'
    '{{"key":"http.route","value":{{"stringValue":"/api/orders"}}}},'
    '{{"key":"http.response.status_code","value":{{"intValue":"200"}}}}]}}'
)
HEAD = (
    '{"resourceLogs":[{"resource":{"attributes":['
    '{"key":"service.name","value":{"stringValue":"' + SERVICE + '"}},'
    '{"key":"host.name","value":{"stringValue":"trial-host"}}]},'
    '"scopeLogs":[{"scope":{"name":"crash-trials"},"logRecords":['
)
TAIL = "]}]}]}"


def fully_acknowledged(body: bytes) -> bool:
    """Whether a 200 answer to an OTLP/HTTP JSON logs export acknowledges every record.

    OTLP: rejectedLogRecords > 0 means some records were refused (which ones is not said), so
    the request does not count as acknowledged; a message alone is a warning."""
    try:
        ack = json.loads(body or b"{}")
    except ValueError:
        return False
    partial = ack.get("partialSuccess") or {}
    return int(partial.get("rejectedLogRecords", 0) or 0) == 0


def request_body(run: str, req: str, n: int) -> bytes:
    t0 = time.time_ns()
    records = ",".join(
        RECORD.format(t=t0 + i, id=f"{req}-i{i:03d}", run=run, req=req) for i in range(n)
    )
    return (HEAD + records + TAIL).encode()


@dataclass
class SenderResult:
    acked: dict[str, int] = field(default_factory=dict)  # request id -> records
    sent: dict[str, int] = field(default_factory=dict)  # every request attempted
    throttled: int = 0
    partial: int = 0
    other_status: int = 0
    cut: str | None = None  # request in flight when the connection failed


def sender(
    http_addr: tuple[str, int],
    run: str,
    client: int,
    rng: random.Random,
    min_records: int,
    max_records: int,
    stop: threading.Event,
    out: SenderResult,
) -> None:
    q = 0
    while not stop.is_set():
        q += 1
        req = f"{run}-c{client}-q{q:05d}"
        n = rng.randint(min_records, max_records)
        body = request_body(run, req, n)
        out.sent[req] = n
        conn = http.client.HTTPConnection(*http_addr, timeout=120)
        try:
            conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            out.cut = req  # the server is gone (or going): not acknowledged
            return
        finally:
            conn.close()
        if resp.status == 200:
            if fully_acknowledged(data):
                out.acked[req] = n
            else:
                out.partial += 1
        elif resp.status in (429, 503):
            out.throttled += 1
            try:
                wait = float(resp.getheader("Retry-After") or 1)
            except ValueError:
                wait = 1.0
            stop.wait(min(wait, 1.0))
        else:
            out.other_status += 1
            stop.wait(0.1)


# ---------------------------------------------------------------------------------------------
# Counting what was stored


def stored_per_request(server: Server, run: str) -> dict[str, tuple[int, int]]:
    """request id -> (rows, distinct trial.id) for one run."""
    answer = query_api(
        server.api,
        "SELECT attributes['trial.req'] AS req, count(*) AS n, "
        "count(DISTINCT attributes['trial.id']) AS d FROM logs "
        f"WHERE service = '{SERVICE}' AND attributes['trial.run'] = '{run}' GROUP BY 1",
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in answer["rows"]}


RUN_TOTALS_SQL = (
    "SELECT attributes['trial.run'] AS run, count(*) AS n, "
    "count(DISTINCT attributes['trial.id']) AS d FROM logs "
    f"WHERE service = '{SERVICE}' GROUP BY 1 ORDER BY 1"
)

# Ids the redaction stage (or anything else) rewrote: each id must still start with its request.
MALFORMED_SQL = (
    "SELECT count(*) FROM logs "
    f"WHERE service = '{SERVICE}' AND (attributes['trial.id'] IS NULL "
    "OR attributes['trial.req'] IS NULL "
    "OR NOT starts_with(attributes['trial.id'], concat(attributes['trial.req'], '-i')) "
    "OR body <> concat('crash-trial record ', attributes['trial.id']))"
)


@dataclass
class Reconciliation:
    """What was stored of a run's requests, against what was sent and acknowledged."""

    lost: int = 0  # acknowledged records with no stored row
    lost_examples: list[str] = field(default_factory=list)
    dup: int = 0  # stored rows beyond one per distinct id
    dup_examples: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # stored requests never sent
    stored_unacked_records: int = 0  # stored although never acknowledged (allowed)
    stored_unacked_requests: int = 0
    torn_requests: list[str] = field(default_factory=list)  # unacknowledged and stored in part


def reconcile(
    acked: dict[str, int], sent: dict[str, int], stored: dict[str, tuple[int, int]]
) -> Reconciliation:
    """`acked` and `sent`: records per request id; `stored`: (rows, distinct ids) per request."""
    rec = Reconciliation()
    for req, n in acked.items():
        _, distinct = stored.get(req, (0, 0))
        if distinct < n:
            rec.lost += n - distinct
            if len(rec.lost_examples) < 5:
                rec.lost_examples.append(f"{req}: {distinct}/{n} ids stored")
    for req, (rows, distinct) in stored.items():
        if rows > distinct:
            rec.dup += rows - distinct
            if len(rec.dup_examples) < 5:
                rec.dup_examples.append(f"{req}: {rows} rows, {distinct} ids")
        if req not in sent:
            rec.unknown.append(req)
        elif req not in acked:
            rec.stored_unacked_records += distinct
            rec.stored_unacked_requests += 1
            if distinct != sent[req]:
                rec.torn_requests.append(f"{req}: {distinct}/{sent[req]} records")
    return rec


def run_totals(rows: list) -> dict[str, tuple[int, int]]:
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def offline_query(vigil: str, data_dir: str, sql: str) -> list:
    out = subprocess.run(
        [vigil, "query", "--data-dir", data_dir, "--format", "json", sql],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise TrialError(f"vigil query --data-dir failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)["rows"]


def dir_size(path: str) -> tuple[int, int]:
    """(bytes, files) under path."""
    total = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
                files += 1
            except OSError:
                pass
    return total, files


def file_stems(path: str, suffix: str) -> list[str]:
    """Names (without suffix) of the files under path that end in suffix."""
    return [
        n[: -len(suffix)]
        for _, _, names in os.walk(path)
        for n in names
        if n.endswith(suffix)
    ]


REPLAYED = re.compile(r"replayed wal segment.*?rows=(\d+)")


# ---------------------------------------------------------------------------------------------
# The trial


def one_run(
    args: argparse.Namespace,
    number: int,
    server: Server,
    rng: random.Random,
    config: str,
    work: str,
    data_dir: str,
    history: dict[str, tuple[int, int]],
) -> tuple[dict, Server]:
    run = f"r{number:02d}"
    kill_after = rng.uniform(args.min_kill, args.max_kill)
    stop = threading.Event()
    results = [SenderResult() for _ in range(args.concurrency)]
    threads = [
        threading.Thread(
            target=sender,
            args=(
                server.http,
                run,
                c,
                random.Random(f"{args.seed}-{run}-c{c}"),
                args.min_records,
                args.max_records,
                stop,
                results[c],
            ),
            daemon=True,
        )
        for c in range(args.concurrency)
    ]
    load_start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(kill_after)
    server.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic() - load_start
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=180)
        if t.is_alive():
            raise TrialError(f"{run}: a sender did not stop after the kill")
    load_s = time.monotonic() - load_start

    acked: dict[str, int] = {}
    sent: dict[str, int] = {}
    for r in results:
        acked.update(r.acked)
        sent.update(r.sent)
    cut = [r.cut for r in results if r.cut]

    wal_bytes, wal_files = dir_size(os.path.join(data_dir, "wal"))
    pq_bytes, pq_files = dir_size(os.path.join(data_dir, "parquet"))
    # A compaction the kill interrupted leaves a `.tmp` Parquet file (removed at start), or a
    # finished file whose WAL segment is still there (removed at start, the segment replayed).
    wal_ids = set(file_stems(os.path.join(data_dir, "wal", "logs"), ".wal"))
    pq_tmp = len(file_stems(os.path.join(data_dir, "parquet"), ".tmp"))
    pq_done_wal_kept = len(wal_ids & set(file_stems(os.path.join(data_dir, "parquet"), ".parquet")))

    # Restart on the same directory: the recovery being measured.
    restarted = start_server(args.vigil, config, work, f"{run}-restart", args.start_timeout)
    replayed_rows = sum(int(m) for m in REPLAYED.findall(restarted.log_text()))
    removed_outputs = restarted.log_text().count("removing output of interrupted compaction")
    torn_segments = restarted.log_text().count("ends in a torn or corrupt frame")

    stored = stored_per_request(restarted, run)
    rec = reconcile(acked, sent, stored)
    lost, lost_examples, dup, dup_examples = rec.lost, rec.lost_examples, rec.dup, rec.dup_examples
    torn_requests, unknown = rec.torn_requests, rec.unknown
    stored_unacked_records, stored_unacked_requests = rec.stored_unacked_records, rec.stored_unacked_requests

    # Every run so far: no duplicates, and no earlier run changed after this crash.
    totals = run_totals(query_api(restarted.api, RUN_TOTALS_SQL)["rows"])
    total_dup = sum(n - d for n, d in totals.values())
    changed = [
        f"{r}: {history[r]} -> {totals.get(r)}"
        for r in history
        if totals.get(r) != history[r]
    ]
    history[run] = totals.get(run, (0, 0))

    acked_records = sum(acked.values())
    sent_records = sum(sent.values())
    row = {
        "run": run,
        "kill_after_s": round(killed_at, 3),
        "requests_sent": len(sent),
        "requests_acked": len(acked),
        "requests_in_flight_at_kill": len(cut),
        "requests_throttled": sum(r.throttled for r in results),
        "requests_partial": sum(r.partial for r in results),
        "requests_other_status": sum(r.other_status for r in results),
        "records_sent": sent_records,
        "records_acked": acked_records,
        "records_stored": sum(d for _, d in stored.values()),
        "records_lost": lost,
        "records_duplicated": dup,
        "records_stored_unacked": stored_unacked_records,
        "requests_stored_unacked": stored_unacked_requests,
        "torn_requests": torn_requests,
        "unknown_requests": unknown[:5],
        "lost_examples": lost_examples,
        "duplicate_examples": dup_examples,
        "earlier_runs_changed": changed,
        "all_runs_rows": sum(n for n, _ in totals.values()),
        "all_runs_duplicates": total_dup,
        "offered_records_per_s": round(sent_records / killed_at, 1) if killed_at else 0.0,
        "acked_records_per_s": round(acked_records / killed_at, 1) if killed_at else 0.0,
        "load_s": round(load_s, 3),
        "wal_bytes_at_kill": wal_bytes,
        "wal_segments_at_kill": wal_files,
        "parquet_bytes_at_kill": pq_bytes,
        "parquet_files_at_kill": pq_files,
        "kill_during_compaction": "yes" if pq_tmp or pq_done_wal_kept else "no",
        "parquet_tmp_at_kill": pq_tmp,
        "parquet_done_wal_kept_at_kill": pq_done_wal_kept,
        "replayed_rows": replayed_rows,
        "interrupted_compactions_removed": removed_outputs,
        "torn_wal_segments": torn_segments,
        "recovery_ready_s": round(restarted.ready_s, 3),
        "recovery_first_query_s": round(restarted.query_s, 3),
        "restart_log": restarted.log_path,
    }
    return row, restarted


TABLE_COLUMNS = [
    ("run", "run", "{}"),
    ("kill s", "kill_after_s", "{:.2f}"),
    ("sent", "records_sent", "{}"),
    ("acked", "records_acked", "{}"),
    ("stored", "records_stored", "{}"),
    ("lost", "records_lost", "{}"),
    ("dup", "records_duplicated", "{}"),
    ("unacked stored", "records_stored_unacked", "{}"),
    ("cut", "requests_in_flight_at_kill", "{}"),
    ("429", "requests_throttled", "{}"),
    ("in compaction", "kill_during_compaction", "{}"),
    ("replayed", "replayed_rows", "{}"),
    ("ready s", "recovery_ready_s", "{:.3f}"),
    ("query s", "recovery_first_query_s", "{:.3f}"),
    ("offered rec/s", "offered_records_per_s", "{:.0f}"),
]


def format_table(rows: list[dict]) -> str:
    cells = [[h for h, _, _ in TABLE_COLUMNS]]
    for r in rows:
        cells.append([fmt.format(r[k]) for _, k, fmt in TABLE_COLUMNS])
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(v.rjust(w) for v, w in zip(c, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(rows: list[dict], final: dict) -> dict:
    ready = [r["recovery_ready_s"] for r in rows]
    query = [r["recovery_first_query_s"] for r in rows]
    offered = [r["offered_records_per_s"] for r in rows]
    return {
        "runs": len(rows),
        "records_sent": sum(r["records_sent"] for r in rows),
        "records_acked": sum(r["records_acked"] for r in rows),
        "records_stored": sum(r["records_stored"] for r in rows),
        "records_lost": sum(r["records_lost"] for r in rows),
        "records_duplicated": max(
            sum(r["records_duplicated"] for r in rows),
            rows[-1]["all_runs_duplicates"] if rows else 0,
            final.get("duplicates", 0),
        ),
        "records_stored_unacked": sum(r["records_stored_unacked"] for r in rows),
        "requests_in_flight_at_kill": sum(r["requests_in_flight_at_kill"] for r in rows),
        "torn_requests": sum(len(r["torn_requests"]) for r in rows),
        "earlier_runs_changed": sum(len(r["earlier_runs_changed"]) for r in rows),
        "replayed_rows": sum(r["replayed_rows"] for r in rows),
        "interrupted_compactions_removed": sum(r["interrupted_compactions_removed"] for r in rows),
        "kills_during_compaction": sum(
            1 for r in rows if r["parquet_tmp_at_kill"] or r["parquet_done_wal_kept_at_kill"]
        ),
        "torn_wal_segments": sum(r["torn_wal_segments"] for r in rows),
        "recovery_ready_s": stats(ready),
        "recovery_first_query_s": stats(query),
        "offered_records_per_s": stats(offered),
        **final,
    }


def stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def format_summary(s: dict) -> str:
    def mmm(d: dict, unit: str = "", f: str = "{:.3f}") -> str:
        return " / ".join(f.format(d[k]) for k in ("min", "median", "max")) + unit

    lines = [
        f"runs                          {s['runs']}",
        f"records sent                  {s['records_sent']}",
        f"records acknowledged          {s['records_acked']}",
        f"records stored (trial runs)   {s['records_stored']}",
        f"acknowledged records lost     {s['records_lost']}",
        f"duplicated records            {s['records_duplicated']}",
        f"stored but unacknowledged     {s['records_stored_unacked']} "
        f"(requests in flight at the kills: {s['requests_in_flight_at_kill']}, "
        f"stored partially: {s['torn_requests']})",
        f"earlier runs changed later    {s['earlier_runs_changed']}",
        f"rows replayed from the WAL    {s['replayed_rows']} "
        f"(interrupted compaction outputs removed: {s['interrupted_compactions_removed']}, "
        f"torn WAL tails: {s['torn_wal_segments']})",
        f"kills during a compaction     {s['kills_during_compaction']} "
        "(a .tmp Parquet file, or a finished one whose WAL segment was still there)",
        f"recovery to /readyz           {mmm(s['recovery_ready_s'], ' s')}  (min / median / max)",
        f"recovery to first query       {mmm(s['recovery_first_query_s'], ' s')}",
        f"first start (empty directory) {s.get('first_start_ready_s', 0):.3f} s to /readyz",
        f"offered load                  {mmm(s['offered_records_per_s'], ' records/s', '{:.0f}')}",
    ]
    if "offline_rows" in s:
        lines.append(
            f"offline check (SIGTERM, vigil query --data-dir): {s['offline_rows']} rows, "
            f"{s['offline_distinct_ids']} distinct ids, matches the server: {s['offline_matches']}"
        )
    if "malformed_ids" in s:
        lines.append(f"ids rewritten in storage      {s['malformed_ids']}")
    if "data_dir_bytes" in s:
        lines.append(
            f"data directory at the end     {s['data_dir_bytes'] / 2**20:.1f} MiB "
            f"({s['parquet_files']} Parquet files, {s['wal_segments']} WAL segments)"
        )
    lines.append(f"verdict                       {'PASS' if s['pass'] else 'FAIL'}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vigil", required=True, help="path of the vigil binary")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8, help="sender threads")
    p.add_argument("--min-records", type=int, default=256, help="records per request, at least")
    p.add_argument("--max-records", type=int, default=512, help="records per request, at most")
    p.add_argument("--min-kill", type=float, default=0.5, help="SIGKILL this many seconds into the load, at least")
    p.add_argument("--max-kill", type=float, default=5.0, help="... at most")
    p.add_argument("--segment-max-age", default="500ms", help="storage.segment_max_age of the server")
    p.add_argument("--query-timeout", default="300s", help="query.timeout of the server")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds a (re)start may take")
    p.add_argument("--work-dir", help="keep config, logs and data here (default: a temporary directory, removed on success)")
    p.add_argument("--json", action="store_true", help="print the runs and the summary as JSON")
    args = p.parse_args()
    if not (0 < args.min_records <= args.max_records <= 999):
        p.error("need 0 < --min-records <= --max-records <= 999")
    if not (0 < args.min_kill <= args.max_kill):
        p.error("need 0 < --min-kill <= --max-kill")

    work = args.work_dir or tempfile.mkdtemp(prefix="vigil-crash-trials-")
    os.makedirs(work, exist_ok=True)
    data_dir = os.path.join(work, "data")
    if os.path.exists(data_dir) and os.listdir(data_dir):
        p.error(f"{data_dir} is not empty: give a fresh --work-dir")
    config = os.path.join(work, "vigil.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(config_text(data_dir, args.segment_max_age, args.query_timeout))

    rng = random.Random(args.seed)
    rows: list[dict] = []
    history: dict[str, tuple[int, int]] = {}
    final: dict = {}
    server: Server | None = None
    ok = False
    try:
        server = start_server(args.vigil, config, work, "r00-start", args.start_timeout)
        log(f"vigil {args.vigil} on {data_dir}: first start ready in {server.ready_s:.3f}s")
        final["first_start_ready_s"] = round(server.ready_s, 3)
        for number in range(1, args.runs + 1):
            row, server = one_run(args, number, server, rng, config, work, data_dir, history)
            rows.append(row)
            log(
                f"{row['run']}: killed at {row['kill_after_s']:.2f}s, acked {row['records_acked']}, "
                f"stored {row['records_stored']}, lost {row['records_lost']}, "
                f"dup {row['records_duplicated']} (all runs {row['all_runs_duplicates']}), "
                f"replayed {row['replayed_rows']} rows, ready in {row['recovery_ready_s']:.3f}s"
                + (f", EARLIER RUNS CHANGED {row['earlier_runs_changed']}" if row["earlier_runs_changed"] else "")
                + (f", LOST e.g. {row['lost_examples']}" if row["lost_examples"] else "")
                + (f", DUPLICATED e.g. {row['duplicate_examples']}" if row["duplicate_examples"] else "")
            )

        final["malformed_ids"] = int(query_api(server.api, MALFORMED_SQL)["rows"][0][0])
        online = run_totals(query_api(server.api, RUN_TOTALS_SQL)["rows"])
        code = stop_term(server)
        final["sigterm_exit_code"] = code
        offline = run_totals(offline_query(args.vigil, data_dir, RUN_TOTALS_SQL))
        final["offline_rows"] = sum(n for n, _ in offline.values())
        final["offline_distinct_ids"] = sum(d for _, d in offline.values())
        final["offline_matches"] = offline == online == history
        final["duplicates"] = sum(n - d for n, d in offline.values())
        size, _ = dir_size(data_dir)
        final["data_dir_bytes"] = size
        final["parquet_files"] = sum(
            1 for _, _, names in os.walk(os.path.join(data_dir, "parquet")) for n in names if n.endswith(".parquet")
        )
        final["wal_segments"] = sum(
            1 for _, _, names in os.walk(os.path.join(data_dir, "wal")) for n in names if n.endswith(".wal")
        )
    except TrialError as e:
        log(f"trial error: {e}")
        if server and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        log(f"work directory kept: {work}")
        return 2
    finally:
        if server and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()

    summary = summarize(rows, final)
    summary["pass"] = (
        summary["records_lost"] == 0
        and summary["records_duplicated"] == 0
        and summary["earlier_runs_changed"] == 0
        and final.get("offline_matches", False)
        and final.get("malformed_ids", 1) == 0
        and final.get("sigterm_exit_code") == 0
    )
    ok = summary["pass"]
    settings = {
        k: getattr(args, k)
        for k in (
            "runs", "seed", "concurrency", "min_records", "max_records",
            "min_kill", "max_kill", "segment_max_age", "query_timeout",
        )
    }
    if args.json:
        print(json.dumps({"vigil": args.vigil, "settings": settings, "runs": rows, "summary": summary}, indent=2))
    else:
        print(format_table(rows))
        print()
        print(format_summary(summary))
    if ok and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    elif not args.work_dir:
        log(f"work directory kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
