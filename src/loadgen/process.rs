//! Server processes for the scenarios: start the `ventas` binary on port 0
//! with the load generator's limits, learn its address from its `listening
//! on` line, ask `/health`, read its memory from `/proc`, stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::LoadgenError;

/// How long a server may take to print its `listening on` line.
pub const LISTEN_TIMEOUT_MS: u64 = 60_000;
/// Interval of `/health` polls while waiting for a cold start.
pub const HEALTH_POLL_INTERVAL_MS: u64 = 2;

/// The limits ventas runs with under the load generator: its defaults are
/// for real devices (100 messages a second per peer, 256 connections per
/// address), while here one loopback address carries thousands of devices
/// that each send a sale as fast as they can.
pub const VENTAS_BENCH_ARGS: &[&str] = &[
    "--auth",
    "off",
    "--connections-max",
    "20000",
    "--connections-per-address-max",
    "20000",
    "--peer-messages-per-second-max",
    "1000000",
    "--peer-messages-burst-max",
    "1000000",
];

/// A process's resident memory (VmRSS) in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Clock ticks a second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
pub const PROC_TICKS_PER_S: u64 = 100;

/// CPU time (user + system) a process has used, in ms, from
/// `/proc/<pid>/stat` (`self` for this process).
pub fn cpu_ms(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, utime the 12th, stime the 13th.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) * 1000 / PROC_TICKS_PER_S)
}

/// The `ventas` binary next to the running one (`target/<profile>/`).
pub fn ventas_next_to_me() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let candidate = me.parent()?.join("ventas");
    candidate.exists().then_some(candidate)
}

/// A server process we started; killed if dropped without [`stop`].
///
/// [`stop`]: ServerProcess::stop
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    spawned_at: Instant,
}

impl ServerProcess {
    /// Starts `ventas serve` on 127.0.0.1:0 with [`VENTAS_BENCH_ARGS`] and
    /// `extra` flags; returns once it printed its address.
    pub fn spawn_ventas(bin: &Path, data_dir: &Path, extra: &[&str]) -> Result<Self, LoadgenError> {
        let spawned_at = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(VENTAS_BENCH_ARGS)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| LoadgenError::Process(format!("{}: {error}", bin.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadgenError::Process("no stdout".into()))?;
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = line_tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned_at,
        };
        let addr = line_rx
            .recv_timeout(Duration::from_millis(LISTEN_TIMEOUT_MS))
            .map_err(|_| {
                LoadgenError::Process(format!(
                    "{} printed no `listening on` line within {LISTEN_TIMEOUT_MS} ms",
                    bin.display()
                ))
            })?;
        server.addr = addr
            .parse()
            .map_err(|_| LoadgenError::Process(format!("bad address {addr:?}")))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Milliseconds from process start until `/health` answered 200.
    pub async fn health_after_ms(&self) -> Result<f64, LoadgenError> {
        let deadline = self.spawned_at + Duration::from_millis(LISTEN_TIMEOUT_MS);
        while Instant::now() < deadline {
            if health_ok(self.addr).await {
                return Ok(self.spawned_at.elapsed().as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(HEALTH_POLL_INTERVAL_MS)).await;
        }
        Err(LoadgenError::Timeout {
            what: "/health".into(),
            after_ms: LISTEN_TIMEOUT_MS,
        })
    }

    /// SIGTERM (graceful shutdown), then waits for the exit.
    pub async fn stop(mut self) -> Result<(), LoadgenError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let waited = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|error| LoadgenError::Task(error.to_string()))??;
        if !waited.success() {
            return Err(LoadgenError::Process(format!(
                "server exited with {waited}"
            )));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `GET /health` on `addr` answers 200 (one plain HTTP/1.1 request).
pub async fn health_ok(addr: SocketAddr) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(1_000), ask).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let rss = rss_kib(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 0);
        assert!(cpu_ms("self").is_some(), "utime + stime of this process");
    }

    #[test]
    fn a_missing_process_has_no_memory() {
        assert_eq!(rss_kib(u32::MAX), None);
        assert_eq!(cpu_ms("no-such-process"), None);
    }
}
