//! The `vigil` command line as a user runs it. (Being an integration test of this package also
//! makes cargo build the real `vigil` binary, which the end-to-end suite in `tests/` drives.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// Runs `vigil check-config file`, which must fail; returns what it printed on stderr.
#[track_caller]
fn check_config_fails(file: &Path) -> String {
    let out = vigil().arg("check-config").arg(file).output().unwrap();
    assert!(
        !out.status.success(),
        "check-config accepted {}",
        file.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/vigil.toml");
    let out = vigil().arg("check-config").arg(&shipped).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\ngrpc_addr = \"0.0.0.0:4317\"\n[retention]\nmax_bytes = 0\n[query]\nmax_result_rows = 0\n",
    )
    .unwrap();
    let err = check_config_fails(&file);
    assert!(
        err.contains("server.grpc_addr = 0.0.0.0:4317 is not a loopback address"),
        "{err}"
    );
    assert!(
        err.contains("retention.max_bytes must be greater than 0"),
        "{err}"
    );
    assert!(
        err.contains("query.max_result_rows must be greater than 0"),
        "{err}"
    );
}

#[test]
fn check_config_explains_bad_redaction_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redaction.toml");
    std::fs::write(
        &file,
        r#"
[redaction.detectors]
emial = { action = "mask" }

[[redaction.custom]]
name = "employee_id"
pattern = 'EMP-([0-9]{6}'
validator = "checksum"
"#,
    )
    .unwrap();
    let err = check_config_fails(&file);
    for needle in [
        "redaction.custom \"employee_id\": bad pattern",
        "unclosed group",
        "unknown validator \"checksum\"; known ones are luhn, credit_card",
        "redaction.detectors: there is no detector named \"emial\"",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}

#[test]
fn check_config_reports_syntax_errors_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[storage\n").unwrap();
    assert!(check_config_fails(&file).contains("broken.toml"));
}

#[test]
fn query_on_an_empty_data_dir_answers_zero_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil()
        .args(["query", "--format", "json", "--data-dir"])
        .arg(dir.path())
        .arg("SELECT count(*) AS n FROM logs")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], serde_json::json!([[0]]));
}

#[test]
fn query_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil()
        .args(["query", "--data-dir"])
        .arg(dir.path())
        .arg("CREATE TABLE x AS SELECT 1")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn rules_test_runs_the_shipped_rules_and_reports_each_case() {
    let out = vigil().args(["rules", "test"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "ok    4f7c1d52-8a3e-4c0b-9d6e-1b2a3c4d5e01 [match] tautology in query string"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed, 0 missing"), "{stdout}");
}

#[test]
fn rules_test_fails_on_a_wrong_expectation_and_a_missing_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        r#"
title: Admin path
id: admin-path
logsource:
  product: opentelemetry
detection:
  s:
    url.path|startswith: /admin
  condition: s
rsigma.exemplars:
  - name: admin but expected silent
    expect: no-match
    event: { signal: spans, service: api, name: GET, kind: SERVER, attributes: { url.path: /admin/users } }
"#,
    )
    .unwrap();
    let out = vigil()
        .args(["rules", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  admin-path [no-match] admin but expected silent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected no match, but the rule matched"),
        "{stdout}"
    );
    assert!(
        stdout.contains("MISS  admin-path has no `match` test event"),
        "{stdout}"
    );
}

#[test]
fn check_config_explains_bad_rules_and_sql_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("windows.yml"),
        "title: w\nid: w\nlogsource:\n  product: windows\ndetection:\n  s:\n    a: b\n  condition: s\n",
    )
    .unwrap();
    let file = dir.path().join("detector.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[detector]
rule_dirs = [{rules:?}]

[[detector.sql]]
id = "drop"
title = "bad"
query = "DROP TABLE logs"
"#
        ),
    )
    .unwrap();
    let err = check_config_fails(&file);
    assert!(
        err.contains("logsource product `windows` is not produced by Vigil"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_webhook_destinations_outside_the_egress_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sinks.toml");
    std::fs::write(
        &file,
        r#"
[alerts]
egress_allow = ["siem.example.com"]

[[alerts.sinks]]
name = "soc"
format = "alertmanager"
url = "http://127.0.0.1:9093/api/v2/alerts"

[[alerts.sinks]]
name = "splunk"
format = "splunk_hec"
url = "https://siem.example.com:8088/services/collector/event"
"#,
    )
    .unwrap();
    let err = check_config_fails(&file);
    assert!(
        err.contains("alerts.sinks `soc`: destination 127.0.0.1 is not in alerts.egress_allow"),
        "{err}"
    );
    assert!(
        err.contains("splunk_hec needs the HEC token in token_env or token_file"),
        "{err}"
    );
}

#[test]
fn non_loopback_listeners_need_generated_keys_and_tls_or_the_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil()
        .args(["keys", "generate", "--id", "checkout-ingest"])
        .args(["--scope", "ingest", "--service", "checkout"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (key, entry) = text.split_once("\n\n").unwrap();
    assert!(key.starts_with("vgl_") && !entry.contains(key), "{text}");
    assert!(entry.contains("scopes = [\"ingest\"]") && entry.contains("services = [\"checkout\"]"));
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, entry).unwrap();

    let exposed = "[server]\ngrpc_addr = \"0.0.0.0:4317\"\n";
    let file = dir.path().join("exposed.toml");
    std::fs::write(&file, exposed).unwrap();
    // No auth on a public address is refused.
    check_config_fails(&file);

    let with_keys = format!(
        "{exposed}[auth]\nkeys_file = {:?}\n",
        keys.display().to_string()
    );
    // Keys alone are not enough: TLS too, or the explicit insecure flag.
    std::fs::write(&file, &with_keys).unwrap();
    let err = check_config_fails(&file);
    assert!(err.contains("TLS (server.tls) and authentication"), "{err}");
    let insecure = with_keys.replace("[server]\n", "[server]\nallow_insecure = true\n");
    std::fs::write(&file, insecure).unwrap();
    let out = vigil().arg("check-config").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = vigil()
        .args(["keys", "generate", "--id", "x", "--scope", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown scopes are refused");
}
