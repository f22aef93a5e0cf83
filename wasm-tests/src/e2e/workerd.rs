//! Launches a real workerd serving the chatguard edge worker for one test:
//! `edge/config.capnp` rendered into its own temp dir (policy, origin and
//! collector URLs), a free port on 127.0.0.1, ready when the port accepts;
//! killed on drop, with its log printed when the test is failing.

use super::envoy::StartError;
use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines of workerd log shown when a test fails.
const TAIL_LINES: usize = 60;
/// A port picked free may be taken again before workerd binds it: retry.
const START_ATTEMPTS: u32 = 3;

/// What the worker is started with.
#[derive(Debug, Clone)]
pub struct WorkerdConfig {
    policy: String,
    origin: String,
    collector: String,
    start_timeout: Duration,
}

impl WorkerdConfig {
    /// The worker guarding `http://127.0.0.1:{origin_port}` with `policy_json`.
    pub fn chatguard(policy_json: &str, origin_port: u16) -> Self {
        WorkerdConfig {
            policy: policy_json.to_string(),
            origin: format!("http://127.0.0.1:{origin_port}"),
            collector: String::new(),
            start_timeout: Duration::from_secs(20),
        }
    }
    /// Sets the `COLLECTOR_URL` binding.
    pub fn collector(mut self, url: &str) -> Self {
        self.collector = url.to_string();
        self
    }
    fn render(&self, template: &str, listen: &str) -> Result<String, String> {
        for v in [&self.origin, &self.collector] {
            if v.contains(['"', '\\']) {
                return Err(format!("binding value {v:?} may not hold quotes or backslashes"));
            }
        }
        Ok(template
            .replace("@ORIGIN@", &self.origin)
            .replace("@COLLECTOR_URL@", &self.collector)
            .replace("@LISTEN@", listen))
    }
}

/// A running workerd.
pub struct Workerd {
    child: Mutex<Child>,
    dir: PathBuf,
    port: u16,
    started_in: Duration,
}

fn temp_dir() -> std::io::Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "chatguard-workerd-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn read_lossy(p: &Path) -> String {
    fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Workerd {
    /// Renders the config, starts `$WORKERD_BIN serve` and waits until it accepts.
    pub fn start(config: WorkerdConfig) -> Result<Workerd, StartError> {
        let plain = |message: String| StartError { message, log: String::new() };
        let bin = super::workerd_bin()
            .ok_or_else(|| plain("WORKERD_BIN is not set and .tools has no workerd: run `make workerd`".into()))?;
        let edge = super::edge_dir();
        let pkg = super::edge_pkg().ok_or_else(|| plain("edge/pkg is missing: run `make edge`".into()))?;
        let template = fs::read_to_string(edge.join("config.capnp")).map_err(|e| plain(format!("edge/config.capnp: {e}")))?;
        let dir = temp_dir().map_err(|e| plain(format!("temp dir: {e}")))?;
        let io = |what: &str, e: std::io::Error| plain(format!("{what}: {e}"));
        fs::write(dir.join("policy.json"), &config.policy).map_err(|e| io("policy.json", e))?;
        fs::copy(edge.join("worker.js"), dir.join("worker.js")).map_err(|e| io("worker.js", e))?;
        std::os::unix::fs::symlink(&pkg, dir.join("pkg")).map_err(|e| io("pkg link", e))?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(|e| io("free port", e))?;
            let rendered = config.render(&template, &format!("127.0.0.1:{port}")).map_err(plain)?;
            fs::write(dir.join("config.capnp"), rendered).map_err(|e| io("config.capnp", e))?;
            let log = File::create(dir.join("workerd.log")).map_err(|e| io("log", e))?;
            let log2 = log.try_clone().map_err(|e| io("log", e))?;
            let started = Instant::now();
            let child = Command::new(&bin)
                .arg("serve")
                .arg("config.capnp")
                .arg("--verbose")
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| plain(format!("spawn {}: {e}", bin.display())))?;
            let mut w = Workerd { child: Mutex::new(child), dir: dir.clone(), port, started_in: Duration::ZERO };
            match w.wait_ready(config.start_timeout) {
                Ok(()) => {
                    w.started_in = started.elapsed();
                    return Ok(w);
                }
                Err(why) => {
                    let log = w.log_text();
                    last = format!("workerd did not start: {why}\n--- {} ---\n{}", w.dir.display(), tail(&log, TAIL_LINES));
                    let retry = log.contains("Address already in use");
                    w.kill();
                    std::mem::forget(w); // keep the dir for the report
                    if !retry {
                        return Err(StartError { message: last, log });
                    }
                }
            }
        }
        Err(StartError { log: last.clone(), message: last })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("workerd exited with {status}"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!("127.0.0.1:{} not accepting within {timeout:?}", self.port));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Port of the worker's HTTP socket (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// How long workerd took from spawn to accepting.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
    /// The temp dir holding `config.capnp`, `policy.json`, `workerd.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// workerd's stdout and stderr so far (the worker's console output).
    pub fn log_text(&self) -> String {
        read_lossy(&self.dir.join("workerd.log"))
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
    /// The exit status if workerd has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).try_wait().ok().flatten()
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- workerd log, last {TAIL_LINES} lines (kept in {}) ---\n{}\n--- end of workerd log ---",
                self.dir.display(),
                tail(&self.log_text(), TAIL_LINES)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
