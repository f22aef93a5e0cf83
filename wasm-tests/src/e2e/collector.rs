//! An audit collector: records POSTed batches; can answer 503, hang, or be
//! down and come back on the same port.

use super::server::{Action, Handler, Received, Reply, Server};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorMode {
    /// 200 with `{}` (an OTLP success with no partial rejection).
    Accept,
    /// 503 Service Unavailable.
    Unavailable,
    /// Reads the request and never answers.
    Hang,
}

impl CollectorMode {
    fn from_u8(v: u8) -> CollectorMode {
        match v {
            1 => CollectorMode::Unavailable,
            2 => CollectorMode::Hang,
            _ => CollectorMode::Accept,
        }
    }
}

/// An HTTP collector on 127.0.0.1. Stops on drop.
pub struct Collector {
    server: Server,
    mode: Arc<AtomicU8>,
}

impl Collector {
    /// Starts on a free port, accepting everything.
    pub fn start() -> Collector {
        let mode = Arc::new(AtomicU8::new(CollectorMode::Accept as u8));
        let m = mode.clone();
        let handler: Handler = Arc::new(move |_req: &Received| match CollectorMode::from_u8(m.load(Ordering::SeqCst)) {
            CollectorMode::Accept => Action::Reply(Reply::json(200, &serde_json::json!({}))),
            CollectorMode::Unavailable => Action::Reply(Reply::text(503, "collector unavailable")),
            CollectorMode::Hang => Action::Hang,
        });
        Collector { server: Server::start(handler), mode }
    }
    /// The port it listens on (the same after [`Collector::down`] / [`Collector::up`]).
    pub fn port(&self) -> u16 {
        self.server.port()
    }
    /// Changes how later requests are answered.
    pub fn set_mode(&self, mode: CollectorMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
    /// Requests it answered with 2xx: the batches it accepted.
    pub fn records(&self) -> Vec<Received> {
        self.server.received().into_iter().filter(accepted).collect()
    }
    /// Every request that reached it, whatever it answered.
    pub fn attempts(&self) -> Vec<Received> {
        self.server.received()
    }
    /// Waits (up to `timeout`) until `n` batches were accepted; returns them.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.server.wait_for(n, timeout, accepted)
    }
    /// Stops listening and resets open connections (hung ones included).
    pub fn down(&self) {
        self.server.down();
    }
    /// Listens again on the same port.
    pub fn up(&self) {
        self.server.up();
    }
    /// Resets open connections, e.g. to end hung requests.
    pub fn drop_connections(&self) {
        self.server.drop_connections();
    }
}

fn accepted(r: &Received) -> bool {
    r.status.is_some_and(|s| (200..300).contains(&s))
}
