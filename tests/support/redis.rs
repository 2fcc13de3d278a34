//! Redis for tests: the shared server at `REDIS_URL` (else
//! 127.0.0.1:6379), and servers (or a cluster) a test starts on free ports
//! and stops itself. No Redis is a failure that says what to install, never
//! a silent skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INSTALL: &str = "install Redis 7 (Debian: `apt-get install -y redis-server redis-tools`) \
     and start it (`redis-server --daemonize yes`), or set REDIS_URL";

/// The shared test Redis's URL, after checking that it answers `PING`.
pub fn redis_url() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    if !pings(&addr) {
        panic!("no Redis answers at {url}: {INSTALL}");
    }
    url
}

/// A key prefix no other test (or run) uses.
pub fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("palisade-test:{test}:{}:{t}:{n}:", std::process::id())
}

/// Whether something at `addr` answers `PING` with `+PONG` within 200 ms.
pub fn pings(addr: &str) -> bool {
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else {
        return false;
    };
    for a in addrs {
        let Ok(mut s) = TcpStream::connect_timeout(&a, Duration::from_millis(200)) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        if s.write_all(b"PING\r\n").is_err() {
            continue;
        }
        let mut buf = [0u8; 7];
        if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
            return true;
        }
    }
    false
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A free port whose cluster bus port (port + 10000) is valid and free.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1_000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        if port > 55_000 {
            // Beyond the range whose bus port fits: ask for a low one.
            let low = 20_000 + (port % 30_000);
            if TcpListener::bind(("127.0.0.1", low)).is_ok()
                && TcpListener::bind(("127.0.0.1", low + 10_000)).is_ok()
            {
                return low;
            }
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node")
}

/// Runs `redis-cli -p port args..` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}: {INSTALL}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port of the shared test Redis.
pub fn shared_port() -> u16 {
    let url = redis_url();
    url.trim_start_matches("redis://")
        .split(['/', '@'])
        .find_map(|part| part.rsplit(':').next()?.parse().ok())
        .unwrap_or(6379)
}

/// A redis-server this test started on a free port; stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. cluster mode).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts a server on `port` with extra arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut s = Self {
            port,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        // A fresh directory: no cluster state from an earlier run.
        let _ = std::fs::remove_dir_all(s.dir());
        s.restart();
        s
    }

    fn dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("palisade-redis-{}", self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let dir = self.dir();
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}: {INSTALL}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pings(&format!("127.0.0.1:{}", self.port)) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) it: connections stay open
    /// and nothing answers, as with a stalled server.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal}");
    }

    /// Kills it (as a crash would) and waits until the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three redis-servers in cluster mode (no replicas), slots spread by
/// `redis-cli --cluster create`; stopped when dropped.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    free_cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}: {INSTALL}"));
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &nodes {
            while !cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The index in `nodes` of the node serving `slot`.
    pub fn owner(&self, slot: u16) -> usize {
        let table = cli(self.nodes[0].port, &["CLUSTER", "NODES"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for range in fields.iter().skip(8) {
                let mut ends = range.split('-').filter_map(|e| e.parse::<u16>().ok());
                let Some(lo) = ends.next() else { continue };
                let hi = ends.next().unwrap_or(lo);
                if (lo..=hi).contains(&slot) {
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.port == port)
                        .expect("a node of ours");
                }
            }
        }
        panic!("no node serves slot {slot}")
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn slot(&self, key: &[u8]) -> u16 {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.nodes[0].port.to_string())
            .arg("-x")
            .args(["CLUSTER", "KEYSLOT"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("stdin").write_all(key)?;
                c.wait_with_output()
            })
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a slot")
    }
}
