//! The `logs` and `spans` tables as DataFusion `TableProvider`s over a catalog snapshot:
//! WAL batches still in memory unioned with a Parquet scan of the files a time filter can match.
//!
//! Filters on `time` alone are applied by the scan itself (`Exact`), because the catalog knows
//! every file's time range: a file whose whole range satisfies them is read without them, so a
//! query over a day of hour partitions does not decode and compare the `time` of every row.
//! Files the range cuts through, and the WAL batches, are filtered as usual.
//!
//! Files are read newest first, each with its row count and time range as statistics, so a
//! query for the latest rows (`ORDER BY time DESC LIMIT n`) ends once it has them: the top-n
//! sort's threshold rules out the older files unread (and `topk` turns the order round for
//! `ASC`).
//!
//! A filter naming trace ids (`trace_id = '…'`, `trace_id IN (…)`) leaves out the files whose
//! `trace_id` bloom filters hold none of them, so a lookup plans the few files of its trace
//! rather than every file of the range (see `trace_filters`).
//!
//! The tables' top-level strings are `Utf8View` to the engine, though storage and the WAL keep
//! `Utf8` (see `types`).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::{PhysicalExpr, conjunction_opt};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::union::UnionExec;
use vigil_core::Signal;
use vigil_core::schema::col;

use super::trace_filters::{FileTraceIds, TraceFilters};
use super::types::{cast_batch, query_schema};
use crate::storage::catalog::{Catalog, ParquetFile, TableSnapshot};

/// Parquet files of a snapshot.
type Files = Vec<Arc<ParquetFile>>;

/// Column indices to read or pass on; `None` is every column.
type Projection = Option<Vec<usize>>;

/// One signal's table. Every scan reads a fresh catalog snapshot, so a query sees each record
/// exactly once even while compaction moves batches from memory into Parquet.
#[derive(Debug)]
pub struct SignalTable {
    signal: Signal,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
    trace_filters: Arc<TraceFilters>,
}

impl SignalTable {
    pub fn new(signal: Signal, catalog: Arc<Catalog>, trace_filters: Arc<TraceFilters>) -> Self {
        Self {
            signal,
            schema: query_schema(&signal.schema()),
            catalog,
            trace_filters,
        }
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Whether the scan applies `filter` itself (`Exact`): a filter on `time` alone, which
    /// each file's range can decide. Only while `time` cannot be null: the catalog's statistics
    /// count no nulls, and a null row would slip through a file judged covered.
    fn applies_itself(&self, filter: &Expr) -> bool {
        self.schema
            .field_with_name(col::TIME)
            .is_ok_and(|field| !field.is_nullable())
            && is_time_only(filter)
    }

    /// The scan's filters as one physical predicate over the table schema, for file pruning.
    /// Each filter is compiled on its own, so one that cannot be only loses its own pruning (it
    /// is still applied to rows, above the scan or by [`Self::time_filtered`]). `None` when no
    /// filter is usable.
    fn pruning_predicate(
        state: &dyn Session,
        df_schema: &Arc<DFSchema>,
        filters: &[Expr],
    ) -> Option<Arc<dyn PhysicalExpr>> {
        let compiled: Vec<Arc<dyn PhysicalExpr>> = filters
            .iter()
            .filter_map(|filter| {
                simplified(state, df_schema, filter.clone())
                    .and_then(|expr| state.create_physical_expr(expr, df_schema))
                    .map_err(|e| tracing::debug!(error = %e, "filter not usable for file pruning"))
                    .ok()
            })
            .collect();
        conjunction_opt(compiled)
    }

    /// Splits the files into those whose whole time range satisfies `time_filter` (every row
    /// passes: no need to evaluate it) and the others. A file is covered when the negated
    /// filter prunes it on the catalog's statistics; when the negation cannot be evaluated on
    /// statistics every file counts as not covered, which is only slower.
    fn split_covered(
        &self,
        state: &dyn Session,
        df_schema: &Arc<DFSchema>,
        files: Vec<Arc<ParquetFile>>,
        time_filter: &Expr,
    ) -> Result<(Files, Files)> {
        let negated = simplified(state, df_schema, Expr::Not(Box::new(time_filter.clone())))
            .and_then(|expr| state.create_physical_expr(expr, df_schema));
        let may_fail = match negated {
            Ok(negated) => may_match(&files, &negated, &self.schema, None)?,
            Err(e) => {
                tracing::debug!(error = %e, "negated time filter not usable on statistics");
                None
            }
        };
        let Some(may_fail) = may_fail else {
            return Ok((Vec::new(), files));
        };
        let (partial, covered): (Vec<_>, Vec<_>) = files
            .into_iter()
            .zip(may_fail)
            .partition(|(_, may_fail)| *may_fail);
        let files =
            |pairs: Vec<(Arc<ParquetFile>, bool)>| pairs.into_iter().map(|(f, _)| f).collect();
        Ok((files(covered), files(partial)))
    }

    /// The projection a scan under a time filter reads, and the filter's own projection back to
    /// the query's: the scan reads `time` even when the query does not, the filter drops it.
    fn with_time_column(
        &self,
        projection: Option<&Vec<usize>>,
    ) -> Result<(Projection, Projection)> {
        let time_index = self.schema.index_of(col::TIME)?;
        Ok(match projection {
            Some(p) if !p.contains(&time_index) => {
                let mut with_time = p.clone();
                with_time.push(time_index);
                (Some(with_time), Some((0..p.len()).collect()))
            }
            other => (other.cloned(), None),
        })
    }

    /// `input` under a filter on `time_filter`, projected by `output` and cut at `limit`. With
    /// Parquet filter pushdown on, DataFusion moves the filter into the Parquet reader.
    fn time_filtered(
        state: &dyn Session,
        time_filter: &Expr,
        input: Arc<dyn ExecutionPlan>,
        output: Projection,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input_schema = Arc::new(DFSchema::try_from(input.schema())?);
        let predicate = simplified(state, &input_schema, time_filter.clone())
            .and_then(|expr| state.create_physical_expr(expr, &input_schema))?;
        let filter = FilterExecBuilder::new(predicate, input)
            .apply_projection(output)?
            .with_fetch(limit)
            .build()?;
        Ok(Arc::new(filter))
    }

    async fn parquet_plan(
        &self,
        state: &dyn Session,
        files: Vec<Arc<ParquetFile>>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if files.is_empty() {
            return Ok(None);
        }
        let groups = file_groups(files, state.config().target_partitions(), &self.schema)?;
        // Row-group and page pruning inside the kept files needs no predicate here: DataFusion's
        // physical filter pushdown hands the FilterExec above the union to the ParquetSource.
        let mut source = ParquetSource::new(Arc::clone(&self.schema));
        if let Ok(keys) = state
            .runtime_env()
            .parquet_encryption_factory(super::STORAGE_KEYS)
        {
            source = source.with_encryption_factory(keys);
        }
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        let mut options = state.default_table_options().parquet;
        options.global.pushdown_filters =
            late_materialisation_pays(&self.schema, projection, filters);
        let format = ParquetFormat::new().with_options(options);
        Ok(Some(format.create_physical_plan(state, config).await?))
    }

    fn memory_plan(
        &self,
        batches: Vec<RecordBatch>,
        target_partitions: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if batches.is_empty() {
            return Ok(None);
        }
        let n = target_partitions.clamp(1, batches.len());
        // Only the columns read are given the query's types.
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, batch) in batches.into_iter().enumerate() {
            if let Some(p) = partitions.get_mut(i % n) {
                p.push(with_query_types(&batch, projection, &schema)?);
            }
        }
        let source = MemorySourceConfig::try_new(&partitions, schema, None)?.with_limit(limit);
        Ok(Some(
            datafusion::datasource::source::DataSourceExec::from_data_source(source),
        ))
    }
}

#[async_trait]
impl TableProvider for SignalTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on `time` alone are applied by the scan (see `scan`); the others prune files
        // and row groups, and DataFusion still applies them to rows.
        Ok(filters
            .iter()
            .map(|filter| {
                if self.applies_itself(filter) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let TableSnapshot { files, memory } = self.catalog.snapshot(self.signal);
        let df_schema = Arc::new(DFSchema::try_from(Arc::clone(&self.schema))?);
        let predicate = Self::pruning_predicate(state, &df_schema, filters);

        let total_files = files.len();
        let mut files = prune_files(files, predicate.as_ref(), &self.schema, None)?;
        // A lookup by trace id: of the files left, keep those whose bloom filters may hold it.
        if let Some(predicate) = predicate.as_ref().filter(|_| refer_to_trace_id(filters)) {
            let trace_filters = Arc::clone(&self.trace_filters);
            let candidates = files.clone();
            let trace_ids = tokio::task::spawn_blocking(move || trace_filters.of(&candidates))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            files = prune_files(files, Some(predicate), &self.schema, Some(&trace_ids))?;
        }
        tracing::debug!(
            table = self.signal.as_str(),
            files = files.len(),
            pruned_files = total_files - files.len(),
            memory_batches = memory.len(),
            "planned table scan"
        );

        let target_partitions = state.config().target_partitions();
        let mut inputs = Vec::with_capacity(3);
        // The filters declared `Exact`, which this scan must apply.
        let time_filter = filters
            .iter()
            .filter(|filter| self.applies_itself(filter))
            .cloned()
            .reduce(Expr::and);
        // Files the time filter covers whole (all of them without one) are read as they are.
        let (covered, partial) = match &time_filter {
            Some(filter) => self.split_covered(state, &df_schema, files, filter)?,
            None => (files, Vec::new()),
        };
        inputs.extend(
            self.parquet_plan(state, covered, projection, filters, limit)
                .await?,
        );
        match time_filter {
            None => {
                inputs.extend(self.memory_plan(memory, target_partitions, projection, limit)?)
            }
            // The files it cuts through and the WAL batches are read with `time` and filtered.
            Some(time_filter) => {
                tracing::debug!(
                    table = self.signal.as_str(),
                    filtered_files = partial.len(),
                    "files read with their time filter"
                );
                let (read, output) = self.with_time_column(projection)?;
                let partial = self
                    .parquet_plan(state, partial, read.as_ref(), filters, None)
                    .await?;
                let memory = self.memory_plan(memory, target_partitions, read.as_ref(), None)?;
                for input in partial.into_iter().chain(memory) {
                    inputs.push(Self::time_filtered(
                        state,
                        &time_filter,
                        input,
                        output.clone(),
                        limit,
                    )?);
                }
            }
        }
        union(inputs, &self.schema, projection)
    }
}

/// A WAL batch's `projection` in the query types of `schema`: its strings become views of
/// their own buffers, no value is copied.
fn with_query_types(
    batch: &RecordBatch,
    projection: Option<&Vec<usize>>,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let batch = match projection {
        Some(p) => batch.project(p)?,
        None => batch.clone(),
    };
    Ok(cast_batch(&batch, schema)?)
}

/// The scan's inputs as one plan; an empty one of the projected schema when there are none.
fn union(
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if inputs.is_empty() {
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(schema),
        };
        return Ok(Arc::new(EmptyExec::new(projected)));
    }
    UnionExec::try_new(inputs)
}

/// Whether `filter` refers to the `time` column and nothing else, deterministically: such a
/// filter can be decided per file from the catalog's time range.
fn is_time_only(filter: &Expr) -> bool {
    let columns = filter.column_refs();
    !columns.is_empty()
        && columns.iter().all(|c| c.name == col::TIME)
        && !filter.is_volatile()
        && !filter.contains_outer()
        && !filter
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true)
}

/// `filter` unqualified and constant-folded (`now()` becomes a literal), ready to compile
/// against the bare table schema.
fn simplified(state: &dyn Session, df_schema: &Arc<DFSchema>, filter: Expr) -> Result<Expr> {
    let props = state.execution_props();
    let context = SimplifyContext::builder()
        .with_schema(Arc::clone(df_schema))
        .with_query_execution_start_time(props.query_execution_start_time)
        .with_config_options(Arc::clone(state.config().options()))
        .build();
    ExprSimplifier::new(context).simplify(unqualify(filter)?)
}

/// Drops the table qualifier from column references: the scan compiles filters against the
/// bare table schema.
fn unqualify(expr: Expr) -> Result<Expr> {
    expr.transform_up(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            other => Transformed::no(other),
        })
    })
    .data()
}

/// Whether a Parquet scan should evaluate its filters while decoding (late materialisation):
/// the filter columns first, the others only for the rows that pass. That pays when the
/// filters keep few rows (a lookup by an id, which is unique or nearly so) or when the scan
/// reads a column that is costly to decode (a map, a log body, a span's events or links),
/// whose values for the rows dropped are never decoded. A scan of cheap columns under a
/// filter most rows pass (`kind = 'SERVER'` keeps half of the spans) decodes every row
/// either way, and the two passes and the row selections between them cost more than they
/// save: about a fifth of such a scan. The filters then still prune row groups and pages.
fn late_materialisation_pays(
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
) -> bool {
    let costly = |field: &Field| {
        matches!(field.data_type(), DataType::Map(..))
            || matches!(field.name().as_str(), "body" | "events" | "links")
    };
    let reads_costly = match projection {
        None => schema.fields().iter().any(|f| costly(f)),
        Some(indices) => indices
            .iter()
            .filter_map(|&i| schema.fields().get(i))
            .any(|f| costly(f)),
    };
    let by_id = filters.iter().any(|f| {
        f.column_refs()
            .iter()
            .any(|c| ID_COLUMNS.contains(&c.name.as_str()))
    });
    reads_costly || by_id
}

/// Columns holding ids: a filter on one keeps few rows.
const ID_COLUMNS: [&str; 3] = [col::TRACE_ID, col::SPAN_ID, "parent_span_id"];

/// Whether any of `filters` reads `trace_id`.
fn refer_to_trace_id(filters: &[Expr]) -> bool {
    filters
        .iter()
        .any(|f| f.column_refs().iter().any(|c| c.name == col::TRACE_ID))
}

/// Keeps the files whose `time` range, and with `trace_ids` (one per file) whose trace ids, may
/// satisfy `predicate`; all files when there is none or it cannot be evaluated on per-file
/// statistics.
pub(crate) fn prune_files(
    files: Vec<Arc<ParquetFile>>,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    schema: &SchemaRef,
    trace_ids: Option<&[Arc<FileTraceIds>]>,
) -> Result<Vec<Arc<ParquetFile>>> {
    let Some(predicate) = predicate else {
        return Ok(files);
    };
    let Some(keep) = may_match(&files, predicate, schema, trace_ids)? else {
        return Ok(files);
    };
    Ok(files
        .into_iter()
        .zip(keep)
        .filter_map(|(file, keep)| keep.then_some(file))
        .collect())
}

/// Per file, whether some of its rows may satisfy `predicate` judging by its `time` range, row
/// count and, given, its trace ids; `None` when the predicate cannot be judged on those
/// statistics at all.
fn may_match(
    files: &[Arc<ParquetFile>],
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
    trace_ids: Option<&[Arc<FileTraceIds>]>,
) -> Result<Option<Vec<bool>>> {
    if files.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(Arc::clone(predicate))
    else {
        return Ok(None);
    };
    let stats = FileStats {
        files,
        time_zone: time_zone(schema)?,
        trace_ids: trace_ids.filter(|ids| ids.len() == files.len()),
    };
    let keep = pruning.prune(&stats)?;
    // A short answer would be a DataFusion bug; the files it leaves out may match.
    Ok(Some(
        keep.into_iter()
            .chain(std::iter::repeat(true))
            .take(files.len())
            .collect(),
    ))
}

/// Per-file statistics the catalog knows: the `time` range and the row count; with them, what
/// the files' bloom filters say of their trace ids.
struct FileStats<'a> {
    files: &'a [Arc<ParquetFile>],
    time_zone: Option<Arc<str>>,
    trace_ids: Option<&'a [Arc<FileTraceIds>]>,
}

impl FileStats<'_> {
    fn time_array(&self, column: &Column, value: impl Fn(&ParquetFile) -> i64) -> Option<ArrayRef> {
        if column.name != col::TIME {
            return None;
        }
        let array = TimestampNanosecondArray::from_iter_values(self.files.iter().map(|f| value(f)))
            .with_timezone_opt(self.time_zone.clone());
        Some(Arc::new(array))
    }
}

impl PruningStatistics for FileStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.time_array(column, |f| f.min_time_ns)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.time_array(column, |f| f.max_time_ns)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        // `time` is non-nullable in every table's schema (see `SignalTable::applies_itself`).
        (column.name == col::TIME)
            .then(|| Arc::new(UInt64Array::from(vec![0; self.files.len()])) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.files.iter().map(|f| f.rows),
        )))
    }

    /// `false` for a file that holds none of `values` in `trace_id`, unknown otherwise.
    fn contained(
        &self,
        column: &Column,
        values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        let trace_ids = self.trace_ids.filter(|_| column.name == col::TRACE_ID)?;
        Some(
            trace_ids
                .iter()
                .map(|ids| ids.may_hold_any(values.iter()).filter(|may| !may))
                .collect(),
        )
    }
}

/// Spreads files over at most `target` groups of similar total size, newest first: the files
/// ordered by time, descending, cut into consecutive runs. DataFusion's scan streams take their
/// files from one queue, the groups in order, so the newest files are read first and a query
/// for the latest rows (`ORDER BY time DESC LIMIT n`) ends early: once its top n are found, the
/// threshold it hands down to the scan rules out every older file on the time range the file
/// carries (see [`file_statistics`]), before opening it or while reading it.
fn file_groups(files: Files, target: usize, schema: &SchemaRef) -> Result<Vec<FileGroup>> {
    let n = target.clamp(1, files.len().max(1));
    let mut files = files;
    files.sort_by(|a, b| {
        b.max_time_ns
            .cmp(&a.max_time_ns)
            .then_with(|| b.min_time_ns.cmp(&a.min_time_ns))
            .then_with(|| a.path.cmp(&b.path))
    });
    let total = files.iter().map(|f| f.size_bytes).sum::<u64>().max(1);
    let groups_count = u64::try_from(n).unwrap_or(u64::MAX);
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
    // Bytes of the files placed so far: a file goes to the group whose share it starts in.
    let mut placed = 0u64;
    for file in files {
        let share = placed.saturating_mul(groups_count) / total;
        placed = placed.saturating_add(file.size_bytes);
        let location = ObjectPath::from_absolute_path(&file.path).map_err(|e| {
            DataFusionError::Internal(format!(
                "parquet file path {} is not usable: {e}",
                file.path.display()
            ))
        })?;
        let partitioned = PartitionedFile::new(location.to_string(), file.size_bytes)
            .with_statistics(Arc::new(file_statistics(&file, schema)));
        let index = usize::try_from(share).map_or(n - 1, |share| share.min(n - 1));
        if let Some(group) = groups.get_mut(index) {
            group.push(partitioned);
        }
    }
    Ok(groups
        .into_iter()
        .filter(|files| !files.is_empty())
        .map(FileGroup::new)
        .collect())
}

/// What the catalog knows of `file` in DataFusion's terms: its row count and its exact `time`
/// range (both from the file's footer), nothing of the other columns. Only the scan's pruning
/// reads them; the plan's statistics are left unknown.
fn file_statistics(file: &ParquetFile, schema: &SchemaRef) -> Statistics {
    let mut stats = Statistics::new_unknown(schema);
    stats.num_rows = usize::try_from(file.rows).map_or(Precision::Absent, Precision::Exact);
    let Some((index, field)) = schema.column_with_name(col::TIME) else {
        return stats;
    };
    let DataType::Timestamp(TimeUnit::Nanosecond, time_zone) = field.data_type() else {
        return stats;
    };
    if let Some(time) = stats.column_statistics.get_mut(index) {
        let at = |ns| ScalarValue::TimestampNanosecond(Some(ns), time_zone.clone());
        time.min_value = Precision::Exact(at(file.min_time_ns));
        time.max_value = Precision::Exact(at(file.max_time_ns));
        // The catalog counts no nulls: only a non-nullable `time` is known to have none.
        if !field.is_nullable() {
            time.null_count = Precision::Exact(0);
        }
    }
    stats
}

/// The time zone of the `time` column's nanosecond timestamps.
fn time_zone(schema: &SchemaRef) -> Result<Option<Arc<str>>> {
    let field = schema
        .field_with_name(col::TIME)
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
    match field.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => Ok(tz.clone()),
        other => Err(DataFusionError::Internal(format!(
            "the time column is {other}, not a nanosecond timestamp"
        ))),
    }
}
