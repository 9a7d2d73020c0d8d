//! The `vigil` command: run the pipeline, query it, check a config, test rules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use vigil_collector::config::{Config, RawConfig};
use vigil_collector::detection;
use vigil_collector::query::{self, OutputFormat, QueryEngine, QueryResult};
use vigil_collector::storage;
use vigil_collector::topology::Topology;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Security telemetry pipeline: OTLP in, redaction, SQL, detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline (embedded defaults when no config file is given).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write the bound listener addresses as JSON to this file once serving
        /// (useful with port 0 and for supervisors).
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Run the pipeline on embedded defaults (data in ./vigil-demo-data) with a built-in
    /// traffic generator: a small shop of services, PII in some records and a scripted attack
    /// every few seconds.
    Demo {
        /// Where the demo's data goes.
        #[arg(long, default_value = "vigil-demo-data")]
        data_dir: PathBuf,
        /// Listener addresses (port 0 picks a free one), if the defaults are taken.
        #[arg(long, default_value = "127.0.0.1:4317")]
        grpc_addr: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:4318")]
        http_addr: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_addr: std::net::SocketAddr,
        /// Write the bound listener addresses as JSON to this file once serving.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Run one SQL statement against a running Vigil or directly on a data directory.
    Query {
        /// Base URL of a running Vigil's API.
        #[arg(long, conflicts_with = "data_dir")]
        url: Option<String>,
        /// Read this data directory directly (no server needed; nothing is written).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = CliFormat::Table)]
        format: CliFormat,
        /// API key for a Vigil with authentication on (a key with the `query` scope).
        #[arg(long = "api-key", env = "VIGIL_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// With --data-dir: the storage keyring of an encrypted data directory.
        #[arg(long, requires = "data_dir")]
        storage_keys_file: Option<PathBuf>,
        sql: String,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Validate a config file and the rules it loads; print every problem and exit non-zero
    /// if there are any.
    CheckConfig { file: PathBuf },
    /// Work with Sigma rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run the test events embedded in rules (`rsigma.exemplars`) through decoding, redaction
    /// and evaluation. Without DIR, tests the shipped rules.
    Test {
        dir: Option<PathBuf>,
        /// Use this config's redaction and field mapping (embedded defaults otherwise).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new random API key. Prints the key on the first line (give it to the client,
    /// e.g. as VIGIL_API_KEY or an OTLP exporter header; it is not shown again), then the
    /// entry to append to the key file, which holds only the key's hash.
    Generate {
        /// Name of the key in logs, metrics and the audit trail.
        #[arg(long)]
        id: String,
        /// What the key may do (repeat for several).
        #[arg(long = "scope", required = true, value_parser = ["ingest", "query", "admin"])]
        scopes: Vec<String>,
        /// Limit the key to these services: it may only send as them and only sees their
        /// rows (repeat for several).
        #[arg(long = "service")]
        services: Vec<String>,
    },
    /// Make a new random storage key (AES-256) for encryption at rest. Prints the keyring
    /// entry `id:hex`; put it first in the keyring to encrypt new files with it.
    Storage {
        /// Name of the key, recorded in every file it encrypts (e.g. the month it starts).
        #[arg(long)]
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CliFormat {
    Table,
    Json,
    Csv,
    Ndjson,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve { config, addr_file } => serve(config.as_deref(), addr_file),
        Command::Demo {
            data_dir,
            grpc_addr,
            http_addr,
            api_addr,
            addr_file,
        } => {
            let mut config = vigil_collector::demo::config();
            config.storage.data_dir = data_dir;
            config.server.grpc_addr = grpc_addr;
            config.server.http_addr = http_addr;
            config.server.api_addr = api_addr;
            demo(config, addr_file)
        }
        Command::Query {
            url,
            data_dir,
            format,
            api_key,
            storage_keys_file,
            sql,
        } => {
            let source = match data_dir {
                Some(dir) => QuerySource::DataDir {
                    dir,
                    storage_keys_file,
                },
                None => QuerySource::Url {
                    url: url.unwrap_or_else(|| "http://127.0.0.1:8080".into()),
                    api_key,
                },
            };
            run_query(source, format, &sql)
        }
        Command::Keys {
            command:
                KeysCommand::Generate {
                    id,
                    scopes,
                    services,
                },
        } => generate_key(&id, &scopes, &services),
        Command::Keys {
            command: KeysCommand::Storage { id },
        } => storage::crypto::generate_entry(&id)
            .map(|entry| println!("{entry}"))
            .map_err(anyhow::Error::from),
        Command::CheckConfig { file } => check_config(&file),
        Command::Rules {
            command: RulesCommand::Test { dir, config },
        } => rules_test(dir.as_deref(), config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let raw = match path {
        Some(p) => RawConfig::load(p)?,
        None => RawConfig::default(),
    };
    Ok(raw.validate()?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(config_path: Option<&Path>, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let topology = Topology::start(config).await?;
        write_addr_file(&topology, addr_file.as_deref())?;
        topology.run_until(shutdown_signal()).await
    })
}

fn write_addr_file(topology: &Topology, path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let json = serde_json::to_vec(&topology.addrs)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn demo(config: RawConfig, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config.validate()?;
    runtime()?.block_on(async move {
        let topology = Topology::start(config).await?;
        write_addr_file(&topology, addr_file.as_deref())?;
        let api = topology.addrs.api;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let traffic = tokio::spawn(vigil_collector::demo::generate(topology.addrs.grpc, stopped));
        println!(
            "Vigil demo: a shop of services is sending traces and logs; an attack plays every few \
             seconds.\n\
             \n  console:  http://{api}/console/   (alerts show within a minute)\
             \n  alerts:   vigil query --url http://{api} \"SELECT time, severity, rule_title, service, summary FROM alerts ORDER BY time DESC LIMIT 20\"\
             \n  records:  vigil query --url http://{api} \"SELECT service, count(*) FROM logs GROUP BY service\"\
             \n  metrics:  curl -s http://{api}/metrics | grep vigil_alerts\
             \n\nStop with Ctrl-C."
        );
        let result = topology
            .run_until(async {
                shutdown_signal().await;
                let _ = stop.send(true);
            })
            .await;
        match traffic.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "demo traffic stopped"),
            Err(e) => tracing::warn!(error = %e, "demo traffic task failed"),
            Ok(Ok(())) => {}
        }
        result
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

/// Where `vigil query` gets its answer.
enum QuerySource {
    Url {
        url: String,
        api_key: Option<String>,
    },
    DataDir {
        dir: PathBuf,
        storage_keys_file: Option<PathBuf>,
    },
}

fn run_query(source: QuerySource, format: CliFormat, sql: &str) -> anyhow::Result<()> {
    let result = runtime()?.block_on(async {
        match source {
            QuerySource::DataDir {
                dir,
                storage_keys_file,
            } => query_data_dir(&dir, storage_keys_file, sql).await,
            QuerySource::Url { url, api_key } => query_url(&url, api_key.as_deref(), sql).await,
        }
    })?;
    let out = match format {
        CliFormat::Table => query::render_table(&result).into_bytes(),
        CliFormat::Json => query::encode(&result, OutputFormat::Json)?.1,
        CliFormat::Csv => query::encode(&result, OutputFormat::Csv)?.1,
        CliFormat::Ndjson => query::encode(&result, OutputFormat::Ndjson)?.1,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    if !out.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}

async fn query_data_dir(
    dir: &Path,
    storage_keys_file: Option<PathBuf>,
    sql: &str,
) -> anyhow::Result<QueryResult> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let keyring = storage::crypto::Keyring::load(&storage::crypto::EncryptionConfig {
        keys_env: None,
        keys_file: storage_keys_file,
    })?;
    let catalog = storage::open_read_only(dir, keyring.as_ref())?;
    let engine = QueryEngine::new(catalog, Default::default())?.with_storage_keys(keyring);
    Ok(engine.execute(sql).await?)
}

/// Asks a running Vigil for Arrow IPC, so every output format is rendered locally, the same way.
async fn query_url(url: &str, api_key: Option<&str>, sql: &str) -> anyhow::Result<QueryResult> {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let started = std::time::Instant::now();
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .json(&serde_json::json!({ "sql": sql, "format": "arrow" }));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let body = resp.bytes().await.context("cannot read the answer")?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query failed ({status}): {msg}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("the answer is not an Arrow IPC stream")?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .context("cannot decode the answer")?;
    Ok(QueryResult {
        schema,
        batches,
        elapsed: started.elapsed(),
    })
}

fn generate_key(id: &str, scopes: &[String], services: &[String]) -> anyhow::Result<()> {
    let (key, hash) = vigil_collector::auth::keys::generate()
        .map_err(|e| anyhow::anyhow!("cannot read the system's random source: {e}"))?;
    let mut entry = format!(
        "[[keys]]\nid = {}\nhash = \"{hash}\"\nscopes = {}\n",
        toml_string(id),
        toml_list(scopes)
    );
    if !services.is_empty() {
        entry.push_str(&format!("services = {}\n", toml_list(services)));
    }
    // The entry must load as the server will load it.
    vigil_collector::auth::keys::KeySet::parse(&entry).map_err(anyhow::Error::msg)?;
    print!("{key}\n\n{entry}");
    Ok(())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Rules as the server would load them, or every problem with them.
fn load_rules(
    detector: &vigil_detector::DetectorConfig,
) -> anyhow::Result<vigil_detector::RuleSet> {
    detection::load_rules(detector).map_err(|problems| {
        anyhow::anyhow!(
            "invalid rules:\n{}",
            problems
                .iter()
                .map(|p| format!("  - {p}\n"))
                .collect::<String>()
        )
    })
}

fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = RawConfig::load(file)?.validate()?;
    storage::crypto::Keyring::load(&config.storage.encryption)
        .context("cannot load the storage keyring ([storage.encryption])")?;
    let rules = load_rules(&config.detector)?;
    runtime()?.block_on(async {
        let catalog = Arc::new(vigil_collector::storage::catalog::Catalog::new());
        let engine = QueryEngine::new(catalog, config.query.clone())?;
        detection::check_sql_rules(&config.detector.sql, &engine)
            .await
            .map_err(|p| {
                anyhow::anyhow!(
                    "invalid scheduled sql rules:\n{}",
                    p.iter().map(|p| format!("  - {p}\n")).collect::<String>()
                )
            })
    })?;
    println!("{}: ok ({} rules)", file.display(), rules.len());
    Ok(())
}

fn rules_test(dir: Option<&Path>, config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let mut detector = config.detector.clone();
    if let Some(dir) = dir {
        detector.shipped_rules = false;
        detector.rule_dirs = vec![dir.to_path_buf()];
    }
    let rules = load_rules(&detector)?;
    let rules = std::sync::Arc::new(rules);
    let fields = vigil_detector::fields::FieldMap::new(&detector.fields)
        .map_err(|p| anyhow::anyhow!("invalid field mapping: {}", p.join("; ")))?;
    // Test events pass the configured redaction, as live traffic does; a throwaway key
    // suffices because pseudonyms are only compared within one run.
    let key = vigil_core::HashKey::new(b"vigil rules test: throwaway key")
        .map_err(|e| anyhow::anyhow!(e))?;
    let redactor = vigil_core::Redactor::new(&config.redaction, key)?;
    let results = vigil_detector::ruletest::run(&rules, &fields, &redactor);
    let mut failed = 0;
    for r in &results {
        match &r.failure {
            None => println!("ok    {} [{}] {}", r.rule, r.expect, r.name),
            Some(why) => {
                failed += 1;
                println!(
                    "FAIL  {} [{}] {} ({}): {why}",
                    r.rule, r.expect, r.name, r.origin
                );
            }
        }
    }
    let mut untested = Vec::new();
    for expect in [
        vigil_detector::ruletest::Expect::Match,
        vigil_detector::ruletest::Expect::NoMatch,
    ] {
        for rule in vigil_detector::ruletest::rules_without(&rules, expect) {
            untested.push(format!("{rule} has no `{expect}` test event"));
        }
    }
    for u in &untested {
        println!("MISS  {u}");
    }
    println!(
        "{} rules, {} test events: {} passed, {failed} failed, {} missing",
        rules.len(),
        results.len(),
        results.len() - failed,
        untested.len()
    );
    if failed > 0 || !untested.is_empty() {
        bail!("rule tests failed");
    }
    Ok(())
}
