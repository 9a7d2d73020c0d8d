//! The `logs` and `spans` tables as DataFusion `TableProvider`s over a catalog snapshot:
//! WAL batches still in memory unioned with a Parquet scan of the files a time filter can match.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
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
use datafusion::physical_plan::union::UnionExec;
use vigil_core::Signal;
use vigil_core::schema::col;

use crate::storage::catalog::{Catalog, ParquetFile, TableSnapshot};

/// One signal's table. Every scan reads a fresh catalog snapshot, so a query sees each record
/// exactly once even while compaction moves batches from memory into Parquet.
#[derive(Debug)]
pub struct SignalTable {
    signal: Signal,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
}

impl SignalTable {
    pub fn new(signal: Signal, catalog: Arc<Catalog>) -> Self {
        Self {
            signal,
            schema: signal.schema(),
            catalog,
        }
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The scan's filters as one physical predicate over the table schema, for file pruning.
    /// Filters are unqualified and constant-folded first (`now()` becomes a literal); each is
    /// compiled on its own, so one that cannot be only loses its own pruning (it is still
    /// applied to rows above the scan). `None` when no filter is usable.
    fn pruning_predicate(
        state: &dyn Session,
        df_schema: &Arc<DFSchema>,
        filters: &[Expr],
    ) -> Option<Arc<dyn PhysicalExpr>> {
        let props = state.execution_props();
        let context = SimplifyContext::builder()
            .with_schema(Arc::clone(df_schema))
            .with_query_execution_start_time(props.query_execution_start_time)
            .with_config_options(Arc::clone(state.config().options()))
            .build();
        let simplifier = ExprSimplifier::new(context);
        let compiled: Vec<Arc<dyn PhysicalExpr>> = filters
            .iter()
            .filter_map(|filter| {
                unqualify(filter.clone())
                    .and_then(|expr| simplifier.simplify(expr))
                    .and_then(|expr| state.create_physical_expr(expr, df_schema))
                    .map_err(|e| tracing::debug!(error = %e, "filter not usable for file pruning"))
                    .ok()
            })
            .collect();
        conjunction_opt(compiled)
    }

    async fn parquet_plan(
        &self,
        state: &dyn Session,
        files: Vec<Arc<ParquetFile>>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if files.is_empty() {
            return Ok(None);
        }
        let groups = file_groups(files, state.config().target_partitions())?;
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
        let format = ParquetFormat::new().with_options(state.default_table_options().parquet);
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
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, batch) in batches.into_iter().enumerate() {
            if let Some(p) = partitions.get_mut(i % n) {
                p.push(batch);
            }
        }
        let source = MemorySourceConfig::try_new(
            &partitions,
            Arc::clone(&self.schema),
            projection.cloned(),
        )?
        .with_limit(limit);
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
        // Inexact: filters prune files and row groups, DataFusion still applies them to rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
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
        let files = prune_files(files, predicate.as_ref(), &self.schema)?;
        tracing::debug!(
            table = self.signal.as_str(),
            files = files.len(),
            pruned_files = total_files - files.len(),
            memory_batches = memory.len(),
            "planned table scan"
        );

        let target_partitions = state.config().target_partitions();
        let mut inputs = Vec::with_capacity(2);
        if let Some(plan) = self.parquet_plan(state, files, projection, limit).await? {
            inputs.push(plan);
        }
        if let Some(plan) = self.memory_plan(memory, target_partitions, projection, limit)? {
            inputs.push(plan);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
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

/// Keeps the files whose `time` range may satisfy `predicate`; all files when there is none or
/// it cannot be evaluated on per-file statistics.
pub(crate) fn prune_files(
    files: Vec<Arc<ParquetFile>>,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    schema: &SchemaRef,
) -> Result<Vec<Arc<ParquetFile>>> {
    let Some(predicate) = predicate else {
        return Ok(files);
    };
    if files.is_empty() {
        return Ok(files);
    }
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(Arc::clone(predicate))
    else {
        return Ok(files);
    };
    let time_type = schema
        .field_with_name(col::TIME)
        .map(|f| f.data_type().clone())
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
    let stats = FileTimeStats {
        files: &files,
        time_zone: match time_type {
            DataType::Timestamp(_, tz) => tz,
            _ => None,
        },
    };
    let keep = pruning.prune(&stats)?;
    Ok(files
        .into_iter()
        .zip(keep.into_iter().chain(std::iter::repeat(true)))
        .filter_map(|(file, keep)| keep.then_some(file))
        .collect())
}

/// Per-file statistics the catalog knows: the `time` range and the row count.
struct FileTimeStats<'a> {
    files: &'a [Arc<ParquetFile>],
    time_zone: Option<Arc<str>>,
}

impl FileTimeStats<'_> {
    fn time_array(&self, column: &Column, value: impl Fn(&ParquetFile) -> i64) -> Option<ArrayRef> {
        if column.name != col::TIME {
            return None;
        }
        let array = TimestampNanosecondArray::from_iter_values(self.files.iter().map(|f| value(f)))
            .with_timezone_opt(self.time_zone.clone());
        Some(Arc::new(array))
    }
}

impl PruningStatistics for FileTimeStats<'_> {
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
        // `time` is non-nullable in both schemas.
        (column.name == col::TIME)
            .then(|| Arc::new(UInt64Array::from(vec![0; self.files.len()])) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.files.iter().map(|f| f.rows),
        )))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Spreads files over at most `target` groups of similar total size (largest first).
fn file_groups(files: Vec<Arc<ParquetFile>>, target: usize) -> Result<Vec<FileGroup>> {
    let n = target.clamp(1, files.len().max(1));
    let mut files = files;
    files.sort_by(|a, b| {
        b.size_bytes
            .cmp(&a.size_bytes)
            .then_with(|| a.path.cmp(&b.path))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
    for file in files {
        let location = ObjectPath::from_absolute_path(&file.path).map_err(|e| {
            DataFusionError::Internal(format!(
                "parquet file path {} is not usable: {e}",
                file.path.display()
            ))
        })?;
        let partitioned = PartitionedFile::new(location.to_string(), file.size_bytes);
        if let Some(group) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            group.0 += file.size_bytes;
            group.1.push(partitioned);
        }
    }
    Ok(groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect())
}
