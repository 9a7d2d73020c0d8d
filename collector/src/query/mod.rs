//! SQL over Vigil's storage: a DataFusion engine with the `logs` and `spans` tables, run
//! read-only under per-query time, memory and row limits, plus the query API's wire formats.

mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod http;
mod parse;
mod provider;
mod topk;
mod trace_filters;
mod types;

#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::config::EncryptionFactoryOptions;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::prelude::{col, lit};
use futures::StreamExt;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use vigil_core::Signal;

use crate::config::QueryConfig;
use crate::storage::catalog::Catalog;
use crate::storage::crypto::Keyring;

pub use format::{encode, render_table};
pub use http::router;
pub use provider::SignalTable;
use trace_filters::TraceFilters;

/// Runs analysts' SQL against the catalog. Cheap to share in an `Arc`; each query gets its own
/// session state and memory pool, so one query cannot starve or break another.
#[derive(Debug)]
pub struct QueryEngine {
    /// Tables, functions and settings every query starts from.
    base: SessionState,
    config: QueryConfig,
    catalog: Arc<Catalog>,
    /// The `trace_id` bloom filters of the files lookups read, shared by every query.
    trace_filters: Arc<TraceFilters>,
    /// Where queries run: CPU-bound operators that rarely yield would otherwise hold the
    /// threads that receive telemetry and fire the query timeout itself.
    runtime: QueryRuntime,
}

/// Name of the encryption factory that decrypts Vigil's Parquet files.
const STORAGE_KEYS: &str = "vigil-storage-keys";

/// Hands DataFusion the storage keyring as Parquet decryption properties. Vigil writes its
/// files itself, so the write side is never asked for.
#[derive(Debug)]
struct StorageKeys(Keyring);

#[async_trait::async_trait]
impl EncryptionFactory for StorageKeys {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &ObjectPath,
    ) -> datafusion::error::Result<Option<Arc<FileEncryptionProperties>>> {
        Err(DataFusionError::NotImplemented(
            "vigil's tables are read-only through SQL".into(),
        ))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _file_path: &ObjectPath,
    ) -> datafusion::error::Result<Option<Arc<FileDecryptionProperties>>> {
        Ok(Some(self.0.parquet_decryption()))
    }
}

/// A runtime of its own for queries, shut down without waiting when the engine is dropped
/// (which may happen inside another runtime, where a blocking shutdown would panic).
#[derive(Debug)]
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new(threads: usize) -> Result<Self, QueryError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("vigil-query")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
            .map_err(|e| QueryError::Internal(format!("cannot start the query runtime: {e}")))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Planning plus execution time.
    pub elapsed: Duration,
}

impl QueryResult {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a query produced no answer. Messages of every variant but `Internal` are meant for the
/// analyst; `Internal` details are logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad SQL, an unknown table or column, a type error, a failing cast.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// A statement that is not a read-only query (DDL, DML, COPY, SET, file access).
    #[error("query refused: {0}")]
    Refused(String),
    #[error("query cancelled after the time limit of {}", humantime_like(*.0))]
    Timeout(Duration),
    #[error("the result has more than {limit} rows: add LIMIT or narrow the query")]
    TooLarge { limit: usize },
    /// The query needed more memory than its limit (joins, sorts, aggregations).
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// The `outcome` label of `vigil_queries_total` and `vigil_query_duration_seconds`.
    pub fn outcome(&self) -> &'static str {
        match self {
            QueryError::Invalid(_) => "invalid",
            QueryError::Refused(_) => "refused",
            QueryError::Timeout(_) => "timeout",
            QueryError::TooLarge { .. } => "too_large",
            QueryError::ResourcesExhausted(_) | QueryError::Internal(_) => "error",
        }
    }
}

fn humantime_like(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Format of an answer on the wire.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Json,
    Csv,
    Ndjson,
    Arrow,
}

/// A session on `config` and `runtime` with DataFusion's defaults and Vigil's own plan rules.
fn context(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(topk::TopKByTime))
        .build();
    SessionContext::new_with_state(state)
}

impl QueryEngine {
    pub fn new(catalog: Arc<Catalog>, config: QueryConfig) -> Result<Self, QueryError> {
        let mut session = SessionConfig::new()
            .with_target_partitions(config.threads.max(1))
            .with_information_schema(true);
        session.options_mut().execution.time_zone = Some("UTC".to_string());
        // Late materialisation (a scan evaluates its filters on the filter columns first and
        // decodes the other columns only for the rows that pass) is decided per scan, by its
        // filters and the columns it reads (see `provider`): this session-wide switch would
        // force it on for all. Without it, a trace lookup would decode every body and map of
        // the files it reads and throw all but a handful away. Where it is on, the cheapest,
        // most selective filters run first.
        let parquet = &mut session.options_mut().execution.parquet;
        parquet.pushdown_filters = false;
        parquet.reorder_filters = true;
        // Spilling is off: a query over its memory limit fails instead of filling the disk the
        // WAL and Parquet files live on.
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| QueryError::Internal(format!("cannot build the query runtime: {e}")))?;
        let ctx = context(session, runtime);
        let trace_filters = Arc::new(TraceFilters::new(config.trace_filter_cache_bytes));
        for signal in Signal::ALL {
            let table = SignalTable::new(signal, Arc::clone(&catalog), Arc::clone(&trace_filters));
            ctx.register_table(signal.as_str(), Arc::new(table))
                .map_err(|e| {
                    QueryError::Internal(format!("cannot register table {signal}: {e}"))
                })?;
        }
        Ok(Self {
            base: ctx.state(),
            catalog,
            trace_filters,
            runtime: QueryRuntime::new(config.threads)?,
            config,
        })
    }

    /// Reads encrypted Parquet files with `keyring` (each file names its key).
    pub fn with_storage_keys(self, keyring: Option<Keyring>) -> Self {
        if let Some(keyring) = keyring {
            self.base
                .runtime_env()
                .register_parquet_encryption_factory(STORAGE_KEYS, Arc::new(StorageKeys(keyring)));
        }
        self
    }

    /// Runs one read-only statement over every row, under the configured timeout, memory
    /// limit and row cap. Dropping the returned future cancels the query.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.execute_as(sql, &Visibility::all()).await
    }

    /// Like [`Self::execute`], seeing only the rows `visibility` allows in every table.
    pub async fn execute_as(
        &self,
        sql: &str,
        visibility: &Visibility,
    ) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let ctx = self.session(visibility)?;
        let (sql, limit) = (sql.to_owned(), self.config.max_result_rows);
        // The query runs as a task of its own so that the answer to a query over its time
        // limit is immediate: a CPU-bound operator may take a while to reach a point where it
        // notices it was cancelled, and the caller should not wait for that.
        let task = self
            .runtime
            .handle()
            .spawn(async move { run(&ctx, &sql, limit, started).await });
        let _cancel_on_drop = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout(self.config.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(QueryError::Internal(format!("query task failed: {e}"))),
            Err(_) => Err(QueryError::Timeout(self.config.timeout)),
        }
    }

    /// Runs `sql` like [`Self::execute_as`] and encodes the answer as `format`, off the async
    /// workers (encoding a large answer is CPU work).
    pub async fn answer(
        &self,
        sql: &str,
        visibility: &Visibility,
        format: OutputFormat,
    ) -> Result<Answer, QueryError> {
        let result = self.execute_as(sql, visibility).await?;
        let rows = result.batches.iter().map(|b| b.num_rows() as u64).sum();
        let (content_type, body) = tokio::task::spawn_blocking(move || encode(&result, format))
            .await
            .map_err(|e| QueryError::Internal(format!("encoding task failed: {e}")))??;
        Ok(Answer {
            content_type,
            body,
            rows,
        })
    }

    /// Parses and plans `sql` without running it: what `execute` would refuse up front.
    pub async fn check(&self, sql: &str) -> Result<(), QueryError> {
        let ctx = self.session(&Visibility::all())?;
        plan(&ctx, sql).await.map(drop)
    }

    /// A session for one query with a memory pool of its own: the shared tables, or for a
    /// restricted query a catalog of its own whose tables are filtering views.
    fn session(&self, visibility: &Visibility) -> Result<SessionContext, QueryError> {
        let top_consumers = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.config.memory_limit_bytes),
            top_consumers,
        );
        let runtime: Arc<RuntimeEnv> = RuntimeEnvBuilder::from_runtime_env(self.base.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| QueryError::Internal(format!("cannot build the query runtime: {e}")))?;
        if visibility.services.is_none() && visibility.audit {
            let state = SessionStateBuilder::new_from_existing(self.base.clone())
                .with_runtime_env(runtime)
                .build();
            return Ok(SessionContext::new_with_state(state));
        }
        // Not derived from `base`: that would share its catalog, and these tables would
        // replace those of every other query.
        let ctx = context(self.base.config().clone(), runtime);
        for signal in Signal::ALL {
            let name = signal.as_str();
            let table: Arc<dyn TableProvider> = Arc::new(SignalTable::new(
                signal,
                Arc::clone(&self.catalog),
                Arc::clone(&self.trace_filters),
            ));
            let restrict = |e: DataFusionError| {
                QueryError::Internal(format!("cannot restrict table {name}: {e}"))
            };
            let table = match (&visibility.services, signal) {
                (_, Signal::Audit) if !visibility.audit => continue,
                // The audit trail is about callers, not services' data.
                (None, _) | (_, Signal::Audit) => table,
                (Some(services), _) => {
                    let allowed = services.iter().map(|s| lit(s.as_str())).collect();
                    let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)
                        .and_then(|b| {
                            b.filter(col(vigil_core::schema::col::SERVICE).in_list(allowed, false))
                        })
                        .and_then(LogicalPlanBuilder::build)
                        .map_err(restrict)?;
                    Arc::new(ViewTable::new(plan, None))
                }
            };
            ctx.register_table(name, table).map_err(restrict)?;
        }
        Ok(ctx)
    }
}

/// An encoded answer.
#[derive(Debug)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Rows in the answer.
    pub rows: u64,
}

/// What a query may see. Enforced in the query engine: for a caller limited to services, each
/// table is a view that filters on `service` before anything else in the plan runs, so no SQL
/// (joins, subqueries, `information_schema`) reaches other services' rows; the `audit` table
/// exists only for admins.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// `Some`: only these services' rows.
    services: Option<Arc<[String]>>,
    /// Whether the `audit` table is there.
    audit: bool,
}

impl Visibility {
    /// Everything: Vigil's own queries and the CLI on a data directory.
    pub fn all() -> Self {
        Self {
            services: None,
            audit: true,
        }
    }

    pub fn new(services: Option<Arc<[String]>>, audit: bool) -> Self {
        Self { services, audit }
    }
}

/// Aborts the query task when the caller goes away (timeout, client disconnect).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn plan(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, QueryError> {
    let state = ctx.state();
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let statement = parse::parse_statement(sql, recursion_limit)?;
    guard::check_statement(&statement).map_err(QueryError::Refused)?;
    let plan = state.statement_to_plan(statement).await.map_err(classify)?;
    guard::check_plan(&plan).map_err(QueryError::Refused)?;
    Ok(plan)
}

async fn run(
    ctx: &SessionContext,
    sql: &str,
    limit: usize,
    started: Instant,
) -> Result<QueryResult, QueryError> {
    let plan = plan(ctx, sql).await?;
    let frame = ctx.execute_logical_plan(plan).await.map_err(classify)?;
    let mut stream = frame.execute_stream().await.map_err(classify)?;
    let schema = types::public_schema(&stream.schema());
    let mut rows = 0usize;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = types::with_public_types(batch.map_err(classify)?, &schema)?;
        rows = rows.saturating_add(batch.num_rows());
        if rows > limit {
            // Dropping the stream stops the scan.
            return Err(QueryError::TooLarge { limit });
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(QueryResult {
        schema,
        batches,
        elapsed: started.elapsed(),
    })
}

/// Sorts DataFusion's errors into what the analyst did wrong and what went wrong inside.
fn classify(error: DataFusionError) -> QueryError {
    let message = || error.strip_backtrace();
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => QueryError::ResourcesExhausted(message()),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_) => QueryError::Invalid(message()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ComputeError(_)
            | ArrowError::SchemaError(_) => QueryError::Invalid(message()),
            _ => QueryError::Internal(message()),
        },
        _ => QueryError::Internal(message()),
    }
}
