#!/usr/bin/env python3
"""Redaction side by side: Vigil's redactor against Presidio's pattern recognisers, same corpus.

The question (from the evidence issue): on the same texts, how do Vigil's built-in detectors
compare with Presidio (PyPI `presidio-analyzer`) in recall, precision and throughput?

1. The corpus. `cargo build --release -p vigil-benches --example redaction_corpus` (in the
   cargo target directory, so CARGO_TARGET_DIR is respected), then `redaction_corpus dump`
   writes Vigil's seeded redaction corpus (`core/src/redact/corpus.rs`) as JSON lines:
   --per-entity log lines for each of the 20 entities Vigil detects (each line carries one
   planted value, with the value's span in code points), --near-misses look-alikes that must
   survive untouched (UUIDs, trace ids, timestamps, versions, Luhn-failing numbers, …) and
   --clean log lines without any personal data or secret. The corpus was written to test
   Vigil, so the entity list and the shapes of the values are Vigil's: recall on entities
   Presidio has no recogniser for is reported as "no recognizer", not as 0.
2. Vigil. `redaction_corpus measure` runs the default redactor (`RedactionConfig::default()`)
   over every text. Recall, as in the redaction tests: a planted value is *found* when it no
   longer appears in the redacted text, *credited* when a finding of its own entity was
   reported. Precision: the share of near misses and clean lines returned unchanged.
3. Presidio, installed with pip into a virtualenv (--venv, created if missing;
   presidio-analyzer pinned to --presidio-version) and run there in a subprocess of this
   script. No NLP model is downloaded: `AnalyzerEngine` gets Presidio's own `NoOpNlpEngine`
   (no tokens or lemmas, so context words cannot raise scores) and a registry of pattern
   recognisers only; the email recogniser's domain check uses tldextract's bundled public
   suffix list, never a download. Two registries:
   * "mapped": the predefined recognisers whose entities correspond to Vigil's
     (EMAIL_ADDRESS, CREDIT_CARD, US_SSN, PHONE_NUMBER, IP_ADDRESS, IBAN_CODE, URL) -- the
     like-for-like comparison;
   * "default": Presidio's default English registry (`load_predefined_recognizers`) with the
     no-op NLP engine, i.e. what `AnalyzerEngine()` runs minus spaCy NER: the mapped ones plus
     dates, UUIDs, MAC addresses, crypto wallets and a few US/UK identifiers.
   Recall: a planted value is *found* when any result overlaps its span (a replacement would
   change it, as for Vigil), *credited* when an overlapping result is of a Presidio type mapped
   to the planted entity (URL for credentials and secret parameters in URLs: Presidio redacts
   the whole URL). Precision: the share of near misses and clean lines with no result.
   Presidio's default score threshold is 0 (every result counts); results are also given at
   --threshold (default 0.5) for information.
4. Throughput, for both: CPU time of the one thread doing the work (Vigil:
   CLOCK_THREAD_CPUTIME_ID; Presidio: `time.thread_time()`, the same clock, in a
   single-threaded interpreter), after one untimed warm-up (lazy DFA states; Presidio's lazily
   loaded recognisers), over all texts and over the clean lines alone, repeated until each
   measurement has used --min-cpu-seconds (default 3). MB/s is 10^6 bytes of UTF-8 text per CPU-second.
   Presidio's is through `AnalyzerEngine.analyze`; each mapped recogniser's own `analyze`
   is also timed alone, to show where its time goes.
5. Probes, the other direction: a few fixed shapes that Presidio has recognisers for and Vigil's
   corpus does not plant (an ITIN, a Bitcoin address, a MAC address, an NHS number, phone
   numbers outside North America, a URL without a secret, …), each shown with what both made of
   it. They are examples, not a measurement, and count in none of the figures above.

Usage (Python 3.11 standard library; Presidio goes into the virtualenv):

    python3 benches/redaction_side_by_side.py                     # builds the example first
    python3 benches/redaction_side_by_side.py --corpus-bin target/release/examples/redaction_corpus \\
        --per-entity 200 --near-misses 4000 --clean 2000 --json redaction-side-by-side.json

Prints a markdown report on stdout, progress on stderr. --json FILE writes both sides' full
results (with examples of misses and false positives). Exit status: 0 when both sides were
measured, 1 when Presidio could not be, 2 when Vigil could not be.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The version this comparison was written against; --presidio-version chooses another.
PRESIDIO_VERSION = "2.2.366"

# Presidio entity types credited for each of Vigil's entities. Entities absent here have no
# Presidio recogniser.
PRESIDIO_TYPES = {
    "email": ("EMAIL_ADDRESS",),
    "credit_card": ("CREDIT_CARD",),
    "us_ssn": ("US_SSN",),
    "phone": ("PHONE_NUMBER",),
    "ipv4": ("IP_ADDRESS",),
    "ipv6": ("IP_ADDRESS",),
    "iban": ("IBAN_CODE",),
    "url_credentials": ("URL",),
    "url_secret_param": ("URL",),
}

# The predefined recognisers of the "mapped" registry (class names in
# presidio_analyzer.predefined_recognizers).
MAPPED_RECOGNIZERS = (
    "EmailRecognizer",
    "CreditCardRecognizer",
    "UsSsnRecognizer",
    "PhoneRecognizer",
    "IpRecognizer",
    "IbanRecognizer",
    "UrlRecognizer",
)

REGISTRIES = ("mapped", "default")

# (Presidio entity type, text) for step 5. Documentation and test values, not anyone's data.
PROBES = (
    ("US_ITIN", "tax id 912-71-1234 on file"),
    ("CRYPTO", "refund sent to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
    ("MAC_ADDRESS", "iface eth0 hwaddr 00:1A:2B:3C:4D:5E up"),
    ("UK_NHS", "nhs number 943 476 5919"),
    ("US_PASSPORT", "passport 912803456 scanned"),
    ("PHONE_NUMBER", "call +44 20 7946 0958 today"),
    ("PHONE_NUMBER", "call 020 7946 0958 today"),
    ("PHONE_NUMBER", "call +49 30 90182000"),
    ("PHONE_NUMBER", "call 212.555.0142 today"),
    ("IBAN_CODE", "iban DE89 3704 0044 0532 0130 00 ok"),
    ("CREDIT_CARD", "card 3782 822463 10005 ok"),
    ("EMAIL_ADDRESS", "mail to first.last+tag@sub.example.co.uk"),
    ("URL", "see https://example.com/users/alice.smith/profile"),
    ("DATE_TIME", "born 1984-03-12"),
)
EXAMPLES = 5  # misses and false positives kept per entity or kind in the JSON

# Marks the subprocess that runs inside the virtualenv, where presidio_analyzer is importable.
WORKER_FLAG = "--presidio-worker"


class BenchError(Exception):
    """The benchmark could not run (not a finding about either redactor)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_corpus(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------
# Presidio, inside the virtualenv


def presidio_worker(args: argparse.Namespace) -> int:
    """Runs Presidio over the corpus and writes its results as JSON to --worker-out."""
    from importlib.metadata import version

    import tldextract

    # EmailRecognizer validates domains with tldextract, which fetches the public suffix list
    # from the network on first use (and logs a traceback where there is none). The snapshot
    # bundled with the package keeps the result independent of the network and of the day.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())

    everything = read_corpus(Path(args.corpus))
    records = [r for r in everything if r["kind"] != "probe"]
    probes = [r for r in everything if r["kind"] == "probe"]
    texts = [r["text"] for r in records]
    clean = [r["text"] for r in records if r["kind"] == "clean"]
    out: dict = {
        "redactor": "presidio",
        "version": version("presidio-analyzer"),
        "phonenumbers": version("phonenumbers"),
        "tldextract": version("tldextract"),
        "python": platform.python_version(),
        "threshold": args.threshold,
        "registries": {},
    }
    for name in args.registries:
        engine, recognizers = presidio_engine(name)
        log(f"presidio [{name}]: {', '.join(type(r).__name__ for r in recognizers)}")
        # Untimed warm-up: recognisers load lazily, regexes compile, tldextract reads its list.
        for text in texts[:200]:
            engine.analyze(text, language="en")

        log(f"presidio [{name}]: all {len(texts)} texts, default threshold (timed)")
        results, all_cpu = timed_analyze(engine, texts, args.min_cpu_seconds)
        at_default = score(records, results)
        log(f"presidio [{name}]: all texts at score threshold {args.threshold}")
        at_threshold = score(
            records,
            [engine.analyze(t, language="en", score_threshold=args.threshold) for t in texts],
        )
        log(f"presidio [{name}]: {len(clean)} clean lines (timed)")
        _, clean_cpu = timed_analyze(engine, clean, args.min_cpu_seconds)
        entry = {
            "recognizers": [type(r).__name__ for r in recognizers],
            "default_threshold": at_default,
            "threshold": at_threshold,
            "throughput": {
                "all": throughput(texts, *all_cpu),
                "clean": throughput(clean, *clean_cpu),
            },
        }
        if name == "mapped":
            entry["recognizer_cpu"] = recognizer_cpu(recognizers, texts)
        entry["probes"] = [
            {
                "label": p.get("entity"),
                "text": p["text"],
                "results": [
                    [r.entity_type, p["text"][r.start:r.end], round(r.score, 2)]
                    for r in engine.analyze(p["text"], language="en")
                ],
            }
            for p in probes
        ]
        out["registries"][name] = entry

    Path(args.worker_out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


def presidio_engine(name: str):
    """An AnalyzerEngine without NLP model: the no-op NLP engine and pattern recognisers only."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer import predefined_recognizers
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    nlp = NoOpNlpEngine([{"lang_code": "en", "model_name": "no_op"}])
    nlp.load()
    if name == "mapped":
        recognizers = [getattr(predefined_recognizers, cls)() for cls in MAPPED_RECOGNIZERS]
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    else:
        registry = RecognizerRegistry(supported_languages=["en"])
        # With the no-op engine no NER recogniser is added: every one loaded here is
        # self-contained (regexes, checksums, the phonenumbers library).
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        recognizers = list(registry.recognizers)
    engine = AnalyzerEngine(
        registry=registry, nlp_engine=nlp, supported_languages=["en"], default_score_threshold=0
    )
    return engine, recognizers


def timed_analyze(engine, texts: list[str], min_cpu_seconds: float):
    """Results of the first pass, and (passes, CPU seconds) over as many passes as it takes to
    reach min_cpu_seconds."""
    passes, cpu, first = 0, 0.0, None
    while passes == 0 or cpu < min_cpu_seconds:
        start = time.thread_time()
        results = [engine.analyze(t, language="en") for t in texts]
        cpu += time.thread_time() - start
        passes += 1
        if first is None:
            first = results
    return first, (passes, cpu)


def recognizer_cpu(recognizers, texts: list[str]) -> dict[str, float]:
    """CPU seconds of each recogniser's own `analyze` over all texts (no engine around it)."""
    cpu = {}
    for rec in recognizers:
        start = time.thread_time()
        for t in texts:
            rec.analyze(t, entities=rec.supported_entities, nlp_artifacts=None)
        cpu[type(rec).__name__] = time.thread_time() - start
    return cpu


def throughput(texts: list[str], passes: int, cpu: float) -> dict:
    size = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "texts": len(texts),
        "bytes": size,
        "passes": passes,
        "cpu_seconds": cpu,
        "mb_per_s": size * passes / cpu / 1e6 if cpu > 0 else None,
    }


def score(records: list[dict], results: list[list]) -> dict:
    """Recall per planted entity and precision on near misses and clean lines, from one
    analyze result list per record."""
    entities: dict[str, dict] = {}
    kept: dict[str, dict] = {}
    for record, found in zip(records, results):
        spans = [(r.start, r.end, r.entity_type) for r in found]
        if record["kind"] == "pii":
            entity = record["entity"]
            e = entities.setdefault(
                entity, {"found": 0, "credited": 0, "covered": 0, "total": 0, "missed": [], "by_type": {}}
            )
            start, end = record["start"], record["end"]
            overlapping = [s for s in spans if s[0] < end and s[1] > start]
            e["total"] += 1
            if overlapping:
                e["found"] += 1
                for _, _, kind in overlapping:
                    e["by_type"][kind] = e["by_type"].get(kind, 0) + 1
            elif len(e["missed"]) < EXAMPLES:
                e["missed"].append(record["value"])
            if any(kind in PRESIDIO_TYPES.get(entity, ()) for _, _, kind in overlapping):
                e["credited"] += 1
            if covers(overlapping, start, end):
                e["covered"] += 1
        else:
            k = kept.setdefault(
                record["kind"], {"kept": 0, "total": 0, "changed": [], "false_positive_types": {}}
            )
            k["total"] += 1
            if not spans:
                k["kept"] += 1
                continue
            for kind in {s[2] for s in spans}:
                k["false_positive_types"][kind] = k["false_positive_types"].get(kind, 0) + 1
            if len(k["changed"]) < EXAMPLES:
                text = record["text"]
                k["changed"].append([text, [[kind, text[s:e]] for s, e, kind in spans]])
    return {"entities": entities, "kept": kept}


def covers(spans: list[tuple], start: int, end: int) -> bool:
    """Whether the union of spans covers [start, end): the whole value would be replaced."""
    at = start
    for s, e, _ in sorted(spans):
        if s > at:
            return False
        at = max(at, e)
        if at >= end:
            return True
    return at >= end


# ---------------------------------------------------------------------------------------------
# The parent: build, dump, Vigil, virtualenv, report


def run_cmd(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    log(f"  $ {' '.join(cmd)}")
    try:
        return subprocess.run(cmd, check=True, **kwargs)
    except FileNotFoundError as e:
        raise BenchError(f"{cmd[0]}: {e}") from e
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"")[-2000:]
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise BenchError(f"`{' '.join(cmd)}` failed ({e.returncode}) {detail}") from e


def build_corpus_bin(jobs: int | None) -> Path:
    cargo = shutil.which("cargo")
    if not cargo:
        raise BenchError("cargo not found: pass --corpus-bin")
    log("building the redaction_corpus example (release)")
    cmd = [cargo, "build", "--release", "-p", "vigil-benches", "--example", "redaction_corpus"]
    if jobs:
        cmd += ["-j", str(jobs)]
    run_cmd(cmd, cwd=REPO)
    meta = run_cmd(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO, capture_output=True, text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "release" / "examples" / "redaction_corpus"


def ensure_presidio(venv: Path, version: str) -> Path:
    """The virtualenv's python, with presidio-analyzer `version` installed (created on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating virtualenv {venv}")
        run_cmd([sys.executable, "-m", "venv", str(venv)])
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('presidio-analyzer'))"],
        capture_output=True, text=True,
    )
    have = probe.stdout.strip() if probe.returncode == 0 else None
    if have != version:
        log(f"installing presidio-analyzer=={version} into {venv} (have: {have or 'none'})")
        # spaCy comes along as a dependency, but no spaCy model is downloaded or used.
        run_cmd([str(python), "-m", "pip", "install", "--quiet", f"presidio-analyzer=={version}"])
    return python


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "date": dt.date.today().isoformat(),
    }


def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


def pct(num: int, den: int) -> str:
    return f"{100 * num / den:.1f} %" if den else "—"


def mbps(entry: dict | None) -> float | None:
    return entry.get("mb_per_s") if entry else None


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(cells: list[str]) -> list[str]:
    return [row(cells), "|---" * len(cells) + "|"]


def report(vigil: dict, presidio: dict | None, meta: dict) -> str:
    """The markdown report: throughput and ratios first, then recall, precision, probes."""
    lines: list[str] = []
    add = lines.append
    registries = (presidio or {}).get("registries", {})
    mapped, default = registries.get("mapped"), registries.get("default")
    threshold = (presidio or {}).get("threshold")
    host = meta["machine"]

    add(f"Corpus: {meta['corpus']}. Machine: {host['cpu']}, {host['cores']} cores; load average "
        f"{meta['load_before']} before, {meta['load_after']} after. Vigil {host['commit']}, "
        f"presidio-analyzer {presidio['version'] if presidio else '(not run)'}.")
    add("")

    lines += header(["throughput (one thread, CPU time)", "bytes", "Vigil MB/s",
                     "Presidio mapped MB/s", "Vigil / Presidio",
                     "Presidio default registry MB/s", "Vigil / Presidio"])
    for key, label in (("all", "all texts"), ("clean", "clean lines only")):
        v = mbps(vigil["throughput"].get(key))
        cells = [label, vigil["throughput"][key]["bytes"], f"{v:.1f}" if v else "—"]
        for entry in (mapped, default):
            p = mbps(entry["throughput"][key]) if entry else None
            cells += [f"{p:.3f}" if p else "—", f"{v / p:,.0f}×" if v and p else "—"]
        add(row(cells))
    add("")

    lines += header(["entity", "planted", "Vigil found", "Vigil credited", "Presidio type",
                     "Presidio credited (score ≥ 0)", f"credited (≥ {threshold})",
                     "Presidio found (any overlap, ≥ 0)"])
    # Sums over all entities, and over those Presidio has a recogniser for.
    every = {"total": 0, "v_found": 0, "v_credited": 0, "p_credited": 0, "p_credited_t": 0}
    covered = dict(every)
    for entity, v in vigil["entities"].items():
        total = v["total"]
        types = PRESIDIO_TYPES.get(entity)
        cells = [entity, total, pct(v["found"], total), pct(v["credited"], total)]
        p0 = pt = {}
        if mapped:
            p0 = mapped["default_threshold"]["entities"].get(entity, {})
            pt = mapped["threshold"]["entities"].get(entity, {})
            if types:
                cells += [", ".join(types), pct(p0.get("credited", 0), total),
                          pct(pt.get("credited", 0), total)]
            else:
                cells += ["no recognizer", "—", "—"]
            cells.append(pct(p0.get("found", 0), total))
        else:
            cells += ["(not run)"] * 4
        add(row(cells))
        for sums in (every, covered) if types else (every,):
            sums["total"] += total
            sums["v_found"] += v["found"]
            sums["v_credited"] += v["credited"]
            # Entities without a recogniser add nothing to Presidio's credited count.
            sums["p_credited"] += p0.get("credited", 0) if types else 0
            sums["p_credited_t"] += pt.get("credited", 0) if types else 0
    if mapped:
        for label, sums in (("**entities Presidio has a recogniser for**", covered),
                            (f"**all {len(vigil['entities'])} entities**", every)):
            n = sums["total"]
            add(row([label, n, pct(sums["v_found"], n), pct(sums["v_credited"], n), "",
                     pct(sums["p_credited"], n), pct(sums["p_credited_t"], n), ""]))
    add("")

    cols = [("Vigil", vigil["kept"])]
    for name, entry in (("Presidio mapped", mapped), ("Presidio default registry", default)):
        if entry:
            cols.append((f"{name}, score ≥ 0", entry["default_threshold"]["kept"]))
            cols.append((f"{name}, score ≥ {threshold}", entry["threshold"]["kept"]))
    lines += header(["kept unchanged", *(name for name, _ in cols)])
    for kind, label in (("near_miss", "near misses"), ("clean", "clean log lines")):
        add(row([label, *(pct(k.get(kind, {}).get("kept", 0), k.get(kind, {}).get("total", 0))
                          for _, k in cols)]))
    add("")

    for name, entry in (("mapped", mapped), ("default registry", default)):
        if not entry:
            continue
        flagged: dict[str, int] = {}
        for k in entry["default_threshold"]["kept"].values():
            for kind, n in k["false_positive_types"].items():
                flagged[kind] = flagged.get(kind, 0) + n
        if flagged:
            top = ", ".join(f"{k} {n}" for k, n in sorted(flagged.items(), key=lambda kv: -kv[1]))
            add(f"Presidio {name}, texts flagged by type (score ≥ 0): {top}.")
    if mapped and mapped.get("recognizer_cpu"):
        cpu = mapped["recognizer_cpu"]
        total = sum(cpu.values())
        parts = ", ".join(f"{k} {100 * s / total:.0f} %"
                          for k, s in sorted(cpu.items(), key=lambda kv: -kv[1]))
        add(f"Presidio mapped recognisers' own CPU time over all texts (no engine): "
            f"{total:.1f} s; {parts}.")

    # Probes: shapes from outside the corpus, with what each side made of them.
    probes = (default or mapped or {}).get("probes") or []
    if vigil.get("probes"):
        add("")
        lines += header(["probe (Presidio type)", "text", "Vigil",
                         f"Presidio {'default registry' if default else 'mapped'} (type score)"])
        by_text = {p["text"]: p for p in probes}
        for v in vigil["probes"]:
            p = by_text.get(v["text"])
            vigil_cell = "kept" if v["redacted"] == v["text"] else f"`{v['redacted']}`"
            presidio_cell = (
                ("; ".join(f"{t} {s}" for t, _, s in p["results"]) or "nothing") if p else "(not run)"
            )
            add(row([v["label"], f"`{v['text']}`", vigil_cell, presidio_cell]))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-bin", help="redaction_corpus example binary (skips the build)")
    parser.add_argument("--jobs", type=int, help="cargo build -j")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed [%(default)s]")
    parser.add_argument("--per-entity", type=int, default=200, help="planted values per entity [%(default)s]")
    parser.add_argument("--near-misses", type=int, default=4000, help="near misses [%(default)s]")
    parser.add_argument("--clean", type=int, default=2000, help="clean log lines [%(default)s]")
    parser.add_argument("--repeat", type=int, default=3, help="at least this many timed passes for Vigil [%(default)s]")
    parser.add_argument("--min-cpu-seconds", type=float, default=3.0,
                        help="CPU time each throughput measurement must reach [%(default)s]")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="Presidio score threshold reported besides its default of 0 [%(default)s]")
    parser.add_argument("--registries", default=",".join(REGISTRIES),
                        help=f"Presidio registries to run, of {', '.join(REGISTRIES)} [%(default)s]")
    parser.add_argument("--venv", default="~/.cache/vigil-bench-venv", help="virtualenv for Presidio [%(default)s]")
    parser.add_argument("--presidio-version", default=PRESIDIO_VERSION, help="presidio-analyzer version [%(default)s]")
    parser.add_argument("--work-dir", help="keep the corpus and both sides' raw results here")
    parser.add_argument("--json", help="write both sides' results to this file")
    # Internal: the Presidio half, run by the parent inside the virtualenv.
    parser.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.registries = [r for r in args.registries.split(",") if r]
    for r in args.registries:
        if r not in REGISTRIES:
            parser.error(f"unknown registry {r!r}")

    if args.presidio_worker:
        return presidio_worker(args)
    try:
        return run(args)
    except BenchError as e:
        log(f"redaction_side_by_side: {e}")
        return 2


def run(args: argparse.Namespace) -> int:
    work = Path(args.work_dir).expanduser() if args.work_dir else Path(tempfile.mkdtemp(prefix="vigil-redaction-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus_bin = Path(args.corpus_bin) if args.corpus_bin else build_corpus_bin(args.jobs)
    if not corpus_bin.exists():
        raise BenchError(f"{corpus_bin} does not exist")

    corpus = work / "corpus.jsonl"
    run_cmd([str(corpus_bin), "dump", "--out", str(corpus), "--seed", str(args.seed),
             "--per-entity", str(args.per_entity), "--near-misses", str(args.near_misses),
             "--clean", str(args.clean)])
    with open(corpus, "a", encoding="utf-8") as f:
        for label, text in PROBES:
            f.write(json.dumps({"kind": "probe", "entity": label, "text": text}) + "\n")
    meta = {
        "corpus": (f"seed {args.seed}, {args.per_entity} planted values per entity (20 entities), "
                   f"{args.near_misses} near misses, {args.clean} clean log lines"),
        "machine": machine(),
        "load_before": loadavg(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }

    log("vigil: measuring")
    out = run_cmd([str(corpus_bin), "measure", "--corpus", str(corpus), "--repeat", str(args.repeat),
                   "--min-cpu-seconds", str(args.min_cpu_seconds)], capture_output=True, text=True)
    vigil = json.loads(out.stdout)
    (work / "vigil.json").write_text(out.stdout, encoding="utf-8")

    presidio = None
    try:
        python = ensure_presidio(Path(args.venv).expanduser(), args.presidio_version)
        presidio_out = work / "presidio.json"
        started = time.monotonic()
        run_cmd([str(python), str(Path(__file__).resolve()), WORKER_FLAG, "--corpus", str(corpus),
                 "--worker-out", str(presidio_out), "--threshold", str(args.threshold),
                 "--registries", ",".join(args.registries),
                 "--min-cpu-seconds", str(args.min_cpu_seconds)])
        log(f"presidio: done in {time.monotonic() - started:.0f} s")
        presidio = json.loads(presidio_out.read_text(encoding="utf-8"))
    except BenchError as e:
        log(f"presidio could not be measured: {e}")
    meta["load_after"] = loadavg()

    print(report(vigil, presidio, meta), end="")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"meta": meta, "vigil": vigil, "presidio": presidio}, indent=1), encoding="utf-8"
        )
    log(f"corpus and raw results in {work}")
    return 0 if presidio else 1


if __name__ == "__main__":
    sys.exit(main())
