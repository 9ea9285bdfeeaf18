//! One child process of a fixture: stdout and stderr appended to a log file, readiness polled
//! with a deadline while watching for an early exit, stopped by PID (a Rust `Child` is not
//! killed when dropped), and its log printed when a test fails. Also what benchmarks read of
//! any process: [`cpu_time`] and [`resident_bytes`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait_until;

/// How much of a log failure messages show (the whole file stays on disk).
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// A spawned process. Killed and waited for on drop; its log tail goes to stderr when the
/// drop happens during a panic (the test harness shows the output of failed tests only).
pub struct Process {
    name: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`. `name`
    /// labels messages (e.g. `etcd (port 2379)`).
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Process, String> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{name}: open log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{name}: clone log handle: {e}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{name}: spawn {:?}: {e}", command.get_program()))?;
        Ok(Process {
            name: name.to_owned(),
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// `None` after [`stop`](Self::stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status once the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Polls `probe` until it succeeds, the process exits or `timeout` passes. On failure the
    /// process is stopped and the error carries the last probe error and the log tail.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<(), String> {
        let mut last = String::from("not polled yet");
        let mut exit = None;
        let ready = wait_until(Instant::now() + timeout, || {
            exit = self.exited();
            exit.is_some() || probe().map_err(|e| last = e).is_ok()
        });
        let problem = match (ready, exit) {
            (true, None) => return Ok(()),
            (_, Some(status)) => format!("exited early with {status}"),
            (false, None) => format!("not ready within {timeout:?} (last: {last})"),
        };
        self.stop();
        Err(format!(
            "{}: {problem}\n--- {} log ({}) ---\n{}",
            self.name,
            self.name,
            self.log.display(),
            self.log_tail()
        ))
    }

    /// Sends SIGTERM (what Kubernetes sends) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let pid = self
            .pid()
            .ok_or_else(|| format!("{}: not running", self.name))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            return Err(format!("{}: could not signal {pid}", self.name));
        }
        self.wait_exit(timeout)
            .ok_or_else(|| format!("{}: still running {timeout:?} after SIGTERM", self.name))
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(Instant::now() + timeout, || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    /// Kills the process by PID (SIGKILL, like a crash) and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Err only if it already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last part of the log, or why it could not be read.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

/// CPU time the threads of process `pid` have used so far (from
/// `/proc/<pid>/task/*/schedstat`, which counts in ns); `None` when it cannot be read.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total_ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may exit between listing and reading; it no longer counts.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total_ns))
}

/// The resident set of process `pid` (`VmRSS`), in bytes.
pub fn resident_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

/// The last [`LOG_TAIL_BYTES`] of the file at `path`, or why it could not be read.
pub fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// Runs `start` up to `attempts` times (a port reported free can be taken before a process
/// binds it); the first success, or every attempt's error.
pub fn retry<T>(attempts: u32, mut start: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut failures = Vec::new();
    for attempt in 1..=attempts {
        match start() {
            Ok(started) => return Ok(started),
            Err(e) => failures.push(format!("attempt {attempt}: {e}")),
        }
    }
    Err(failures.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    /// Ready once the log holds `text`.
    fn logged(log: &Path, text: &str) -> Result<(), String> {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(text)) {
            Ok(())
        } else {
            Err(format!("no {text:?} in the log yet"))
        }
    }

    #[test]
    fn logs_waits_and_stops_by_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("p.log");
        let script = "echo out; echo err >&2; exec sleep 60";
        let mut p = Process::spawn("sleeper", &mut shell(script), &log).expect("spawn");
        let pid = p.pid().expect("running");
        let mut probes = 0;
        p.wait_ready(Duration::from_secs(10), || {
            probes += 1;
            logged(&log, "err")
        })
        .expect("ready");
        assert!(probes >= 1);
        assert!(p.log().contains("out\n") && p.log_tail().contains("err\n"));
        assert_eq!(p.exited(), None);
        p.stop();
        assert_eq!(p.pid(), None);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );
        p.stop();
    }

    #[test]
    fn an_early_exit_or_a_timeout_fails_with_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("p.log");
        let mut p =
            Process::spawn("quitter", &mut shell("echo bye >&2; exit 3"), &log).expect("spawn");
        let e = p
            .wait_ready(Duration::from_secs(10), || Err("no".into()))
            .unwrap_err();
        assert!(
            e.contains("quitter: exited early") && e.contains("bye"),
            "{e}"
        );

        let mut p = Process::spawn("slow", &mut shell("exec sleep 60"), &log).expect("spawn");
        let e = p
            .wait_ready(Duration::from_millis(50), || Err("still starting".into()))
            .unwrap_err();
        assert!(
            e.contains("not ready") && e.contains("still starting"),
            "{e}"
        );
        assert_eq!(p.pid(), None, "stopped after the failure");
    }

    #[test]
    fn terminate_sends_sigterm() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("p.log");
        let script =
            "trap 'echo got TERM; exit 0' TERM; echo trapped; while :; do sleep 0.05; done";
        let mut p = Process::spawn("trapper", &mut shell(script), &log).expect("spawn");
        p.wait_ready(Duration::from_secs(10), || logged(&log, "trapped"))
            .expect("trap set");
        let status = p.terminate(Duration::from_secs(10)).expect("exits");
        assert!(status.success(), "{status}");
        assert!(p.log().contains("got TERM"));
    }

    #[test]
    fn retry_returns_the_first_success_or_every_error() {
        let mut calls = 0;
        let got = retry(3, || {
            calls += 1;
            if calls < 2 {
                Err("busy".into())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got, Ok(2));
        let e = retry::<()>(2, || Err("busy".into())).unwrap_err();
        assert_eq!(e, "attempt 1: busy\nattempt 2: busy");
    }
}
