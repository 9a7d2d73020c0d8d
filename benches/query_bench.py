#!/usr/bin/env python3
"""Query benchmark: Vigil's SQL against DuckDB reading Vigil's own Parquet files.

The question (from the issue): with 10M log records stored, is each of a set of analyst
queries answered by Vigil no slower than by DuckDB reading the same Parquet files?

1. Load (skipped when --work-dir already holds a store loaded with the same parameters):
   a `vigil serve` of its own (127.0.0.1, port 0, auth off, defaults otherwise, retention long
   enough that the store is kept between runs) gets --log-records log records and --spans
   spans from `vigil-loadgen`, spread over --hours complete UTC hours that end at the last full
   hour before the first run. One load run per hour and signal: `--start-time` at the hour,
   `--time-spread 1h`, a seed of its own, and every request distinct (`--distinct-requests`
   equal to `--requests`), so records arrive in time order as they would from live services,
   no two records are copies, and each hour's Parquet partition holds that hour's share. The
   load generator sends its first request once more to warm up, so each run stores 512
   records more than it was asked for; the counts below are what was stored.
   The server is then stopped with SIGTERM, which compacts every WAL segment to Parquet.
2. Vigil is started again on the store (no ingest from here on), and DuckDB, installed from
   PyPI into a virtualenv of the benchmark's own (--venv), gets views `logs` and `spans` over
   `read_parquet('<data>/parquet/signal=<table>/*/*/*.parquet')`. The row counts seen through
   both must match, which also shows that nothing was left in the WAL.
3. Each query runs once on both engines untimed (warm caches, and the answers are compared),
   then --runs times on each, alternating engines and which goes first. Vigil is timed end to
   end through `POST /api/v1/query` (JSON answer, read and parsed by this script, one kept-alive
   connection); DuckDB through its Python API (`execute(...).fetchall()`), with `threads` set
   to Vigil's `[query] threads` (2 by default, which is also this machine's core count).
   The median decides the goal (Vigil <= DuckDB); the best run is reported too.
4. With --cli, the server is stopped and each query is also timed through `vigil query
   --data-dir` (a new process per query: start, catalog, plan, run, print), for reference.

The queries use the same SQL text on both engines (only timestamps are written as literals):
count by service over the whole day, top source addresses of 401s in one hour, a trace looked up
by id in logs and in spans, one user's latest requests and their count per service (an attribute filter), and p95 latency
per service from server spans and from the access logs' `http.server.request.duration`.
Attribute access is `attributes['key']` on the `map<string,string>` column in both engines.
Source addresses are pseudonyms (the redactor hashes IPv4 addresses before storage).

Usage (Python 3.11 standard library; DuckDB goes into the virtualenv):

    python3 benches/query_bench.py                          # builds vigil and vigil-loadgen
    python3 benches/query_bench.py --vigil target/release/vigil \\
        --loadgen target/release/vigil-loadgen --work-dir ~/.cache/vigil-query-bench

The store is kept in --work-dir/data; a rerun with the same load parameters skips loading.
--reload starts the store over. --json FILE writes every measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_trials as ct  # noqa: E402  (server start and stop)

REPO = Path(__file__).resolve().parent.parent
RECORDS_PER_REQUEST = 512  # vigil-loadgen's default request size
HOUR = 3600
# Marks the re-executed process running inside the virtualenv (where duckdb is importable).
IN_VENV = "VIGIL_QUERY_BENCH_IN_VENV"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """The benchmark could not run (not a finding about either engine)."""


# ---------------------------------------------------------------------------------------------
# Setup: binaries and DuckDB


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def binaries(args: argparse.Namespace) -> tuple[str, str]:
    if args.vigil and args.loadgen:
        return args.vigil, args.loadgen
    if args.vigil or args.loadgen:
        raise BenchError("give both --vigil and --loadgen, or neither to build them")
    cmd = [
        "cargo", "build", "--release",
        "-p", "vigil-collector", "--bin", "vigil",
        "-p", "vigil-benches", "--bin", "vigil-loadgen",
    ]
    log(f"building: {' '.join(cmd)}")
    subprocess.run(cmd, cwd=REPO, check=True)
    release = target_dir() / "release"
    return str(release / "vigil"), str(release / "vigil-loadgen")


def ensure_venv(args: argparse.Namespace) -> None:
    """Re-executes this script inside a virtualenv that has duckdb (created on first use)."""
    if os.environ.get(IN_VENV):
        return
    venv = Path(args.venv).expanduser()
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating virtualenv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import duckdb, pytz"], capture_output=True
    )
    if probe.returncode != 0:
        # pytz: DuckDB needs it to hand TIMESTAMPTZ values to Python.
        log(f"installing {args.duckdb} (and pytz) into {venv}")
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", args.duckdb, "pytz"], check=True
        )
    env = dict(os.environ, **{IN_VENV: "1"})
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ---------------------------------------------------------------------------------------------
# The server


def config_text(data_dir: Path, loading: bool) -> str:
    # Loopback listeners on ephemeral ports, auth off, Vigil's defaults for storage (64 MiB WAL
    # segments, 131072-row row groups, zstd 3), redaction, the detector and queries
    # ([query] threads = 2, memory_limit_bytes = 1 GiB), except: retention keeps the store
    # between benchmark runs (the records are dated in the past), the query timeout leaves room
    # for a slow query to be measured rather than cancelled, and while loading more closed
    # segments may wait for compaction before ingest is throttled: vigil-loadgen does not resend
    # a throttled request, so a throttle would leave a hole in the data.
    pending = "max_pending_segments = 16\n" if loading else ""
    return f"""version = 1

[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
api_addr = "127.0.0.1:0"
shutdown_timeout = "120s"

[storage]
data_dir = {json.dumps(str(data_dir))}
{pending}
[retention]
max_age = "3650days"

[query]
timeout = "300s"
threads = 2
"""


def start_server(vigil: str, config: Path, work: Path, tag: str, timeout: float = 600.0) -> ct.Server:
    """A `vigil serve` on `config`, ready (and answering a query) before this returns."""
    return ct.start_server(vigil, str(config), str(work), tag, timeout)


def stop_server(server: ct.Server, timeout: float = 600.0) -> None:
    code = ct.stop_term(server, timeout)
    if code != 0:
        raise BenchError(f"vigil exited with {code} on SIGTERM:\n{ct.tail(server.log_path)}")


class Api:
    """`POST /api/v1/query` over one kept-alive connection."""

    def __init__(self, addr: tuple[str, int]):
        self.addr = addr
        self.conn: http.client.HTTPConnection | None = None

    def query(self, sql: str) -> dict:
        body = json.dumps({"sql": sql, "format": "json"}).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(*self.addr, timeout=900)
            try:
                self.conn.request(
                    "POST", "/api/v1/query", body=body,
                    headers={"Content-Type": "application/json"},
                )
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                # The server closed an idle connection: reconnect once.
                self.close()
                if attempt:
                    raise
                continue
            if resp.status != 200:
                raise BenchError(f"query failed ({resp.status}): {data.decode(errors='replace')}\n{sql}")
            return json.loads(data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadPlan:
    log_records: int
    spans: int
    hours: int
    start_time: int  # Unix seconds, on the hour
    seed: int

    def requests_per_hour(self, records: int) -> int:
        return max(1, math.ceil(records / RECORDS_PER_REQUEST / self.hours))

    def as_dict(self) -> dict:
        return {
            "log_records": self.log_records,
            "spans": self.spans,
            "hours": self.hours,
            "start_time": self.start_time,
            "seed": self.seed,
            "records_per_request": RECORDS_PER_REQUEST,
        }


def load(args: argparse.Namespace, plan: LoadPlan, vigil: str, loadgen: str, work: Path) -> dict:
    config = work / "vigil-load.toml"
    config.write_text(config_text(work / "data", loading=True))
    server = start_server(vigil, config, work, "load")
    runs = []
    started = time.monotonic()
    try:
        for signal_name, records in (("logs", plan.log_records), ("traces", plan.spans)):
            if records <= 0:
                continue
            requests = plan.requests_per_hour(records)
            for hour in range(plan.hours):
                start = plan.start_time + hour * HOUR
                cmd = [
                    loadgen,
                    "--signal", signal_name,
                    "--endpoint", "http://{}:{}".format(*server.grpc),
                    "--requests", str(requests),
                    "--distinct-requests", str(requests),
                    "--records-per-request", str(RECORDS_PER_REQUEST),
                    "--start-time", str(start),
                    "--time-spread", "1h",
                    "--seed", str(plan.seed + hour + (0 if signal_name == "logs" else 1_000_000)),
                    "--concurrency", str(args.load_concurrency),
                    "--server-pid", str(server.proc.pid),
                    "--json",
                ]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    raise BenchError(f"vigil-loadgen failed:\n{out.stderr}\n{ct.tail(server.log_path)}")
                report = json.loads(out.stdout)
                req = report["requests"]
                runs.append({"signal": signal_name, "hour": hour, **{k: report[k] for k in (
                    "records_acked", "records_rejected", "warmup_records_acked", "records_per_second"
                )}, "throttled": req["throttled"], "errors": req["error"]})
                log(
                    f"  {signal_name} hour {hour + 1}/{plan.hours}: "
                    f"{report['records_acked'] + report['warmup_records_acked']} records acked, "
                    f"{report['records_per_second']:.0f}/s"
                    + (f", {req['throttled']} throttled, {req['error']} errors" if req["throttled"] or req["error"] else "")
                )
        load_seconds = time.monotonic() - started
    finally:
        # The segment still open stays in the WAL; the next start compacts it before /readyz.
        log("stopping the server")
        stop_server(server)
    return {
        "seconds": round(load_seconds, 1),
        "runs": runs,
        "throttled_requests": sum(r["throttled"] for r in runs),
        "failed_requests": sum(r["errors"] for r in runs),
    }


# ---------------------------------------------------------------------------------------------
# Queries


def ts(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Query:
    name: str
    what: str
    sql: str
    # Columns compared as floats (relative tolerance), by position.
    float_columns: tuple[int, ...] = ()


def queries(plan: LoadPlan, picks: dict) -> list[Query]:
    day = f"time >= '{ts(plan.start_time)}' AND time < '{ts(plan.start_time + plan.hours * HOUR)}'"
    hour_start = plan.start_time + (plan.hours // 2) * HOUR
    hour = f"time >= '{ts(hour_start)}' AND time < '{ts(hour_start + HOUR)}'"
    return [
        Query(
            "count_by_service_day",
            "log records per service over the day",
            f"SELECT service, count(*) AS n FROM logs WHERE {day} GROUP BY service ORDER BY service",
        ),
        Query(
            "top_401_sources_hour",
            "top 10 source addresses of 401 answers in one hour",
            "SELECT attributes['client.address'] AS source, count(*) AS n FROM logs "
            f"WHERE {hour} AND attributes['http.response.status_code'] = '401' "
            "GROUP BY 1 ORDER BY n DESC, source LIMIT 10",
        ),
        Query(
            "trace_lookup_logs",
            "a trace's log records by trace id (no time range)",
            "SELECT time, service, severity_text, span_id, body FROM logs "
            f"WHERE trace_id = '{picks['log_trace_id']}' ORDER BY time, span_id",
        ),
        Query(
            "trace_lookup_spans",
            "a trace's spans by trace id (no time range)",
            "SELECT time, service, name, kind, span_id, parent_span_id, duration_ns FROM spans "
            f"WHERE trace_id = '{picks['span_trace_id']}' ORDER BY time, span_id",
        ),
        Query(
            "attribute_filter_user_day",
            "one user's latest 100 requests over the day (attributes['user.id'])",
            "SELECT time, service, attributes['http.request.method'] AS method, "
            "attributes['url.path'] AS path, attributes['http.response.status_code'] AS status "
            f"FROM logs WHERE {day} AND attributes['user.id'] = '{picks['user_id']}' "
            "ORDER BY time DESC LIMIT 100",
        ),
        Query(
            "attribute_count_user_day",
            "one user's requests per service over the day (the same filter, every match counted)",
            "SELECT service, count(*) AS n "
            f"FROM logs WHERE {day} AND attributes['user.id'] = '{picks['user_id']}' "
            "GROUP BY service ORDER BY service",
        ),
        Query(
            "p95_latency_spans_day",
            "p95 duration of server spans per service over the day",
            "SELECT service, count(*) AS spans, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95_ns "
            f"FROM spans WHERE {day} AND kind = 'SERVER' GROUP BY service ORDER BY service",
            float_columns=(2,),
        ),
        Query(
            "p95_latency_logs_day",
            "p95 of access logs' http.server.request.duration per service over the day",
            "SELECT service, count(*) AS requests, "
            "percentile_cont(0.95) WITHIN GROUP "
            "(ORDER BY CAST(attributes['http.server.request.duration'] AS DOUBLE)) AS p95_s "
            f"FROM logs WHERE {day} AND attributes['http.server.request.duration'] IS NOT NULL "
            "GROUP BY service ORDER BY service",
            float_columns=(2,),
        ),
    ]


def pick_values(duck, plan: LoadPlan) -> dict:
    """Deterministic ids to look up, from one minute two thirds into the day: the trace with the
    most records, so a lookup returns a whole trace. Among equals (every log record has a
    trace of its own) the order is by md5 of the id, not the id: the smallest id of a minute
    would sit at the low end of every file's min/max statistics, which no typical id does."""
    minute = plan.start_time + (plan.hours * 2 // 3) * HOUR + 17 * 60
    window = f"time >= '{ts(minute)}' AND time < '{ts(minute + 60)}'"
    picks = {"user_id": "user-1234"}
    for key, table in (("log_trace_id", "logs"), ("span_trace_id", "spans")):
        row = duck.execute(
            f"SELECT trace_id FROM {table} WHERE {window} AND trace_id IS NOT NULL "
            "GROUP BY trace_id ORDER BY count(*) DESC, md5(trace_id) LIMIT 1"
        ).fetchone()
        if row is None:
            raise BenchError(f"no {table} records in {ts(minute)} to pick a trace id from")
        picks[key] = row[0]
    return picks


# ---------------------------------------------------------------------------------------------
# Comparing answers


RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$")


def norm_value(v):
    """One representation for both engines: timestamps as ISO text to the microsecond (Python's
    datetime has no nanoseconds), numbers as float, everything else as is."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, str):
        m = RFC3339.match(v)
        if m:
            return f"{m.group(1)}.{(m.group(2) or '').ljust(6, '0')[:6]}"
        return v
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def compare(q: Query, vigil_rows: list, duck_rows: list) -> str | None:
    """None when the answers agree, else what differs."""
    if len(vigil_rows) != len(duck_rows):
        return f"{len(vigil_rows)} rows from Vigil, {len(duck_rows)} from DuckDB"
    for i, (a, b) in enumerate(zip(vigil_rows, duck_rows)):
        a = [norm_value(x) for x in a]
        b = [norm_value(x) for x in b]
        if len(a) != len(b):
            return f"row {i}: {len(a)} columns from Vigil, {len(b)} from DuckDB"
        for c, (x, y) in enumerate(zip(a, b)):
            if c in q.float_columns and isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12):
                    return f"row {i} column {c}: {x!r} (Vigil) != {y!r} (DuckDB)"
            elif x != y:
                return f"row {i} column {c}: {x!r} (Vigil) != {y!r} (DuckDB)"
    return None


def max_float_diff(q: Query, vigil_rows: list, duck_rows: list) -> float:
    worst = 0.0
    for a, b in zip(vigil_rows, duck_rows):
        for c in q.float_columns:
            x, y = float(a[c]), float(b[c])
            if y:
                worst = max(worst, abs(x - y) / abs(y))
    return worst


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass
class Timing:
    vigil_ms: list[float] = field(default_factory=list)
    vigil_server_ms: list[float] = field(default_factory=list)
    duck_ms: list[float] = field(default_factory=list)
    cli_ms: list[float] = field(default_factory=list)
    rows: int = 0
    mismatch: str | None = None
    max_rel_diff: float = 0.0


def time_vigil(api: Api, sql: str) -> tuple[float, float, list]:
    t0 = time.perf_counter()
    answer = api.query(sql)
    ms = (time.perf_counter() - t0) * 1000
    return ms, float(answer.get("elapsed_ms", 0.0)), answer["rows"]


def time_duck(duck, sql: str) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = duck.execute(sql).fetchall()
    return (time.perf_counter() - t0) * 1000, rows


def time_cli(vigil: str, data_dir: Path, sql: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        [vigil, "query", "--data-dir", str(data_dir), "--format", "json", sql],
        capture_output=True,
    )
    ms = (time.perf_counter() - t0) * 1000
    if out.returncode != 0:
        raise BenchError(f"vigil query --data-dir failed: {out.stderr.decode(errors='replace')}")
    return ms


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# Report


def fmt_ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def markdown_table(qs: list[Query], results: dict[str, Timing], cli: bool) -> str:
    head = "| query | rows | Vigil ms (median / best) | DuckDB ms (median / best) | Vigil / DuckDB | goal |"
    sep = "|---|---:|---:|---:|---:|---|"
    if cli:
        head += " `vigil query --data-dir` ms (median) |"
        sep += "---:|"
    lines = [head, sep]
    for q in qs:
        t = results[q.name]
        vm, dm = statistics.median(t.vigil_ms), statistics.median(t.duck_ms)
        ratio = vm / dm if dm else float("inf")
        goal = "met" if vm <= dm else "**not met**"
        line = (
            f"| {q.name} | {t.rows} | {fmt_ms(vm)} / {fmt_ms(min(t.vigil_ms))} | "
            f"{fmt_ms(dm)} / {fmt_ms(min(t.duck_ms))} | {ratio:.2f} | {goal} |"
        )
        if cli:
            line += f" {fmt_ms(statistics.median(t.cli_ms))} |" if t.cli_ms else " |"
        lines.append(line)
    return "\n".join(lines)


def parquet_summary(data_dir: Path, table: str) -> dict:
    files = sorted((data_dir / "parquet" / f"signal={table}").glob("*/*/*.parquet"))
    return {
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "partitions": len({f.parent for f in files}),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vigil", help="vigil binary (with --loadgen: skip the build)")
    parser.add_argument("--loadgen", help="vigil-loadgen binary (with --vigil: skip the build)")
    parser.add_argument("--work-dir", default="~/.cache/vigil-query-bench",
                        help="the store (data/), its load parameters, server logs [%(default)s]")
    parser.add_argument("--reload", action="store_true", help="delete the stored data and load again")
    parser.add_argument("--log-records", type=int, default=10_000_000, help="log records to load [%(default)s]")
    parser.add_argument("--spans", type=int, default=2_000_000, help="spans to load [%(default)s]")
    parser.add_argument("--hours", type=int, default=24, help="hours the records cover [%(default)s]")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed of the first hour [%(default)s]")
    parser.add_argument("--load-concurrency", type=int, default=8, help="vigil-loadgen clients [%(default)s]")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and engine [%(default)s]")
    parser.add_argument("--duckdb-threads", type=int, default=2,
                        help="DuckDB threads; Vigil's [query] threads is 2 [%(default)s]")
    parser.add_argument("--only", action="append", help="run only this query (repeatable)")
    parser.add_argument("--cli", action="store_true", help="also time `vigil query --data-dir` per query")
    parser.add_argument("--explain", action="store_true",
                        help="save EXPLAIN ANALYZE of each query on both engines in the work dir")
    parser.add_argument("--venv", default="~/.cache/vigil-bench-venv", help="virtualenv for DuckDB [%(default)s]")
    parser.add_argument("--duckdb", default="duckdb", help="pip requirement for DuckDB [%(default)s]")
    parser.add_argument("--json", help="write every measurement to this file")
    args = parser.parse_args()

    try:
        ensure_venv(args)
        return run(args)
    except (BenchError, ct.TrialError) as e:
        log(f"query_bench: {e}")
        return 2


def run(args: argparse.Namespace) -> int:
    import duckdb  # in the virtualenv

    vigil, loadgen = binaries(args)
    work = Path(args.work_dir).expanduser().resolve()
    data_dir = work / "data"
    plan_file = work / "load.json"
    if args.reload and work.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        plan_file.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "vigil.toml"
    config.write_text(config_text(data_dir, loading=False))

    wanted = {"log_records": args.log_records, "spans": args.spans, "hours": args.hours, "seed": args.seed,
              "records_per_request": RECORDS_PER_REQUEST}
    stored = json.loads(plan_file.read_text()) if plan_file.exists() else None
    if stored and all(stored["plan"].get(k) == v for k, v in wanted.items()):
        plan = LoadPlan(**{k: stored["plan"][k] for k in ("log_records", "spans", "hours", "start_time", "seed")})
        load_info = stored["load"]
        log(f"reusing the store in {data_dir} (loaded {stored['loaded_at']})")
    else:
        if stored or data_dir.exists():
            raise BenchError(
                f"{work} holds a store loaded with other parameters ({stored and stored['plan']}); "
                "use --reload or another --work-dir"
            )
        start = int(time.time()) // HOUR * HOUR - args.hours * HOUR
        plan = LoadPlan(args.log_records, args.spans, args.hours, start, args.seed)
        log(
            f"loading {plan.log_records:,} log records and {plan.spans:,} spans over {plan.hours} h "
            f"from {ts(start)} into {data_dir}"
        )
        load_info = load(args, plan, vigil, loadgen, work)
        plan_file.write_text(json.dumps({
            "plan": plan.as_dict(),
            "load": load_info,
            "loaded_at": ts(int(time.time())),
        }, indent=2))

    # Vigil first: it compacts the WAL segments left from loading before /readyz answers, and
    # only then are all the records in Parquet for DuckDB.
    server = start_server(vigil, config, work, "query")
    api = Api(server.api)
    duck = duckdb.connect()
    duck.execute(f"SET threads = {args.duckdb_threads}")
    for table in ("logs", "spans"):
        glob = data_dir / "parquet" / f"signal={table}" / "*" / "*" / "*.parquet"
        duck.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
        )
    results: dict[str, Timing] = {}
    meta: dict = {}
    try:
        counts = {}
        for table in ("logs", "spans"):
            v = api.query(f"SELECT count(*) FROM {table}")["rows"][0][0]
            d = duck.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if v != d:
                raise BenchError(f"{table}: {v} rows through Vigil, {d} in its Parquet files (WAL not compacted?)")
            counts[table] = v
        log(f"stored: {counts['logs']:,} log records, {counts['spans']:,} spans (same in Vigil and in Parquet)")

        picks = pick_values(duck, plan)
        qs = [q for q in queries(plan, picks) if not args.only or q.name in args.only]
        meta = {
            "stored_rows": counts,
            "picks": picks,
            "parquet": {t: parquet_summary(data_dir, t) for t in ("logs", "spans")},
            "duckdb_version": duckdb.__version__,
            "duckdb_settings": {
                k: duck.execute(f"SELECT current_setting('{k}')").fetchone()[0]
                for k in ("threads", "memory_limit", "enable_external_file_cache")
            },
            "vigil_version": subprocess.run([vigil, "--version"], capture_output=True, text=True).stdout.strip(),
            "commit": git_commit(),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_before": loadavg(),
        }
        log(f"loadavg before timing: {meta['load_before']}")

        for q in qs:
            t = Timing()
            results[q.name] = t
            # Warm-up, untimed, and the answers compared.
            _, _, vrows = time_vigil(api, q.sql)
            _, drows = time_duck(duck, q.sql)
            t.rows = len(vrows)
            t.mismatch = compare(q, vrows, drows)
            if q.float_columns and not t.mismatch:
                t.max_rel_diff = max_float_diff(q, vrows, drows)
            if t.mismatch:
                log(f"  {q.name}: ANSWERS DIFFER: {t.mismatch}")
            for i in range(args.runs):
                order = ("vigil", "duck") if i % 2 == 0 else ("duck", "vigil")
                for engine in order:
                    if engine == "vigil":
                        ms, server_ms, _ = time_vigil(api, q.sql)
                        t.vigil_ms.append(ms)
                        t.vigil_server_ms.append(server_ms)
                    else:
                        ms, _ = time_duck(duck, q.sql)
                        t.duck_ms.append(ms)
            vm, dm = statistics.median(t.vigil_ms), statistics.median(t.duck_ms)
            log(
                f"  {q.name}: {t.rows} rows, Vigil {vm:.1f} ms, DuckDB {dm:.1f} ms, "
                f"ratio {vm / dm:.2f}  (loadavg {loadavg()})"
            )
            if args.explain:
                (work / "explain").mkdir(exist_ok=True)
                plan_rows = api.query(f"EXPLAIN ANALYZE {q.sql}")["rows"]
                (work / "explain" / f"{q.name}.vigil.txt").write_text(
                    q.sql + "\n\n" + "\n".join(str(r[-1]) for r in plan_rows) + "\n"
                )
                duck_plan = duck.execute(f"EXPLAIN ANALYZE {q.sql}").fetchall()
                (work / "explain" / f"{q.name}.duckdb.txt").write_text(
                    q.sql + "\n\n" + "\n".join(str(r[-1]) for r in duck_plan) + "\n"
                )
        meta["load_after"] = loadavg()
    finally:
        api.close()
        stop_server(server)

    if args.cli:
        log("timing `vigil query --data-dir` (server stopped)")
        for q in qs:
            time_cli(vigil, data_dir, q.sql)  # warm the page cache like the others
            results[q.name].cli_ms = [time_cli(vigil, data_dir, q.sql) for _ in range(args.runs)]

    table = markdown_table(qs, results, args.cli)
    parquet = meta["parquet"]
    print(
        f"\nVigil {meta['vigil_version']} ({meta['commit']}) vs DuckDB {meta['duckdb_version']}, "
        f"{meta['cores']} cores ({meta['cpu']}), loadavg {meta['load_before']} -> {meta['load_after']}\n"
        f"store: {meta['stored_rows']['logs']:,} log records in {parquet['logs']['files']} Parquet files "
        f"({parquet['logs']['bytes'] / 2**20:,.0f} MiB, {parquet['logs']['partitions']} hour partitions), "
        f"{meta['stored_rows']['spans']:,} spans in {parquet['spans']['files']} files "
        f"({parquet['spans']['bytes'] / 2**20:,.0f} MiB); {plan.hours} h from {ts(plan.start_time)}\n"
        f"medians of {args.runs} warm runs per engine, alternating; DuckDB threads = {args.duckdb_threads}, "
        f"Vigil [query] threads = 2\n"
    )
    print(table)
    mismatches = [(n, t.mismatch) for n, t in results.items() if t.mismatch]
    if mismatches:
        print("\nanswers that differ:")
        for n, m in mismatches:
            print(f"- {n}: {m}")
    else:
        print("\nboth engines gave the same answers to every query", end="")
        diffs = {n: t.max_rel_diff for n, t in results.items() if t.max_rel_diff}
        if diffs:
            print(" (percentiles within a relative " + ", ".join(f"{d:.1e} ({n})" for n, d in diffs.items()) + ")", end="")
        print()

    if args.json:
        Path(args.json).write_text(json.dumps({
            "plan": plan.as_dict(),
            "load": load_info,
            "meta": meta,
            "queries": [
                {
                    "name": q.name,
                    "what": q.what,
                    "sql": q.sql,
                    "rows": results[q.name].rows,
                    "mismatch": results[q.name].mismatch,
                    "max_rel_diff": results[q.name].max_rel_diff,
                    "vigil_ms": results[q.name].vigil_ms,
                    "vigil_server_ms": results[q.name].vigil_server_ms,
                    "duckdb_ms": results[q.name].duck_ms,
                    "cli_ms": results[q.name].cli_ms,
                }
                for q in qs
            ],
        }, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
