//! Parsing analysts' SQL with a bound on the parser's work.
//!
//! The SQL parser backtracks: where a construct is ambiguous it tries one reading, rewinds and
//! tries the next. On some malformed statements the tries nest, and the work doubles with each
//! element of the input: `SELECT a0.a1…a9[b0.b1…b9[c0.c1…c9` (61 bytes) kept the parser busy
//! for 36 seconds, and 30 repetitions of `case -` for longer than anyone waited. A parse cannot
//! be cancelled, so such a statement would hold a query thread past its timeout, and a few of
//! them every query thread.
//!
//! Every expression the parser reads, and every operator it looks for after one, goes through
//! two hooks of its dialect. [`BoundedDialect`] is the generic dialect with those hooks
//! counting: past a budget that grows with the statement's length, each further try fails at
//! once, so a backtracking parse collapses in a few steps and the statement is refused as too
//! complex. Real statements take well under one step per byte (`tests` measures statements of
//! the console's and analysts' shapes).

use std::cell::Cell;

use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use super::QueryError;

/// Parser steps allowed for any statement, per byte on top, and at most. Console and analyst
/// statements take 0.3 steps a byte or fewer; a backtracking parse takes thousands, each dearer
/// than the last as the tries nest (a 96-byte statement took 1 s of CPU to reach 21,536 steps in
/// a release build, 0.02 s to reach 2,192 in a debug one), so the budget is a few times what
/// real SQL needs, and capped.
const BASE_STEPS: usize = 2_000;
const STEPS_PER_BYTE: usize = 2;
const MAX_STEPS: usize = 250_000;

/// The step budget of a statement of `len` bytes.
fn budget(len: usize) -> usize {
    BASE_STEPS
        .saturating_add(len.saturating_mul(STEPS_PER_BYTE))
        .min(MAX_STEPS)
}

/// Parses one statement with the generic dialect (DataFusion's default), within
/// `recursion_limit` nested expressions and a step budget for the statement's length.
pub(crate) fn parse_statement(sql: &str, recursion_limit: usize) -> Result<Statement, QueryError> {
    let budget = budget(sql.len());
    let dialect = BoundedDialect::new(budget);
    let parsed = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(recursion_limit)
        .build()
        .and_then(|mut parser| parser.parse_statements());
    if dialect.exhausted() {
        return Err(QueryError::Invalid(format!(
            "the statement is too complex to parse: the parser gave up after {budget} steps \
             ({} bytes of SQL); check for unclosed brackets or parentheses",
            sql.len()
        )));
    }
    let mut statements = parsed.map_err(|e| QueryError::Invalid(e.strip_backtrace()))?;
    match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => Ok(statement),
        (Some(_), false) => Err(QueryError::Invalid(
            "one statement per query: remove the extra statements".to_owned(),
        )),
        (None, _) => Err(QueryError::Invalid(
            "no SQL statement in the query".to_owned(),
        )),
    }
}

/// The generic dialect, counting the parser's steps.
#[derive(Debug)]
struct BoundedDialect {
    inner: GenericDialect,
    budget: usize,
    steps: Cell<usize>,
}

impl BoundedDialect {
    fn new(budget: usize) -> Self {
        Self {
            inner: GenericDialect {},
            budget,
            steps: Cell::new(0),
        }
    }

    /// Parser steps so far.
    #[cfg(test)]
    fn steps(&self) -> usize {
        self.steps.get()
    }

    fn exhausted(&self) -> bool {
        self.steps.get() > self.budget
    }

    /// Counts a step; past the budget, an error that ends the parse. It is the one error the
    /// parser's backtracking passes on instead of trying the next reading.
    fn step(&self) -> Option<ParserError> {
        self.steps.set(self.steps.get().saturating_add(1));
        self.exhausted()
            .then_some(ParserError::RecursionLimitExceeded)
    }
}

/// Forwards each listed flag to the generic dialect.
macro_rules! forward_flags {
    ($($flag:ident),* $(,)?) => {
        $(fn $flag(&self) -> bool {
            self.inner.$flag()
        })*
    };
}

/// Every method the generic dialect overrides is forwarded to it (the parser's behaviour must
/// not change), and `dialect()` names it, so the parser's checks for the generic dialect hold.
/// A test compares this dialect's syntax trees with the generic dialect's.
impl Dialect for BoundedDialect {
    fn dialect(&self) -> std::any::TypeId {
        self.inner.dialect()
    }

    fn parse_prefix(&self, _parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        self.step().map(Err)
    }

    fn get_next_precedence(&self, _parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.step().map(Err)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.inner.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.inner.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.inner.is_identifier_part(ch)
    }

    forward_flags!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statements of the shapes analysts and the console send: subscripts, CTEs, windows,
    /// aggregates with WITHIN GROUP, unions, subqueries, EXPLAIN, SHOW, casts, literals.
    const STATEMENTS: &[&str] = &[
        "SELECT service, count(*) AS n FROM logs WHERE time >= now() - INTERVAL '1 hour' \
         GROUP BY service ORDER BY n DESC",
        "SELECT time, service, attributes['http.request.method'] AS method, \
         attributes['url.path'] AS path FROM logs WHERE attributes['user.id'] = 'user-1234' \
         ORDER BY time DESC LIMIT 100",
        "SELECT service, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95 \
         FROM spans WHERE kind = 'SERVER' AND time >= '2026-11-22T17:00:00Z' GROUP BY service",
        "SELECT date_bin(INTERVAL '60 seconds', time) AS t, service, count(*) AS n FROM \
         (SELECT time, service FROM logs WHERE time >= now() - INTERVAL '1 hour' UNION ALL \
         SELECT time, service FROM spans WHERE time >= now() - INTERVAL '1 hour') GROUP BY 1, 2 \
         ORDER BY 1",
        "WITH failed AS (SELECT attributes['client.address'] AS ip, count(*) AS n FROM logs \
         WHERE CAST(attributes['http.response.status_code'] AS INT) IN (401, 403) GROUP BY 1) \
         SELECT ip, n, rank() OVER (ORDER BY n DESC) AS r FROM failed WHERE n > 10",
        "SELECT s.trace_id, s.name, l.body FROM spans s JOIN logs l ON l.trace_id = s.trace_id \
         AND l.span_id = s.span_id WHERE s.status_code = 'ERROR' LIMIT 50",
        "SELECT * FROM alerts WHERE status = 'firing' AND severity IN ('high', 'critical') \
         AND rule_id LIKE 'sigma.%' ORDER BY time DESC",
        "SELECT CASE WHEN severity_number >= 17 THEN 'error' WHEN severity_number >= 13 \
         THEN 'warn' ELSE 'info' END AS level, count(*) FROM logs GROUP BY 1",
        "SELECT resource['k8s.pod.name'], map_keys(attributes), arrow_typeof(time), \
         -1.5e3, x'00ff', NOT (a OR b) FROM logs WHERE body ILIKE '%denied%' \
         AND trace_id IS NOT NULL AND time BETWEEN now() - INTERVAL '1 day' AND now()",
        "EXPLAIN ANALYZE SELECT count(*) FROM logs WHERE trace_id = \
         '4bf92f3577b34da6a3ce929d0e0e4736'",
        "SHOW COLUMNS FROM logs",
        "SELECT table_name FROM information_schema.tables ORDER BY 1",
    ];

    fn generic(sql: &str) -> Result<Statement, String> {
        DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| e.to_string())
            .and_then(|mut s| s.pop_front().ok_or_else(|| "no statement".to_owned()))
    }

    fn bounded(sql: &str, budget: usize) -> (Result<Statement, String>, usize) {
        let dialect = BoundedDialect::new(budget);
        let parsed = DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| e.to_string())
            .and_then(|mut s| s.pop_front().ok_or_else(|| "no statement".to_owned()));
        (parsed, dialect.steps())
    }

    /// The bounded dialect parses exactly as the generic one, in a few steps per byte.
    #[test]
    fn statements_parse_as_with_the_generic_dialect_in_few_steps() {
        for sql in STATEMENTS {
            let (parsed, steps) = bounded(sql, usize::MAX);
            assert_eq!(parsed, generic(sql), "{sql}");
            assert!(parsed.is_ok(), "{sql}");
            assert!(
                steps <= sql.len(),
                "{steps} steps for {} bytes: {sql}",
                sql.len()
            );
            assert!(parse_statement(sql, 50).is_ok(), "{sql}");
        }
        // Errors are the generic dialect's too.
        for sql in ["SELECT FROM WHERE", "SELECT a[1 FROM logs", "SELEC 1"] {
            assert_eq!(bounded(sql, usize::MAX).0, generic(sql), "{sql}");
        }
    }

    /// Statements on which the parser's backtracking doubles its work with each element (the
    /// first found by fuzzing the query API, the others of the same families) are refused
    /// within the budget instead of parsing for minutes.
    #[test]
    fn backtracking_statements_are_refused_within_the_budget() {
        let chain = |prefix: char| -> String {
            (0..10)
                .map(|i| format!("{prefix}{i}"))
                .collect::<Vec<_>>()
                .join(".")
        };
        let brackets = format!("SELECT {}[{}[{}", chain('a'), chain('b'), chain('c'));
        let statements = [
            brackets,
            format!("SELECT {}", "case\t-".repeat(30)),
            format!("SELECT {}x", "if(current_time(".repeat(30)),
            "EXPLAIN SELECT ECS, nameessme,evenrit.mest.m.me+hbutesst.me.p.rest.mmenrit[methmenrt.\
             p.rest.mmenrit[methmenrt.me.p.$est.mmenrit.methmethbutesrthbutesst.me.p.rest.mmenrit[\
             methmenrt.p.rest.mm"
                .to_owned(),
        ];
        for sql in &statements {
            let budget = budget(sql.len());
            let (parsed, steps) = bounded(sql, budget);
            assert!(parsed.is_err(), "{sql}");
            // Past the budget every try fails at its first step: a handful more, not millions.
            assert!(
                steps <= budget + 1_000,
                "{steps} steps, budget {budget}: {sql}"
            );
            match parse_statement(sql, 50) {
                Err(QueryError::Invalid(message)) => {
                    assert!(message.contains("too complex to parse"), "{message}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_budget_grows_with_the_statement_up_to_its_cap() {
        assert_eq!(budget(0), BASE_STEPS);
        assert_eq!(budget(1_000), BASE_STEPS + 2_000);
        assert_eq!(budget(2 << 20), MAX_STEPS);
        assert_eq!(budget(usize::MAX), MAX_STEPS);
    }

    #[test]
    fn one_statement_per_query() {
        assert!(matches!(
            parse_statement("SELECT 1; SELECT 2", 50),
            Err(QueryError::Invalid(m)) if m.contains("one statement")
        ));
        assert!(matches!(
            parse_statement("  ", 50),
            Err(QueryError::Invalid(m)) if m.contains("no SQL statement")
        ));
    }
}
