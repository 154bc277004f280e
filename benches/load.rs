//! Load run over real HTTP on loopback, in one process and one run: a bare actix-web
//! handler that returns a fixed body, then siyu's safe-mode webhook (1,000 keyword rules,
//! sled store), hit by the same closed-loop client with the same concurrency. Every siyu
//! request is a distinct, freshly signed and encrypted message (no dedupe shortcut), from
//! 1,000 followers.
//!
//! `cargo bench --bench load` (env: LOAD_SECS=10, LOAD_CONNS=32)

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpResponse, HttpServer};
use siyu::config::Settings;
use siyu::protocol::sign;
use siyu::server::Application;

// The same allocator as the `siyu` binary, so the figures are the server's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "siyutoken";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rules_toml(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let kind = ["exact", "prefix", "contains"][i % 3];
        writeln!(
            s,
            "[[rule]]\nname = \"r{i}\"\nkeywords = [\"关键词{i}\"]\nmatch = \"{kind}\"\nreply = \"回复 {i}：第 {{counter.hits}} 次\"\nincr = {{ hits = 1 }}\n"
        )
        .unwrap();
    }
    s
}

struct Run {
    requests: u64,
    errors: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// `conns` tasks each send requests back to back for `secs`; request `i` is `make(i)`.
async fn drive(
    url_base: String,
    requests: Arc<Vec<(String, String)>>,
    conns: usize,
    secs: u64,
) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, next, errors, requests, base) = (
            client.clone(),
            next.clone(),
            errors.clone(),
            requests.clone(),
            url_base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, body)) = requests.get(i) else {
                    break;
                };
                let t = Instant::now();
                let ok = match client
                    .post(format!("{base}{path}"))
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Run {
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn main() {
    let secs = env_or("LOAD_SECS", 10);
    let conns = env_or("LOAD_CONNS", 32) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let replies = dir.path().join("replies");
        std::fs::create_dir_all(&replies).unwrap();
        std::fs::write(replies.join("load.toml"), rules_toml(1000)).unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config.toml");
        let mut settings = Settings::load(&config).unwrap();
        settings.bind = "127.0.0.1:0".into();
        settings.storage_path = dir.path().join("db");
        for a in &mut settings.accounts {
            a.replies_dir = replies.clone();
        }
        let crypt = settings.account("safe").unwrap().crypt.clone().unwrap();

        // Enough distinct requests for the whole run (generated before timing starts).
        let count = 25_000 * secs as usize * 2 + 10_000;
        eprintln!("generating {count} signed, encrypted callbacks…");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let ts = now.to_string();
        let requests: Vec<(String, String)> = (0..count)
            .map(|i| {
                let xml = format!(
                    "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[o_load_{}]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我要关键词{}]]></Content><MsgId>{}</MsgId></xml>",
                    i % 1000, i % 1000, i + 1
                );
                let encrypt = crypt.encrypt(&xml, [(i % 251) as u8; 16]);
                let msg_sig = sign(TOKEN, &[&ts, "1", &encrypt]);
                let sig = sign(TOKEN, &[&ts, "1"]);
                (
                    format!("/wx/safe?signature={sig}&timestamp={ts}&nonce=1&openid=o_load&encrypt_type=aes&msg_signature={msg_sig}"),
                    format!("<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
                )
            })
            .collect();
        let requests = Arc::new(requests);

        let bare = HttpServer::new(|| {
            App::new().route(
                "/wx/{account}",
                // It reads the body, as any webhook must (an unread body costs actix the
                // keep-alive connection), and answers a fixed one.
                web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("success") }),
            )
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        let bare_port = bare.addrs()[0].port();
        let bare = bare.run();
        let bare_handle = bare.handle();
        tokio::spawn(bare);

        let app = Application::build(settings).unwrap();
        let siyu_port = app.port();
        let siyu_handle = app.handle();
        let siyu_task = tokio::spawn(app.run_until_stopped());

        // siyu logs one line per callback in production: keep that cost in the figure,
        // writing to a file instead of the terminal.
        let log = std::fs::File::create(dir.path().join("siyu.log")).unwrap();
        tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(log))
            .with_target(false)
            .init();
        // Alternate the two servers twice so warm-up and drift hit both alike; siyu gets
        // fresh (never seen) requests in each of its rounds.
        let half = requests.len() / 2;
        let rounds = [
            ("bare actix-web, fixed body", bare_port, requests.clone()),
            ("siyu safe mode, 1,000 rules", siyu_port, Arc::new(requests[..half].to_vec())),
            ("bare actix-web, fixed body", bare_port, requests.clone()),
            ("siyu safe mode, 1,000 rules", siyu_port, Arc::new(requests[half..].to_vec())),
        ];
        println!("| server | requests/s | p50 | p99 | errors |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        let mut totals = [0f64; 2];
        for (i, (name, port, reqs)) in rounds.into_iter().enumerate() {
            eprintln!("{name}: {secs} s, {conns} connections…");
            let r = drive(format!("http://127.0.0.1:{port}"), reqs, conns, secs).await;
            totals[i % 2] += r.rps() / 2.0;
            println!(
                "| {name} | {:.0} | {} µs | {} µs | {} |",
                r.rps(),
                r.p50_us,
                r.p99_us,
                r.errors
            );
        }
        println!(
            "mean: bare {:.0}/s, siyu {:.0}/s, siyu / bare = {:.2}",
            totals[0],
            totals[1],
            totals[1] / totals[0]
        );
        bare_handle.stop(true).await;
        siyu_handle.stop(true).await;
        siyu_task.await.unwrap().unwrap();
    });
}
