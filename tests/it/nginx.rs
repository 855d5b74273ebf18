//! The nginx example of `docs/deploy.md`, run for real: the block is taken
//! from the document (so the two cannot drift), its port, certificate, log
//! and upstream lines are filled in, `nginx -t` accepts it, a real nginx
//! serves it, and two devices with a credential sync a document through it
//! over `wss://` to a ventas server on loopback. nginx must be installed
//! (`scripts/test` installs Debian's `nginx-light` when it is missing):
//! without it this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ventas::client::{Client, ClientConfig};
use ventas::server::auth::Role;

use crate::harness::*;

/// The comment that marks the tested block in `docs/deploy.md`.
const EXAMPLE_MARK: &str = "<!-- nginx-example:";
/// How long nginx may take to start listening.
const NGINX_START_MS_MAX: u64 = 10_000;

/// The nginx block of `docs/deploy.md`: the first ```nginx fence after
/// [`EXAMPLE_MARK`].
fn documented_example() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/deploy.md");
    let doc = std::fs::read_to_string(&path).expect("docs/deploy.md");
    let marked = doc
        .find(EXAMPLE_MARK)
        .map(|at| &doc[at..])
        .expect("docs/deploy.md marks its nginx example");
    let fenced = marked
        .find("```nginx\n")
        .map(|at| &marked[at + "```nginx\n".len()..])
        .expect("an nginx block after the mark");
    let end = fenced.find("```").expect("the block ends");
    fenced[..end].to_string()
}

/// `example` with each (documented line, test line) swapped; every
/// documented line must be there exactly once.
fn substituted(example: &str, swaps: &[(&str, String)]) -> String {
    let mut config = example.to_string();
    for (documented, replacement) in swaps {
        assert_eq!(
            config.matches(documented).count(),
            1,
            "docs/deploy.md's nginx example should contain `{documented}` once"
        );
        config = config.replace(documented, replacement);
    }
    config
}

/// The nginx binary: on PATH, or where Debian puts it.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    let found = on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        debian.is_file().then_some(debian)
    });
    found.expect("nginx is not installed: scripts/test installs it (apt-get install nginx-light)")
}

/// A whole nginx configuration around the documented block: everything it
/// writes stays in `dir`.
fn nginx_conf(dir: &Path, block: &str) -> String {
    let dir = dir.display();
    format!(
        "worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         client_body_temp_path {dir}/client_body;\n\
         proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n\
         uwsgi_temp_path {dir}/uwsgi;\n\
         scgi_temp_path {dir}/scgi;\n\
         {block}\n\
         }}\n"
    )
}

fn nginx_command(nginx: &Path, dir: &Path, conf: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(nginx);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    command
}

/// A device reaching the server through nginx, trusting its certificate.
fn device_via(url: &str, dir: &Path, name: &str, token: &str, certificate: &[u8]) -> Client {
    let mut config = ClientConfig::new(url, dir.join(name));
    config.peer_id = Some(name.to_string());
    config.token = Some(token.to_string());
    config.tls_root_certificates = vec![certificate.to_vec()];
    config.reconnect_initial_ms = 20;
    config.reconnect_max_ms = 200;
    Client::open(config).expect("device opens")
}

#[tokio::test]
async fn the_documented_nginx_example_carries_devices_over_wss() {
    let nginx = nginx_binary();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = issue_credentials(
        dir.path(),
        &[
            ("acme", "boss", "office-1", Role::Office, None),
            ("acme", "boss", "office-2", Role::Office, None),
        ],
    );
    let server = TestServer::start_in(dir, |_| {}).await;

    let proxy_dir = tempfile::tempdir().expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let cert = proxy_dir.path().join("fullchain.pem");
    let key = proxy_dir.path().join("privkey.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let port = free_port();
    let block = substituted(
        &documented_example(),
        &[
            ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
            (
                "/etc/letsencrypt/live/sync.example.com/fullchain.pem",
                cert.display().to_string(),
            ),
            (
                "/etc/letsencrypt/live/sync.example.com/privkey.pem",
                key.display().to_string(),
            ),
            (
                "/var/log/nginx/ventas.log",
                proxy_dir.path().join("ventas.log").display().to_string(),
            ),
            (
                "proxy_pass http://127.0.0.1:3030;",
                format!("proxy_pass http://{};", server.addr()),
            ),
        ],
    );
    let conf = proxy_dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(proxy_dir.path(), &block)).expect("write conf");

    let checked = nginx_command(&nginx, proxy_dir.path(), &conf)
        .arg("-t")
        .output()
        .await
        .expect("nginx -t runs");
    assert!(
        checked.status.success(),
        "nginx -t refused the documented example: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let mut proxy = nginx_command(&nginx, proxy_dir.path(), &conf)
        .arg("-g")
        .arg("daemon off; master_process off;")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            proxy.try_wait().expect("nginx status").is_none(),
            "nginx exited: {}",
            std::fs::read_to_string(proxy_dir.path().join("error.log")).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_millis(NGINX_START_MS_MAX),
            "nginx did not listen within {NGINX_START_MS_MAX} ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two devices, each with its credential in `Authorization: Bearer`,
    // through nginx: one writes, the other sees it live.
    let url = format!("wss://127.0.0.1:{port}");
    let devices = tempfile::tempdir().expect("dir");
    let certificate = certified.cert.der().to_vec();
    let writer = device_via(&url, devices.path(), "office-1", &tokens[0], &certificate);
    let reader = device_via(&url, devices.path(), "office-2", &tokens[1], &certificate);
    let doc = writer.create().expect("create");
    put(&doc, "through", "nginx");
    within("saved on the server via nginx", doc.synced())
        .await
        .expect("synced");
    let seen = reader.open_url(&doc.url()).expect("open");
    wait_for_keys(&seen, &["through".to_string()]).await;
    put(&doc, "live", "yes");
    wait_for_keys(&seen, &["live".to_string(), "through".to_string()]).await;
    writer.close().await.expect("close");
    reader.close().await.expect("close");

    // (The server requires credentials here: the first one issued turned
    // authentication on, so the bearer header made it through.) nginx's
    // log has the upgrades, in the documented query-free format.
    let log = std::fs::read_to_string(proxy_dir.path().join("ventas.log")).expect("nginx log");
    assert!(log.contains("\"GET /\" 101"), "nginx log: {log}");
    proxy.kill().await.expect("nginx stops");
    server.running.shutdown().await.expect("shutdown");
}
