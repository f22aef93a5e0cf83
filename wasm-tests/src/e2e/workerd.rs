//! Launches a real workerd serving the chatguard edge worker for one test:
//! `edge/config.capnp` rendered into its own temp dir (policy, origin and
//! collector URLs), a free port on 127.0.0.1, ready when the port accepts;
//! killed on drop, with its log printed when the test is failing.
//!
//! State scope: by default the template's Durable Object holds buckets and
//! lockout; [`WorkerdConfig::per_isolate`] drops it (the lines marked
//! `@state`). [`WorkerdConfig::isolates`]`(2)` adds a second worker service
//! (its own isolate) on its own port, bound to the first one's object.

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
    durable_object: bool,
    isolates: usize,
    second_policy: Option<String>,
}

/// The second isolate's worker, service and socket.
const SECOND_SERVICE: &str = "chatguard-2";

impl WorkerdConfig {
    /// The worker guarding `http://127.0.0.1:{origin_port}` with `policy_json`.
    pub fn chatguard(policy_json: &str, origin_port: u16) -> Self {
        WorkerdConfig {
            policy: policy_json.to_string(),
            origin: format!("http://127.0.0.1:{origin_port}"),
            collector: String::new(),
            start_timeout: Duration::from_secs(20),
            durable_object: true,
            isolates: 1,
            second_policy: None,
        }
    }
    /// No Durable Object: each isolate keeps its own buckets and lockout.
    pub fn per_isolate(mut self) -> Self {
        self.durable_object = false;
        self
    }
    /// Serves the worker from `n` (1 or 2) worker services, each its own
    /// isolate on its own port ([`Workerd::ports`]), sharing one object.
    pub fn isolates(mut self, n: usize) -> Self {
        self.isolates = n.clamp(1, 2);
        self
    }
    /// Gives the second isolate its own policy (the first one's Durable
    /// Object keeps the first policy).
    pub fn second_policy(mut self, policy_json: &str) -> Self {
        self.second_policy = Some(policy_json.to_string());
        self
    }
    /// Sets the `COLLECTOR_URL` binding.
    pub fn collector(mut self, url: &str) -> Self {
        self.collector = url.to_string();
        self
    }
    fn render(&self, template: &str, ports: &[u16]) -> Result<String, String> {
        for v in [&self.origin, &self.collector] {
            if v.contains(['"', '\\']) {
                return Err(format!("binding value {v:?} may not hold quotes or backslashes"));
            }
        }
        let mut text = template.to_string();
        if self.isolates > 1 {
            text = add_second_isolate(&text, self.second_policy.is_some())?;
        }
        if !self.durable_object {
            text = text.lines().filter(|l| !is_state_line(l)).map(|l| format!("{l}\n")).collect();
        }
        let mut text = text.replace("@ORIGIN@", &self.origin).replace("@COLLECTOR_URL@", &self.collector);
        for (i, port) in ports.iter().enumerate() {
            let marker = if i == 0 { "@LISTEN@".to_string() } else { format!("@LISTEN{}@", i + 1) };
            text = text.replace(&marker, &format!("127.0.0.1:{port}"));
        }
        Ok(text)
    }
}

fn is_state_line(line: &str) -> bool {
    let l = line.trim_end();
    l.ends_with("# @state") || l.ends_with("# @state-owner")
}

/// The template with a second worker service: a copy of the `chatguard`
/// worker without the object's namespace, its STATE binding pointing at the
/// first service's object, served on `@LISTEN2@`.
fn add_second_isolate(template: &str, own_policy: bool) -> Result<String, String> {
    let missing = |what: &str| format!("edge/config.capnp: {what} not found (the second isolate is built from it)");
    let head = "const chatguard :Workerd.Worker = (";
    let start = template.find(head).ok_or_else(|| missing(head))?;
    let end = template[start..].find("\n);").map(|i| start + i + 3).ok_or_else(|| missing("the end of the worker"))?;
    let own = "durableObjectNamespace = \"ChatguardState\"";
    let shared = "durableObjectNamespace = (className = \"ChatguardState\", serviceName = \"chatguard\")";
    let block: String = template[start..end]
        .lines()
        .filter(|l| !l.trim_end().ends_with("# @state-owner"))
        .map(|l| format!("{}\n", if l.trim_end().ends_with("# @state") { l.replace(own, shared) } else { l.to_string() }))
        .collect();
    let mut block = block.replacen(head, "const chatguard2 :Workerd.Worker = (", 1);
    if own_policy {
        block = block.replace("embed \"policy.json\"", "embed \"policy2.json\"");
    }
    let service = "(name = \"chatguard\", worker = .chatguard),";
    let socket = "(name = \"http\", address = \"@LISTEN@\", http = (), service = \"chatguard\")";
    if !template.contains(service) || !template.contains(socket) {
        return Err(missing("the chatguard service and socket"));
    }
    Ok(format!(
        "{}\n{block}",
        template
            .replace(service, &format!("{service}\n    (name = \"{SECOND_SERVICE}\", worker = .chatguard2),"))
            .replace(socket, &format!("{socket}, (name = \"http2\", address = \"@LISTEN2@\", http = (), service = \"{SECOND_SERVICE}\")"))
    ))
}

/// A running workerd.
pub struct Workerd {
    child: Mutex<Child>,
    dir: PathBuf,
    ports: Vec<u16>,
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
        if let Some(second) = &config.second_policy {
            fs::write(dir.join("policy2.json"), second).map_err(|e| io("policy2.json", e))?;
        }
        fs::copy(edge.join("worker.js"), dir.join("worker.js")).map_err(|e| io("worker.js", e))?;
        std::os::unix::fs::symlink(&pkg, dir.join("pkg")).map_err(|e| io("pkg link", e))?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = (0..config.isolates).map(|_| free_port()).collect::<Result<Vec<u16>, _>>().map_err(|e| io("free port", e))?;
            let rendered = config.render(&template, &ports).map_err(plain)?;
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
            let mut w = Workerd { child: Mutex::new(child), dir: dir.clone(), ports, started_in: Duration::ZERO };
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
            if self.ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!("127.0.0.1:{:?} not all accepting within {timeout:?}", self.ports));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Port of the (first) worker's HTTP socket (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or(0)
    }
    /// Ports of every isolate's socket, in order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
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
