//! What the detector has learned, for the console: the service graph and the per-service
//! baselines. Snapshots are taken by the detector thread between batches.
//!
//! - `GET /api/v1/detector/graph`: learned caller→callee edges, the new ones marked.
//! - `GET /api/v1/detector/baselines`: every service's metrics, expected against last seen;
//!   `?service=NAME` for one service with its recent buckets (404 when it has none).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use vigil_core::time::now_ns;
use vigil_detector::baseline::{BaselinesSnapshot, BucketPoint, MetricBaseline};
use vigil_detector::graph::{GraphSnapshot, GraphStats};

use super::{ApiError, AppState, rfc3339};
use crate::auth::Principal;

/// Longest service name accepted.
const MAX_SERVICE_CHARS: usize = 256;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/detector/graph", get(graph))
        .route("/api/v1/detector/baselines", get(baselines))
}

#[derive(Debug, Serialize)]
struct Graph {
    enabled: bool,
    /// Still learning: edges seen now are learned silently.
    learning: bool,
    learning_until: Option<String>,
    edges: Vec<Edge>,
    services: Vec<GraphService>,
    stats: GraphStats,
}

#[derive(Debug, Serialize)]
struct Edge {
    caller: String,
    callee: String,
    first_seen: String,
    /// First seen after learning ended.
    new: bool,
    /// Raised a `graph.new_edge` alert (new and not allow-listed).
    alerted: bool,
}

#[derive(Debug, Serialize)]
struct GraphService {
    service: String,
    sources: usize,
}

/// A caller limited to services sees the edges that touch them and their own services.
async fn graph(
    State(app): State<AppState>,
    Extension(caller): Extension<Arc<Principal>>,
) -> Result<Json<Graph>, ApiError> {
    let mut snapshot: GraphSnapshot = app.detector.graph().await?;
    snapshot
        .edges
        .retain(|e| caller.sees(&e.caller) || caller.sees(&e.callee));
    snapshot.services.retain(|s| caller.sees(&s.service));
    let now = now_ns();
    Ok(Json(Graph {
        enabled: snapshot.enabled,
        learning: snapshot.enabled && snapshot.learning_until_ns.is_none_or(|until| now < until),
        learning_until: snapshot.learning_until_ns.map(rfc3339),
        edges: snapshot
            .edges
            .into_iter()
            .map(|e| Edge {
                caller: e.caller,
                callee: e.callee,
                first_seen: rfc3339(e.first_seen_ns),
                new: e.after_learning,
                alerted: e.alerted,
            })
            .collect(),
        services: snapshot
            .services
            .into_iter()
            .map(|s| GraphService {
                service: s.service,
                sources: s.sources,
            })
            .collect(),
        stats: snapshot.stats,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineParams {
    service: Option<String>,
}

#[derive(Debug, Serialize)]
struct Baselines {
    enabled: bool,
    bucket_seconds: f64,
    warmup_buckets: u32,
    z_threshold: f64,
    services: Vec<ServiceBaselines>,
}

#[derive(Debug, Serialize)]
struct ServiceBaselines {
    service: String,
    last_seen: String,
    metrics: Vec<Metric>,
}

#[derive(Debug, Serialize)]
struct Metric {
    metric: &'static str,
    unit: &'static str,
    learned_buckets: u32,
    warming_up: bool,
    expected: Option<f64>,
    spread: Option<f64>,
    firing: Option<&'static str>,
    last: Option<Point>,
    history: Vec<Point>,
}

#[derive(Debug, Serialize)]
struct Point {
    /// End of the bucket.
    time: String,
    observed: f64,
    expected: Option<f64>,
    spread: Option<f64>,
    score: Option<f64>,
    anomaly: Option<&'static str>,
    warmup: bool,
}

impl From<BucketPoint> for Point {
    fn from(p: BucketPoint) -> Self {
        Point {
            time: rfc3339(p.end_ns),
            observed: p.observed,
            expected: p.expected,
            spread: p.spread,
            score: p.score,
            anomaly: p.anomaly,
            warmup: p.warmup,
        }
    }
}

impl From<MetricBaseline> for Metric {
    fn from(m: MetricBaseline) -> Self {
        Metric {
            metric: m.metric,
            unit: m.unit,
            learned_buckets: m.learned_buckets,
            warming_up: m.warming_up,
            expected: m.expected,
            spread: m.spread,
            firing: m.firing,
            last: m.last.map(Point::from),
            history: m.history.into_iter().map(Point::from).collect(),
        }
    }
}

async fn baselines(
    State(app): State<AppState>,
    Extension(caller): Extension<Arc<Principal>>,
    params: Result<Query<BaselineParams>, QueryRejection>,
) -> Result<Json<Baselines>, ApiError> {
    let Query(params) = params
        .map_err(|r| ApiError::InvalidInput(format!("invalid parameters: {}", r.body_text())))?;
    let service = match params.service {
        None => None,
        Some(s) if s.is_empty() || s.chars().count() > MAX_SERVICE_CHARS => {
            return Err(ApiError::InvalidInput(format!(
                "service must be 1 to {MAX_SERVICE_CHARS} characters"
            )));
        }
        Some(s) => Some(s),
    };
    let mut snapshot: BaselinesSnapshot = app.detector.baselines(service.clone()).await?;
    snapshot.services.retain(|s| caller.sees(&s.service));
    if let Some(name) = &service
        && snapshot.services.is_empty()
    {
        return Err(ApiError::NotFound(format!(
            "no baselines for service {name:?}: it sent nothing the detector has seen"
        )));
    }
    Ok(Json(Baselines {
        enabled: snapshot.enabled,
        bucket_seconds: snapshot.bucket_seconds,
        warmup_buckets: snapshot.warmup_buckets,
        z_threshold: snapshot.z_threshold,
        services: snapshot
            .services
            .into_iter()
            .map(|s| ServiceBaselines {
                service: s.service,
                last_seen: rfc3339(s.last_seen_ns),
                metrics: s.metrics.into_iter().map(Metric::from).collect(),
            })
            .collect(),
    }))
}
