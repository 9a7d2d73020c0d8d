//! A deterministic, seeded corpus of personal data and secrets for exercising redaction.
//!
//! The redaction tests, the end-to-end suite and the benchmarks all need the same material:
//!
//! - [`pii_values`]: valid instances of every entity the built-in detectors look for
//!   ([`ENTITIES`]): Luhn-valid card numbers with real network prefixes, mod-97-valid IBANs,
//!   well-formed JWTs, cloud keys and tokens in their real shapes, passwords in assignments,
//!   credentials in URLs and headers. Each comes with the text it would appear as in telemetry.
//! - [`near_misses`]: look-alikes that must survive redaction untouched (UUIDs, trace ids,
//!   epoch timestamps, versions, digests, order numbers that fail Luhn, …).
//! - [`log_line`] and [`clean_log_lines`]: realistic log lines with and without a planted value.
//!
//! Everything is generated from a seed by a small private SplitMix64 generator, so a failing
//! case is reproduced from its seed and the corpus is the same on every run and platform. The
//! names, domains and numbers are drawn at random and belong to no one.
//!
//! Compiled only for tests and with the `testkit` feature.

use std::net::Ipv6Addr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

/// One sensitive value planted in the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    /// Entity name, one of ENTITIES.
    pub entity: &'static str,
    /// The sensitive part that must not survive redaction (e.g. for `password=hunter2` it is `hunter2`).
    pub value: String,
    /// The text as it would appear in telemetry, containing `value` (e.g. `password=hunter2`,
    /// `Authorization: Bearer <token>`, or just the value itself for an email).
    pub text: String,
}

/// Every entity the corpus plants, named as the built-in detectors are.
pub const ENTITIES: &[&str] = &[
    "email",
    "credit_card",
    "us_ssn",
    "phone",
    "ipv4",
    "ipv6",
    "iban",
    "jwt",
    "auth_credential",
    "aws_access_key_id",
    "aws_secret_access_key",
    "gcp_api_key",
    "github_token",
    "slack_token",
    "stripe_key",
    "private_key",
    "url_credentials",
    "url_secret_param",
    "password_assignment",
    "secret_assignment",
];

/// Makes one planted value and its text: `(value, text)`. `variant` picks the format, so
/// consecutive variants of an entity cycle through all of its formats.
type Generator = fn(&mut SplitMix64, usize) -> (String, String);

/// The generator of every entity, in the order of [`ENTITIES`].
const GENERATORS: &[(&str, Generator)] = &[
    ("email", email),
    ("credit_card", credit_card),
    ("us_ssn", us_ssn),
    ("phone", phone),
    ("ipv4", ipv4),
    ("ipv6", ipv6),
    ("iban", iban),
    ("jwt", jwt),
    ("auth_credential", auth_credential),
    ("aws_access_key_id", aws_access_key_id),
    ("aws_secret_access_key", aws_secret_access_key),
    ("gcp_api_key", gcp_api_key),
    ("github_token", github_token),
    ("slack_token", slack_token),
    ("stripe_key", stripe_key),
    ("private_key", private_key),
    ("url_credentials", url_credentials),
    ("url_secret_param", url_secret_param),
    ("password_assignment", password_assignment),
    ("secret_assignment", secret_assignment),
];

/// `per_entity` planted values of every entity in ENTITIES, in a deterministic order for a seed.
///
/// The values come in rounds: one of every entity (in the order of [`ENTITIES`]), then the next
/// round. Within an entity, consecutive values cycle through its formats, so a few rounds cover
/// every format.
pub fn pii_values(seed: u64, per_entity: usize) -> Vec<Planted> {
    struct Stream {
        entity: &'static str,
        generate: Generator,
        rng: SplitMix64,
        first_variant: usize,
    }

    let mut root = SplitMix64::new(seed);
    // Each entity draws from its own stream, so changing one generator leaves the others alone.
    let mut streams: Vec<Stream> = GENERATORS
        .iter()
        .map(|&(entity, generate)| {
            let mut rng = SplitMix64::new(root.next_u64());
            let first_variant = rng.index(1 << 16);
            Stream {
                entity,
                generate,
                rng,
                first_variant,
            }
        })
        .collect();

    let mut planted = Vec::with_capacity(per_entity * streams.len());
    for round in 0..per_entity {
        for stream in &mut streams {
            let (value, text) = (stream.generate)(&mut stream.rng, stream.first_variant + round);
            planted.push(Planted {
                entity: stream.entity,
                value,
                text,
            });
        }
    }
    planted
}

/// How many kinds of near miss [`near_miss`] makes.
const NEAR_MISS_KINDS: usize = 21;

/// `count` strings that look a bit like PII but are not, and must survive redaction untouched.
///
/// The kinds (UUIDs, trace and span ids, timestamps, epoch seconds/millis/nanos, versions,
/// Luhn-failing order numbers, numeric ids, durations, paths, digests, short SHAs, pod names,
/// times, dates, status lines, host:port, amounts, percentages) take turns, so every kind is
/// equally represented.
pub fn near_misses(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let first_kind = rng.index(NEAR_MISS_KINDS);
    (0..count)
        .map(|i| near_miss(&mut rng, (first_kind + i) % NEAR_MISS_KINDS))
        .collect()
}

/// A realistic log line (like an app or access log message) that embeds `planted.text`.
///
/// The template is chosen by the seed together with the planted text, so one seed spreads a
/// whole set of planted values over every template. The planted text always follows a space
/// and is followed by a space, a newline or the end of the line.
pub fn log_line(seed: u64, planted: &Planted) -> String {
    let mut rng = SplitMix64::new(seed ^ fnv1a(planted.text.as_bytes()));
    let text = &planted.text;
    let at = Moment::random(&mut rng);
    let ts = at.rfc3339();
    let trace = hex_id(&mut rng, 32);
    let span = hex_id(&mut rng, 16);
    let took = duration(&mut rng);
    let request = uuid(&mut rng);
    let user = rng.range(10_000, 99_999_999);
    let order = rng.range(100_000, 999_999_999);
    let pid = rng.range(100, 65_535);
    let service = rng.pick(SERVICES);

    match rng.below(11) {
        0 => format!(
            "{ts} INFO auth-service[{pid}]: login attempt user_id={user} trace_id={trace} payload {text} took {took}"
        ),
        1 => {
            let amount = amount(&mut rng);
            format!(
                "{ts} ERROR payment-service: payment processing failed order_id={order} amount={amount} EUR detail: {text} retry_in={took} trace_id={trace}"
            )
        }
        2 => {
            let clf = at.clf();
            let bytes = rng.range(120, 48_000);
            let seconds = rng.range(1, 2999);
            let gateway = rng.range(1, 9);
            format!(
                "gateway-{gateway} - - [{clf}] \"POST /api/v1/orders/{order} HTTP/1.1\" 502 {bytes} rt={}.{:03} upstream_error: {text} trace_id={trace}",
                seconds / 1000,
                seconds % 1000
            )
        }
        3 => {
            let line = rng.range(3, 400);
            format!(
                "{ts} DEBUG config-loader[{pid}]: effective settings from /etc/{service}/config.yaml at line {line}: {text} reload_in={took}"
            )
        }
        4 => {
            let line = rng.range(10, 900);
            let column = rng.range(2, 60);
            format!(
                "{ts} ERROR {service}: unhandled exception in job {request}: ValueError: cannot parse {text}\n    at parseInput (src/jobs/worker.ts:{line}:{column})\n    at processTicksAndRejections (node:internal/process/task_queues:95:5)"
            )
        }
        5 => format!(
            "{ts} INFO profile-service: user {user} updated profile field=contact new_value {text} request_id={request} duration={took}"
        ),
        6 => {
            let attempt = rng.range(1, 8);
            format!(
                "ts={ts} level=warn service=webhook-dispatcher msg=\"delivery failed\" attempt={attempt} body: {text} latency={took} trace_id={trace}"
            )
        }
        7 => format!(
            "{ts} WARN api-gateway: rejected request_id={request} path=/api/v2/accounts/{user} reason: {text} after {took}"
        ),
        8 => format!(
            "{ts} INFO notification-service: queued receipt for order {order} recipient {text} queue_lag={took} span_id={span}"
        ),
        9 => {
            let method = rng.pick(METHODS);
            let status = rng.pick(STATUS_CODES);
            format!(
                "{ts} DEBUG http-client: outbound {method} {text} status={status} elapsed={took} span_id={span}"
            )
        }
        _ => {
            let syslog = at.syslog();
            let host = rng.pick(HOSTS);
            format!(
                "{syslog} {host} sshd[{pid}]: audit event=session.open uid={user} data {text} duration={took}"
            )
        }
    }
}

/// `count` realistic log lines with no PII or secrets at all (but containing ids, timestamps,
/// durations, paths, versions, status codes, hashes – the things real logs are made of).
pub fn clean_log_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| clean_log_line(&mut rng)).collect()
}

fn clean_log_line(rng: &mut SplitMix64) -> String {
    let at = Moment::random(rng);
    let ts = at.rfc3339();
    let trace = hex_id(rng, 32);
    let span = hex_id(rng, 16);
    let took = duration(rng);
    let service = rng.pick(SERVICES);
    let count = rng.range(1, 250_000);

    match rng.below(12) {
        0 => {
            let method = rng.pick(METHODS);
            let path = http_path(rng);
            let status = rng.pick(STATUS_CODES);
            format!(
                "{ts} INFO {service}: request completed method={method} path={path} status={status} duration={took} trace_id={trace} span_id={span}"
            )
        }
        1 => {
            let host = rng.pick(HOSTS);
            let clf = at.clf();
            let method = rng.pick(METHODS);
            let path = http_path(rng);
            let status = rng.pick(STATUS_CODES);
            let bytes = rng.range(0, 250_000);
            let agent = rng.pick(USER_AGENTS);
            let millis = rng.range(1, 4999);
            format!(
                "{host} - - [{clf}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\" rt={}.{:03}",
                millis / 1000,
                millis % 1000
            )
        }
        2 => {
            let version = version(rng);
            let commit = hex_id(rng, 12);
            let sha = hex_id(rng, 64);
            let ready = rng.range(1, 12);
            format!(
                "{ts} INFO deployer: rolled out {service} version {version} commit={commit} checksum=sha256:{sha} pods_ready={ready}/{ready}"
            )
        }
        3 => {
            let ratio = percentage(rng);
            let evicted = rng.range(0, 5000);
            format!(
                "{ts} DEBUG {service}: cache stats hit_ratio={ratio} entries={count} evicted={evicted} elapsed={took}"
            )
        }
        4 => {
            let shard = rng.range(0, 63);
            format!(
                "{ts} WARN {service}: slow query on table orders took {took} rows={count} shard={shard} trace_id={trace}"
            )
        }
        5 => {
            let job = uuid(rng);
            let attempts = rng.range(1, 5);
            let next = Moment::random(rng).rfc3339();
            format!(
                "{ts} INFO scheduler: job {job} finished state=succeeded attempts={attempts} runtime={took} next_run={next}"
            )
        }
        6 => {
            let upstream = host_port(rng);
            let status_line = rng.pick(STATUS_LINES);
            format!(
                "{ts} ERROR {service}: upstream {upstream} answered {status_line} after {took} trace_id={trace}"
            )
        }
        7 => {
            let pod = pod_name(rng);
            let namespace = rng.pick(NAMESPACES);
            let restarts = rng.range(1, 40);
            format!(
                "{ts} INFO kubelet: pod {pod} in namespace {namespace} restarted restart_count={restarts} exit_code=137 reason=OOMKilled"
            )
        }
        8 => {
            let bytes = rng.range(10_000, 90_000_000);
            let ratio = rng.range(105, 990);
            let nanos = epoch_nanos(rng);
            format!(
                "ts={ts} level=info msg=\"batch flushed\" records={count} bytes={bytes} compression_ratio={}.{:02} elapsed={took} observed_unix_nano={nanos}",
                ratio / 100,
                ratio % 100
            )
        }
        9 => {
            let line = rng.range(10, 900);
            let column = rng.range(2, 60);
            let len = rng.range(0, 64);
            let index = len + rng.range(0, 8);
            format!(
                "{ts} ERROR {service}: panicked at src/pipeline/flush.rs:{line}:{column}: index out of bounds: the len is {len} but the index is {index}\n   0: vigil_core::batch::flush\n   1: tokio::runtime::task::harness::poll"
            )
        }
        10 => {
            let invoice = rng.range(100_000, 999_999);
            let total = amount(rng);
            let items = rng.range(1, 30);
            let order = luhn_failing_order_number(rng);
            let millis = epoch_millis(rng);
            format!(
                "{ts} INFO billing-service: invoice INV-{invoice} issued total={total} currency=EUR items={items} order_ref={order} epoch_ms={millis}"
            )
        }
        _ => {
            let version = version(rng);
            let pid = rng.range(100, 65_535);
            format!(
                "{} {} INFO [main] StartupListener - service {service} {version} started in {took} (pid {pid})",
                at.date(),
                at.time()
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea and Flood): a tiny, well-mixed generator. Plenty for test data; not
/// for anything that must be unpredictable.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift (Lemire): the bias, at most n / 2^64, does not matter here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// Uniform in `low..=high`, as a length.
    fn length(&mut self, low: usize, high: usize) -> usize {
        self.range(low as u64, high as u64) as usize
    }

    /// Uniform in `0..len`.
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        let i = self.index(items.len());
        items.get(i).copied().unwrap_or_default()
    }

    fn char_from(&mut self, alphabet: &[u8]) -> char {
        let i = self.index(alphabet.len());
        alphabet.get(i).map_or('0', |&b| char::from(b))
    }

    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| self.char_from(alphabet)).collect()
    }

    /// `len` decimal digits, the first not 0.
    fn number(&mut self, len: usize) -> String {
        if len == 0 {
            return String::new();
        }
        let first = self.range(1, 9);
        format!("{first}{}", self.string(DIGITS, len - 1))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

/// The `n`th item, wrapping around: how a `variant` picks a format.
fn nth<T: Copy + Default>(items: &[T], n: usize) -> T {
    items
        .get(n % items.len().max(1))
        .copied()
        .unwrap_or_default()
}

/// FNV-1a, to fold a text into a seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

// ---------------------------------------------------------------------------------------------
// Alphabets and word lists
// ---------------------------------------------------------------------------------------------

const DIGITS: &[u8] = b"0123456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";
/// What AWS access key ids are made of.
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
/// Bearer tokens.
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
/// Symbols a password in an assignment may use: none of the characters that end a value in a
/// log line (quotes, spaces, `,` `;` `&` `}` `[` `]` `<` `>`).
const PASSWORD_SYMBOLS: &[u8] = b"!@#$%^*_-+=.?~";
const PASSWORD_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#$%^*_-+=.?~";
/// A password in a URL's userinfo: only characters RFC 3986 allows there unescaped, and never
/// `@`, `/` or `:`.
const URL_PASSWORD_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$*_-";
/// A password inside HTTP Basic credentials (anything but `:` would do).
const BASIC_PASSWORD_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%*_-.";
/// The alphabet of Kubernetes' generated name suffixes (no vowels, no look-alike digits).
const K8S_SUFFIX: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// GitHub's token checksum alphabet.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dmitri", "emma", "farid", "grace", "hiro", "ines", "jonas", "kofi",
    "lena", "mateo", "nora", "oskar", "priya", "quentin", "rosa", "sven", "tomasz", "ulla",
    "victor", "wen", "yusuf", "zoe",
];
const LAST_NAMES: &[&str] = &[
    "smith", "garcia", "muller", "rossi", "kowalski", "tanaka", "okafor", "berg", "dubois",
    "novak", "silva", "nguyen", "haddad", "schmidt", "oconnor", "fischer", "moreau",
];
const PLUS_TAGS: &[&str] = &["billing", "newsletter", "github", "shop", "alerts", "2025"];
const COMPANIES: &[&str] = &[
    "northwind",
    "contoso",
    "globex",
    "initech",
    "acme-corp",
    "umbrella-health",
    "fabrikam",
    "tailspin",
    "example",
];
const SUBDOMAINS: &[&str] = &["mail", "eu", "corp", "staff", "us.mail", "team", "ops"];
const TLDS: &[&str] = &["com", "org", "io", "co.uk", "de", "net", "fr"];
const SERVICE_USERS: &[&str] = &[
    "svc-backup",
    "admin",
    "deploy",
    "grafana",
    "ci-runner",
    "etl",
];
const SERVICES: &[&str] = &[
    "checkout",
    "inventory",
    "billing",
    "search-api",
    "order-worker",
    "catalog",
    "shipping",
    "recommendations",
];
const HOSTS: &[&str] = &[
    "web-01",
    "web-02",
    "edge-eu-3",
    "api-7",
    "worker-12",
    "bastion-1",
];
const NAMESPACES: &[&str] = &[
    "default",
    "payments",
    "checkout",
    "observability",
    "platform",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE"];
const STATUS_CODES: &[u16] = &[
    200, 200, 200, 201, 204, 301, 304, 400, 404, 409, 429, 500, 502, 503,
];
const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.1 201 Created",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 301 Moved Permanently",
    "HTTP/1.1 404 Not Found",
    "HTTP/2 429 Too Many Requests",
    "HTTP/1.1 500 Internal Server Error",
    "HTTP/2 503 Service Unavailable",
];
const USER_AGENTS: &[&str] = &[
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
    "python-requests/2.31.0",
    "kube-probe/1.29",
];
const PORTS: &[u16] = &[80, 443, 5432, 6379, 8080, 8443, 9092, 4317];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/// `len` characters of `pool` with at least one from each of `required`, shuffled.
fn mixed(rng: &mut SplitMix64, len: usize, required: &[&[u8]], pool: &[u8]) -> String {
    let mut chars: Vec<char> = required.iter().map(|class| rng.char_from(class)).collect();
    while chars.len() < len {
        chars.push(rng.char_from(pool));
    }
    rng.shuffle(&mut chars);
    chars.into_iter().collect()
}

/// Like [`mixed`] but starting with a letter or digit, as generated passwords and tokens do.
fn mixed_alnum_first(rng: &mut SplitMix64, len: usize, required: &[&[u8]], pool: &[u8]) -> String {
    let first = rng.char_from(ALNUM);
    let rest = mixed(rng, len.saturating_sub(1), required, pool);
    format!("{first}{rest}")
}

/// Lower-case hex with at least one letter, so it never reads as a plain number.
/// Random lower-case hex, digits-only runs included, as real ids come.
fn hex_id(rng: &mut SplitMix64, len: usize) -> String {
    rng.string(HEX, len)
}

/// A version 4 UUID (groups may be all digits, as real ones sometimes are).
fn uuid(rng: &mut SplitMix64) -> String {
    let time_low = hex_id(rng, 8);
    let time_mid = hex_id(rng, 4);
    let time_high = rng.string(HEX, 3);
    let variant = rng.char_from(b"89ab");
    let clock_seq = rng.string(HEX, 3);
    let node = hex_id(rng, 12);
    format!("{time_low}-{time_mid}-4{time_high}-{variant}{clock_seq}-{node}")
}

/// `value` cut into groups of the given sizes (the rest, if any, in a last group).
fn group(value: &str, sizes: &[usize], separator: &str) -> String {
    let mut parts = Vec::new();
    let mut start = 0;
    for &size in sizes {
        if let Some(part) = value.get(start..start + size) {
            parts.push(part);
        }
        start += size;
    }
    if let Some(rest) = value.get(start..)
        && !rest.is_empty()
    {
        parts.push(rest);
    }
    parts.join(separator)
}

/// `value` in groups of four, as IBANs are printed.
fn group_by_four(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    chars
        .chunks(4)
        .map(|chunk| chunk.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => format!("{}{}", first.to_ascii_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn initial(word: &str) -> String {
    word.chars().next().map(String::from).unwrap_or_default()
}

/// A value that appears on its own: the text is the value.
fn bare(value: String) -> (String, String) {
    let text = value.clone();
    (value, text)
}

// ---------------------------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------------------------

/// The Luhn check digit to append to `payload` (digits 0–9).
fn luhn_check_digit(payload: &[u8]) -> u8 {
    // The check digit will be rightmost, so the payload's rightmost digit is doubled.
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i.is_multiple_of(2) {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn digit_values(digits: &str) -> Vec<u8> {
    digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// A Luhn-valid number of `len` digits starting with `prefix`.
fn luhn_number(rng: &mut SplitMix64, prefix: &str, len: usize) -> String {
    let fill = (len - 1).saturating_sub(prefix.len());
    let payload = format!("{prefix}{}", rng.string(DIGITS, fill));
    let check = luhn_check_digit(&digit_values(&payload));
    format!("{payload}{check}")
}

/// The remainder mod 97 of `s` read as one number, letters counting as 10 (A) to 35 (Z).
fn mod97(s: &str) -> u32 {
    s.chars().filter_map(|c| c.to_digit(36)).fold(0, |rem, n| {
        if n >= 10 {
            (rem * 100 + n) % 97
        } else {
            (rem * 10 + n) % 97
        }
    })
}

/// An IBAN from its country and BBAN, with ISO 13616 check digits: the BBAN, the country and
/// `00` read as a number `n` (letters A=10 … Z=35) give check digits `98 - n mod 97`.
fn with_iban_check(country: &str, bban: &str) -> String {
    let check = 98 - mod97(&format!("{bban}{country}00"));
    format!("{country}{check:02}{bban}")
}

/// CRC-32 (IEEE), bit by bit: only a few short strings are checksummed.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// `n` in base 62 (`0-9A-Za-z`), left-padded with `0` to six characters.
fn base62_six(mut n: u32) -> String {
    let mut chars = Vec::new();
    while n > 0 {
        chars.push(
            BASE62
                .get((n % 62) as usize)
                .map_or('0', |&b| char::from(b)),
        );
        n /= 62;
    }
    while chars.len() < 6 {
        chars.push('0');
    }
    chars.iter().rev().collect()
}

// ---------------------------------------------------------------------------------------------
// Planted values, one generator per entity
// ---------------------------------------------------------------------------------------------

fn email(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let local = match variant % 6 {
        0 => format!("{first}.{last}"),
        1 => format!("{first}.{last}+{}", rng.pick(PLUS_TAGS)),
        2 => format!("{}{last}{}", initial(first), rng.range(1, 99)),
        3 => format!("{first}_{last}{}", rng.range(1960, 2006)),
        4 => format!("{}.{}", capitalise(first), capitalise(last)),
        _ => format!("{first}.{}.{last}", initial(rng.pick(FIRST_NAMES))),
    };
    let company = rng.pick(COMPANIES);
    let tld = rng.pick(TLDS);
    let domain = if rng.chance(50) {
        format!("{}.{company}.{tld}", rng.pick(SUBDOMAINS))
    } else {
        format!("{company}.{tld}")
    };
    bare(format!("{local}@{domain}"))
}

fn credit_card(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    // Network prefixes and lengths, Visa the most common.
    let (prefix, len) = match rng.below(20) {
        0..=5 => ("4".to_owned(), 16),
        6 => ("4".to_owned(), 13),
        7 => ("4".to_owned(), 19),
        8..=10 => (format!("5{}", rng.range(1, 5)), 16),
        11 | 12 => (rng.range(2221, 2720).to_string(), 16),
        13..=15 => (rng.pick(&["34", "37"]).to_owned(), 15),
        16 => ("6011".to_owned(), 16),
        17 => ("65".to_owned(), 16),
        _ => (rng.range(3528, 3589).to_string(), 16),
    };
    let number = luhn_number(rng, &prefix, len);
    let sizes: &[usize] = match len {
        13 => &[4, 4, 5],
        15 => &[4, 6, 5],
        19 => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    };
    let value = match variant % 3 {
        0 => number,
        1 => group(&number, sizes, " "),
        _ => group(&number, sizes, "-"),
    };
    bare(value)
}

fn us_ssn(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    // Area 001–899 except 666, group 01–99, serial 0001–9999.
    let area = match rng.range(1, 898) {
        a if a >= 666 => a + 1,
        a => a,
    };
    let group = rng.range(1, 99);
    let serial = rng.range(1, 9999);
    let separator = if variant % 4 == 3 { ' ' } else { '-' };
    bare(format!(
        "{area:03}{separator}{group:02}{separator}{serial:04}"
    ))
}

/// A NANP area code or exchange: three digits, the first 2–9, the second at most
/// `second_max`, never N11.
fn nanp_triple(rng: &mut SplitMix64, second_max: u64) -> String {
    loop {
        let a = rng.range(2, 9);
        let b = rng.range(0, second_max);
        let c = rng.range(0, 9);
        if !(b == 1 && c == 1) {
            return format!("{a}{b}{c}");
        }
    }
}

fn phone(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let area = nanp_triple(rng, 8);
    let exchange = nanp_triple(rng, 9);
    let line = rng.string(DIGITS, 4);
    // UK mobile 07xxx xxxxxx and London 020 xxxx xxxx.
    let uk_mobile_head = format!("7{}{}", rng.range(4, 9), rng.string(DIGITS, 2));
    let uk_mobile_tail = rng.string(DIGITS, 6);
    let london_head = format!("{}{}", rng.pick(&["3", "7", "8"]), rng.string(DIGITS, 3));
    let london_tail = rng.string(DIGITS, 4);
    let value = match variant % 11 {
        0 => format!("+1{area}{exchange}{line}"),
        1 => format!("+1 {area} {exchange} {line}"),
        2 => format!("({area}) {exchange}-{line}"),
        3 => format!("{area}-{exchange}-{line}"),
        4 => format!("{area}.{exchange}.{line}"),
        5 => format!("+44{uk_mobile_head}{uk_mobile_tail}"),
        6 => format!("+44 20 {london_head} {london_tail}"),
        7 => {
            let network = rng.pick(&[
                "151", "152", "157", "160", "162", "170", "171", "172", "176", "178", "179",
            ]);
            let subscriber_len = rng.length(7, 8);
            format!("+49{network}{}", rng.string(DIGITS, subscriber_len))
        }
        8 => format!("020 {london_head} {london_tail}"),
        9 => format!("0{uk_mobile_head} {uk_mobile_tail}"),
        _ => {
            let pairs: Vec<String> = (0..4).map(|_| rng.string(DIGITS, 2)).collect();
            format!("+33 {} {}", rng.range(6, 7), pairs.join(" "))
        }
    };
    bare(value)
}

/// A first octet outside the private, loopback, link-local and shared ranges.
fn public_first_octet(rng: &mut SplitMix64) -> u64 {
    loop {
        let octet = rng.range(1, 223);
        if !matches!(octet, 10 | 100 | 127 | 169 | 172 | 192) {
            return octet;
        }
    }
}

fn ipv4(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let (a, b) = match variant % 4 {
        0 => (10, rng.range(0, 255)),
        1 if rng.chance(50) => (172, rng.range(16, 31)),
        1 => (192, 168),
        _ => (public_first_octet(rng), rng.range(0, 255)),
    };
    let value = format!("{a}.{b}.{}.{}", rng.range(0, 255), rng.range(1, 254));
    if variant % 4 == 3 {
        let text = format!("{value}:{}", rng.pick(PORTS));
        (value, text)
    } else {
        bare(value)
    }
}

/// One group of an IPv6 address, sometimes short (as `db8` or `370`).
fn hextet(rng: &mut SplitMix64) -> u16 {
    let bound = if rng.chance(30) { 0x1000 } else { 0x1_0000 };
    rng.below(bound) as u16
}

/// All eight groups, four hex digits each.
fn ipv6_full(address: Ipv6Addr) -> String {
    address
        .segments()
        .iter()
        .map(|group| format!("{group:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A global unicast address with a run of zero groups, printed compressed.
fn ipv6_compressed(rng: &mut SplitMix64) -> Ipv6Addr {
    let [b, c, f, g, h]: [u16; 5] = std::array::from_fn(|_| hextet(rng));
    match rng.below(3) {
        0 => Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, f, g, h),
        1 => Ipv6Addr::new(0x2001, 0x0db8, c, 0, 0, f, g, h),
        _ => {
            let prefix = rng.range(0x2400, 0x2a0f) as u16;
            Ipv6Addr::new(prefix, b, c, 0, 0, 0, g, h)
        }
    }
}

fn ipv6(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    match variant % 5 {
        0 => {
            let prefix = rng.range(0x2001, 0x2a0f) as u16;
            let [b, c, d, e, f, g, h]: [u16; 7] = std::array::from_fn(|_| hextet(rng));
            bare(ipv6_full(Ipv6Addr::new(prefix, b, c, d, e, f, g, h)))
        }
        1 => bare(ipv6_compressed(rng).to_string()),
        2 => {
            // Link-local with an EUI-64 interface id: xxxx:xxff:fexx:xxxx.
            let [e, f, g, h]: [u16; 4] = std::array::from_fn(|_| hextet(rng));
            let address = Ipv6Addr::new(
                0xfe80,
                0,
                0,
                0,
                e,
                (f & 0xff00) | 0x00ff,
                0xfe00 | (g & 0x00ff),
                h,
            );
            bare(address.to_string())
        }
        3 => {
            let address = ipv6_compressed(rng);
            if rng.chance(50) {
                bare(address.to_string().to_uppercase())
            } else {
                bare(ipv6_full(address).to_uppercase())
            }
        }
        _ => {
            let value = ipv6_compressed(rng).to_string();
            let text = format!("[{value}]:{}", rng.pick(PORTS));
            (value, text)
        }
    }
}

/// French BBAN: bank, branch, account and the RIB key `97 - (89·bank + 15·branch + 3·account)
/// mod 97`.
fn french_bban(rng: &mut SplitMix64) -> String {
    let bank: u64 = rng.pick(&[30004, 30003, 30002, 10278, 20041, 17515]);
    let branch = rng.range(0, 99_999);
    let account = rng.range(0, 99_999_999_999);
    let key = 97 - (89 * bank + 15 * branch + 3 * account) % 97;
    format!("{bank:05}{branch:05}{account:011}{key:02}")
}

/// Dutch BBAN: a bank code and an account that passes the "elfproef" (digits weighted 10 down
/// to 1 sum to a multiple of 11).
fn dutch_bban(rng: &mut SplitMix64) -> String {
    let bank = rng.pick(&[
        "ABNA", "INGB", "RABO", "TRIO", "SNSB", "KNAB", "ASNB", "BUNQ",
    ]);
    loop {
        let digits: Vec<u64> = (0..9).map(|_| rng.range(0, 9)).collect();
        let sum: u64 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let last = (11 - sum % 11) % 11;
        if last < 10 {
            let account: String = digits.iter().map(u64::to_string).collect();
            return format!("{bank}{account}{last}");
        }
    }
}

/// One of the two control digits of a Spanish account number.
fn spanish_control_digit(digits: &str) -> u32 {
    const WEIGHTS: [u32; 10] = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6];
    let sum: u32 = digits
        .chars()
        .filter_map(|c| c.to_digit(10))
        .zip(WEIGHTS)
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => 0,
        10 => 1,
        d => d,
    }
}

/// Spanish BBAN: bank, branch, the two control digits, account.
fn spanish_bban(rng: &mut SplitMix64) -> String {
    let bank = rng.pick(&["2100", "0049", "0182", "0081", "2038", "0128"]);
    let branch = rng.string(DIGITS, 4);
    let account = rng.string(DIGITS, 10);
    let first = spanish_control_digit(&format!("00{bank}{branch}"));
    let second = spanish_control_digit(&account);
    format!("{bank}{branch}{first}{second}{account}")
}

fn iban(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let (country, bban) = match variant % 5 {
        0 => {
            let bank = rng.pick(&[
                "37040044", "50010517", "10010010", "20041133", "70150000", "12030000",
            ]);
            ("DE", format!("{bank}{}", rng.string(DIGITS, 10)))
        }
        1 => {
            let (bank, sort_prefix) = rng.pick(&[
                ("NWBK", "60"),
                ("BARC", "20"),
                ("LOYD", "30"),
                ("HBUK", "40"),
                ("MIDL", "40"),
                ("MONZ", "04"),
            ]);
            let sort_rest = rng.string(DIGITS, 4);
            let account = rng.string(DIGITS, 8);
            ("GB", format!("{bank}{sort_prefix}{sort_rest}{account}"))
        }
        2 => ("FR", french_bban(rng)),
        3 => ("NL", dutch_bban(rng)),
        _ => ("ES", spanish_bban(rng)),
    };
    let compact = with_iban_check(country, &bban);
    if (variant / 5) % 2 == 1 {
        bare(group_by_four(&compact))
    } else {
        bare(compact)
    }
}

fn jwt(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let alg = nth(&["HS256", "RS256", "ES256"], variant);
    let header = if alg == "HS256" {
        json!({ "alg": alg, "typ": "JWT" })
    } else {
        json!({ "alg": alg, "kid": hex_id(rng, 16), "typ": "JWT" })
    };
    let iat = rng.range(1_735_689_600, 1_798_675_200);
    let exp = iat + rng.pick(&[300u64, 900, 3600, 86_400]);
    let payload = match rng.below(3) {
        0 => {
            json!({ "sub": format!("user_{}", rng.range(1000, 9_999_999)), "iat": iat, "exp": exp })
        }
        1 => json!({
            "iss": format!("https://auth.{}.com", rng.pick(COMPANIES)),
            "sub": uuid(rng),
            "aud": rng.pick(SERVICES),
            "scope": "orders:read orders:write",
            "iat": iat,
            "exp": exp,
        }),
        _ => json!({
            "sub": rng.number(9),
            "tenant": format!("t-{}", rng.range(100, 9999)),
            "roles": [rng.pick(&["viewer", "editor", "admin"]), "billing"],
            "jti": uuid(rng),
            "nbf": iat,
            "iat": iat,
            "exp": exp,
        }),
    };
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    // 32 random bytes: 43 base64url characters, the size of an HS256 signature.
    let signature = URL_SAFE_NO_PAD.encode(rng.bytes(32));
    bare(format!("{header}.{payload}.{signature}"))
}

fn auth_credential(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    match variant % 4 {
        0 | 2 => {
            let len = rng.length(32, 48);
            let token = mixed_alnum_first(rng, len, &[LOWER, UPPER, DIGITS], TOKEN_CHARS);
            // HTTP/2 and many proxies log header names in lower case.
            let header = if variant.is_multiple_of(4) {
                "Authorization"
            } else {
                "authorization"
            };
            let text = format!("{header}: Bearer {token}");
            (token, text)
        }
        _ => {
            let user = rng.pick(SERVICE_USERS);
            let len = rng.length(10, 20);
            let password =
                mixed_alnum_first(rng, len, &[LOWER, UPPER, DIGITS], BASIC_PASSWORD_CHARS);
            let encoded = STANDARD.encode(format!("{user}:{password}"));
            let header = if variant % 4 == 1 {
                "Authorization"
            } else {
                "Proxy-Authorization"
            };
            let text = format!("{header}: Basic {encoded}");
            (encoded, text)
        }
    }
}

fn aws_access_key_id(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    // AKIA: a long-term key; ASIA: a temporary (STS) one.
    let prefix = rng.pick(&["AKIA", "ASIA"]);
    let value = format!("{prefix}{}", rng.string(BASE32, 16));
    let text = match variant % 4 {
        0 => value.clone(),
        1 => format!("aws_access_key_id={value}"),
        2 => format!("AWS_ACCESS_KEY_ID: {value}"),
        _ => format!("\"AccessKeyId\": \"{value}\""),
    };
    (value, text)
}

fn aws_secret_access_key(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let value = mixed(rng, 40, &[LOWER, UPPER, DIGITS], BASE64);
    let text = match variant % 3 {
        0 => format!("aws_secret_access_key={value}"),
        1 => format!("AWS_SECRET_ACCESS_KEY: {value}"),
        _ => format!("\"aws_secret_access_key\": \"{value}\""),
    };
    (value, text)
}

fn gcp_api_key(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    // Google API keys are `AIza` and 35 more characters, in practice starting `Sy`.
    let value = format!(
        "AIzaSy{}",
        mixed(rng, 33, &[LOWER, UPPER, DIGITS], URL_SAFE)
    );
    // No `api_key=` here: that text would be a `secret_assignment` first.
    let text = match variant % 3 {
        0 => value.clone(),
        1 => format!("GOOGLE_MAPS_KEY={value}"),
        _ => format!("x-goog-api-key: {value}"),
    };
    (value, text)
}

fn github_token(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let value = match variant % 4 {
        3 => {
            // Fine-grained personal access token: 22 characters, `_`, 59 characters.
            let id = mixed(rng, 22, &[UPPER, DIGITS], ALNUM);
            let secret = mixed(rng, 59, &[LOWER, UPPER, DIGITS], ALNUM);
            format!("github_pat_{id}_{secret}")
        }
        n => {
            // Classic tokens: 30 random characters and the base-62 CRC-32 of them.
            let prefix = nth(&["ghp_", "gho_", "ghs_"], n);
            let random = mixed(rng, 30, &[LOWER, UPPER, DIGITS], ALNUM);
            let checksum = base62_six(crc32(random.as_bytes()));
            format!("{prefix}{random}{checksum}")
        }
    };
    if rng.chance(30) {
        let text = format!("Authorization: token {value}");
        (value, text)
    } else {
        bare(value)
    }
}

fn slack_token(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let value = if variant.is_multiple_of(2) {
        let team_len = rng.length(10, 13);
        let team = rng.number(team_len);
        let bot = rng.number(13);
        let secret = mixed(rng, 24, &[LOWER, UPPER, DIGITS], ALNUM);
        format!("xoxb-{team}-{bot}-{secret}")
    } else {
        let team = rng.number(12);
        let user = rng.number(12);
        let app = rng.number(13);
        let secret = hex_id(rng, 32);
        format!("xoxp-{team}-{user}-{app}-{secret}")
    };
    // Bare: `SLACK_BOT_TOKEN=` would make it a `secret_assignment` first.
    bare(value)
}

fn stripe_key(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let prefix = nth(&["sk_live_", "rk_live_", "sk_test_"], variant);
    let len = rng.length(24, 34);
    let value = format!(
        "{prefix}{}",
        mixed(rng, len, &[LOWER, UPPER, DIGITS], ALNUM)
    );
    if rng.chance(30) {
        let text = format!("curl https://api.stripe.com/v1/charges -u {value}:");
        (value, text)
    } else {
        bare(value)
    }
}

fn private_key(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    // The label and how its DER (or OpenSSH) encoding starts.
    let (label, start) = nth(
        &[
            ("RSA PRIVATE KEY", "MIIEpAIBAAKCAQEA"),
            ("PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
            ("EC PRIVATE KEY", "MHcCAQEEI"),
            (
                "OPENSSH PRIVATE KEY",
                "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
            ),
        ],
        variant,
    );
    let body_lines = rng.length(3, 6);
    let mut lines = vec![format!("-----BEGIN {label}-----")];
    for i in 0..body_lines {
        let line = if i == 0 {
            format!(
                "{start}{}",
                rng.string(BASE64, 64usize.saturating_sub(start.len()))
            )
        } else {
            rng.string(BASE64, 64)
        };
        lines.push(line);
    }
    lines.push(format!("-----END {label}-----"));
    bare(lines.join("\n"))
}

fn url_credentials(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let len = rng.length(8, 20);
    let password = mixed_alnum_first(rng, len, &[LOWER, UPPER, DIGITS], URL_PASSWORD_CHARS);
    let text = match variant % 6 {
        0 => format!("postgres://app_user:{password}@db.internal:5432/orders"),
        1 => format!("https://deploy:{password}@git.example.com/platform/infra.git"),
        2 => format!("amqp://guest:{password}@mq:5672"),
        3 => format!("mysql://reporting:{password}@mysql-primary.internal:3306/analytics?tls=true"),
        4 => format!("redis://default:{password}@cache.internal:6379/0"),
        _ => format!(
            "mongodb+srv://svc_reporting:{password}@cluster0.{}.mongodb.net/analytics",
            rng.string(LOWER_ALNUM, 5)
        ),
    };
    (password, text)
}

fn url_secret_param(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let len = rng.length(16, 40);
    let value = mixed(rng, len, &[LOWER, UPPER, DIGITS], URL_SAFE);
    let text = match variant % 5 {
        0 => format!("https://api.example.com/v1/export?format=csv&token={value}"),
        1 => format!(
            "https://hooks.{}.io/ingest/events?access_token={value}",
            rng.pick(COMPANIES)
        ),
        2 => format!("https://maps.example.net/api/geocode?api_key={value}&region=eu"),
        3 => {
            format!("https://legacy.example.org/cgi-bin/login.cgi?user=svc-backup&password={value}")
        }
        _ => format!(
            "https://cdn.example.com/reports/q{}-summary.pdf?expires={}&sig={value}",
            rng.range(1, 4),
            epoch_seconds(rng)
        ),
    };
    (value, text)
}

fn password_assignment(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let len = rng.length(8, 20);
    let value = mixed_alnum_first(
        rng,
        len,
        &[LOWER, UPPER, DIGITS, PASSWORD_SYMBOLS],
        PASSWORD_CHARS,
    );
    let text = match variant % 5 {
        0 => format!("password={value}"),
        1 => format!("password: {value}"),
        2 => format!("\"password\":\"{value}\""),
        3 => format!("db_password={value}"),
        _ => format!("PASSWORD={value}"),
    };
    (value, text)
}

fn secret_assignment(rng: &mut SplitMix64, variant: usize) -> (String, String) {
    let len = rng.length(20, 40);
    let value = mixed(rng, len, &[LOWER, UPPER, DIGITS], ALNUM);
    let text = match variant % 5 {
        0 => format!("api_key={value}"),
        1 => format!("client_secret: {value}"),
        2 => format!("secret_key=\"{value}\""),
        3 => format!("auth_token={value}"),
        _ => format!("\"api_key\": \"{value}\""),
    };
    (value, text)
}

// ---------------------------------------------------------------------------------------------
// Near misses and log noise
// ---------------------------------------------------------------------------------------------

/// A moment in 2025–2026, for timestamps in several notations.
struct Moment {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    /// Fractional seconds: 3, 6 or 9 digits.
    fraction: String,
}

impl Moment {
    fn random(rng: &mut SplitMix64) -> Self {
        let fraction_len = rng.pick(&[3usize, 3, 6, 9]);
        Self {
            year: rng.range(2025, 2026),
            month: rng.range(1, 12),
            day: rng.range(1, 28),
            hour: rng.range(0, 23),
            minute: rng.range(0, 59),
            second: rng.range(0, 59),
            fraction: rng.string(DIGITS, fraction_len),
        }
    }

    /// `2026-11-22T12:30:45.123Z`
    fn rfc3339(&self) -> String {
        format!("{}T{}.{}Z", self.date(), self.time(), self.fraction)
    }

    /// `2026-11-22`
    fn date(&self) -> String {
        format!("{}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `12:30:45`
    fn time(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }

    fn month_name(&self) -> &'static str {
        nth(MONTHS, self.month.saturating_sub(1) as usize)
    }

    /// Common Log Format: `22/Nov/2026:12:30:45 +0000`
    fn clf(&self) -> String {
        format!(
            "{:02}/{}/{}:{} +0000",
            self.day,
            self.month_name(),
            self.year,
            self.time()
        )
    }

    /// Syslog: `Nov 22 12:30:45`
    fn syslog(&self) -> String {
        format!("{} {:>2} {}", self.month_name(), self.day, self.time())
    }
}

fn epoch_seconds(rng: &mut SplitMix64) -> u64 {
    rng.range(1_600_000_000, 1_799_999_999)
}

/// 13 digits starting with 17.
fn epoch_millis(rng: &mut SplitMix64) -> String {
    format!("17{}", rng.string(DIGITS, 11))
}

/// 19 digits starting with 17.
fn epoch_nanos(rng: &mut SplitMix64) -> String {
    format!("17{}", rng.string(DIGITS, 17))
}

fn duration(rng: &mut SplitMix64) -> String {
    match rng.below(5) {
        0 => format!("{}ms", rng.range(1, 999)),
        1 => format!("{}.{}s", rng.range(1, 59), rng.range(0, 9)),
        2 => format!("{}us", rng.range(5, 999)),
        3 => format!("{}m{}s", rng.range(1, 30), rng.range(0, 59)),
        _ => format!("{}.{:03}ms", rng.range(0, 99), rng.range(0, 999)),
    }
}

fn version(rng: &mut SplitMix64) -> String {
    let major = rng.range(0, 4);
    let minor = rng.range(0, 30);
    let patch = rng.range(0, 20);
    match rng.below(5) {
        0 => format!("{major}.{minor}.{patch}"),
        1 => format!("v{major}.{minor}.{patch}-rc.{}", rng.range(1, 5)),
        2 => format!("go1.{}.{patch}", rng.range(18, 24)),
        3 => format!("v{major}.{minor}.{patch}"),
        _ => format!("{major}.{minor}.{patch}-beta.{}", rng.range(1, 9)),
    }
}

/// 16 digits starting with 4, like a Visa number, but failing the Luhn check.
fn luhn_failing_order_number(rng: &mut SplitMix64) -> String {
    let payload = format!("4{}", rng.string(DIGITS, 14));
    let check = luhn_check_digit(&digit_values(&payload));
    let wrong = (u64::from(check) + rng.range(1, 9)) % 10;
    format!("{payload}{wrong}")
}

fn http_path(rng: &mut SplitMix64) -> String {
    let id_len = rng.length(4, 9);
    let id = rng.number(id_len);
    match rng.below(6) {
        0 => format!("/api/v1/orders/{id}"),
        1 => format!("/api/v2/users/{id}/preferences"),
        2 => format!("/v1/invoices/{id}/lines"),
        3 => format!("/internal/jobs/{id}/retry"),
        4 => format!("/api/v1/search?q=running+shoes&page={}", rng.range(1, 40)),
        _ => format!("/static/js/app.{}.js", hex_id(rng, 8)),
    }
}

/// A Deployment's pod: `checkout-7d9f8b6c4-x2lqp`.
fn pod_name(rng: &mut SplitMix64) -> String {
    let app = rng.pick(SERVICES);
    let hash_len = rng.length(9, 10);
    let hash = rng.string(K8S_SUFFIX, hash_len);
    let suffix = rng.string(K8S_SUFFIX, 5);
    format!("{app}-{hash}-{suffix}")
}

fn host_port(rng: &mut SplitMix64) -> String {
    let (host, port) = rng.pick(&[
        ("db.internal", 5432),
        ("redis-master.cache.svc.cluster.local", 6379),
        ("kafka-2.kafka-headless", 9092),
        ("api.example.com", 443),
        ("localhost", 8080),
        ("otel-collector.observability", 4317),
    ]);
    format!("{host}:{port}")
}

fn amount(rng: &mut SplitMix64) -> String {
    format!("{}.{:02}", rng.range(1, 99_999), rng.range(0, 99))
}

fn percentage(rng: &mut SplitMix64) -> String {
    match rng.below(3) {
        0 => format!("{}%", rng.range(0, 100)),
        1 => format!("{}.{}%", rng.range(0, 99), rng.range(0, 9)),
        _ => format!("99.{:02}%", rng.range(0, 99)),
    }
}

fn near_miss(rng: &mut SplitMix64, kind: usize) -> String {
    match kind {
        0 => uuid(rng),
        1 => hex_id(rng, 32),
        2 => hex_id(rng, 16),
        3 => Moment::random(rng).rfc3339(),
        4 => epoch_seconds(rng).to_string(),
        5 => epoch_millis(rng),
        6 => epoch_nanos(rng),
        7 => version(rng),
        8 => luhn_failing_order_number(rng),
        9 => {
            let len = rng.length(6, 12);
            rng.number(len)
        }
        10 => duration(rng),
        11 => http_path(rng),
        12 => hex_id(rng, 64),
        13 => {
            let len = rng.length(7, 12);
            hex_id(rng, len)
        }
        14 => pod_name(rng),
        15 => Moment::random(rng).time(),
        16 => Moment::random(rng).date(),
        17 => rng.pick(STATUS_LINES).to_owned(),
        18 => host_port(rng),
        19 => amount(rng),
        _ => percentage(rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The redactor's own checksum: the corpus must produce what the validator accepts.
    fn luhn_valid(digits: &[u8]) -> bool {
        super::super::validate::luhn(digits)
    }

    /// ISO 13616: length per country, first four characters moved to the end, mod 97 is 1.
    fn iban_valid(value: &str) -> bool {
        let compact: String = value.chars().filter(|c| *c != ' ').collect();
        let expected_len = match &compact[..2] {
            "DE" | "GB" => 22,
            "FR" => 27,
            "NL" => 18,
            "ES" => 24,
            _ => return false,
        };
        let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
        compact.len() == expected_len
            && compact
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && mod97(&rearranged) == 1
    }

    fn of<'a>(planted: &'a [Planted], entity: &str) -> Vec<&'a Planted> {
        planted.iter().filter(|p| p.entity == entity).collect()
    }

    #[test]
    fn generators_match_entities() {
        let names: Vec<&str> = GENERATORS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ENTITIES);
    }

    #[test]
    fn same_seed_same_corpus() {
        assert_eq!(pii_values(42, 5), pii_values(42, 5));
        assert_eq!(near_misses(42, 100), near_misses(42, 100));
        assert_eq!(clean_log_lines(42, 100), clean_log_lines(42, 100));
        for planted in pii_values(42, 2) {
            assert_eq!(log_line(7, &planted), log_line(7, &planted));
        }
        assert_ne!(pii_values(1, 5), pii_values(2, 5));
        assert_ne!(near_misses(1, 50), near_misses(2, 50));
        assert_ne!(clean_log_lines(1, 50), clean_log_lines(2, 50));
    }

    #[test]
    fn every_entity_planted_per_entity_times() {
        let planted = pii_values(3, 4);
        assert_eq!(planted.len(), 4 * ENTITIES.len());
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &planted {
            *counts.entry(p.entity).or_default() += 1;
        }
        for entity in ENTITIES {
            assert_eq!(counts.get(entity), Some(&4), "{entity}");
        }
        assert!(pii_values(3, 0).is_empty());
    }

    #[test]
    fn text_contains_value() {
        for seed in 0..20 {
            for p in pii_values(seed, 12) {
                assert!(!p.value.is_empty(), "{p:?}");
                assert!(p.text.contains(&p.value), "{p:?}");
            }
        }
    }

    #[test]
    fn log_line_embeds_text_between_delimiters() {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let markers = [
            "auth-service",
            "payment-service",
            "gateway-",
            "config-loader",
            "ValueError",
            "profile-service",
            "webhook-dispatcher",
            "api-gateway",
            "notification-service",
            "http-client",
            "sshd[",
        ];
        for seed in 0..10 {
            for p in pii_values(seed, 6) {
                let line = log_line(seed, &p);
                let at = line.find(&p.text).unwrap_or_else(|| panic!("{line}"));
                let before = line[..at].chars().next_back();
                let after = line[at + p.text.len()..].chars().next();
                assert!(before.is_some_and(|c| !c.is_ascii_alphanumeric()), "{line}");
                assert!(after.is_none_or(|c| !c.is_ascii_alphanumeric()), "{line}");
                seen.extend(markers.iter().filter(|m| line.contains(**m)));
            }
        }
        assert_eq!(seen.len(), markers.len(), "templates used: {seen:?}");
    }

    #[test]
    fn credit_cards_pass_luhn_with_real_networks() {
        let planted = pii_values(11, 60);
        for p in of(&planted, "credit_card") {
            let digits = digit_values(&p.value);
            assert!(luhn_valid(&digits), "{}", p.value);
            let prefix = |n: usize| p.value.replace([' ', '-'], "")[..n].parse::<u32>().unwrap();
            let ok = match digits.len() {
                13 | 19 => digits[0] == 4,
                15 => matches!(prefix(2), 34 | 37),
                16 => {
                    digits[0] == 4
                        || (51..=55).contains(&prefix(2))
                        || (2221..=2720).contains(&prefix(4))
                        || prefix(4) == 6011
                        || prefix(2) == 65
                        || (3528..=3589).contains(&prefix(4))
                }
                _ => false,
            };
            assert!(ok, "{}", p.value);
            for group in p.value.split([' ', '-']).skip(1) {
                assert!((3..=6).contains(&group.len()), "{}", p.value);
            }
        }
        assert!(luhn_valid(&digit_values("4111 1111 1111 1111")));
        assert!(!luhn_valid(&digit_values("4111 1111 1111 1112")));
    }

    #[test]
    fn ibans_pass_mod_97() {
        let planted = pii_values(5, 40);
        let ibans = of(&planted, "iban");
        assert!(ibans.iter().any(|p| p.value.contains(' ')));
        assert!(ibans.iter().any(|p| !p.value.contains(' ')));
        for p in ibans {
            assert!(iban_valid(&p.value), "{}", p.value);
        }
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("DE89370400440532013001"));
    }

    #[test]
    fn near_miss_order_numbers_fail_luhn() {
        let misses = near_misses(9, NEAR_MISS_KINDS * 20);
        let orders: Vec<&String> = misses
            .iter()
            .filter(|m| {
                m.len() == 16 && m.starts_with('4') && m.bytes().all(|b| b.is_ascii_digit())
            })
            .collect();
        assert_eq!(orders.len(), 20);
        for order in orders {
            assert!(!luhn_valid(&digit_values(order)), "{order}");
        }
    }

    #[test]
    fn near_misses_and_clean_lines_hold_nothing_sensitive() {
        let misses = near_misses(4, 500);
        assert_eq!(misses.len(), 500);
        let lines = clean_log_lines(4, 500);
        assert_eq!(lines.len(), 500);
        for text in misses.iter().chain(&lines) {
            for marker in [
                "@", "Bearer", "Basic", "password", "secret", "token", "BEGIN", "AKIA",
            ] {
                assert!(!text.contains(marker), "{marker} in {text}");
            }
        }
    }

    #[test]
    fn values_have_their_formats() {
        let planted = pii_values(8, 30);
        for p in of(&planted, "us_ssn") {
            let parts: Vec<u32> = p
                .value
                .split([' ', '-'])
                .map(|s| s.parse().unwrap())
                .collect();
            assert!(
                parts[0] != 0 && parts[0] != 666 && parts[0] < 900,
                "{}",
                p.value
            );
            assert!(parts[1] != 0 && parts[2] != 0, "{}", p.value);
        }
        for p in of(&planted, "phone") {
            assert!(
                (10..=15).contains(&digit_values(&p.value).len()),
                "{}",
                p.value
            );
        }
        for p in of(&planted, "ipv4") {
            let octets: Vec<u32> = p.value.split('.').map(|o| o.parse().unwrap()).collect();
            assert_eq!(octets.len(), 4);
            assert!((1..=223).contains(&octets[0]) && octets.iter().all(|&o| o <= 255));
        }
        for p in of(&planted, "ipv6") {
            let address: Ipv6Addr = p.value.parse().unwrap();
            assert!(!address.is_unspecified(), "{}", p.value);
        }
        for p in of(&planted, "jwt") {
            let parts: Vec<&str> = p.value.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            assert!(header["alg"].is_string());
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
            assert_eq!(parts[2].len(), 43);
        }
        for p in of(&planted, "aws_access_key_id") {
            assert_eq!(p.value.len(), 20);
            assert!(p.value.starts_with("AKIA") || p.value.starts_with("ASIA"));
        }
        for p in of(&planted, "aws_secret_access_key") {
            assert_eq!(p.value.len(), 40);
        }
        for p in of(&planted, "gcp_api_key") {
            assert_eq!(p.value.len(), 39);
            assert!(p.value.starts_with("AIza"));
        }
        for p in of(&planted, "github_token") {
            if let Some(rest) = p.value.strip_prefix("github_pat_") {
                assert_eq!(rest.len(), 82);
            } else {
                let (random, checksum) = p.value[4..].split_at(30);
                assert_eq!(base62_six(crc32(random.as_bytes())), checksum);
            }
        }
        for p in of(&planted, "auth_credential") {
            if p.text.contains("Basic") {
                let decoded = String::from_utf8(STANDARD.decode(&p.value).unwrap()).unwrap();
                assert!(decoded.contains(':'), "{decoded}");
            } else {
                assert!((32..=48).contains(&p.value.len()));
            }
        }
        for p in of(&planted, "url_credentials") {
            assert!((8..=20).contains(&p.value.len()));
            assert!(!p.value.contains(['@', '/', ':']), "{}", p.value);
        }
        for p in of(&planted, "password_assignment") {
            assert!((8..=20).contains(&p.value.len()));
            assert!(
                !p.value
                    .contains(['"', '\'', ' ', ',', ';', '&', '}', '[', ']', '<', '>'])
            );
        }
        for p in of(&planted, "private_key") {
            assert!(p.value.starts_with("-----BEGIN ") && p.value.ends_with("PRIVATE KEY-----"));
            for line in p.value.lines().filter(|l| !l.starts_with("-----")) {
                assert_eq!(line.len(), 64);
            }
        }
    }

    #[test]
    fn crc32_matches_the_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(base62_six(61), "00000z");
    }
}
