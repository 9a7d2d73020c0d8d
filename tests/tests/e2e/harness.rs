//! Starts the real `vigil` binary on ephemeral loopback ports with its own data directory, and
//! talks to it the way users do: OTLP clients, the query API, signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Where the listeners bound (written by `vigil serve --addr-file`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Addrs {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub api: std::net::SocketAddr,
}

/// A running `vigil serve`. Killed on drop; its log is printed if the test failed.
pub struct Vigil {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub addrs: Addrs,
    log: PathBuf,
    /// Sent as `Authorization: Bearer` by the query and metrics helpers when auth is on.
    pub api_key: Option<String>,
    /// Keeps the scratch directory alive as long as the server (and restarts) need it.
    _scratch: Option<tempfile::TempDir>,
}

/// The `vigil` binary built by this workspace (cargo builds it for `vigil-collector`'s
/// integration tests, which run in the same `cargo nextest run --workspace`).
pub fn vigil_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/vigil
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("vigil"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: run the suite with `cargo nextest run --workspace` (or build it with \
         `cargo build -p vigil-collector --bin vigil`)",
        bin.display()
    );
    bin
}

/// Merges `extra` (TOML) over the test defaults: ephemeral ports, the given data dir, quiet
/// background work.
pub(crate) fn config_text(data_dir: &Path, extra: &str) -> String {
    let mut base: toml::Table = toml::from_str(&format!(
        r#"
        version = 1
        [server]
        grpc_addr = "127.0.0.1:0"
        http_addr = "127.0.0.1:0"
        api_addr = "127.0.0.1:0"
        shutdown_timeout = "10s"
        [storage]
        data_dir = {data_dir:?}
        "#,
        data_dir = data_dir.display().to_string()
    ))
    .expect("base config");
    let extra: toml::Table = toml::from_str(extra).expect("extra config is valid TOML");
    for (section, value) in extra {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => b.extend(e),
            (_, v) => {
                base.insert(section, v);
            }
        }
    }
    toml::to_string(&base).expect("config serialises")
}

impl Vigil {
    /// Starts a server on a fresh data directory.
    pub fn start(extra_config: &str) -> Vigil {
        let scratch = tempfile::tempdir().expect("tempdir");
        let data_dir = scratch.path().join("data");
        let mut v = Vigil::start_on(&data_dir, extra_config, scratch.path());
        v._scratch = Some(scratch);
        v
    }

    /// Starts a server on an existing data directory (a restart), keeping the scratch dir.
    pub fn restart(mut self, extra_config: &str) -> Vigil {
        self.stop_kill();
        let scratch = self._scratch.take();
        let dir = scratch
            .as_ref()
            .map(|s| s.path().to_owned())
            .expect("scratch dir");
        let mut v = Vigil::start_on(&self.data_dir, extra_config, &dir);
        v._scratch = scratch;
        v.api_key = self.api_key.take();
        v
    }

    fn start_on(data_dir: &Path, extra_config: &str, scratch: &Path) -> Vigil {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let config = scratch.join(format!("vigil-{n}.toml"));
        let addr_file = scratch.join(format!("addrs-{n}.json"));
        let log = scratch.join(format!("vigil-{n}.log"));
        // The data directory is given relative to the server's working directory, as in the
        // shipped configuration (`vigil-data`), whenever it lies below the scratch directory.
        let configured = data_dir.strip_prefix(scratch).unwrap_or(data_dir);
        std::fs::write(&config, config_text(configured, extra_config)).unwrap();
        let child = Command::new(vigil_binary())
            .current_dir(scratch)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("VIGIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn vigil");
        let mut v = Vigil {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            addrs: Addrs {
                grpc: "127.0.0.1:0".parse().unwrap(),
                http: "127.0.0.1:0".parse().unwrap(),
                api: "127.0.0.1:0".parse().unwrap(),
            },
            log,
            api_key: None,
            _scratch: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                v.addrs = serde_json::from_str(&text).expect("addr file is JSON");
                return v;
            }
            if let Some(status) = v.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("vigil exited during start-up ({status}):\n{}", v.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "vigil did not start in 60s:\n{}",
                v.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.addrs.http)
    }
    pub fn api_endpoint(&self) -> String {
        format!("http://{}", self.addrs.api)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// SIGKILL: no chance to flush or sync anything.
    pub fn stop_kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop_term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "vigil did not exit within 60s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs SQL through `POST /api/v1/query` (JSON); panics with the server's error otherwise.
    pub async fn query(&self, sql: &str) -> Value {
        let (status, body) = self.query_raw(sql, "json").await;
        assert_eq!(
            status,
            200,
            "query {sql:?} failed: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("json answer")
    }

    /// The rows of a query answer.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let v = self.query(sql).await;
        serde_json::from_value(v["rows"].clone()).expect("rows")
    }

    /// A single integer answer, e.g. `SELECT count(*) ...`.
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows.first()
            .and_then(|r| r.first())
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
    }

    pub async fn query_raw(&self, sql: &str, format: &str) -> (u16, Vec<u8>) {
        post_query_as(self.addrs.api, self.api_key.as_deref(), sql, format).await
    }

    /// The value of one Prometheus series (summed over label sets matching `labels`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut request = reqwest::Client::new().get(format!("{}/metrics", self.api_endpoint()));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        self.stop_kill();
        if std::thread::panicking() {
            eprintln!(
                "---- vigil log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// `POST /api/v1/query` to the API listener at `api`: the status and body of the answer.
pub async fn post_query(api: std::net::SocketAddr, sql: &str, format: &str) -> (u16, Vec<u8>) {
    post_query_as(api, None, sql, format).await
}

/// [`post_query`] with `Authorization: Bearer <key>` when a key is given.
pub async fn post_query_as(
    api: std::net::SocketAddr,
    key: Option<&str>,
    sql: &str,
    format: &str,
) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/query"))
        .json(&serde_json::json!({ "sql": sql, "format": format }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let resp = request.send().await.expect("query request");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("query body").to_vec())
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
