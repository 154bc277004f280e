//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Labels are bounded on purpose: account ids come from the config (a request for an
//! unknown account is counted as `unknown`, so nobody can grow the series by probing URLs),
//! message types from the protocol's list, reasons from `WebhookError::reason`, rule names
//! from the rule files.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Cheap to clone: every collector is shared behind an `Arc`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    outbox: IntCounterVec,
    callbacks: IntCounterVec,
    latency: HistogramVec,
    rule_hits: IntCounterVec,
    duplicates: IntCounterVec,
    reloads: IntCounterVec,
    store_bytes: IntGauge,
    /// PostgreSQL's pool: size, available, waiting (unset on sled).
    pool: [IntGauge; 3],
    /// Today's account figures from the report counters (README "Reports").
    report_today: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // Registering fresh collectors with unique names in a fresh registry cannot fail.
        let registry = Registry::new_custom(Some("siyu".into()), None).expect("fresh registry");
        let callbacks = IntCounterVec::new(
            Opts::new("callbacks_total", "Callbacks by account, message type and outcome (replied, success, duplicate, rejected_<reason>)"),
            &["account", "type", "outcome"],
        )
        .expect("valid metric");
        // Buckets around WeChat's 5 s deadline's scale: most callbacks take well under 1 ms.
        let latency = HistogramVec::new(
            HistogramOpts::new("callback_seconds", "Time to answer a callback").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
            ]),
            &["account"],
        )
        .expect("valid metric");
        let rule_hits = IntCounterVec::new(
            Opts::new("rule_hits_total", "Rules fired, by rule name"),
            &["rule"],
        )
        .expect("valid metric");
        let duplicates = IntCounterVec::new(
            Opts::new(
                "duplicates_suppressed_total",
                "WeChat retries answered from the dedupe cache",
            ),
            &["account"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "rule_reloads_total",
                "Rule folder reloads that changed the table (ok) or were refused (failed)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let outbox = IntCounterVec::new(
            Opts::new(
                "outbox_items_total",
                "Outbox items handled by the worker, by account, effect and outcome (delivered, retried, dead)",
            ),
            &["account", "effect", "outcome"],
        )
        .expect("valid metric");
        let store_bytes =
            IntGauge::new("store_bytes", "Size of the sled store on disk").expect("valid metric");
        let report_today = IntGaugeVec::new(
            Opts::new(
                "report_today",
                "Today's figures per account (local day): new, returning, unfollows, active, messages, rule_hits, coupons, shop events, from the report counters",
            ),
            &["account", "metric"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(report_today.clone()))
            .expect("unique metric");
        for c in [&callbacks, &rule_hits, &duplicates, &reloads, &outbox] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(store_bytes.clone()))
            .expect("unique metric");
        let pool = [
            (
                "store_pool_size",
                "PostgreSQL connections open in this instance's pool",
            ),
            (
                "store_pool_available",
                "PostgreSQL connections idle in the pool",
            ),
            (
                "store_pool_waiting",
                "Store calls waiting for a free PostgreSQL connection",
            ),
        ]
        .map(|(name, help)| IntGauge::new(name, help).expect("valid metric"));
        Metrics {
            pool,
            registry,
            outbox,
            callbacks,
            latency,
            rule_hits,
            duplicates,
            reloads,
            store_bytes,
            report_today,
        }
    }

    /// Sets today's figures of `account` (every gauge of the account first reset, so a
    /// new day starts at zero).
    pub fn report_today(&self, account: &str, counts: &[crate::report::Count]) {
        for metric in crate::report::metric::DAILY {
            self.report_today
                .with_label_values(&[account, metric])
                .set(0);
        }
        for c in counts {
            self.report_today
                .with_label_values(&[account, &c.metric])
                .set(c.n);
        }
    }

    /// One answered callback.
    pub fn answered(
        &self,
        account: &str,
        kind: &str,
        outcome: &str,
        rules: &[String],
        duplicate: bool,
        secs: f64,
    ) {
        self.callbacks
            .with_label_values(&[account, kind, outcome])
            .inc();
        self.latency.with_label_values(&[account]).observe(secs);
        if duplicate {
            self.duplicates.with_label_values(&[account]).inc();
        } else {
            for r in rules {
                self.rule_hits.with_label_values(&[r.as_str()]).inc();
            }
        }
    }

    /// One refused callback; `account` must be a configured id or `unknown`.
    pub fn rejected(&self, account: &str, reason: &str, secs: f64) {
        let outcome = format!("rejected_{reason}");
        self.callbacks
            .with_label_values(&[account, "unknown", outcome.as_str()])
            .inc();
        self.latency.with_label_values(&[account]).observe(secs);
    }

    /// One outbox item's attempt: `outcome` is delivered, retried or dead.
    pub fn outbox(&self, account: &str, effect: &str, outcome: &str) {
        self.outbox
            .with_label_values(&[account, effect, outcome])
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Adds a PostgreSQL store's pool gauges and its per-operation latency histogram
    /// (`siyu_store_operation_seconds`).
    pub fn watch_postgres(&self, store: &crate::store::PgStore) {
        for g in &self.pool {
            let _ = self.registry.register(Box::new(g.clone()));
        }
        let _ = self.registry.register(Box::new(store.timings()));
    }

    /// The text exposition, with the store size (and pool) read now.
    pub fn render(
        &self,
        store_bytes: Option<u64>,
        pool: Option<crate::store::postgres::PoolStatus>,
    ) -> String {
        if let Some(b) = store_bytes {
            self.store_bytes.set(b as i64);
        }
        if let Some(p) = pool {
            for (g, v) in self.pool.iter().zip([p.size, p.available, p.waiting]) {
                g.set(v as i64);
            }
        }
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).unwrap_or_default()
    }
}
