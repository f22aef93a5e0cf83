//! A JWKS server for remote-JWKS tests: the key set can be swapped (rotation),
//! it can answer 503 or be down, and it counts fetches.

use super::server::{Action, Handler, Received, Reply, Server};
use std::sync::{Arc, Mutex};

/// The path served unless another is given.
pub const DEFAULT_JWKS_PATH: &str = "/.well-known/jwks.json";

struct State {
    path: String,
    jwks: String,
    unavailable: bool,
}

/// A JWKS endpoint on 127.0.0.1. Other paths get 404. Stops on drop.
pub struct JwksServer {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl JwksServer {
    /// Serves `jwks_json` at [`DEFAULT_JWKS_PATH`].
    pub fn start(jwks_json: &str) -> JwksServer {
        JwksServer::start_at(DEFAULT_JWKS_PATH, jwks_json)
    }
    /// Serves `jwks_json` at `path`.
    pub fn start_at(path: &str, jwks_json: &str) -> JwksServer {
        let state = Arc::new(Mutex::new(State { path: path.to_string(), jwks: jwks_json.to_string(), unavailable: false }));
        let s = state.clone();
        let handler: Handler = Arc::new(move |req: &Received| {
            let st = s.lock().unwrap_or_else(|p| p.into_inner());
            Action::Reply(if req.path_only() != st.path {
                Reply::text(404, "not found")
            } else if st.unavailable {
                Reply::text(503, "jwks unavailable")
            } else {
                Reply::new(200).header("content-type", "application/json").body(st.jwks.clone())
            })
        });
        JwksServer { server: Server::start(handler), state }
    }
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
    /// The path the key set is served at.
    pub fn path(&self) -> String {
        self.lock().path.clone()
    }
    /// Serves `jwks_json` from now on (key rotation).
    pub fn set_jwks(&self, jwks_json: &str) {
        self.lock().jwks = jwks_json.to_string();
    }
    /// Answers 503 while `unavailable` is true.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }
    /// How many requests reached the JWKS path (whatever was answered).
    pub fn fetch_count(&self) -> usize {
        let path = self.path();
        self.server.received().iter().filter(|r| r.path_only() == path).count()
    }
    /// Every request received.
    pub fn requests(&self) -> Vec<Received> {
        self.server.received()
    }
    /// Stops listening and resets open connections.
    pub fn down(&self) {
        self.server.down();
    }
    /// Listens again on the same port.
    pub fn up(&self) {
        self.server.up();
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
