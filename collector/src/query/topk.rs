//! The latest (or earliest) rows first: `ORDER BY time DESC LIMIT n`, or `ASC`, over a filter
//! the Parquet reader cannot apply itself, such as one on an attribute map
//! (`attributes['user.id'] = '…'`).
//!
//! The table scans read the newest files first (see `provider::file_groups`), and the top-n
//! sort hands the time of its n-th row down to the scan as soon as it has n rows, which rules
//! out every file on the wrong side of it, unopened, or stops one mid-read. Two things stand in
//! the way, and this rule removes both under a top-n sort on `time`:
//!
//! - A `FilterExec` gathers the rows that pass into batches of `batch_size` (8192) before
//!   passing them on: a selective filter over a day of logs hands its first batch to the sort
//!   only when the scan has ended. The filters feeding the sort pass their rows on in batches
//!   of n instead, so the sort has its n rows once the filters have found them.
//! - For the earliest rows, the newest-first order is the worst one: the scans read their files
//!   oldest first instead.
//!
//! Only the batching and the order files are read in change, never which rows come out (the
//! sort still orders them). Smaller batches cost more per row, which the early end repays: in
//! the order the files are read, the first n rows found end the scan soon after, however dense
//! the matches.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use vigil_core::schema::col;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct TopKByTime;

impl PhysicalOptimizerRule for TopKByTime {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let (Some(fetch), Some(descending)) = (sort.fetch(), time_first(sort)) else {
                return Ok(Transformed::no(node));
            };
            let input = feed(Arc::clone(sort.input()), fetch.max(1), !descending)?;
            if !input.transformed {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(replace_children_if_necessary(
                node,
                vec![input.data],
            )?))
        })
        .data()
    }

    fn name(&self) -> &str {
        "vigil_top_k_by_time"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `sort` orders by `time` before anything else: `Some(true)` newest first,
/// `Some(false)` oldest first.
fn time_first(sort: &SortExec) -> Option<bool> {
    let first = sort.expr().first();
    first
        .expr
        .downcast_ref::<Column>()
        .filter(|column| column.name() == col::TIME)
        .map(|_| first.options.descending)
}

/// `plan` with every filter that feeds the sort row by row (through projections, unions and
/// repartitioning, not through joins or aggregates) passing its rows on in batches of `rows`,
/// and with `oldest_first`, every Parquet scan among them reading its files in reverse order.
fn feed(
    plan: Arc<dyn ExecutionPlan>,
    rows: usize,
    oldest_first: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let below = feed(Arc::clone(filter.input()), rows, oldest_first)?.data;
        let filter = filter.with_batch_size(rows.min(filter.batch_size()))?;
        let filter: Arc<dyn ExecutionPlan> = Arc::new(filter);
        return Ok(Transformed::yes(replace_children_if_necessary(
            filter,
            vec![below],
        )?));
    }
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        // A scan that promises an order (Vigil's do not) or keeps its files in order is left
        // as it is: the reversal would break the promise.
        let files = scan.data_source().downcast_ref::<FileScanConfig>();
        let Some(files) = files.filter(|files| {
            oldest_first && files.output_ordering.is_empty() && !files.preserve_order
        }) else {
            return Ok(Transformed::no(plan));
        };
        // Scan streams take their files from the groups in order: reversing the groups and
        // the files in each reverses the order the files are read in.
        let mut reversed = files.clone();
        reversed.file_groups = reversed
            .file_groups
            .into_iter()
            .rev()
            .map(|group| group.into_inner().into_iter().rev().collect())
            .collect();
        let reversed: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(reversed);
        return Ok(Transformed::yes(reversed));
    }
    let streams_rows = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<UnionExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some();
    if !streams_rows {
        return Ok(Transformed::no(plan));
    }
    plan.map_children(|child| feed(child, rows, oldest_first))
}
