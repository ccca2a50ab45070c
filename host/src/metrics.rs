//! Prometheus metrics, exposed as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route template such as `/v1/events/{id}` (or `unmatched`).
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a settled delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `succeeded`, `retrying`, `failed`, `filtered`.
    pub outcome: String,
}

/// Labels of rows deleted by retention.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabels {
    /// `deliveries`, `attempts` or `events`.
    pub table: String,
}

/// The database backend a node runs on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `sqlite` or `postgres`.
    pub backend: String,
}

/// A state of the database connection pool's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `max` (allowed), `open`, `idle` (open and unused) or `waiting` (requests waiting).
    pub state: String,
}

/// Labels of a subscription whose circuit breaker is tripped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// Subscription id.
    pub subscription: String,
    /// `open` (paused) or `half_open` (a probe may go).
    pub state: String,
}

/// The plugin memory budget in `/metrics` (kept up to date by `plugins::budget`).
#[derive(Clone, Default)]
pub struct BudgetGauges {
    /// The budget, in bytes.
    pub budget: Gauge,
    /// Bytes reserved by running instances.
    pub reserved: Gauge,
    /// The most bytes ever reserved at once.
    pub reserved_peak: Gauge,
    /// Instances waiting for room.
    pub waiting: Gauge,
    /// Reservations that had to wait.
    pub waits: Counter,
}

/// Labels of a plugin event's instance: where it came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// `fresh` (instantiated for the event) or `reused` (kept from an earlier event).
    pub source: String,
}

/// Labels of a discarded reused instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscardLabels {
    /// Why it was thrown away (`max_events`, `trap`, `settings`, ...).
    pub reason: String,
}

/// Plugin instance reuse in `/metrics` (kept up to date by `plugins::reuse`).
#[derive(Clone)]
pub struct ReuseMetrics {
    /// Plugin events by where their instance came from.
    pub instances: Family<InstanceLabels, Counter>,
    /// Instances of `reuse` plugins thrown away, by reason.
    pub discards: Family<DiscardLabels, Counter>,
    /// Instances kept idle now.
    pub idle: Gauge,
    // The two series of `instances`, counted on every event without a label lookup.
    fresh: Counter,
    reused: Counter,
}

impl Default for ReuseMetrics {
    fn default() -> ReuseMetrics {
        let instances = Family::<InstanceLabels, Counter>::default();
        let series = |source: &str| {
            let labels = InstanceLabels {
                source: source.to_string(),
            };
            instances.get_or_create(&labels).clone()
        };
        let (fresh, reused) = (series("fresh"), series("reused"));
        ReuseMetrics {
            instances,
            discards: Default::default(),
            idle: Default::default(),
            fresh,
            reused,
        }
    }
}

impl ReuseMetrics {
    /// Counts an event's instance: fresh, or reused.
    pub fn started(&self, reused: bool) {
        if reused { &self.reused } else { &self.fresh }.inc();
    }

    /// Counts an instance thrown away for `reason`.
    pub fn discarded(&self, reason: &str) {
        self.discards
            .get_or_create(&DiscardLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Events stored.
    pub events_ingested: Counter,
    /// Delivery attempts by outcome.
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// Pending deliveries (refreshed on scrape).
    pub queue_depth: Gauge,
    /// Seconds from an event's receipt to its successful delivery.
    pub ingest_to_delivery: Histogram,
    /// Plugin components compiled (not loaded from a stored artifact).
    pub plugin_compilations: Counter,
    /// Subscriptions whose circuit breaker is tripped: the next probe time (Unix seconds),
    /// labelled with the breaker's state (refreshed on scrape; closed breakers are not listed).
    pub circuit_next_probe: Family<CircuitLabels, Gauge>,
    /// HTTP connections open now.
    pub http_connections: Gauge,
    /// 1, labelled with the database backend (set at start).
    pub database_backend: Family<BackendLabels, Gauge>,
    /// The database connection pool (PostgreSQL; refreshed on scrape).
    pub database_pool: Family<PoolLabels, Gauge>,
    /// The plugin memory budget: its size, what is reserved, who waits.
    pub plugin_memory: BudgetGauges,
    /// Fresh and reused plugin instances, discards, idle instances.
    pub plugin_instances: ReuseMetrics,
    /// Rows deleted by retention (`--retention`), by table.
    pub retention_deleted: Family<RetentionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let events_ingested = Counter::default();
        registry.register("events_ingested", "Events stored", events_ingested.clone());
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by outcome",
            deliveries.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "delivery_queue_depth",
            "Pending deliveries",
            queue_depth.clone(),
        );
        let ingest_to_delivery = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
            600.0,
        ]);
        registry.register(
            "ingest_to_delivery_seconds",
            "Time from an event's receipt to its successful delivery",
            ingest_to_delivery.clone(),
        );
        let plugin_compilations = Counter::default();
        registry.register(
            "plugin_compilations",
            "Plugin components compiled",
            plugin_compilations.clone(),
        );
        let circuit_next_probe = Family::<CircuitLabels, Gauge>::default();
        registry.register(
            "subscription_circuit_next_probe_timestamp_seconds",
            "Subscriptions with a tripped circuit breaker: when the next probe may go",
            circuit_next_probe.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open",
            http_connections.clone(),
        );
        let database_backend = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "database_backend",
            "The database backend this node runs on (the label; the value is 1)",
            database_backend.clone(),
        );
        let database_pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_pool_connections",
            "The database connection pool: connections allowed, open and idle, requests waiting",
            database_pool.clone(),
        );
        let plugin_memory = BudgetGauges::default();
        registry.register(
            "plugin_memory_budget_bytes",
            "Memory all plugin instances may reserve together (--plugin-memory-budget)",
            plugin_memory.budget.clone(),
        );
        registry.register(
            "plugin_memory_reserved_bytes",
            "Memory reserved by running plugin instances (each reserves its memory limit)",
            plugin_memory.reserved.clone(),
        );
        registry.register(
            "plugin_memory_reserved_peak_bytes",
            "The most memory plugin instances ever had reserved at once",
            plugin_memory.reserved_peak.clone(),
        );
        registry.register(
            "plugin_memory_waiting",
            "Plugin instances waiting for room in the memory budget",
            plugin_memory.waiting.clone(),
        );
        registry.register(
            "plugin_memory_waits",
            "Plugin instances that had to wait for room in the memory budget",
            plugin_memory.waits.clone(),
        );
        let plugin_instances = ReuseMetrics::default();
        registry.register(
            "plugin_instances",
            "Plugin events by where their instance came from: fresh (instantiated) or reused",
            plugin_instances.instances.clone(),
        );
        registry.register(
            "plugin_instance_discards",
            "Instances of plugins in reuse mode thrown away, by reason",
            plugin_instances.discards.clone(),
        );
        registry.register(
            "plugin_instances_idle",
            "Plugin instances kept idle for further events (reuse mode)",
            plugin_instances.idle.clone(),
        );
        let retention_deleted = Family::<RetentionLabels, Counter>::default();
        registry.register(
            "retention_deleted_rows",
            "Rows deleted by retention (--retention), by table",
            retention_deleted.clone(),
        );
        Metrics {
            registry,
            retention_deleted,
            http_connections,
            database_backend,
            database_pool,
            plugin_memory,
            plugin_instances,
            circuit_next_probe,
            requests,
            events_ingested,
            deliveries,
            queue_depth,
            ingest_to_delivery,
            plugin_compilations,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Counts one delivery outcome.
    pub fn delivery(&self, outcome: &str) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
