//! The read-only rules for analyst SQL: which statements may run (queries, EXPLAIN, SHOW,
//! DESCRIBE) and which tables a plan may read (Vigil's tables, information_schema, series, CTEs).

use std::any::Any;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement as SqlStatement};

use super::provider::SignalTable;

/// Table functions that only generate values and read nothing.
const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// The options `sql_with_options`-style verification applies to every plan.
pub(crate) fn sql_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses every statement that is not a read-only query. Returns the refusal message.
pub(crate) fn check_statement(statement: &DfStatement) -> Result<(), String> {
    match statement {
        DfStatement::Statement(s) => check_sql_statement(s),
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn check_sql_statement(statement: &SqlStatement) -> Result<(), String> {
    match statement {
        SqlStatement::Query(query) if selects_into(query) => Err(refused("SELECT INTO")),
        SqlStatement::Query(_)
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowFunctions { .. }
        | SqlStatement::ShowVariable { .. }
        | SqlStatement::ExplainTable { .. } => Ok(()),
        SqlStatement::Explain { statement, .. } => check_sql_statement(statement),
        SqlStatement::Insert(_) => Err(refused("INSERT")),
        SqlStatement::Update(_) => Err(refused("UPDATE")),
        SqlStatement::Delete(_) => Err(refused("DELETE")),
        SqlStatement::Merge(_) => Err(refused("MERGE")),
        SqlStatement::Truncate(_) => Err(refused("TRUNCATE")),
        SqlStatement::Copy { .. } => Err(refused("COPY")),
        SqlStatement::Set(_) => Err(refused("SET")),
        SqlStatement::CreateTable(_) => Err(refused("CREATE TABLE")),
        SqlStatement::CreateView(_) => Err(refused("CREATE VIEW")),
        SqlStatement::Drop { .. } => Err(refused("DROP")),
        SqlStatement::AlterTable(_) => Err(refused("ALTER TABLE")),
        SqlStatement::Prepare { .. } | SqlStatement::Execute { .. } => {
            Err(refused("PREPARE/EXECUTE"))
        }
        _ => Err(
            "only read-only queries are allowed (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)"
                .to_string(),
        ),
    }
}

/// `SELECT ... INTO t` creates a table.
fn selects_into(query: &Query) -> bool {
    matches!(query.body.as_ref(), SetExpr::Select(select) if select.into.is_some())
}

fn refused(what: &str) -> String {
    format!("{what} is not allowed: the query API is read-only")
}

/// Checks the planned statement: no DDL/DML/statements (DataFusion's own verifier) and no scan
/// of anything but Vigil's tables, information_schema and value-generating table functions.
pub(crate) fn check_plan(plan: &LogicalPlan) -> Result<(), String> {
    sql_options().verify_plan(plan).map_err(|e| {
        format!(
            "statement not allowed: the query API is read-only ({})",
            e.message()
        )
    })?;
    let mut refusal = None;
    let walk = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Err(message) = check_scan(scan)
        {
            refusal = Some(message);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = walk {
        return Err(e.strip_backtrace());
    }
    refusal.map_or(Ok(()), Err)
}

fn check_scan(scan: &datafusion::logical_expr::TableScan) -> Result<(), String> {
    if let Ok(provider) = source_as_provider(&scan.source) {
        let provider = provider.as_ref() as &dyn Any;
        // Recursive CTEs read their own intermediate results through a work table.
        if provider.is::<SignalTable>() || provider.is::<CteWorkTable>() {
            return Ok(());
        }
    }
    let name = &scan.table_name;
    if name.schema() == Some("information_schema") {
        return Ok(());
    }
    let table = name.table().trim_end_matches("()");
    if name.schema().is_none() && ALLOWED_TABLE_FUNCTIONS.contains(&table) {
        return Ok(());
    }
    Err(format!(
        "reading {name} is not allowed: only the logs and spans tables and information_schema can be queried"
    ))
}
