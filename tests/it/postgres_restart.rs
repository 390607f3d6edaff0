//! A PostgreSQL restart is survived: the server answers 503 on
//! `/readyz` while the database is down and serves again once it is back, without a restart
//! of its own. The test runs its own throwaway cluster (Debian's PostgreSQL, which
//! `scripts/setup.sh` installs), so it can stop and start it.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::TestServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The folder holding initdb and pg_ctl.
fn pg_bin() -> PathBuf {
    find_pg_bin().expect("PostgreSQL's initdb (scripts/setup.sh installs Debian's postgresql)")
}

/// The folder holding initdb and pg_ctl, if PostgreSQL is installed.
fn find_pg_bin() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/initdb")))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    };
    on_path
        .or_else(debian)
        .map(|initdb| initdb.parent().unwrap().to_path_buf())
}

/// A throwaway cluster, stopped and removed when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn run(&self, program: &str, args: &[&str]) -> bool {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: then it runs as the Debian package's user.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let _ = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            bin: pg_bin(),
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data();
        assert!(
            cluster.run(
                "initdb",
                &["-D", &data, "-A", "trust", "-U", "tidings", "--no-sync"]
            ),
            "initdb"
        );
        cluster.resume();
        cluster
    }

    fn resume(&self) {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -F",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        assert!(
            self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data(),
                    "-l",
                    &log,
                    "-w",
                    "-o",
                    &options,
                    "start"
                ]
            ),
            "pg_ctl start"
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://tidings@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

async fn ready(server: &TestServer) -> u16 {
    reqwest::get(server.url("/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_for(server: &TestServer, status: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready(server).await != status {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_postgresql_restart_is_survived_by_reconnecting() {
    if common::skip_without("PostgreSQL (initdb)", find_pg_bin().is_some()) {
        return;
    }
    let cluster = Cluster::start();
    let _unused: &Path = cluster.dir.path();
    let server = TestServer::start_on(&cluster.url(), |_| {}).await;
    let http = server.client();
    server.signup(&http, "pg_restart").await;
    assert_eq!(ready(&server).await, 200);

    cluster.stop();
    wait_for(&server, 503, "/readyz stays 200 with the database down").await;
    // A request that needs the database says so, in the documented shape, without hanging.
    let res = http.get(server.url("/api/jobs")).send().await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{body}"
    );

    cluster.resume();
    wait_for(&server, 200, "/readyz not back after the database").await;
    let res = http
        .post(server.url("/api/jobs"))
        .json(&json!({"kind": "demo", "steps": 2, "stepMs": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "the session and the database work again");
}
