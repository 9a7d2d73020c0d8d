//! The zero-trust service graph: learns which services call which, and from which addresses,
//! during a learning period, then reports every call edge or source address never seen before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vigil_core::Signal;
use vigil_core::time::duration_ns;

use crate::alert::{AlertKey, Candidate, Observation, Sample, Severity};
use crate::view::BatchView;

/// Rule id of a caller→callee edge first seen after learning.
pub const NEW_EDGE_RULE: &str = "graph.new_edge";
/// Rule id of a source address first seen for a service after learning.
pub const NEW_SOURCE_RULE: &str = "graph.new_source";

/// Attributes of a CLIENT/PRODUCER span naming the callee, best first.
const PEER_KEYS: [&str; 3] = ["peer.service", "server.address", "net.peer.name"];
/// Attributes of a SERVER span naming the caller's address, best first.
const SOURCE_KEYS: [&str; 4] = [
    "client.address",
    "network.peer.address",
    "net.peer.ip",
    "net.sock.peer.addr",
];
/// `via` of an edge found by joining a child span to its parent.
const VIA_PARENT: &str = "parent_span";

/// Service-graph settings (`[detector.graph]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    pub enabled: bool,
    /// Edges and sources seen this long after the first observed batch are learned silently.
    #[serde(with = "humantime_serde")]
    pub learning: Duration,
    /// Edges that never alert; either side may be `*`.
    pub allow: Vec<AllowedEdge>,
    /// Source addresses that never alert: an exact IP or a CIDR, per service or `*`.
    pub allow_sources: Vec<AllowedSource>,
    /// Learned edges kept; beyond it new edges are neither learned nor alerted (counted).
    pub max_edges: usize,
    /// Learned source addresses kept per service; beyond it likewise.
    pub max_sources_per_service: usize,
    /// How long a span waits for its parent or child from another batch.
    #[serde(with = "humantime_serde")]
    pub join_window: Duration,
    /// Spans buffered for the parent/child join; the oldest are dropped beyond it.
    pub max_pending: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            learning: Duration::from_secs(3600),
            allow: Vec::new(),
            allow_sources: Vec::new(),
            max_edges: 100_000,
            max_sources_per_service: 10_000,
            join_window: Duration::from_secs(30),
            max_pending: 100_000,
        }
    }
}

/// A caller→callee edge that never alerts; `*` matches any service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedEdge {
    pub from: String,
    pub to: String,
}

/// Source addresses of a service (`*`: any) that never alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedSource {
    pub service: String,
    /// `10.1.2.3`, `10.0.0.0/8`, `2001:db8::/32`.
    pub address: String,
}

impl GraphConfig {
    /// Every problem with the settings, each naming its `detector.graph.<field>`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, edge) in self.allow.iter().enumerate() {
            for (field, value) in [("from", &edge.from), ("to", &edge.to)] {
                if value.trim().is_empty() {
                    problems.push(format!(
                        "detector.graph.allow[{i}].{field} must not be empty"
                    ));
                }
            }
        }
        for (i, source) in self.allow_sources.iter().enumerate() {
            if source.service.trim().is_empty() {
                problems.push(format!(
                    "detector.graph.allow_sources[{i}].service must not be empty"
                ));
            }
            if let Err(e) = parse_network(&source.address) {
                problems.push(format!("detector.graph.allow_sources[{i}].address: {e}"));
            }
        }
        for (field, value) in [
            ("max_edges", self.max_edges),
            ("max_sources_per_service", self.max_sources_per_service),
            ("max_pending", self.max_pending),
        ] {
            if value == 0 {
                problems.push(format!("detector.graph.{field} must be greater than zero"));
            }
        }
        if self.join_window.is_zero() {
            problems.push("detector.graph.join_window must be greater than zero".into());
        }
        problems
    }
}

/// Counters of what the graph left out because of its limits, and its current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Learned edges now.
    pub edges: usize,
    /// New edges neither learned nor alerted because `max_edges` was reached.
    pub edges_over_limit: u64,
    /// New sources neither learned nor alerted because `max_sources_per_service` was reached.
    pub sources_over_limit: u64,
    /// Spans waiting in the parent/child join buffer now.
    pub pending: usize,
    /// Buffered spans dropped because `max_pending` was reached.
    pub pending_evicted: u64,
    /// Buffered spans dropped after `join_window` without their parent or child.
    pub pending_expired: u64,
}

/// What the graph knows, for display (the console's service graph).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphSnapshot {
    pub enabled: bool,
    /// End of the learning period; `None` until the first batch arrived.
    pub learning_until_ns: Option<i64>,
    /// Every learned edge, sorted by caller then callee.
    pub edges: Vec<EdgeSnapshot>,
    /// Every service that is an end of an edge or has learned sources, sorted.
    pub services: Vec<ServiceSnapshot>,
    pub stats: GraphStats,
}

/// One learned caller→callee edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeSnapshot {
    pub caller: String,
    pub callee: String,
    /// When it was first seen (arrival time).
    pub first_seen_ns: i64,
    /// First seen after the learning period: a new edge.
    pub after_learning: bool,
    /// It raised `graph.new_edge` (new and not allow-listed).
    pub alerted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSnapshot {
    pub service: String,
    /// Distinct source addresses learned for it.
    pub sources: usize,
}

/// What is kept of a learned edge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Edge {
    first_seen_ns: i64,
    after_learning: bool,
    alerted: bool,
}

/// What of the graph outlives a restart: the learned edges and sources, and when learning
/// ended, so a restart neither opens a new learning window nor re-alerts known edges.
/// Spans waiting for their parent or child are not kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SavedGraph {
    learning_until: Option<i64>,
    edges: Vec<(String, String, Edge)>,
    sources: Vec<SavedSources>,
}

impl SavedGraph {
    pub fn edges(&self) -> usize {
        self.edges.len()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSources {
    service: String,
    ips: Vec<IpAddr>,
    hosts: Vec<String>,
    learning_until: i64,
}

/// The learned service graph. Pure: time is passed in.
pub struct ServiceGraph {
    config: GraphConfig,
    allow_sources: Vec<(String, IpNet)>,
    /// End of the learning period, set by the first `observe`.
    learning_until: Option<i64>,
    /// Caller → callee → what is known of the edge.
    edges: HashMap<String, HashMap<String, Edge>>,
    edge_count: usize,
    sources: HashMap<String, Sources>,
    join: JoinBuffer,
    edges_over_limit: u64,
    sources_over_limit: u64,
}

impl ServiceGraph {
    /// A graph with nothing learned; `config` should have passed `validate`.
    pub fn new(config: GraphConfig) -> Self {
        let allow_sources = config
            .allow_sources
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let cidr = parse_network(&s.address).ok();
                if cidr.is_none() {
                    tracing::warn!(
                        index,
                        "ignoring an invalid detector.graph.allow_sources entry"
                    );
                }
                cidr.map(|c| (s.service.clone(), c))
            })
            .collect();
        let join = JoinBuffer::new(duration_ns(config.join_window), config.max_pending.max(1));
        Self {
            config,
            allow_sources,
            learning_until: None,
            edges: HashMap::new(),
            edge_count: 0,
            sources: HashMap::new(),
            join,
            edges_over_limit: 0,
            sources_over_limit: 0,
        }
    }

    /// Learns edges and sources from a spans batch that arrived at `now_ns`; after learning,
    /// reports the new ones. Logs batches are ignored (but start the learning period).
    pub fn observe(&mut self, view: &BatchView<'_>, now_ns: i64) -> Vec<Observation> {
        let mut out = Vec::new();
        if !self.config.enabled {
            return out;
        }
        let until = *self
            .learning_until
            .get_or_insert_with(|| now_ns.saturating_add(duration_ns(self.config.learning)));
        if view.signal() != Signal::Spans {
            return out;
        }
        let learning = now_ns < until;
        self.join.expire(now_ns);
        for row in 0..view.len() {
            self.observe_span(view, row, learning, now_ns, &mut out);
        }
        out
    }

    /// Drops join-buffer entries older than `join_window`. Reports nothing today; returns
    /// observations so that time-based checks can be added without changing callers.
    pub fn tick(&mut self, now_ns: i64) -> Vec<Observation> {
        self.join.expire(now_ns);
        Vec::new()
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn save(&self) -> SavedGraph {
        SavedGraph {
            learning_until: self.learning_until,
            edges: self
                .edges
                .iter()
                .flat_map(|(caller, callees)| {
                    callees
                        .iter()
                        .map(|(callee, edge)| (caller.clone(), callee.clone(), *edge))
                })
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(service, s)| SavedSources {
                    service: service.clone(),
                    ips: s.ips.iter().copied().collect(),
                    hosts: s.hosts.iter().cloned().collect(),
                    learning_until: s.learning_until,
                })
                .collect(),
        }
    }

    /// Takes over what an earlier run learned, within this run's limits.
    pub fn restore(&mut self, saved: SavedGraph) {
        self.learning_until = saved.learning_until.or(self.learning_until);
        for (caller, callee, edge) in saved.edges {
            if self.edge_count >= self.config.max_edges {
                break;
            }
            let callees = self.edges.entry(caller).or_default();
            if callees.insert(callee, edge).is_none() {
                self.edge_count += 1;
            }
        }
        let cap = self.config.max_sources_per_service;
        for saved in saved.sources {
            let sources = self.sources.entry(saved.service).or_default();
            sources.learning_until = saved.learning_until;
            for ip in saved.ips {
                if sources.len() < cap {
                    sources.ips.insert(ip);
                }
            }
            for host in saved.hosts {
                if sources.len() < cap {
                    sources.hosts.insert(host);
                }
            }
        }
    }

    /// Learned caller→callee edges, sorted.
    pub fn edges(&self) -> Vec<(String, String)> {
        let mut edges: Vec<(String, String)> = self
            .edges
            .iter()
            .flat_map(|(caller, callees)| {
                callees
                    .keys()
                    .map(move |callee| (caller.clone(), callee.clone()))
            })
            .collect();
        edges.sort();
        edges
    }

    /// Everything learned, with when and whether each edge was new. Linear in the graph's
    /// size (bounded by `max_edges`).
    pub fn snapshot(&self) -> GraphSnapshot {
        let mut edges: Vec<EdgeSnapshot> = self
            .edges
            .iter()
            .flat_map(|(caller, callees)| {
                callees.iter().map(move |(callee, e)| EdgeSnapshot {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    first_seen_ns: e.first_seen_ns,
                    after_learning: e.after_learning,
                    alerted: e.alerted,
                })
            })
            .collect();
        edges.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
        let mut services: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &edges {
            services.entry(&e.caller).or_default();
            services.entry(&e.callee).or_default();
        }
        for (service, sources) in &self.sources {
            *services.entry(service).or_default() = sources.len();
        }
        let services = services
            .into_iter()
            .map(|(service, sources)| ServiceSnapshot {
                service: service.to_owned(),
                sources,
            })
            .collect();
        GraphSnapshot {
            enabled: self.config.enabled,
            learning_until_ns: self.learning_until,
            edges,
            services,
            stats: self.stats(),
        }
    }

    pub fn stats(&self) -> GraphStats {
        GraphStats {
            edges: self.edge_count,
            edges_over_limit: self.edges_over_limit,
            sources_over_limit: self.sources_over_limit,
            pending: self.join.len(),
            pending_evicted: self.join.evicted,
            pending_expired: self.join.expired,
        }
    }

    fn observe_span(
        &mut self,
        view: &BatchView<'_>,
        row: usize,
        learning: bool,
        now_ns: i64,
        out: &mut Vec<Observation>,
    ) {
        let service = view.service(row);
        if service.is_empty() {
            return;
        }
        let kind = view.str(row, "kind").unwrap_or("UNSPECIFIED");
        let trace_id = view.str(row, "trace_id").unwrap_or_default();
        let span_id = view.str(row, "span_id").unwrap_or_default();
        let time_ns = view.time_ns(row);
        let evidence = |via: &'static str| Evidence {
            via,
            trace_id,
            span_id,
            time_ns,
        };

        if matches!(kind, "CLIENT" | "PRODUCER")
            && let Some((via, callee)) = first_present(view, row, &PEER_KEYS)
        {
            self.discover_edge(service, callee, evidence(via), learning, now_ns, out);
        }

        // The span first, then its wait for a parent: under `max_pending` the wait is the
        // newer of its two slots and so the last to be dropped.
        if let Some(key) = span_key(trace_id, span_id) {
            for child in self.join.add_span(key, service, now_ns) {
                let evidence = Evidence {
                    via: VIA_PARENT,
                    trace_id: &child.trace_id,
                    span_id: &child.span_id,
                    time_ns: child.time_ns,
                };
                self.discover_edge(service, &child.service, evidence, learning, now_ns, out);
            }
        }

        if matches!(kind, "SERVER" | "CONSUMER")
            && let Some(parent) = view
                .str(row, "parent_span_id")
                .and_then(|p| span_key(trace_id, p))
        {
            match self.join.parent_service(parent) {
                Some(caller) if caller == service || self.knows(caller, service) => {}
                Some(caller) => {
                    let caller = caller.to_owned();
                    self.discover_edge(
                        &caller,
                        service,
                        evidence(VIA_PARENT),
                        learning,
                        now_ns,
                        out,
                    );
                }
                None => self.join.wait(
                    parent,
                    Child {
                        service: service.to_owned(),
                        trace_id: trace_id.to_owned(),
                        span_id: span_id.to_owned(),
                        time_ns,
                    },
                    now_ns,
                ),
            }
        }

        if kind == "SERVER"
            && let Some((attribute, raw)) = first_present(view, row, &SOURCE_KEYS)
        {
            let learning = learning || self.learning_sources_of(service, now_ns);
            self.discover_source(service, raw, attribute, evidence(attribute), learning, out);
        }
    }

    fn discover_edge(
        &mut self,
        caller: &str,
        callee: &str,
        evidence: Evidence<'_>,
        learning: bool,
        now_ns: i64,
        out: &mut Vec<Observation>,
    ) {
        if caller == callee || callee.is_empty() || self.knows(caller, callee) {
            return;
        }
        if self.edge_count >= self.config.max_edges {
            if self.edges_over_limit == 0 {
                tracing::warn!(
                    max_edges = self.config.max_edges,
                    "service graph edge limit reached; new edges are neither learned nor alerted"
                );
            }
            self.edges_over_limit += 1;
            return;
        }
        let alerted = !learning && !self.edge_allowed(caller, callee);
        if alerted {
            out.push(new_edge(caller, callee, &evidence));
        }
        self.edges.entry(caller.to_owned()).or_default().insert(
            callee.to_owned(),
            Edge {
                first_seen_ns: now_ns,
                after_learning: !learning,
                alerted,
            },
        );
        self.edge_count += 1;
    }

    fn knows(&self, caller: &str, callee: &str) -> bool {
        self.edges
            .get(caller)
            .is_some_and(|callees| callees.contains_key(callee))
    }

    fn edge_allowed(&self, caller: &str, callee: &str) -> bool {
        self.config
            .allow
            .iter()
            .any(|a| pattern_matches(&a.from, caller) && pattern_matches(&a.to, callee))
    }

    fn discover_source(
        &mut self,
        service: &str,
        raw: &str,
        attribute: &str,
        evidence: Evidence<'_>,
        learning: bool,
        out: &mut Vec<Observation>,
    ) {
        let source = Source::parse(raw);
        if matches!(source, Source::Host("")) {
            return;
        }
        let known = self.sources.get(service);
        if known.is_some_and(|s| s.contains(&source)) {
            return;
        }
        if known.map_or(0, Sources::len) >= self.config.max_sources_per_service {
            if self.sources_over_limit == 0 {
                tracing::warn!(
                    max_sources_per_service = self.config.max_sources_per_service,
                    "service graph source limit reached; new sources are neither learned nor alerted"
                );
            }
            self.sources_over_limit += 1;
            return;
        }
        if !learning && !self.source_allowed(service, &source) {
            out.push(new_source(service, &source, attribute, &evidence));
        }
        self.sources
            .entry(service.to_owned())
            .or_default()
            .insert(&source);
    }

    /// A service first seen after the learning period learns its own sources for a learning
    /// period of its own (its appearance is what `graph.new_edge` reports), so a new service
    /// does not raise one alert per caller address.
    fn learning_sources_of(&mut self, service: &str, now_ns: i64) -> bool {
        let period = duration_ns(self.config.learning);
        let sources = self
            .sources
            .entry(service.to_owned())
            .or_insert_with(|| Sources {
                learning_until: now_ns.saturating_add(period),
                ..Sources::default()
            });
        now_ns < sources.learning_until
    }

    fn source_allowed(&self, service: &str, source: &Source<'_>) -> bool {
        let Source::Ip(ip) = source else {
            return false;
        };
        self.allow_sources
            .iter()
            .any(|(pattern, net)| pattern_matches(pattern, service) && in_network(net, *ip))
    }
}

/// The span an edge or source was found in.
struct Evidence<'s> {
    via: &'static str,
    trace_id: &'s str,
    span_id: &'s str,
    time_ns: i64,
}

impl Evidence<'_> {
    fn sample(&self) -> Sample {
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Sample {
            signal: "spans",
            time_ns: self.time_ns,
            trace_id: id(self.trace_id),
            span_id: id(self.span_id),
        }
    }
}

fn new_edge(caller: &str, callee: &str, evidence: &Evidence<'_>) -> Observation {
    let mut details = Map::new();
    details.insert("caller".into(), Value::from(caller));
    details.insert("callee".into(), Value::from(callee));
    details.insert("via".into(), Value::from(evidence.via));
    details.insert("trace_id".into(), Value::from(evidence.trace_id));
    Observation::Fire(Candidate {
        key: AlertKey::new(NEW_EDGE_RULE, callee)
            .with_group("caller", caller)
            .with_group("callee", callee),
        rule_title: "New service-to-service call".into(),
        severity: Severity::High,
        summary: format!(
            "service {caller} called {callee} for the first time since learning ended"
        ),
        details,
        time_ns: evidence.time_ns,
        sample: Some(evidence.sample()),
    })
}

fn new_source(
    service: &str,
    source: &Source<'_>,
    attribute: &str,
    evidence: &Evidence<'_>,
) -> Observation {
    let address = source.to_string();
    let mut details = Map::new();
    details.insert("service".into(), Value::from(service));
    details.insert("address".into(), Value::from(address.as_str()));
    details.insert("attribute".into(), Value::from(attribute));
    details.insert("trace_id".into(), Value::from(evidence.trace_id));
    Observation::Fire(Candidate {
        key: AlertKey::new(NEW_SOURCE_RULE, service).with_group("address", address.as_str()),
        rule_title: "New source address".into(),
        severity: Severity::Medium,
        summary: format!(
            "service {service} was called from {address} for the first time since learning ended"
        ),
        details,
        time_ns: evidence.time_ns,
        sample: Some(evidence.sample()),
    })
}

/// The first of `keys` with a non-empty value in the row's attributes, and its value.
fn first_present<'a>(
    view: &BatchView<'a>,
    row: usize,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    keys.iter().find_map(|&k| {
        view.attribute(row, k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| (k, v))
    })
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// A span's identity: (trace id, span id), parsed from their hex text.
type SpanKey = (u128, u64);

fn span_key(trace_id: &str, span_id: &str) -> Option<SpanKey> {
    let trace = u128::from_str_radix(trace_id, 16).ok()?;
    let span = u64::from_str_radix(span_id, 16).ok()?;
    (trace != 0 && span != 0).then_some((trace, span))
}

/// Where a call came from: an IP address (port stripped) or, failing that, a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source<'a> {
    Ip(IpAddr),
    Host(&'a str),
}

impl<'a> Source<'a> {
    fn parse(raw: &'a str) -> Self {
        let raw = raw.trim();
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Source::Ip(ip.to_canonical());
        }
        if let Ok(addr) = raw.parse::<SocketAddr>() {
            return Source::Ip(addr.ip().to_canonical());
        }
        if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
            && let Ok(ip) = inner.parse::<IpAddr>()
        {
            return Source::Ip(ip.to_canonical());
        }
        // `host:port`: client ports are ephemeral, so only the host identifies the source.
        match raw.rsplit_once(':') {
            Some((host, port))
                if !host.contains(':')
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Source::Host(host)
            }
            _ => Source::Host(raw),
        }
    }
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => ip.fmt(f),
            Source::Host(host) => f.write_str(host),
        }
    }
}

/// The learned sources of one service.
#[derive(Default)]
struct Sources {
    ips: HashSet<IpAddr>,
    hosts: HashSet<String>,
    /// Sources of this service seen before this time are learned silently.
    learning_until: i64,
}

impl Sources {
    fn len(&self) -> usize {
        self.ips.len() + self.hosts.len()
    }

    fn contains(&self, source: &Source<'_>) -> bool {
        match source {
            Source::Ip(ip) => self.ips.contains(ip),
            Source::Host(host) => self.hosts.contains(*host),
        }
    }

    fn insert(&mut self, source: &Source<'_>) {
        match source {
            Source::Ip(ip) => {
                self.ips.insert(*ip);
            }
            Source::Host(host) => {
                self.hosts.insert((*host).to_owned());
            }
        }
    }
}

/// An allow-listed network: `10.0.0.0/8`, `2001:db8::/32`, or one address (`10.1.2.3`, `::1`).
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an ip address or cidr"))
}

/// Whether `ip` is in `net`, reading IPv4-mapped IPv6 addresses as IPv4.
fn in_network(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&ip.to_canonical())
}

/// A SERVER/CONSUMER span waiting for its parent.
struct Child {
    service: String,
    trace_id: String,
    span_id: String,
    time_ns: i64,
}

/// What one buffer slot holds.
enum Slot {
    /// A span that may be a parent.
    Span(SpanKey),
    /// A child waiting for the parent with this key.
    Child(SpanKey),
}

struct Entry {
    arrived_ns: i64,
    slot: Slot,
}

/// Spans kept for the parent/child join across batches, oldest first, bounded in age and count.
struct JoinBuffer {
    window_ns: i64,
    capacity: usize,
    next_seq: u64,
    /// Arrival sequence → entry; the first is the oldest.
    order: BTreeMap<u64, Entry>,
    /// Span → (service, sequence).
    spans: HashMap<SpanKey, (String, u64)>,
    /// Parent span → children waiting for it, with their sequences.
    waiting: HashMap<SpanKey, Vec<(u64, Child)>>,
    evicted: u64,
    expired: u64,
}

impl JoinBuffer {
    fn new(window_ns: i64, capacity: usize) -> Self {
        Self {
            window_ns,
            capacity,
            next_seq: 0,
            order: BTreeMap::new(),
            spans: HashMap::new(),
            waiting: HashMap::new(),
            evicted: 0,
            expired: 0,
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn parent_service(&self, parent: SpanKey) -> Option<&str> {
        self.spans.get(&parent).map(|(service, _)| service.as_str())
    }

    /// Records a span that may be a parent; returns the children that were waiting for it.
    fn add_span(&mut self, key: SpanKey, service: &str, now_ns: i64) -> Vec<Child> {
        let children = self.waiting.remove(&key).unwrap_or_default();
        for (seq, _) in &children {
            self.order.remove(seq);
        }
        let seq = self.push(now_ns, Slot::Span(key));
        if let Some((_, old)) = self.spans.insert(key, (service.to_owned(), seq)) {
            self.order.remove(&old);
        }
        self.enforce_capacity();
        children.into_iter().map(|(_, child)| child).collect()
    }

    /// Keeps `child` until its parent arrives or it expires.
    fn wait(&mut self, parent: SpanKey, child: Child, now_ns: i64) {
        let seq = self.push(now_ns, Slot::Child(parent));
        self.waiting.entry(parent).or_default().push((seq, child));
        self.enforce_capacity();
    }

    fn push(&mut self, now_ns: i64, slot: Slot) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(
            seq,
            Entry {
                arrived_ns: now_ns,
                slot,
            },
        );
        seq
    }

    /// Drops entries that arrived more than `window_ns` before `now_ns`.
    fn expire(&mut self, now_ns: i64) {
        while let Some(entry) = self.order.first_entry() {
            if now_ns.saturating_sub(entry.get().arrived_ns) <= self.window_ns {
                break;
            }
            let (seq, entry) = entry.remove_entry();
            self.forget(seq, &entry.slot);
            self.expired += 1;
        }
    }

    fn enforce_capacity(&mut self) {
        while self.order.len() > self.capacity {
            let Some((seq, entry)) = self.order.pop_first() else {
                break;
            };
            self.forget(seq, &entry.slot);
            self.evicted += 1;
        }
    }

    /// Removes the span or child that entry `seq` stood for.
    fn forget(&mut self, seq: u64, slot: &Slot) {
        match slot {
            Slot::Span(key) => {
                if self.spans.get(key).is_some_and(|(_, s)| *s == seq) {
                    self.spans.remove(key);
                }
            }
            Slot::Child(parent) => {
                if let Some(children) = self.waiting.get_mut(parent) {
                    children.retain(|(s, _)| *s != seq);
                    if children.is_empty() {
                        self.waiting.remove(parent);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, EventSpec};
    use vigil_core::Redactor;

    const SEC: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SEC;
    const AFTER: i64 = T0 + 2 * 3600 * SEC;

    fn graph(config: GraphConfig) -> ServiceGraph {
        assert_eq!(config.validate(), Vec::<String>::new());
        ServiceGraph::new(config)
    }

    /// A graph whose learning period is already over at its first batch.
    fn alerting() -> ServiceGraph {
        graph(GraphConfig {
            learning: Duration::ZERO,
            ..GraphConfig::default()
        })
    }

    fn observe(g: &mut ServiceGraph, events: &[EventSpec], now_ns: i64) -> Vec<Observation> {
        let batch = synthetic::batch(events, now_ns).expect("batch");
        let redacted = Redactor::disabled().apply(batch).expect("redact");
        let view = BatchView::new(&redacted).expect("view");
        g.observe(&view, now_ns)
    }

    fn call(caller: &str, callee: &str) -> EventSpec {
        EventSpec::span(caller, "call", "CLIENT").attr("peer.service", callee)
    }

    /// A span with explicit ids (small numbers, written as hex).
    fn linked(service: &str, kind: &str, trace: u32, span: u32, parent: Option<u32>) -> EventSpec {
        let mut e = EventSpec::span(service, "op", kind);
        e.trace_id = Some(format!("{trace:032x}"));
        e.span_id = Some(format!("{span:016x}"));
        e.parent_span_id = parent.map(|p| format!("{p:016x}"));
        e
    }

    fn served(service: &str, address: &str) -> EventSpec {
        EventSpec::span(service, "GET /", "SERVER").attr("client.address", address)
    }

    fn candidates(observations: Vec<Observation>) -> Vec<Candidate> {
        observations
            .into_iter()
            .map(|o| match o {
                Observation::Fire(c) => c,
                Observation::Clear(k) => panic!("unexpected clear {k:?}"),
            })
            .collect()
    }

    fn edge(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    fn group(c: &Candidate) -> Vec<(&str, &str)> {
        c.key
            .group
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn learning_is_silent_and_learns_peer_service_and_parent_links() {
        let mut g = graph(GraphConfig::default());
        let events = [
            call("frontend", "cart"),
            EventSpec::span("cart", "query", "CLIENT").attr("server.address", "redis"),
            EventSpec::span("cart", "publish", "PRODUCER").attr("net.peer.name", "kafka"),
            call("frontend", "frontend"),
            EventSpec::span("search", "internal", "INTERNAL").attr("peer.service", "ignored"),
            linked("checkout", "CLIENT", 7, 1, None),
            linked("payment", "SERVER", 7, 2, Some(1)),
            served("payment", "10.0.0.1:4431"),
        ];
        assert!(observe(&mut g, &events, T0).is_empty());
        assert_eq!(
            g.edges(),
            vec![
                edge("cart", "kafka"),
                edge("cart", "redis"),
                edge("checkout", "payment"),
                edge("frontend", "cart"),
            ]
        );
        // Still learning 59 minutes later.
        let later = [call("frontend", "search"), served("payment", "10.0.0.2")];
        assert!(observe(&mut g, &later, T0 + 59 * 60 * SEC).is_empty());
        assert_eq!(g.stats().edges, 5);
    }

    #[test]
    fn a_new_edge_after_learning_fires_once_and_is_then_learned() {
        let mut g = graph(GraphConfig::default());
        observe(&mut g, &[call("frontend", "cart")], T0);
        assert!(observe(&mut g, &[call("frontend", "cart")], AFTER).is_empty());

        let mut first = call("frontend", "admin");
        first.trace_id = Some(format!("{:032x}", 0xabc));
        first.span_id = Some(format!("{:016x}", 0xdef));
        let fired = candidates(observe(
            &mut g,
            &[first, call("frontend", "admin").at(5)],
            AFTER,
        ));
        assert_eq!(
            fired.len(),
            1,
            "one fire for the edge seen twice in a batch"
        );
        let c = &fired[0];
        assert_eq!(c.key.rule_id, "graph.new_edge");
        assert_eq!(c.key.service, "admin");
        assert_eq!(group(c), vec![("caller", "frontend"), ("callee", "admin")]);
        assert_eq!(c.rule_title, "New service-to-service call");
        assert_eq!(c.severity, Severity::High);
        assert_eq!(
            c.summary,
            "service frontend called admin for the first time since learning ended"
        );
        assert_eq!(c.details["via"], "peer.service");
        assert_eq!(c.details["caller"], "frontend");
        assert_eq!(c.details["callee"], "admin");
        let trace = format!("{:032x}", 0xabc);
        assert_eq!(c.details["trace_id"], trace.as_str());
        let sample = c.sample.as_ref().expect("sample");
        assert_eq!(sample.signal, "spans");
        assert_eq!(sample.trace_id.as_deref(), Some(trace.as_str()));
        assert_eq!(sample.span_id.as_deref(), Some("0000000000000def"));
        assert_eq!(sample.time_ns, AFTER);

        assert!(observe(&mut g, &[call("frontend", "admin")], AFTER + SEC).is_empty());
        assert!(g.edges().contains(&edge("frontend", "admin")));
    }

    #[test]
    fn parent_and_child_join_across_batches_in_either_order() {
        let mut g = alerting();
        // Child first.
        assert!(observe(&mut g, &[linked("payment", "SERVER", 9, 2, Some(1))], T0).is_empty());
        assert_eq!(
            g.stats().pending,
            2,
            "the child waits and is itself a possible parent"
        );
        let fired = candidates(observe(
            &mut g,
            &[linked("checkout", "CLIENT", 9, 1, None)],
            T0 + SEC,
        ));
        assert_eq!(fired.len(), 1);
        let c = &fired[0];
        assert_eq!(c.key.service, "payment");
        assert_eq!(
            group(c),
            vec![("caller", "checkout"), ("callee", "payment")]
        );
        assert_eq!(c.details["via"], "parent_span");
        let sample = c.sample.as_ref().expect("sample");
        assert_eq!(
            sample.span_id.as_deref(),
            Some("0000000000000002"),
            "the callee's span"
        );
        assert_eq!(sample.time_ns, T0);

        // Parent first, as a consumer of a producer.
        assert!(
            observe(
                &mut g,
                &[linked("orders", "PRODUCER", 10, 3, None)],
                T0 + SEC
            )
            .is_empty()
        );
        let fired = candidates(observe(
            &mut g,
            &[linked("shipping", "CONSUMER", 10, 4, Some(3))],
            T0 + 2 * SEC,
        ));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            group(&fired[0]),
            vec![("caller", "orders"), ("callee", "shipping")]
        );
        assert_eq!(
            g.edges(),
            vec![edge("checkout", "payment"), edge("orders", "shipping")]
        );
    }

    #[test]
    fn parent_and_child_in_one_batch_join_whatever_the_row_order() {
        let mut g = graph(GraphConfig::default());
        let events = [
            linked("b", "SERVER", 3, 2, Some(1)),
            linked("a", "CLIENT", 3, 1, None),
            linked("c", "CLIENT", 4, 5, None),
            linked("d", "SERVER", 4, 6, Some(5)),
        ];
        assert!(observe(&mut g, &events, T0).is_empty());
        assert_eq!(g.edges(), vec![edge("a", "b"), edge("c", "d")]);
    }

    #[test]
    fn a_join_older_than_the_window_is_not_made_and_tick_prunes_the_buffer() {
        let mut g = alerting();
        observe(&mut g, &[linked("payment", "SERVER", 9, 2, Some(1))], T0);
        assert!(g.tick(T0 + 30 * SEC).is_empty());
        assert_eq!(g.stats().pending, 2, "30s is not older than the 30s window");
        g.tick(T0 + 31 * SEC);
        assert_eq!(g.stats().pending, 0);
        assert_eq!(g.stats().pending_expired, 2);
        let late = observe(
            &mut g,
            &[linked("checkout", "CLIENT", 9, 1, None)],
            T0 + 31 * SEC,
        );
        assert!(late.is_empty());
        assert!(g.edges().is_empty());

        // Expired parents are not found either, even without a tick in between.
        observe(
            &mut g,
            &[linked("checkout", "CLIENT", 11, 1, None)],
            T0 + 40 * SEC,
        );
        let late = observe(
            &mut g,
            &[linked("payment", "SERVER", 11, 2, Some(1))],
            T0 + 80 * SEC,
        );
        assert!(late.is_empty());
        assert!(g.edges().is_empty());
    }

    #[test]
    fn same_service_parent_and_child_make_no_edge() {
        let mut g = alerting();
        let events = [
            linked("api", "CLIENT", 5, 1, None),
            linked("api", "SERVER", 5, 2, Some(1)),
        ];
        assert!(observe(&mut g, &events, T0).is_empty());
        assert!(observe(&mut g, &[linked("api", "SERVER", 5, 3, Some(1))], T0 + SEC).is_empty());
        assert!(g.edges().is_empty());
    }

    #[test]
    fn allowed_edges_with_wildcards_do_not_fire() {
        let mut g = graph(GraphConfig {
            learning: Duration::ZERO,
            allow: vec![
                AllowedEdge {
                    from: "*".into(),
                    to: "cart".into(),
                },
                AllowedEdge {
                    from: "batch".into(),
                    to: "*".into(),
                },
            ],
            ..GraphConfig::default()
        });
        let events = [
            call("frontend", "cart"),
            call("mobile", "cart"),
            call("batch", "warehouse"),
            call("frontend", "warehouse"),
        ];
        let fired = candidates(observe(&mut g, &events, T0));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            group(&fired[0]),
            vec![("caller", "frontend"), ("callee", "warehouse")]
        );
    }

    #[test]
    fn snapshot_tells_learned_edges_from_new_and_alerted_ones() {
        let mut g = graph(GraphConfig {
            learning: Duration::from_secs(60),
            allow: vec![AllowedEdge {
                from: "batch".into(),
                to: "*".into(),
            }],
            ..GraphConfig::default()
        });
        assert_eq!(g.snapshot().learning_until_ns, None);
        observe(
            &mut g,
            &[call("frontend", "cart"), served("cart", "10.0.0.1")],
            T0,
        );
        let late = T0 + 120 * SEC;
        observe(
            &mut g,
            &[call("frontend", "admin"), call("batch", "warehouse")],
            late,
        );
        let snap = g.snapshot();
        assert!(snap.enabled);
        assert_eq!(snap.learning_until_ns, Some(T0 + 60 * SEC));
        let edges: Vec<_> = snap
            .edges
            .iter()
            .map(|e| {
                (
                    e.caller.as_str(),
                    e.callee.as_str(),
                    e.first_seen_ns,
                    e.after_learning,
                    e.alerted,
                )
            })
            .collect();
        assert_eq!(
            edges,
            vec![
                ("batch", "warehouse", late, true, false),
                ("frontend", "admin", late, true, true),
                ("frontend", "cart", T0, false, false),
            ]
        );
        let services: Vec<_> = snap
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.sources))
            .collect();
        assert_eq!(
            services,
            vec![
                ("admin", 0),
                ("batch", 0),
                ("cart", 1),
                ("frontend", 0),
                ("warehouse", 0)
            ]
        );
        assert_eq!(snap.stats, g.stats());
    }

    #[test]
    fn a_new_source_address_fires_after_learning_unless_allowed() {
        let mut g = graph(GraphConfig {
            allow_sources: vec![
                AllowedSource {
                    service: "api".into(),
                    address: "172.16.0.0/12".into(),
                },
                AllowedSource {
                    service: "*".into(),
                    address: "2001:db8::/32".into(),
                },
            ],
            ..GraphConfig::default()
        });
        observe(&mut g, &[served("api", "10.0.0.1:5555")], T0);

        let quiet = [
            served("api", "10.0.0.1:6000"),
            served("api", "10.0.0.1"),
            served("api", "172.20.1.1"),
            served("api", "[2001:db8::5]:443"),
            served("web", "2001:db8:ffff::1"),
            call("api", "db").attr("client.address", "192.0.2.1"),
        ];
        let fired = candidates(observe(&mut g, &quiet, AFTER));
        assert_eq!(fired.len(), 1, "only the client call's edge: {fired:?}");
        assert_eq!(fired[0].key.rule_id, "graph.new_edge");

        let events = [
            served("api", "192.168.1.5:40000"),
            served("api", "192.168.1.5:40001"),
            served("web", "172.20.1.1"),
            served("api", "2001:db9::1"),
            EventSpec::span("api", "GET /", "SERVER")
                .attr("network.peer.address", "gw.internal:8080"),
        ];
        let fired = candidates(observe(&mut g, &events, AFTER + SEC));
        let got: Vec<_> = fired
            .iter()
            .map(|c| (c.key.rule_id.as_str(), c.key.service.as_str(), group(c)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("graph.new_source", "api", vec![("address", "192.168.1.5")]),
                // `web` first appeared after learning: still learning its own sources.
                ("graph.new_source", "api", vec![("address", "2001:db9::1")]),
                ("graph.new_source", "api", vec![("address", "gw.internal")]),
            ]
        );
        let c = &fired[0];
        assert_eq!(c.severity, Severity::Medium);
        assert_eq!(c.details["attribute"], "client.address");
        assert_eq!(fired[2].details["attribute"], "network.peer.address");

        assert!(
            observe(&mut g, &events, AFTER + 2 * SEC).is_empty(),
            "learned once alerted"
        );
    }

    #[test]
    fn a_service_first_seen_after_learning_learns_its_own_sources_first() {
        let mut g = graph(GraphConfig::default());
        assert!(observe(&mut g, &[served("cart", "10.0.0.1")], T0).is_empty());
        // New service: its appearance is the new edge's business, not one alert per caller.
        assert!(observe(&mut g, &[served("refunds", "10.0.0.2")], AFTER).is_empty());
        assert!(observe(&mut g, &[served("refunds", "10.0.0.3")], AFTER + 60 * SEC).is_empty());
        let later = AFTER + 2 * 3600 * SEC;
        let fired = candidates(observe(&mut g, &[served("refunds", "10.9.9.9")], later));
        assert_eq!(fired.len(), 1);
        assert_eq!(group(&fired[0]), [("address", "10.9.9.9")]);
        let known = candidates(observe(&mut g, &[served("cart", "10.0.0.7")], later));
        assert_eq!(known.len(), 1, "a known service alerts at once");
    }

    #[test]
    fn max_edges_and_max_sources_stop_learning_and_alerting() {
        let mut g = graph(GraphConfig {
            max_edges: 2,
            max_sources_per_service: 1,
            ..GraphConfig::default()
        });
        observe(
            &mut g,
            &[
                call("a", "b"),
                call("a", "c"),
                call("a", "d"),
                served("b", "10.0.0.1"),
            ],
            T0,
        );
        assert_eq!(g.edges(), vec![edge("a", "b"), edge("a", "c")]);
        let later = [call("x", "y"), call("a", "b"), served("b", "10.0.0.2")];
        assert!(observe(&mut g, &later, AFTER).is_empty());
        assert_eq!(g.edges().len(), 2);
        let stats = g.stats();
        assert_eq!((stats.edges_over_limit, stats.sources_over_limit), (2, 1));
    }

    #[test]
    fn max_pending_drops_the_oldest_buffered_spans() {
        let mut g = graph(GraphConfig {
            learning: Duration::ZERO,
            max_pending: 4,
            ..GraphConfig::default()
        });
        // Each waiting child takes two slots (waiting for a parent, and a possible parent).
        let children = [
            linked("s1", "SERVER", 1, 11, Some(1)),
            linked("s2", "SERVER", 2, 12, Some(2)),
            linked("s3", "SERVER", 3, 13, Some(3)),
        ];
        assert!(observe(&mut g, &children, T0).is_empty());
        assert_eq!(g.stats().pending, 4);
        assert_eq!(g.stats().pending_evicted, 2);

        let parents = [
            linked("caller", "CLIENT", 1, 1, None),
            linked("caller", "CLIENT", 2, 2, None),
            linked("caller", "CLIENT", 3, 3, None),
        ];
        let fired = candidates(observe(&mut g, &parents, T0 + SEC));
        assert_eq!(fired.len(), 2, "the oldest child was dropped");
        assert_eq!(g.edges(), vec![edge("caller", "s2"), edge("caller", "s3")]);
        assert!(g.stats().pending <= 4);
    }

    #[test]
    fn logs_and_a_disabled_graph_are_ignored() {
        let mut g = alerting();
        let logs = [EventSpec::log("frontend", "called cart").attr("peer.service", "cart")];
        assert!(observe(&mut g, &logs, T0).is_empty());
        assert!(g.edges().is_empty());

        let mut off = graph(GraphConfig {
            enabled: false,
            learning: Duration::ZERO,
            ..GraphConfig::default()
        });
        assert!(observe(&mut off, &[call("a", "b")], T0).is_empty());
        assert!(off.edges().is_empty());
    }

    #[test]
    fn validate_reports_every_problem() {
        assert!(GraphConfig::default().validate().is_empty());
        let config = GraphConfig {
            allow: vec![AllowedEdge {
                from: " ".into(),
                to: "cart".into(),
            }],
            allow_sources: vec![
                AllowedSource {
                    service: "api".into(),
                    address: "10.0.0.0/33".into(),
                },
                AllowedSource {
                    service: "".into(),
                    address: "gw.internal".into(),
                },
                AllowedSource {
                    service: "*".into(),
                    address: "2001:db8::/32".into(),
                },
            ],
            max_edges: 0,
            max_sources_per_service: 0,
            max_pending: 0,
            join_window: Duration::ZERO,
            ..GraphConfig::default()
        };
        let problems = config.validate();
        for expected in [
            "detector.graph.allow[0].from",
            "detector.graph.allow_sources[0].address",
            "detector.graph.allow_sources[1].service",
            "detector.graph.allow_sources[1].address",
            "detector.graph.max_edges",
            "detector.graph.max_sources_per_service",
            "detector.graph.max_pending",
            "detector.graph.join_window",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} missing from {problems:?}"
            );
        }
        assert_eq!(problems.len(), 8, "{problems:?}");
        assert!(
            problems.iter().all(|p| p == &p.to_lowercase()),
            "{problems:?}"
        );
    }

    #[test]
    fn config_reads_durations_and_defaults_and_refuses_unknown_fields() {
        let config: GraphConfig = serde_json::from_value(serde_json::json!({
            "learning": "2h",
            "allow": [{"from": "*", "to": "cart"}],
            "allow_sources": [{"service": "api", "address": "10.0.0.0/8"}],
        }))
        .expect("config");
        assert_eq!(config.learning, Duration::from_secs(7200));
        assert_eq!(config.join_window, Duration::from_secs(30));
        assert_eq!((config.max_edges, config.max_pending), (100_000, 100_000));
        assert!(config.enabled);
        assert!(serde_json::from_value::<GraphConfig>(serde_json::json!({"learn": "1h"})).is_err());
        assert!(
            serde_json::from_value::<GraphConfig>(serde_json::json!({
                "allow": [{"from": "a", "to": "b", "port": 1}]
            }))
            .is_err()
        );
    }

    #[test]
    fn cidr_matching() {
        let cidr = |s: &str| parse_network(s).expect("cidr");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let net = |s: &str| {
            let n = cidr(s);
            move |a: IpAddr| in_network(&n, a)
        };
        assert!(net("10.0.0.0/8")(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8")(ip("11.0.0.1")));
        assert!(net("10.0.0.1")(ip("10.0.0.1")));
        assert!(!net("10.0.0.1")(ip("10.0.0.2")));
        assert!(net("0.0.0.0/0")(ip("203.0.113.9")));
        assert!(net("10.0.0.0/8")(ip("::ffff:10.1.1.1")), "v4-mapped");
        assert!(!net("10.0.0.0/8")(ip("::1")));
        assert!(net("2001:db8::/32")(ip("2001:db8:1::7")));
        assert!(!net("2001:db8::/32")(ip("2001:db9::7")));
        assert!(net("::/0")(ip("fe80::1")));
        assert!(net("fe80::1/128")(ip("fe80::1")));
        assert_eq!(
            parse_network("::/129"),
            Err("`::/129` is not an ip address or cidr".into())
        );
        assert!(parse_network("10.0.0.0/x").is_err());
        assert!(parse_network("10.0.0.0:80").is_err());
    }

    #[test]
    fn sources_strip_ports_and_keep_host_names() {
        let ip = |s: &str| Source::Ip(s.parse().expect("ip"));
        assert_eq!(Source::parse("10.0.0.1:443"), ip("10.0.0.1"));
        assert_eq!(Source::parse("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(Source::parse("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(Source::parse("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(Source::parse("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(
            Source::parse("gw.internal:8080"),
            Source::Host("gw.internal")
        );
        assert_eq!(Source::parse("gw.internal"), Source::Host("gw.internal"));
        assert_eq!(Source::parse("fe80::1%eth0"), Source::Host("fe80::1%eth0"));
    }
}
