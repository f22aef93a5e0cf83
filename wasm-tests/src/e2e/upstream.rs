//! The upstream echo server behind Envoy: records every request, answers 200
//! JSON echoing it, or a scripted [`Reply`] for chosen paths.

use super::server::{Action, Handler, Received, Reply, Server};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Route {
    path: String,
    prefix: bool,
    reply: Reply,
}

/// An HTTP/1.1 upstream on 127.0.0.1 (keep-alive, chunked bodies). Stops on drop.
pub struct Upstream {
    server: Server,
    routes: Arc<Mutex<Vec<Route>>>,
}

impl Upstream {
    /// Starts on a free port, echoing every request.
    pub fn start() -> Upstream {
        let routes: Arc<Mutex<Vec<Route>>> = Arc::new(Mutex::new(Vec::new()));
        let r = routes.clone();
        let handler: Handler = Arc::new(move |req: &Received| {
            let routes = r.lock().unwrap_or_else(|p| p.into_inner());
            let path = req.path_only();
            // The newest matching route wins, so a test can re-script a path.
            let found = routes
                .iter()
                .rev()
                .find(|rt| if rt.prefix { path.starts_with(&rt.path) } else { path == rt.path });
            Action::Reply(found.map_or_else(|| Reply::echo(req), |rt| rt.reply.clone()))
        });
        Upstream { server: Server::start(handler), routes }
    }
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
    /// Answers requests to exactly `path` (query string ignored) with `reply`.
    pub fn on(&self, path: &str, reply: Reply) {
        self.add(path, false, reply);
    }
    /// Answers requests whose path starts with `prefix` with `reply`.
    pub fn on_prefix(&self, prefix: &str, reply: Reply) {
        self.add(prefix, true, reply);
    }
    fn add(&self, path: &str, prefix: bool, reply: Reply) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.push(Route { path: path.to_string(), prefix, reply });
    }
    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.server.received()
    }
    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.server.received().len()
    }
    /// The latest request, if any.
    pub fn last_request(&self) -> Option<Received> {
        self.server.received().pop()
    }
    /// Waits (up to `timeout`) until `n` requests arrived; returns what arrived.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.server.wait_for(n, timeout, |_| true)
    }
    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.server.clear();
    }
    /// Stops listening and resets open connections.
    pub fn down(&self) {
        self.server.down();
    }
    /// Listens again on the same port.
    pub fn up(&self) {
        self.server.up();
    }
}
