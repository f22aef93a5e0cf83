//! Launches a real Envoy for one test: own temp dir, dynamic base id, ports
//! chosen by the kernel, ready when the admin `/ready` says LIVE; killed on drop,
//! with its log tail printed when the test is failing.

use super::config::EnvoyConfig;
use super::http::{self, Response};
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines of Envoy log shown when a test fails or Envoy does not start.
const TAIL_LINES: usize = 80;

/// Envoy did not become ready; the message carries the reason and the log tail.
pub struct StartError {
    /// What went wrong, followed by the tail of Envoy's log.
    pub message: String,
    /// The whole Envoy log (and stderr), e.g. to assert why a config was refused.
    pub log: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Debug for StartError {
    // `unwrap()` prints Debug: keep the log readable there too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for StartError {}

/// A running Envoy process.
pub struct Envoy {
    child: Mutex<Child>,
    dir: PathBuf,
    admin_port: u16,
    listener_port: u16,
    started_in: Duration,
}

fn temp_dir() -> std::io::Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "chatguard-e2e-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn read_lossy(p: &Path) -> String {
    fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `n` lines, leaving out the start-up list of compiled-in extensions
/// (`...server.cc:NNN]   envoy.xxx: ...`), which would otherwise fill the tail.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("]   ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Envoy {
    /// Writes the bootstrap, starts `$ENVOY_BIN` and waits until `/ready` is LIVE.
    pub fn start(config: EnvoyConfig) -> Result<Envoy, StartError> {
        let plain = |message: String| StartError { message, log: String::new() };
        let bin = super::envoy_bin()
            .ok_or_else(|| plain("ENVOY_BIN is not set and .tools has no Envoy: run `make envoy`".into()))?;
        let dir = temp_dir().map_err(|e| plain(format!("temp dir: {e}")))?;
        let bootstrap = config.render(&dir.join("access.log")).map_err(plain)?;
        let config_path = dir.join("envoy.yaml");
        fs::write(&config_path, bootstrap).map_err(|e| plain(format!("write {}: {e}", config_path.display())))?;
        let stdio = File::create(dir.join("stdio.log")).map_err(|e| plain(format!("stdio log: {e}")))?;
        let stdio2 = stdio.try_clone().map_err(|e| plain(format!("stdio log: {e}")))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &config.concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .args(["-l", &config.log_level])
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            // The log file is flushed on this interval (10 s by default): keep
            // it short so a test (or a failure report) sees recent lines.
            .args(["--file-flush-interval-msec", "50"])
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2);
        if let Some(levels) = &config.component_log_level {
            cmd.args(["--component-log-level", levels]);
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| plain(format!("spawn {}: {e}", bin.display())))?;
        let mut envoy = Envoy { child: Mutex::new(child), dir, admin_port: 0, listener_port: 0, started_in: Duration::ZERO };
        match envoy.wait_ready(config.start_timeout) {
            Ok(()) => {
                envoy.started_in = started.elapsed();
                Ok(envoy)
            }
            Err(why) => {
                let log = envoy.log_text();
                let message = format!(
                    "Envoy did not start: {why}\n--- last {TAIL_LINES} lines of {} ---\n{}",
                    envoy.dir.display(),
                    tail(&log, TAIL_LINES)
                );
                Err(StartError { message, log })
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("Envoy exited with {status}"));
            }
            if Instant::now() >= end {
                return Err(format!("/ready not LIVE within {timeout:?}"));
            }
            if self.admin_port == 0 {
                let addr = read_lossy(&self.dir.join("admin-address"));
                self.admin_port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            }
            if self.admin_port != 0 {
                if let Ok(r) = http::try_request(self.admin_port, "GET", "/ready", &[], b"") {
                    if r.status == 200 && r.text().trim() == "LIVE" {
                        self.listener_port = self.find_listener_port()?;
                        return Ok(());
                    }
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn find_listener_port(&self) -> Result<u16, String> {
        let r = http::try_request(self.admin_port, "GET", "/listeners?format=json", &[], b"")
            .map_err(|e| format!("admin /listeners: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| format!("admin /listeners: {e}"))?;
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == "ingress")
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("no ingress listener in admin /listeners: {}", r.text()))
    }

    /// Port of the HTTP listener (127.0.0.1).
    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }
    /// Port of the admin interface (127.0.0.1).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }
    /// How long Envoy took from spawn to LIVE.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
    /// The temp dir holding `envoy.yaml`, `envoy.log`, `access.log`, `stdio.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// GET `path` on the admin interface.
    pub fn admin_get(&self, path: &str) -> Response {
        http::get(self.admin_port, path, &[])
    }
    /// The admin `/stats` text (`name: value` lines).
    pub fn stats(&self) -> String {
        self.admin_get("/stats").text()
    }
    /// The value of counter or gauge `name` from `/stats`, if Envoy has it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        let r = self.admin_get(&format!("/stats?filter=^{}$", regex_escape(name)));
        stat_value(&r.text(), name)
    }
    /// Envoy's log so far (`envoy.log` then its stdout/stderr). Envoy writes
    /// the file every 50 ms: use [`Envoy::wait_for_log`] for recent lines.
    pub fn log_text(&self) -> String {
        let mut s = read_lossy(&self.dir.join("envoy.log"));
        let stdio = read_lossy(&self.dir.join("stdio.log"));
        if !stdio.trim().is_empty() {
            s.push_str("\n--- stdout/stderr ---\n");
            s.push_str(&stdio);
        }
        s
    }
    /// The access log so far (Envoy flushes it about once a second).
    pub fn access_log_text(&self) -> String {
        read_lossy(&self.dir.join("access.log"))
    }
    /// Waits until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    /// The exit status if Envoy has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).try_wait().ok().flatten()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            // Let Envoy's periodic log flush (50 ms) write the latest lines.
            thread::sleep(Duration::from_millis(150));
        }
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        drop(child);
        if panicking {
            eprintln!(
                "--- Envoy log, last {TAIL_LINES} lines (kept in {}) ---\n{}\n--- end of Envoy log ---",
                self.dir.display(),
                tail(&self.log_text(), TAIL_LINES)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Finds `name: value` in admin `/stats` text.
pub(crate) fn stat_value(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_value_reads_exact_name() {
        let s = "a.b: 3\na.b.c: 7\nx: No recorded values\n";
        assert_eq!(super::stat_value(s, "a.b"), Some(3));
        assert_eq!(super::stat_value(s, "a.b.c"), Some(7));
        assert_eq!(super::stat_value(s, "x"), None);
        assert_eq!(super::stat_value(s, "a"), None);
    }
}
