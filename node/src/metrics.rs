//! The node's one Prometheus registry. Every module registers its metrics here under the
//! `quackmesh_` prefix as `<module>_<name>` (the mesh's are `mesh_*`; chain, learn and roles
//! add theirs); counters get the `_total` suffix from the encoder. `GET /metrics` serves
//! [`Metrics::encode`].

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::{
    encoding::text,
    registry::{Metric, Registry},
};

/// Prefix of every metric name.
pub const PREFIX: &str = "quackmesh";

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A shared handle to the registry (clones share it).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with the `quackmesh_` prefix.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix(PREFIX))),
        }
    }

    /// Registers `metric` as `quackmesh_<name>`; name it `<module>_<what>` (counters without
    /// `_total`, the encoder adds it).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Runs `f` on the registry (sub-registries, collectors).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

    #[test]
    fn names_are_prefixed_and_counters_get_total() {
        let m = Metrics::new();
        let c = Counter::<u64>::default();
        let g = Gauge::<i64>::default();
        m.register("mesh_things", "Things", c.clone());
        m.register("mesh_level", "Level", g.clone());
        c.inc_by(3);
        g.set(7);
        let text = m.encode();
        assert!(text.contains("quackmesh_mesh_things_total 3"), "{text}");
        assert!(text.contains("quackmesh_mesh_level 7"), "{text}");
    }
}
