//! A wasmhook server process under test: started from the release binary on a fresh data
//! dir, measured through /proc (peak RSS, CPU time), stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN: &str = "load-admin-token-0123456789";

/// A running server.
pub struct Server {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    bin: PathBuf,
    /// Options beyond the defaults, kept for a restart.
    extra: Vec<String>,
    pub http: reqwest::Client,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sum of the values of the lines of a Prometheus text exposition that start with `series`.
fn sum_of(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

impl Drop for Server {
    /// A server left behind by a scenario that failed half-way is killed, not left running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// Starts the binary on `dir`; returns once `/readyz` answers, with the time that took.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<(Server, Duration)> {
        Server::start_with(bin, dir, &[]).await
    }

    /// [`Server::start`] with more `serve` options.
    pub async fn start_with(
        bin: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(Server, Duration)> {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args([
                "--admin-token",
                ADMIN,
                "--allow-network",
                "127.0.0.0/8",
                "--log-format",
                "json",
            ])
            .args(extra)
            .env("WASMHOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the server exited before it was ready: {status}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = started.elapsed();
        Ok((
            Server {
                child,
                base,
                dir: dir.to_path_buf(),
                bin: bin.to_path_buf(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                http,
            },
            ready,
        ))
    }

    /// Stops with SIGTERM and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        for _ in 0..3000 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child.kill()?;
        Ok(())
    }

    /// Stops and starts again on the same data dir; returns the new time to ready.
    pub async fn restart(self) -> anyhow::Result<(Server, Duration)> {
        let (bin, dir, extra) = (self.bin.clone(), self.dir.clone(), self.extra.clone());
        self.stop().await?;
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Server::start_with(&bin, &dir, &extra).await
    }

    fn proc_status(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Peak resident memory so far, MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.proc_status("VmHWM:")
    }

    /// Resident memory now, MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        self.proc_status("VmRSS:")
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
    }

    /// POSTs JSON; returns the JSON answer, failing on a non-2xx.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }

    /// Creates an account; returns its API key.
    pub async fn account(&self) -> anyhow::Result<String> {
        let acc = self
            .post("/v1/accounts", ADMIN, json!({"name": "load"}))
            .await?;
        Ok(acc["api_key"].as_str().unwrap_or_default().to_string())
    }

    /// The sum of the samples of a metric in `/metrics` whose name and labels start with
    /// `series`, e.g. `wasmhook_deliveries_total{outcome="succeeded"`.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(sum_of(&text, series))
    }

    /// Uploads a component as a new plugin and waits until it is compiled; returns its id,
    /// the time to the upload's answer (`202`) and the time to `ready`.
    pub async fn upload(
        &self,
        key: &str,
        path: &str,
    ) -> anyhow::Result<(String, Duration, Duration)> {
        let bytes = std::fs::read(path)?;
        let started = Instant::now();
        let resp = self
            .http
            .post(format!("{}/v1/plugins?name=load", self.base))
            .bearer_auth(key)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await?;
        // 202: compiling after the answer; 201: an older build (a baseline) compiled it first.
        anyhow::ensure!(
            resp.status() == 202 || resp.status() == 201,
            "upload: {}",
            resp.status()
        );
        let id = resp.json::<Value>().await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let answered = started.elapsed();
        loop {
            let plugin: Value = self
                .http
                .get(format!("{}/v1/plugins/{id}", self.base))
                .bearer_auth(key)
                .send()
                .await?
                .json()
                .await?;
            match plugin["status"].as_str() {
                // No status: an older build, which compiled it before answering.
                Some("ready") | None => break,
                Some("compiling") => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => anyhow::bail!("{path} did not compile: {plugin}"),
            }
        }
        Ok((id, answered, started.elapsed()))
    }

    /// Uploads a plugin, waits until it is compiled, and applies `settings` (the body of
    /// `PATCH /v1/plugins/{id}`, e.g. its `config`); returns its id.
    pub async fn plugin(&self, key: &str, path: &str, settings: Value) -> anyhow::Result<String> {
        let (id, _, _) = self.upload(key, path).await?;
        let resp = self
            .http
            .patch(format!("{}/v1/plugins/{id}", self.base))
            .bearer_auth(key)
            .json(&settings)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "configure: {}", resp.status());
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_samples_of_a_series() {
        let text = "# HELP wasmhook_deliveries Delivery attempts by outcome\n\
                    wasmhook_deliveries_total{outcome=\"succeeded\"} 12\n\
                    wasmhook_deliveries_total{outcome=\"failed\"} 3\n\
                    wasmhook_events_ingested_total 15\n";
        let series = "wasmhook_deliveries_total{outcome=\"succeeded\"";
        assert_eq!(sum_of(text, series), 12.0);
        assert_eq!(sum_of(text, "wasmhook_deliveries_total"), 15.0);
        assert_eq!(sum_of(text, "wasmhook_nothing"), 0.0);
    }
}
