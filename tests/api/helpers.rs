//! Spawns the real application (in-process on a random port, or the real binary) and talks
//! to it over HTTP with a real client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use eaglerank::actors::ActorSystem;
use eaglerank::config::Settings;
use eaglerank::startup::Application;

/// The demo keys that config/default.toml accepts and the README prints.
pub const DEMO_A_KEY: &str = "er_demo_a_7Qk2mV9xLp4sT8wZ";
pub const DEMO_B_KEY: &str = "er_demo_b_3Hn6rB1yKc5dF0jU";

/// A smaller demo marketplace than the default, so every test starts quickly.
pub fn test_overrides() -> Vec<(&'static str, config::Value)> {
    vec![
        ("server.port", 0.into()),
        // Off: tests run side by side; the gRPC tests pick a free port of their own.
        ("grpc.port", 0.into()),
        ("server.workers", 2.into()),
        ("store.demo.items", 1500.into()),
        ("store.demo.users", 300.into()),
        // Tests that log served features turn it on, into a directory of their own.
        ("feature_log.sample_rate", 0.0.into()),
    ]
}

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<grpc port>` when the test turned gRPC on (`grpc.port`).
    pub grpc: Option<String>,
    pub client: reqwest::Client,
    pub actors: ActorSystem,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The first HTTP worker's feed lane (gateway, candidate fetcher, ranker).
    pub fn lane(&self) -> eaglerank::actors::Lane {
        self.actors
            .lanes
            .all()
            .into_iter()
            .next()
            .expect("a lane per worker")
    }

    /// `POST /v1/tenants/demo-a/events` with `events` (JSON values), as demo-a.
    pub async fn post_events(&self, events: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/tenants/demo-a/events"))
            .bearer_auth(DEMO_A_KEY)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET /v1/tenants/{tenant}/items/{id}`.
    pub async fn item(&self, tenant: &str, key: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/tenants/{tenant}/items/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent")
    }

    /// An item's statistics (`stats` of the item endpoint); the item must exist.
    pub async fn item_stats(&self, tenant: &str, key: &str, id: &str) -> serde_json::Value {
        let res = self.item(tenant, key, id).await;
        assert_eq!(res.status(), 200);
        res.json::<serde_json::Value>().await.unwrap()["stats"].clone()
    }

    pub async fn feed(&self, tenant: &str, key: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/tenants/{tenant}/feed?{query}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent")
    }

    /// Polls `/readyz` until it answers `status`; returns its body.
    pub async fn wait_ready(&self, status: u16) -> serde_json::Value {
        for _ in 0..250 {
            let res = self
                .client
                .get(self.url("/readyz"))
                .send()
                .await
                .expect("readyz");
            if res.status().as_u16() == status {
                return res.json().await.expect("readyz body");
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("/readyz never answered {status}");
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics body")
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app inside the test's actix system with extra config overrides.
pub async fn spawn_app_with(extra: &[(&'static str, config::Value)]) -> TestApp {
    spawn_app_with_files(&[], extra).await
}

/// Starts the app with config files (as `--config` gives them) and extra overrides.
pub async fn spawn_app_with_files(
    files: &[std::path::PathBuf],
    extra: &[(&'static str, config::Value)],
) -> TestApp {
    let mut overrides = test_overrides();
    overrides.extend(extra.iter().cloned());
    let settings = Settings::load_with(files, &overrides).expect("test configuration loads");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let grpc = app.grpc_port().map(|p| format!("http://127.0.0.1:{p}"));
    let actors = app.actors().clone();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        grpc,
        client: reqwest::Client::new(),
        actors,
    }
}

/// Metric value of the sample line starting with `series` (name plus labels), if present.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series of `name` (e.g. `"eaglerank_x_total{"`) whose line contains all of
/// `filters`.
pub fn metric_sum(metrics: &str, name: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The real `eaglerank` binary, serving on a random port with its stdout captured.
pub struct Binary {
    pub child: Child,
    pub address: String,
    pub lines: mpsc::Receiver<String>,
}

pub fn binary_command(envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eaglerank"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("EAGLERANK__SERVER__PORT", "0")
        .env("EAGLERANK__GRPC__PORT", "0")
        .env("EAGLERANK__SERVER__WORKERS", "1")
        .env("EAGLERANK__STORE__DEMO__ITEMS", "1000")
        .env("EAGLERANK__STORE__DEMO__USERS", "200")
        .env("EAGLERANK__FEATURE_LOG__SAMPLE_RATE", "0")
        .envs(envs.iter().copied());
    cmd
}

/// Runs an `eaglerank` command (not the server) to completion, logging warnings only.
pub fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eaglerank"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("EAGLERANK__LOG__LEVEL", "warn")
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn spawn_binary(envs: &[(&str, &str)]) -> Binary {
    spawn_command(binary_command(envs))
}

/// Starts `cmd` (a [`binary_command`], perhaps changed) and waits for its `ServerStarted`.
pub fn spawn_command(mut cmd: Command) -> Binary {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the binary logs ServerStarted");
        let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if v["event"] == "ServerStarted" {
            break format!("http://{}", v["address"].as_str().expect("address"));
        }
    };
    Binary {
        child,
        address,
        lines: rx,
    }
}

impl Binary {
    /// `GET` demo-a's feed with `query`, with demo-a's key.
    pub async fn feed(&self, query: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}/v1/tenants/demo-a/feed?{query}", self.address))
            .bearer_auth(DEMO_A_KEY)
            .send()
            .await
            .expect("the binary answers")
    }

    /// Log lines received so far (and within `wait`), parsed.
    pub fn drain_logs(&self, wait: Duration) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(wait) {
            out.push(serde_json::from_str(&line).expect("log lines are JSON"));
        }
        out
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of the test's own, on a free loopback port, persisting to a temporary
/// directory (append-only file, fsync always) so that a kill and restart keeps the data.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A `redis-cli` command's output.
    pub fn command(&self, args: &[&str]) -> String {
        redis_cli(&["-p", &self.port.to_string()], args)
    }

    /// `used_memory` of `INFO memory`: bytes Redis holds.
    pub fn used_memory(&self) -> u64 {
        self.command(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO memory")
    }

    /// How many keys match `pattern` (`redis-cli --scan`).
    pub fn count_keys(&self, pattern: &str) -> usize {
        self.command(&["--scan", "--pattern", pattern])
            .lines()
            .count()
    }

    /// How many times Redis ran `command` (lower case), from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.command(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    /// The feeds `tenant`'s served-feed log holds in Redis.
    pub fn feeds_held(&self, tenant: &str) -> u64 {
        let pattern = format!("er:{{{tenant}}}:feeds:*");
        self.command(&["--scan", "--pattern", &pattern])
            .lines()
            .map(|key| self.command(&["HLEN", key]).trim().parse::<u64>().unwrap())
            .sum()
    }

    /// Waits (10 s at most) until `tenant`'s served-feed log in Redis holds `feeds` feeds: a
    /// replica batches its writes (`events.feed_log_flush_ms`), so a feed is there a moment
    /// after its response.
    pub async fn wait_for_feeds(&self, tenant: &str, feeds: u64) {
        for _ in 0..200 {
            if self.feeds_held(tenant) >= feeds {
                return;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{tenant}'s served-feed log never held {feeds} feeds");
    }

    /// A store on this server, with timeouts generous enough for bulk loads.
    pub fn store(&self) -> eaglerank::store::RedisStore {
        self.store_with_timeout(std::time::Duration::from_secs(30))
    }

    /// A store on this server whose commands time out after `timeout`.
    pub fn store_with_timeout(&self, timeout: std::time::Duration) -> eaglerank::store::RedisStore {
        redis_store(self.url(), false, timeout)
    }

    /// What `eaglerank load` does: the demo marketplace of `tenants` into this server.
    pub async fn load_demo(
        &self,
        demo: &eaglerank::config::DemoSettings,
        tenants: &[&str],
        anchor: f64,
    ) {
        let store = self.store();
        let metrics = eaglerank::telemetry::Metrics::new();
        for tenant in tenants {
            eaglerank::demo::seed_tenant(&store, demo, tenant, anchor, &metrics)
                .await
                .expect("demo loads into redis");
        }
    }

    /// Starts (again) on the same port and data directory, and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with `scripts/setup` \
                     (Debian package redis-server)"
                )
            });
        self.child = Some(child);
        let started = std::time::Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGKILL: the server is gone, mid-traffic.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: connections stay open and nothing answers (a hung server).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

/// A 3-master Redis Cluster of the test's own, on free loopback ports.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server (scripts/setup installs it)")
            })
            .collect();
        let cluster = Self {
            nodes,
            ports,
            _dir: dir,
        };
        for port in &cluster.ports {
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "node {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian package redis-tools, with redis-server)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let started = std::time::Instant::now();
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &cluster.ports[0].to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cluster did not converge"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A tenant name for each node (its hash tag's slot served there). `redis-cli --cluster
    /// create` gives the masters consecutive ranges of slots, node `i`'s starting at
    /// round(i × 16 384 / masters): 0, 5 461 and 10 923 for three.
    pub fn one_tenant_per_node(&self) -> Vec<String> {
        let masters = self.ports.len();
        let first_slot = |i: usize| (i as f64 * 16_384.0 / masters as f64).round() as usize;
        let mut found: Vec<Option<String>> = vec![None; masters];
        for n in 0.. {
            let name = format!("t{n}");
            let slot: usize =
                RedisCli::command(self, &["CLUSTER", "KEYSLOT", &format!("{{{name}}}")])
                    .trim()
                    .parse()
                    .expect("a slot");
            let node = (1..masters).filter(|&i| slot >= first_slot(i)).count();
            found[node].get_or_insert(name);
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        found.into_iter().flatten().collect()
    }

    /// A store on this cluster (`redis.cluster`), with a generous command timeout.
    pub fn store(&self) -> eaglerank::store::RedisStore {
        redis_store(self.urls(), true, Duration::from_secs(30))
    }
}

/// What `read` gives once `done` holds of it, read again every 50 ms for up to 5 s; past that,
/// the last reading, for the caller's assertions to report. For what completes on its own
/// after a request returned: a batch written, a join retried after the flush interval.
pub async fn poll_until<T, F>(mut read: impl FnMut() -> F, done: impl Fn(&T) -> bool) -> T
where
    F: std::future::Future<Output = T>,
{
    let mut last = read().await;
    for _ in 0..100 {
        if done(&last) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        last = read().await;
    }
    last
}

/// A store on the Redis at `url` (a cluster's comma-separated node URLs when `cluster`),
/// whose commands time out after `timeout`.
fn redis_store(url: String, cluster: bool, timeout: Duration) -> eaglerank::store::RedisStore {
    let mut settings = eaglerank::config::Settings::load(&[]).unwrap().redis;
    settings.url = url;
    settings.cluster = cluster;
    settings.command_timeout = timeout;
    eaglerank::store::RedisStore::connect(&settings).expect("pool builds")
}

/// `redis-cli` with `connection` (the port, and `-c` on a cluster) then `args`: its output,
/// once it succeeded.
fn redis_cli(connection: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(connection)
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools, with redis-server)");
    assert!(out.status.success(), "redis-cli {connection:?} {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test does to a Redis beside the service, on a single node or a cluster alike.
pub trait RedisCli {
    /// `redis-cli` with `args`; its output.
    fn command(&self, args: &[&str]) -> String;
    /// How many keys match `pattern`, over every node.
    fn count_keys(&self, pattern: &str) -> usize;
    /// A store on it, as a replica of the service opens one.
    fn store(&self) -> eaglerank::store::RedisStore;
}

impl RedisCli for RedisServer {
    fn command(&self, args: &[&str]) -> String {
        RedisServer::command(self, args)
    }
    fn count_keys(&self, pattern: &str) -> usize {
        RedisServer::count_keys(self, pattern)
    }
    fn store(&self) -> eaglerank::store::RedisStore {
        RedisServer::store(self)
    }
}

impl RedisCli for RedisCluster {
    /// Through the first node, following redirections (`-c`) to the key's.
    fn command(&self, args: &[&str]) -> String {
        redis_cli(&["-c", "-p", &self.ports[0].to_string()], args)
    }
    fn count_keys(&self, pattern: &str) -> usize {
        self.ports
            .iter()
            .map(|port| {
                redis_cli(
                    &["-p", &port.to_string()],
                    &["--scan", "--pattern", pattern],
                )
                .lines()
                .count()
            })
            .sum()
    }
    fn store(&self) -> eaglerank::store::RedisStore {
        RedisCluster::store(self)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
