#!/usr/bin/env python3
"""Side-by-side ingest benchmark: Vigil against otlp2parquet and rotel, same load, same CPU.

The peers are installed by this script into a cache directory (default
~/.cache/vigil-bench-peers), once, before anything is measured:

* otlp2parquet (crates.io): an OTLP -> Parquet server. `cargo install otlp2parquet --locked
  --root DIR`. It serves OTLP/HTTP only (protobuf or JSON, no gRPC), buffers records in memory
  (200k rows / 128 MiB / 10 s per service) and writes uncompressed Parquet; it acknowledges a
  request once the records are in its in-memory buffer.
* rotel (PyPI wheel): a Rust OTLP collector. `pip install rotel` into a venv; the wheel carries
  the collector binary (site-packages/rotel/rotel-agent), which this script runs directly
  (`rotel-agent start --exporter blackhole`): receive and decode, then drop. It is the floor
  of what receiving OTLP costs, with nothing stored.

Vigil runs twice: with its defaults (redaction and the streaming detector on, WAL fsync before
every acknowledgement, zstd Parquet) -- the headline -- and "bare" ([redaction] and [detector]
disabled) for information.

Every run is one fresh server process with a fresh data directory, pinned to one CPU
(--server-cpu, default 1), driven by `vigil-loadgen` pinned to another (--loadgen-cpu, default
0): pre-built 512-record OTLP logs requests (realistic attributes, 8 services), a closed loop
at --concurrency clients for --duration. Servers take turns (A B C D A B C D ...) for
--rounds rounds, on each transport in --transports that they serve (otlp2parquet: http only).
After the load the server is stopped with SIGTERM and its data directory measured. Vigil keeps
the segment that was open at shutdown in its WAL (it is compacted at the next start), so Vigil
is then started once more on the same directory until it is ready (the replayed segment
compacted to Parquet) and stopped again: bytes on disk are what a stopped, settled server
leaves behind, for every server.

Per run, from the load generator's report: records acknowledged per second, acknowledged
records per server CPU-second (user + system of the server during the load), p99 ack latency
and the server's peak RSS (VmHWM). Work a server defers past the load (otlp2parquet writes
what it buffered at shutdown; Vigil compacts its last segment at the next start) is not in
that window, so a second figure divides the acknowledged records by the server CPU from the
start of the load to the settled data directory (the load, the shutdown and, for Vigil, the
settling restart, whose own start-up cost is included). From the data directory: all bytes on
disk divided by the rows the Parquet footers hold, which are also checked against the records
acknowledged (a stored row count below it is reported as lost records).

The report gives the median over the rounds (and the range), and the ratios of Vigil to each
peer on the same transport, against the goals:

* Vigil (defaults) records per server CPU-second >= 2x otlp2parquet's (OTLP/HTTP);
* Vigil (defaults) records per server CPU-second >= 0.5x rotel blackhole's (each transport);
* Vigil bytes on disk per record < otlp2parquet's.

Usage (Python 3.11 standard library only; the rotel venv is the script's own):

    python3 benches/side_by_side.py                       # builds vigil and vigil-loadgen
    python3 benches/side_by_side.py --vigil target/release/vigil \\
        --loadgen target/release/vigil-loadgen --rounds 3 --duration 20s

A peer that cannot be installed or started is reported as such and the others still run.
--json FILE writes every run and the summary; --work-dir keeps configs, logs (and with
--keep-data the data directories). Exit status: 0 when Vigil and at least one peer were
measured, 1 when something was measured but not enough for a ratio, 2 when nothing was.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Versions this comparison was written against; --otlp2parquet-version / --rotel-version
# choose others ("latest" for the newest the registry has).
OTLP2PARQUET_VERSION = "0.12.0"
ROTEL_VERSION = "0.0.1a15"

SERVERS = ("vigil", "vigil-bare", "otlp2parquet", "rotel")
LABELS = {
    "vigil": "Vigil (defaults: redaction + detector)",
    "vigil-bare": "Vigil bare (no redaction, no detector)",
    "otlp2parquet": "otlp2parquet",
    "rotel": "rotel (blackhole exporter)",
}
TRANSPORTS = {
    "vigil": ("grpc", "http"),
    "vigil-bare": ("grpc", "http"),
    "otlp2parquet": ("http",),
    "rotel": ("grpc", "http"),
}


class BenchError(Exception):
    """A server or peer could not be set up or run."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def parse_duration(text: str) -> float:
    text = text.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg", encoding="ascii") as f:
        a, b, c = f.read().split()[:3]
    return float(a), float(b), float(c)


def clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks()


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens there, else one the kernel picks."""
    for port in ([preferred] if preferred else []) + [0]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise BenchError("no free TCP port")


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Parquet footers: the row count of a file, without a Parquet library. The footer is a Thrift
# compact-protocol FileMetaData whose field 3 is num_rows (i64).


class _Compact:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, ttype: int) -> None:
        if ttype in (1, 2):  # bool, carried in the type
            return
        if ttype == 3:
            self.pos += 1
        elif ttype in (4, 5, 6):
            self.varint()
        elif ttype == 7:
            self.pos += 8
        elif ttype == 8:
            length = self.varint()  # not `self.pos += self.varint()`: that adds to the old pos
            self.pos += length
        elif ttype in (9, 10):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            for _ in range(size):
                self.skip_element(head & 0x0F)
        elif ttype == 11:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip_element(kv >> 4)
                    self.skip_element(kv & 0x0F)
        elif ttype == 12:
            self.skip_struct()
        else:
            raise ValueError(f"thrift type {ttype}")

    def skip_element(self, ttype: int) -> None:
        # In lists, sets and maps a bool is a whole byte.
        if ttype in (1, 2):
            self.pos += 1
        else:
            self.skip(ttype)

    def skip_struct(self) -> None:
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, ttype = head >> 4, head & 0x0F
            last = last + delta if delta else self.zigzag()
            self.skip(ttype)


def parquet_rows(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            f.seek(-8, os.SEEK_END)
            tail_bytes = f.read(8)
            if tail_bytes[4:] != b"PAR1":
                return None  # encrypted footer ("PARE") or not Parquet
            length = int.from_bytes(tail_bytes[:4], "little")
            f.seek(-8 - length, os.SEEK_END)
            footer = f.read(length)
    except OSError:
        return None
    r = _Compact(footer)
    last = 0
    try:
        while True:
            head = r.byte()
            if head == 0:
                return None
            delta, ttype = head >> 4, head & 0x0F
            last = last + delta if delta else r.zigzag()
            if last == 3 and ttype == 6:
                return r.zigzag()
            r.skip(ttype)
    except (IndexError, ValueError):
        return None


def parquet_rows_under(path: Path) -> tuple[int, int]:
    """Rows in the readable Parquet files under `path`, and the number of files without a
    readable footer (truncated, empty or encrypted)."""
    files = sorted(path.rglob("*.parquet")) if path.exists() else []
    total = unreadable = 0
    for p in files:
        rows = parquet_rows(p)
        if rows is None:
            unreadable += 1
        else:
            total += rows
    return total, unreadable


# ---------------------------------------------------------------------------------------------
# Builds and installs (never timed)


def run_cmd(cmd: list[str], log_path: Path, cwd: Path | None = None, env: dict | None = None) -> None:
    log(f"  $ {' '.join(cmd)}  (output: {log_path})")
    with open(log_path, "ab") as out:
        rc = subprocess.call(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({rc}):\n{tail(log_path)}")


def build_vigil(work: Path) -> tuple[Path, Path]:
    cargo = shutil.which("cargo")
    if not cargo:
        raise BenchError("cargo not found: pass --vigil and --loadgen")
    log("building vigil and vigil-loadgen (release)")
    run_cmd(
        [cargo, "build", "--release", "-p", "vigil-collector", "--bin", "vigil",
         "-p", "vigil-benches", "--bin", "vigil-loadgen"],
        work / "build.log",
        cwd=REPO,
    )
    meta = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    target = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    return target / "vigil", target / "vigil-loadgen"


def binary_version(binary: Path, args: list[str]) -> str:
    try:
        out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def install_otlp2parquet(peers: Path, version: str, logs: Path) -> Path:
    root = peers / "otlp2parquet"
    binary = root / "bin" / "otlp2parquet"
    if binary.exists():
        have = binary_version(binary, ["--version"])
        if version == "latest" or have.split()[-1:] == [version]:
            log(f"otlp2parquet: using {binary} ({have})")
            return binary
    cargo = shutil.which("cargo")
    if not cargo:
        raise BenchError("cargo not found, cannot install otlp2parquet")
    log(f"otlp2parquet: installing into {root} (cargo install; this takes a while)")
    cmd = [cargo, "install", "otlp2parquet", "--locked", "--force", "--root", str(root)]
    if version != "latest":
        cmd += ["--version", version]
    env = dict(os.environ)
    env.pop("CARGO_TARGET_DIR", None)  # a private build directory, removed by cargo afterwards
    run_cmd(cmd, logs / "install-otlp2parquet.log", env=env)
    if not binary.exists():
        raise BenchError(f"cargo install finished but {binary} is missing")
    return binary


def install_rotel(peers: Path, version: str, logs: Path) -> Path:
    venv = peers / "rotel-venv"
    spec = "rotel" if version == "latest" else f"rotel=={version}"

    def installed_binary() -> Path | None:
        found = sorted(glob.glob(str(venv / "lib" / "python*" / "site-packages" / "rotel" / "rotel-agent")))
        return Path(found[0]) if found else None

    marker = venv / "installed-spec"
    existing = installed_binary()
    if existing and marker.exists() and marker.read_text().strip() == spec:
        log(f"rotel: using {existing} ({binary_version(existing, ['--version'])})")
        return existing
    log(f"rotel: installing {spec} into the venv {venv}")
    if not (venv / "bin" / "python").exists():
        run_cmd([sys.executable, "-m", "venv", str(venv)], logs / "install-rotel.log")
    run_cmd(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--pre", "--upgrade", spec],
        logs / "install-rotel.log",
    )
    existing = installed_binary()
    if not existing:
        raise BenchError(f"pip installed {spec} but no rotel/rotel-agent binary is in {venv}")
    os.chmod(existing, 0o755)
    marker.write_text(spec + "\n")
    return existing


# ---------------------------------------------------------------------------------------------
# Servers


def pin(cpu: int | None):
    if cpu is None:
        return None

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})

    return preexec


@dataclass
class Proc:
    proc: subprocess.Popen
    log_path: Path
    endpoints: dict[str, str]  # transport -> base URL for vigil-loadgen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> tuple[int | None, float | None]:
        """SIGTERM, wait; returns (exit status, CPU-seconds of the whole process life)."""
        if self.proc.returncode is not None:
            return self.proc.returncode, None
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped by Popen.poll()
                return self.proc.returncode, None
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode, usage.ru_utime + usage.ru_stime
            time.sleep(0.05)
        log(f"  pid {self.proc.pid} did not stop within {timeout:.0f}s of SIGTERM; killing it")
        self.proc.kill()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return None, usage.ru_utime + usage.ru_stime


def spawn(cmd: list[str], log_path: Path, cpu: int | None, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=pin(cpu),
        env=env,
        cwd=cwd,
    )


def wait_until(check, proc: subprocess.Popen, log_path: Path, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc.poll() is not None:
            raise BenchError(f"{what} exited during start-up ({proc.returncode}):\n{tail(log_path)}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BenchError(f"{what} not ready within {timeout:.0f}s:\n{tail(log_path)}")
        time.sleep(0.02)


def vigil_config(data_dir: Path, bare: bool) -> str:
    # Loopback listeners on ephemeral ports, auth off (no keys file); everything else at its
    # default: wal_sync = "always", 64 MiB / 60 s segments, zstd level 3, shipped redaction
    # and detector (both switched off for the bare variant).
    text = f"""version = 1

[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
api_addr = "127.0.0.1:0"

[storage]
data_dir = {json.dumps(str(data_dir))}
"""
    if bare:
        text += "\n[redaction]\nenabled = false\n\n[detector]\nenabled = false\n"
    return text


def start_vigil(binary: Path, run_dir: Path, data_dir: Path, bare: bool, cpu: int | None,
                tag: str, timeout: float) -> Proc:
    config = run_dir / "vigil.toml"
    config.write_text(vigil_config(data_dir, bare))
    addr_file = run_dir / f"addrs-{tag}.json"
    addr_file.unlink(missing_ok=True)
    log_path = run_dir / f"vigil-{tag}.log"
    proc = spawn([str(binary), "serve", "--config", str(config), "--addr-file", str(addr_file)],
                 log_path, cpu)

    def addrs():
        try:
            return json.loads(addr_file.read_text())
        except (OSError, ValueError):
            return None

    a = wait_until(addrs, proc, log_path, timeout, "vigil")
    wait_until(lambda: http_status(f"http://{a['api']}/readyz") == 200, proc, log_path, timeout, "vigil")
    return Proc(proc, log_path, {"grpc": f"http://{a['grpc']}", "http": f"http://{a['http']}"})


def start_otlp2parquet(binary: Path, run_dir: Path, data_dir: Path, cpu: int | None,
                       port: int, timeout: float) -> Proc:
    # Its defaults (batching 200k rows / 128 MiB / 10 s, 8 MiB request limit), written to an
    # explicit file so that no config.toml in the working directory is picked up.
    config = run_dir / "otlp2parquet.toml"
    config.write_text(f"""[storage]
backend = "fs"

[storage.fs]
path = {json.dumps(str(data_dir))}

[server]
listen_addr = "127.0.0.1:{port}"
log_level = "info"
log_format = "text"
""")
    log_path = run_dir / "otlp2parquet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTLP2PARQUET_")}
    proc = spawn([str(binary), "--config", str(config)], log_path, cpu, env=env, cwd=run_dir)
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, proc, log_path,
               timeout, "otlp2parquet")
    return Proc(proc, log_path, {"http": f"http://127.0.0.1:{port}"})


def start_rotel(binary: Path, run_dir: Path, cpu: int | None, grpc_port: int, http_port: int,
                timeout: float) -> Proc:
    log_path = run_dir / "rotel.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
    proc = spawn(
        [str(binary), "start", "--exporter", "blackhole",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--pid-file", str(run_dir / "rotel.pid"),
         "--log-file", str(run_dir / "rotel-agent.log")],
        log_path, cpu, env=env, cwd=run_dir,
    )
    wait_until(lambda: tcp_open(grpc_port) and tcp_open(http_port), proc, log_path, timeout, "rotel")
    return Proc(proc, log_path, {"grpc": f"http://127.0.0.1:{grpc_port}", "http": f"http://127.0.0.1:{http_port}"})


# ---------------------------------------------------------------------------------------------
# One run


@dataclass
class Run:
    round: int
    server: str
    transport: str
    ok: bool = False
    error: str | None = None
    records_acked: int = 0  # measured run plus the load generator's warm-up request
    records_per_second: float | None = None
    records_per_cpu_second: float | None = None
    server_cpu_seconds: float | None = None
    after_load_cpu_seconds: float | None = None  # shutdown (+ Vigil's settling restart)
    # Acked records per CPU-second from the start of the load to the settled data directory:
    # the load, the shutdown flush and (Vigil) the settling restart.
    records_per_cpu_second_to_disk: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_rss_mib: float | None = None
    throttled: int = 0
    errors: int = 0
    bytes_on_disk: int | None = None
    parquet_bytes: int | None = None
    bytes_per_record: float | None = None
    rows_stored: int | None = None
    unreadable_parquet_files: int = 0
    loadavg_after: tuple[float, float, float] | None = None
    report: dict = field(default_factory=dict)


def run_loadgen(args, proc: Proc, transport: str, run_dir: Path) -> dict:
    cmd = [
        str(args.loadgen), "--signal", "logs", "--transport", transport,
        "--endpoint", proc.endpoints[transport],
        "--concurrency", str(args.concurrency), "--duration", args.duration,
        "--request-timeout", args.request_timeout,
        "--server-pid", str(proc.pid), "--json",
    ]
    timeout = parse_duration(args.duration) + parse_duration(args.request_timeout) + 120
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             preexec_fn=pin(args.loadgen_cpu))
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"vigil-loadgen did not finish within {timeout:.0f}s") from e
    (run_dir / "loadgen.json").write_text(out.stdout)
    (run_dir / "loadgen.err").write_text(out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"vigil-loadgen failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    report = json.loads(lines[-1])
    if out.returncode != 0 and not report.get("records_acked"):
        raise BenchError(f"nothing acknowledged: {report.get('first_error') or out.stderr.strip()[-400:]}")
    return report


def one_run(args, bins: dict[str, Path], server: str, transport: str, rnd: int, work: Path) -> Run:
    run = Run(round=rnd, server=server, transport=transport)
    run_dir = work / f"r{rnd}-{server}-{transport}"
    data_dir = run_dir / "data"
    run_dir.mkdir(parents=True)
    data_dir.mkdir()
    proc: Proc | None = None
    try:
        if server in ("vigil", "vigil-bare"):
            proc = start_vigil(bins["vigil"], run_dir, data_dir, server == "vigil-bare",
                               args.server_cpu, "run", args.start_timeout)
        elif server == "otlp2parquet":
            proc = start_otlp2parquet(bins["otlp2parquet"], run_dir, data_dir, args.server_cpu,
                                      free_port(args.peer_http_port), args.start_timeout)
        else:
            grpc_port = free_port(args.peer_grpc_port)
            http_port = free_port(args.peer_http_port)
            proc = start_rotel(bins["rotel"], run_dir, args.server_cpu, grpc_port, http_port,
                               args.start_timeout)
        cpu_before_load = cpu_seconds(proc.pid)
        report = run_loadgen(args, proc, transport, run_dir)
        cpu_at_end = cpu_seconds(proc.pid)
        _, life_cpu = proc.stop(args.stop_timeout)
        run.report = report
        srv = report.get("server") or {}
        lat = report.get("ack_latency_ms") or {}
        run.records_acked = int(report.get("records_acked", 0)) + int(report.get("warmup_records_acked", 0))
        run.records_per_second = report.get("records_per_second")
        run.records_per_cpu_second = srv.get("records_per_cpu_second")
        run.server_cpu_seconds = srv.get("cpu_seconds")
        run.peak_rss_mib = srv.get("peak_rss_mib")
        run.p50_ms = lat.get("p50")
        run.p99_ms = lat.get("p99")
        run.max_ms = lat.get("max")
        run.throttled = int((report.get("requests") or {}).get("throttled", 0))
        run.errors = int((report.get("requests") or {}).get("error", 0))
        to_disk_cpu = None
        if life_cpu is not None and cpu_at_end is not None and cpu_before_load is not None:
            run.after_load_cpu_seconds = max(0.0, life_cpu - cpu_at_end)
            to_disk_cpu = max(0.0, life_cpu - cpu_before_load)
        if server in ("vigil", "vigil-bare"):
            # The segment open at shutdown stays in the WAL until the next start compacts it.
            settle = start_vigil(bins["vigil"], run_dir, data_dir, server == "vigil-bare",
                                 args.server_cpu, "settle", args.start_timeout)
            _, settle_cpu = settle.stop(args.stop_timeout)
            if run.after_load_cpu_seconds is not None and to_disk_cpu is not None:
                if settle_cpu is None:
                    run.after_load_cpu_seconds = to_disk_cpu = None
                else:
                    run.after_load_cpu_seconds += settle_cpu
                    to_disk_cpu += settle_cpu
            run.bytes_on_disk = dir_bytes(data_dir)
            run.parquet_bytes = sum(p.stat().st_size for p in data_dir.rglob("*.parquet"))
            run.rows_stored, run.unreadable_parquet_files = parquet_rows_under(
                data_dir / "parquet" / "signal=logs")
        elif server == "otlp2parquet":
            run.bytes_on_disk = dir_bytes(data_dir)
            run.parquet_bytes = sum(p.stat().st_size for p in data_dir.rglob("*.parquet"))
            run.rows_stored, run.unreadable_parquet_files = parquet_rows_under(data_dir / "logs")
        if to_disk_cpu and run.records_acked:
            run.records_per_cpu_second_to_disk = run.records_acked / to_disk_cpu
        # Per stored row when the footers could be read (a server that lost acknowledged
        # records must not look smaller for it), else per acknowledged record.
        stored = run.rows_stored if run.rows_stored else run.records_acked
        if run.bytes_on_disk is not None and stored:
            run.bytes_per_record = run.bytes_on_disk / stored
        run.ok = True
    except BenchError as e:
        run.error = str(e)
    finally:
        if proc is not None and proc.alive():
            proc.stop(args.stop_timeout)
        run.loadavg_after = loadavg()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    return run


# ---------------------------------------------------------------------------------------------
# Summary


METRICS = (
    # key, header, format, higher is better
    ("records_per_cpu_second", "records / server CPU-s (load)", "{:,.0f}", True),
    ("records_per_cpu_second_to_disk", "records / server CPU-s (load + shutdown)", "{:,.0f}", True),
    ("records_per_second", "records/s acked", "{:,.0f}", True),
    ("p99_ms", "p99 ack ms", "{:.1f}", False),
    ("max_ms", "max ack ms", "{:,.0f}", False),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}", False),
    ("bytes_per_record", "bytes on disk / record", "{:.1f}", False),
)


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[Run]) -> dict:
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if r.ok:
            groups.setdefault((r.server, r.transport), []).append(r)
    summary = {}
    for key, rs in groups.items():
        s: dict = {"runs": len(rs)}
        for metric, *_ in METRICS + (("after_load_cpu_seconds", "", "", False),):
            vals = [getattr(r, metric) for r in rs if getattr(r, metric) is not None]
            s[metric] = {"median": med(vals), "min": min(vals) if vals else None,
                         "max": max(vals) if vals else None}
        s["records_acked"] = sum(r.records_acked for r in rs)
        s["rows_stored"] = (sum(r.rows_stored for r in rs)
                            if all(r.rows_stored is not None for r in rs) else None)
        s["throttled"] = sum(r.throttled for r in rs)
        s["errors"] = sum(r.errors for r in rs)
        summary[f"{key[0]}/{key[1]}"] = s
    return summary


def fmt_cell(stat: dict, form: str) -> str:
    if stat["median"] is None:
        return "n/a"
    text = form.format(stat["median"])
    if stat["min"] != stat["max"]:
        text += f" ({form.format(stat['min'])}–{form.format(stat['max'])})"
    return text


def ratio(summary: dict, a: str, b: str, metric: str) -> float | None:
    sa, sb = summary.get(a), summary.get(b)
    if not sa or not sb:
        return None
    va, vb = sa[metric]["median"], sb[metric]["median"]
    if va is None or vb in (None, 0):
        return None
    return va / vb


def render(summary: dict, runs: list[Run], meta: dict) -> str:
    out = []
    out.append(f"side by side: {meta['rounds']} rounds x {meta['duration']} per server and transport, "
               f"concurrency {meta['concurrency']}, server on CPU {meta['server_cpu']}, "
               f"load generator on CPU {meta['loadgen_cpu']}; nproc {meta['nproc']}, "
               f"load average {meta['loadavg_min']:.2f}–{meta['loadavg_max']:.2f} (1 min) during the runs")
    out.append("")
    out.append("Ratios (Vigil / peer, medians, same transport):")
    out.append("")
    out.append("| ratio | transport | Vigil | Vigil bare | goal |")
    out.append("|---|---|---|---|---|")
    goals = [
        ("records / server CPU-s (load) vs otlp2parquet", "otlp2parquet", "records_per_cpu_second", (">=", 2.0)),
        ("records / server CPU-s (load + shutdown) vs otlp2parquet", "otlp2parquet", "records_per_cpu_second_to_disk", (">=", 2.0)),
        ("records / server CPU-s (load) vs rotel blackhole", "rotel", "records_per_cpu_second", (">=", 0.5)),
        ("records / server CPU-s (load + shutdown) vs rotel blackhole", "rotel", "records_per_cpu_second_to_disk", (">=", 0.5)),
        ("bytes on disk / record vs otlp2parquet", "otlp2parquet", "bytes_per_record", ("<", 1.0)),
        ("records/s acked vs otlp2parquet", "otlp2parquet", "records_per_second", None),
        ("records/s acked vs rotel blackhole", "rotel", "records_per_second", None),
        ("p99 ack latency vs otlp2parquet", "otlp2parquet", "p99_ms", None),
        ("p99 ack latency vs rotel blackhole", "rotel", "p99_ms", None),
        ("peak RSS vs otlp2parquet", "otlp2parquet", "peak_rss_mib", None),
        ("peak RSS vs rotel blackhole", "rotel", "peak_rss_mib", None),
    ]
    for label, peer, metric, goal in goals:
        for transport in ("grpc", "http"):
            rv = ratio(summary, f"vigil/{transport}", f"{peer}/{transport}", metric)
            rb = ratio(summary, f"vigil-bare/{transport}", f"{peer}/{transport}", metric)
            if rv is None and rb is None:
                continue
            goal_text = ""
            if goal:
                op, target = goal
                met = None if rv is None else (rv >= target if op == ">=" else rv < target)
                goal_text = f"{op} {target:g}x: " + ("n/a" if met is None else "met" if met else "NOT met")
            out.append(f"| {label} | {transport} | {'n/a' if rv is None else f'{rv:.2f}x'} | "
                       f"{'n/a' if rb is None else f'{rb:.2f}x'} | {goal_text} |")
    if out[-1].startswith("|---"):
        out.append("| (no peer measured) | | | | |")
    out.append("")
    out.append("Raw numbers (median over the rounds, range in brackets):")
    out.append("")
    out.append("| server | transport | runs | " + " | ".join(h for _, h, _, _ in METRICS)
               + " | CPU-s after load | acked / stored rows | throttled |")
    out.append("|---|---|---|" + "---|" * len(METRICS) + "---|---|---|")
    for server in SERVERS:
        for transport in ("grpc", "http"):
            s = summary.get(f"{server}/{transport}")
            if not s:
                continue
            stored = "n/a" if s["rows_stored"] is None else f"{s['rows_stored']:,}"
            if server == "rotel":
                stored = "(discarded)"
            cells = [fmt_cell(s[m], f) for m, _, f, _ in METRICS]
            out.append(f"| {LABELS[server]} | {transport} | {s['runs']} | " + " | ".join(cells)
                       + f" | {fmt_cell(s['after_load_cpu_seconds'], '{:.1f}')}"
                       + f" | {s['records_acked']:,} / {stored} | {s['throttled']} |")
    lost = [r for r in runs if r.ok and r.rows_stored is not None and r.rows_stored < r.records_acked]
    if lost:
        out.append("")
        out.append("Acknowledged records missing from the Parquet files after a graceful stop:")
        for r in lost:
            bad = (f" ({r.unreadable_parquet_files} Parquet files without a readable footer)"
                   if r.unreadable_parquet_files else "")
            out.append(f"- round {r.round} {r.server} over {r.transport}{bad}: {r.records_acked - r.rows_stored:,} "
                       f"of {r.records_acked:,} acknowledged")
    failed = [r for r in runs if not r.ok]
    if failed:
        out.append("")
        out.append("Failed runs:")
        for r in failed:
            first = (r.error or "").strip().splitlines()[0] if r.error else ""
            out.append(f"- round {r.round} {r.server} over {r.transport}: {first}")
    if meta["unavailable"]:
        out.append("")
        out.append("Not measured:")
    for name, why in meta["unavailable"].items():
        lines = [line.strip() for line in why.strip().splitlines() if line.strip()] or ["?"]
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        out.append(f"- {name}: {reason}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vigil", type=Path, help="vigil binary (default: cargo build --release)")
    p.add_argument("--loadgen", type=Path, help="vigil-loadgen binary (default: cargo build --release)")
    p.add_argument("--otlp2parquet", type=Path, help="otlp2parquet binary (default: install into --peers-dir)")
    p.add_argument("--rotel", type=Path, help="rotel-agent binary (default: install into --peers-dir)")
    p.add_argument("--peers-dir", type=Path, default=Path.home() / ".cache" / "vigil-bench-peers")
    p.add_argument("--otlp2parquet-version", default=OTLP2PARQUET_VERSION, help='crates.io version or "latest"')
    p.add_argument("--rotel-version", default=ROTEL_VERSION, help='PyPI version or "latest"')
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--transports", default="grpc,http", help="grpc, http or both (otlp2parquet: http only)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", default="20s", help="load per run (vigil-loadgen --duration)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--request-timeout", default="60s",
                   help="vigil-loadgen --request-timeout. Longer than its 10 s default: a server "
                        "that stalls a request for seconds shows it in the latency instead of the "
                        "client dropping the connection mid-request")
    p.add_argument("--server-cpu", type=int, default=1, help="CPU every server is pinned to (-1: none)")
    p.add_argument("--loadgen-cpu", type=int, default=0, help="CPU the load generator is pinned to (-1: none)")
    p.add_argument("--peer-grpc-port", type=int, default=14317, help="preferred port for the peers' gRPC listener")
    p.add_argument("--peer-http-port", type=int, default=14318, help="preferred port for the peers' HTTP listener")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--stop-timeout", type=float, default=180.0)
    p.add_argument("--work-dir", type=Path, help="keep configs, logs and reports here (default: a temporary directory, removed)")
    p.add_argument("--keep-data", action="store_true", help="keep each run's data directory (needs disk: GBs)")
    p.add_argument("--json", type=Path, help="write every run and the summary to this file")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="print the report of a file --json wrote, and run nothing")
    args = p.parse_args()

    if args.report:
        saved = json.loads(args.report.read_text())
        known = set(Run.__dataclass_fields__)
        runs = [Run(**{k: v for k, v in d.items() if k in known}) for d in saved["runs"]]
        for r in runs:
            if r.max_ms is None:
                r.max_ms = (r.report.get("ack_latency_ms") or {}).get("max")
        print(render(summarize(runs), runs, saved["meta"]), end="")
        return 0

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    for s in servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    for t in transports:
        if t not in ("grpc", "http"):
            p.error(f"unknown transport {t!r}")
    args.server_cpu = None if args.server_cpu < 0 else args.server_cpu
    args.loadgen_cpu = None if args.loadgen_cpu < 0 else args.loadgen_cpu
    usable = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.loadgen_cpu):
        if cpu is not None and cpu not in usable:
            p.error(f"CPU {cpu} is not available (usable: {sorted(usable)})")

    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="vigil-side-by-side-")) if own_work else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    args.peers_dir.mkdir(parents=True, exist_ok=True)

    # 1. Builds and installs, before any measurement.
    bins: dict[str, Path] = {}
    unavailable: dict[str, str] = {}
    if args.vigil and args.loadgen:
        bins["vigil"], args.loadgen = args.vigil.resolve(), args.loadgen.resolve()
    else:
        try:
            built_vigil, built_loadgen = build_vigil(work)
        except (BenchError, subprocess.CalledProcessError) as e:
            log(f"error: {e}")
            return 2
        bins["vigil"] = args.vigil.resolve() if args.vigil else built_vigil
        args.loadgen = args.loadgen.resolve() if args.loadgen else built_loadgen
    for name in ("vigil", "loadgen"):
        path = bins["vigil"] if name == "vigil" else args.loadgen
        if not os.access(path, os.X_OK):
            log(f"error: {path} is not an executable")
            return 2
    if "otlp2parquet" in servers:
        try:
            bins["otlp2parquet"] = (args.otlp2parquet.resolve() if args.otlp2parquet
                                    else install_otlp2parquet(args.peers_dir, args.otlp2parquet_version, work))
        except BenchError as e:
            unavailable["otlp2parquet"] = str(e)
    if "rotel" in servers:
        try:
            bins["rotel"] = (args.rotel.resolve() if args.rotel
                             else install_rotel(args.peers_dir, args.rotel_version, work))
        except BenchError as e:
            unavailable["rotel"] = str(e)
    for name, why in unavailable.items():
        log(f"WARNING: {name} is not available and will not be measured:\n{why}")
    versions = {
        "vigil": binary_version(bins["vigil"], ["--version"]),
        "vigil-loadgen": binary_version(args.loadgen, ["--version"]),
    }
    if "otlp2parquet" in bins:
        versions["otlp2parquet"] = binary_version(bins["otlp2parquet"], ["--version"])
    if "rotel" in bins:
        versions["rotel"] = binary_version(bins["rotel"], ["--version"]) + f" (PyPI rotel {args.rotel_version})"
    for k, v in versions.items():
        log(f"{k}: {v}")

    # 2. The runs: servers take turns, round after round.
    runnable = {"vigil", "vigil-bare"} | (set(bins) & {"otlp2parquet", "rotel"})
    plan = [(s, t) for t in transports for s in servers if s in runnable and t in TRANSPORTS[s]]
    if not plan:
        log("error: nothing to run")
        return 2
    runs: list[Run] = []
    loads = [loadavg()[0]]
    started = time.time()
    for rnd in range(1, args.rounds + 1):
        for server, transport in plan:
            log(f"round {rnd}/{args.rounds}: {server} over {transport} ({args.duration}) ...")
            run = one_run(args, bins, server, transport, rnd, work)
            runs.append(run)
            loads.append(run.loadavg_after[0] if run.loadavg_after else loads[-1])
            if run.ok:
                log(f"  {run.records_per_second or 0:,.0f} records/s, "
                    f"{run.records_per_cpu_second or 0:,.0f} per server CPU-s, p99 {run.p99_ms} ms, "
                    f"rss {run.peak_rss_mib} MiB, "
                    + (f"{run.bytes_per_record:.1f} B/record on disk, " if run.bytes_per_record else "")
                    + f"throttled {run.throttled}, load {loads[-1]:.2f}")
            else:
                log(f"  FAILED: {run.error}")

    summary = summarize(runs)
    meta = {
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "rounds": args.rounds, "duration": args.duration, "concurrency": args.concurrency,
        "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu,
        "nproc": os.cpu_count(), "loadavg_min": min(loads), "loadavg_max": max(loads),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "versions": versions, "unavailable": unavailable,
    }
    text = render(summary, runs, meta)
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "summary": summary,
                                         "runs": [r.__dict__ for r in runs]}, indent=2, default=str))
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"configs, logs and load reports are in {work}")

    measured = {r.server for r in runs if r.ok}
    if not measured:
        log("error: nothing could be measured")
        return 2
    if not ({"vigil", "vigil-bare"} & measured and {"otlp2parquet", "rotel"} & measured):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
