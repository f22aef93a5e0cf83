//! A compiled module, ready to be instantiated by any number of sandboxes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{Config, Engine, InstancePre, Module};

use super::imports;
use super::state::HostState;
use super::HarnessError;

/// A proxy-wasm module compiled by wasmtime, with every import resolved.
///
/// Compiling a ~1 MB module takes seconds, so tests share one `Plugin` per
/// path through [`Plugin::cached`]; each test then builds its own
/// [`Sandbox`](super::Sandbox) (its own `Store`), so tests stay independent.
pub struct Plugin {
    path: PathBuf,
    engine: Engine,
    module: Module,
    pre: InstancePre<HostState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Plugin {
    /// Reads and compiles the module at `path` and links its imports.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HarnessError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| HarnessError::Read {
            path: path.clone(),
            message: source.to_string(),
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Compiles a module from memory; `name` is only used in messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, HarnessError> {
        let path = name.into();
        let compile = |e: wasmtime::Error| HarnessError::Compile {
            path: path.clone(),
            message: format!("{e:#}"),
        };
        let mut config = Config::new();
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(compile)?;
        let module = compile_cached(&engine, bytes).map_err(compile)?;
        let linker = imports::linker_for(&engine, &module).map_err(|e| HarnessError::Link {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        let pre = linker.instantiate_pre(&module).map_err(|e| HarnessError::Link {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(Plugin {
            path,
            engine,
            module,
            pre,
        })
    }

    /// Loads `path` once per test binary and shares it (keyed by path).
    pub fn cached(path: impl AsRef<Path>) -> Result<Arc<Self>, HarnessError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
        let key = path.as_ref().to_path_buf();
        let cache = CACHE.get_or_init(Default::default);
        // Hold the lock while compiling so parallel tests wait for one compile
        // instead of each doing their own.
        let mut map = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(plugin) = map.get(&key) {
            return Ok(Arc::clone(plugin));
        }
        let plugin = Arc::new(Self::load(&key)?);
        map.insert(key, Arc::clone(&plugin));
        Ok(plugin)
    }

    /// Where the module came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the functions the module exports.
    pub fn exports(&self) -> Vec<String> {
        self.module.exports().map(|e| e.name().to_string()).collect()
    }

    /// `module.name` of every import.
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }
}

/// Where compiled modules are kept between test runs: `$WASM_TESTS_CACHE_DIR`,
/// else `target/wasm-tests-cache` in the workspace.
fn cache_dir() -> PathBuf {
    match std::env::var_os("WASM_TESTS_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => super::workspace_root().join("target/wasm-tests-cache"),
    }
}

/// Compiles `bytes`, reusing native code compiled by an earlier run for the
/// same bytes and the same engine (cranelift on 2 busy cores takes seconds
/// per megabyte; every test binary would pay it on every run).
fn compile_cached(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Module> {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file = cache_dir().join(format!("{:016x}-{}.cwasm", hasher.finish(), bytes.len()));
    if file.exists() {
        // SAFETY: the file was written by `Module::serialize` below, for this
        // very engine configuration (its hash is in the name); wasmtime also
        // checks the engine compatibility header and errors on a mismatch,
        // in which case we recompile.
        if let Ok(module) = unsafe { Module::deserialize_file(engine, &file) } {
            return Ok(module);
        }
    }
    let module = Module::new(engine, bytes)?;
    // The cache is an optimisation: failing to write it is not an error.
    if let Ok(serialized) = module.serialize() {
        let _ = std::fs::create_dir_all(cache_dir());
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, serialized).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Ok(module)
}
