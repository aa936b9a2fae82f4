//! The ingress beside nginx: the same two backends behind sched's ingress and behind nginx
//! (upstream keepalive, least_conn), measured in one run on loopback.
//!
//! How to run (`scripts/install-bench-deps.sh` installs nginx-light and wrk):
//!
//! ```text
//! cargo build --release -p sched-bench --bin ingress
//! target/release/ingress                          # 3 rounds, 10 s each, 2000 req/s for latency
//! target/release/ingress --rounds 1 --seconds 5 --rate 1000
//! ```
//!
//! Every part is its own process: the backends (this program with `backend P1 P2`: hyper
//! HTTP/1.1 servers answering 19 bytes), sched's ingress (this program with `serve-ingress`:
//! default settings but `threads = 2`, or `--ingress-threads N`, 0 for a multi-threaded tokio
//! runtime instead; no access log), nginx (2 workers, access log off, the same
//! `X-Forwarded-*` headers set), and the load. Per round and proxy, alternating which goes
//! first:
//! - **throughput**: `wrk -t2 -c64` for the round's seconds, requests per second;
//! - **latency at a fixed rate**: a generator of our own sends `--rate` requests per second on
//!   64 keep-alive connections for the round's seconds. A request's latency counts from the
//!   time it was due when no connection was free to send it then (correcting for coordinated
//!   omission, as wrk2 does), else from when it was sent.
//!
//! Beside the throughput it gives the CPU time per request of the proxy's processes (nginx: its
//! workers) and of the backends over the wrk run, from `/proc`. Every process shares the
//! machine's cores, so on a small machine the throughput follows what all of them spend per
//! request, and the per-request CPU shows the proxy's own share apart from the run-to-run
//! drift of the machine's speed.
//!
//! The table gives the median of the rounds and the ratio ingress / nginx (throughput: higher
//! is better; latency and CPU: lower is better).
//!
//! `--hyper-floor` adds a third proxy to each round: the least a proxy on hyper can do (this
//! program with `serve-hyper-floor`): as many threads as the ingress, each a single-threaded
//! tokio runtime; each client connection gets its own connection to a backend (round robin),
//! driven in the same task, and every request goes through as it came (no routing, no
//! headers added, no pool, no timeouts). It shows how much of the gap to nginx is hyper's own.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sched_bench::process::{children_of, cpu_seconds_of};
use sched_bench::stats::percentile;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const CONNECTIONS: usize = 64;
const BODY: &str = "hello from backend\n";

struct Options {
    rounds: usize,
    seconds: u64,
    rate: u64,
    /// The ingress's `threads` setting; 0 runs it on a multi-threaded tokio runtime.
    ingress_threads: usize,
    /// Measure the bare hyper proxy too.
    hyper_floor: bool,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("backend") => backend(&args[1..]),
        Some("serve-ingress") => serve_ingress(&args[1..]),
        Some("serve-hyper-floor") => serve_hyper_floor(&args[1..]),
        _ => compare(options(&args)?),
    }
}

fn options(args: &[String]) -> Result<Options> {
    let mut options = Options { rounds: 3, seconds: 10, rate: 2000, ingress_threads: 2, hyper_floor: false };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--hyper-floor" {
            options.hyper_floor = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!(
                "usage: ingress [--rounds N (3)] [--seconds S (10)] [--rate R (2000)] [--ingress-threads N (2)] [--hyper-floor]\n\n\
                 sched's ingress beside nginx (apt: nginx-light, wrk), the same two backends behind each:\n\
                 \x20 --rounds N          rounds; each measures both proxies, alternating which goes first\n\
                 \x20 --seconds S         length of each wrk run and of each fixed-rate run\n\
                 \x20 --rate R            requests per second of the fixed-rate latency run (64 connections)\n\
                 \x20 --ingress-threads N the ingress's worker threads (0: one multi-threaded tokio runtime)\n\
                 \x20 --hyper-floor       also measure a bare proxy on hyper (as many threads, nothing but\n\
                 \x20                     forwarding): the least a hyper-based proxy costs here"
            );
            std::process::exit(0);
        }
        let value = args.next().with_context(|| format!("{flag} needs a value (see --help)"))?;
        match flag.as_str() {
            "--rounds" => options.rounds = number(flag, value)?,
            "--seconds" => options.seconds = number(flag, value)?,
            "--rate" => options.rate = number(flag, value)?,
            "--ingress-threads" => options.ingress_threads = number(flag, value)?,
            _ => bail!("unknown flag {flag} (allowed: --rounds N, --seconds S, --rate R, --ingress-threads N, --hyper-floor; see --help)"),
        }
    }
    if options.rounds == 0 || options.seconds == 0 || options.rate == 0 {
        bail!("--rounds, --seconds and --rate must be at least 1");
    }
    Ok(options)
}

/// `value` of `flag` as a whole number.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| anyhow::anyhow!("{flag} takes a whole number, got {value:?}"))
}

/// The backends: one hyper HTTP/1.1 server per port given.
fn backend(ports: &[String]) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut servers = tokio::task::JoinSet::new();
        for port in ports {
            let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
            servers.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(|_req| async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY.as_bytes()))))
                        });
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
            });
        }
        servers.join_next().await;
        Ok(())
    })
}

/// sched's ingress on the first port, routing `/` to the other ports.
fn serve_ingress(args: &[String]) -> Result<()> {
    let [threads, listen, targets @ ..] = args else {
        bail!("serve-ingress THREADS LISTEN_PORT TARGET_PORT...");
    };
    let threads: usize = threads.parse()?;
    let config = ingress::IngressConfig { threads: (threads > 0).then_some(threads), ..ingress::IngressConfig::default() };
    let targets: Vec<SocketAddr> =
        targets.iter().map(|p| Ok(SocketAddr::from(([127, 0, 0, 1], p.parse::<u16>()?)))).collect::<Result<_>>()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", listen.parse::<u16>()?)).await?;
        let table = ingress::RouteTable { routes: vec![ingress::Route::new("bench", "/").with_targets(targets)] };
        let (_routes, rx) = tokio::sync::watch::channel(table);
        ingress::run(config, listener, rx, std::future::pending()).await?;
        Ok(())
    })
}

/// The bare hyper proxy (see the module doc): `THREADS LISTEN_PORT TARGET_PORT...`.
fn serve_hyper_floor(args: &[String]) -> Result<()> {
    let [threads, listen, targets @ ..] = args else {
        bail!("serve-hyper-floor THREADS LISTEN_PORT TARGET_PORT...");
    };
    let threads: usize = threads.parse()?;
    let targets: Arc<Vec<SocketAddr>> =
        Arc::new(targets.iter().map(|p| Ok(SocketAddr::from(([127, 0, 0, 1], p.parse::<u16>()?)))).collect::<Result<_>>()?);
    if threads == 0 || targets.is_empty() {
        bail!("serve-hyper-floor needs at least one thread and one target");
    }
    let listener = StdListener::bind(("127.0.0.1", listen.parse::<u16>()?))?;
    listener.set_nonblocking(true)?;
    let workers = (0..threads)
        .map(|first| {
            let (listener, targets) = (listener.try_clone()?, Arc::clone(&targets));
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok(std::thread::spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let mut next = first;
                    loop {
                        let (client, _) = listener.accept().await?;
                        let target = targets[next % targets.len()];
                        next += 1;
                        tokio::spawn(relay(client, target));
                    }
                })
            }))
        })
        .collect::<Result<Vec<std::thread::JoinHandle<Result<()>>>>>()?;
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a hyper-floor worker panicked"))??;
    }
    Ok(())
}

/// One client connection of the bare hyper proxy: its requests go as they came to its own
/// connection to `target`, and the answers come back as they came; both connections are
/// driven by this one task.
async fn relay(client: TcpStream, target: SocketAddr) -> Result<()> {
    client.set_nodelay(true)?;
    let upstream = TcpStream::connect(target).await?;
    upstream.set_nodelay(true)?;
    let (sender, upstream) = hyper::client::conn::http1::handshake::<_, hyper::body::Incoming>(TokioIo::new(upstream)).await?;
    // One request at a time per HTTP/1.1 connection: the lock is never contended, and
    // `send_request`'s future does not hold it.
    let sender = std::sync::Mutex::new(sender);
    let service =
        hyper::service::service_fn(|request: Request<hyper::body::Incoming>| sender.lock().expect("sender lock").send_request(request));
    let downstream = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service);
    tokio::select! {
        _ = downstream => {}
        _ = upstream => {}
    }
    Ok(())
}

/// A process this program started, stopped when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_listening(process: &mut Process, port: u16) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = process.child.try_wait()? {
            bail!("{} exited before listening: {status}", process.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{} is not listening on {port} after 5 s", process.name)
}

fn nginx_conf(dir: &Path, listen: u16, targets: &[u16]) -> String {
    let d = dir.display();
    let servers: String = targets.iter().map(|p| format!("        server 127.0.0.1:{p};\n")).collect();
    format!(
        "user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        least_conn;
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"
    )
}

/// `wrk -t2 -c64` for `seconds`: requests per second.
fn wrk(port: u16, seconds: u64) -> Result<f64> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors on port {port}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// Latencies of `rate` requests per second for `seconds` on 64 connections, sorted; and the
/// count of failed requests.
async fn fixed_rate(port: u16, rate: u64, seconds: u64) -> Result<(Vec<Duration>, usize)> {
    let total = usize::try_from(rate * seconds)?;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (due_tx, due_rx) = tokio::sync::mpsc::channel::<Instant>(total);
    let start = Instant::now() + Duration::from_millis(200);
    for i in 0..total {
        due_tx.send(start + interval * u32::try_from(i)?).await?;
    }
    drop(due_tx);
    let due_rx = Arc::new(Mutex::new(due_rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let due_rx = Arc::clone(&due_rx);
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(due) = due_rx.lock().await.recv().await else {
                    break;
                };
                let picked = Instant::now();
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                // Late because every connection was busy: the wait counts (coordinated
                // omission); early: the timer's slack does not.
                let from = if picked > due { due } else { sent };
                let request = Request::get("/").header("host", "bench").body(Empty::<Bytes>::new()).expect("a static request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(from.elapsed());
                } else if sender.ready().await.is_err() {
                    break;
                }
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(result) = workers.join_next().await {
        all.extend(result?);
    }
    all.sort();
    // Failed, or never sent because a worker's connection broke.
    let failed = total - all.len();
    Ok((all, failed))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

#[derive(Default)]
struct Figures {
    throughput: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    p999_ms: Vec<f64>,
    /// CPU time of the proxy's processes per request of the throughput run, µs.
    proxy_cpu_us: Vec<f64>,
    /// CPU time of the backends per request of the throughput run, µs.
    backend_cpu_us: Vec<f64>,
    failed: usize,
}

fn compare(options: Options) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let exe = std::env::current_exe()?;
        let (b1, b2, ours, theirs, bare_port) = (free_port()?, free_port()?, free_port()?, free_port()?, free_port()?);
        let mut backends =
            Process { name: "backends", child: Command::new(&exe).args(["backend", &b1.to_string(), &b2.to_string()]).spawn()? };
        wait_listening(&mut backends, b1).await?;
        wait_listening(&mut backends, b2).await?;
        let mut ingress = Process {
            name: "sched ingress",
            child: Command::new(&exe)
                .args(["serve-ingress", &options.ingress_threads.to_string(), &ours.to_string(), &b1.to_string(), &b2.to_string()])
                .stderr(Stdio::null())
                .spawn()?,
        };
        wait_listening(&mut ingress, ours).await?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), theirs, &[b1, b2]))?;
        let mut nginx = Process {
            name: "nginx",
            child: Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .spawn()
                .context("run nginx (apt install nginx-light)")?,
        };
        wait_listening(&mut nginx, theirs).await?;

        // nginx serves from its workers, children of the master this program started.
        let nginx_workers = children_of(nginx.child.id());
        if nginx_workers.is_empty() {
            bail!("nginx (pid {}) has no worker processes", nginx.child.id());
        }
        let mut proxy_pids = vec![vec![ingress.child.id()], nginx_workers];
        let mut proxies = vec![("sched ingress", ours), ("nginx", theirs)];
        let _bare = if options.hyper_floor {
            let threads = options.ingress_threads.max(1).to_string();
            let mut bare = Process {
                name: "bare hyper proxy",
                child: Command::new(&exe)
                    .args(["serve-hyper-floor", &threads, &bare_port.to_string(), &b1.to_string(), &b2.to_string()])
                    .spawn()?,
            };
            wait_listening(&mut bare, bare_port).await?;
            proxy_pids.push(vec![bare.child.id()]);
            proxies.push(("bare hyper proxy", bare_port));
            Some(bare)
        } else {
            None
        };
        let backend_pids = [backends.child.id()];
        for (_, port) in &proxies {
            wrk(*port, 2)?; // warm up: pools, page cache, CPU frequency
        }
        let mut figures: Vec<Figures> = proxies.iter().map(|_| Figures::default()).collect();
        for round in 0..options.rounds {
            // Each round starts with the next proxy, so none always goes first.
            let order: Vec<usize> = (0..proxies.len()).map(|k| (round + k) % proxies.len()).collect();
            for i in order {
                let (name, port) = proxies[i];
                let (proxy_before, backend_before) = (cpu_seconds_of(&proxy_pids[i]), cpu_seconds_of(&backend_pids));
                let rps = wrk(port, options.seconds)?;
                let requests = rps * options.seconds as f64;
                let per_request = |seconds: f64| seconds * 1e6 / requests.max(1.0);
                let proxy_cpu_us = per_request(cpu_seconds_of(&proxy_pids[i]) - proxy_before);
                let backend_cpu_us = per_request(cpu_seconds_of(&backend_pids) - backend_before);
                let (latencies, failed) = fixed_rate(port, options.rate, options.seconds).await?;
                let ms = |p| percentile(&latencies, p).as_secs_f64() * 1e3;
                eprintln!(
                    "round {}: {name}: {rps:.0} req/s (CPU per request: proxy {proxy_cpu_us:.1} µs, backends {backend_cpu_us:.1} µs); at {} req/s p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms, {failed} failed",
                    round + 1,
                    options.rate,
                    ms(0.5),
                    ms(0.99),
                    ms(0.999)
                );
                let f = &mut figures[i];
                f.throughput.push(rps);
                f.p50_ms.push(ms(0.5));
                f.p99_ms.push(ms(0.99));
                f.p999_ms.push(ms(0.999));
                f.proxy_cpu_us.push(proxy_cpu_us);
                f.backend_cpu_us.push(backend_cpu_us);
                f.failed += failed;
            }
        }
        println!(
            "\n{} rounds of {} s; wrk -t2 -c{CONNECTIONS}; fixed rate {} req/s on {CONNECTIONS} connections; medians\n",
            options.rounds, options.seconds, options.rate
        );
        let floor = figures.get(2).is_some();
        if floor {
            println!("| measure | sched ingress | nginx | ratio | bare hyper proxy | its ratio to nginx |");
            println!("|---|---|---|---|---|---|");
        } else {
            println!("| measure | sched ingress | nginx | ratio |");
            println!("|---|---|---|---|");
        }
        let row = |name: &str, values: &dyn Fn(&Figures) -> &Vec<f64>, unit: &str, digits: usize| {
            let medians: Vec<f64> = figures.iter().map(|f| median(values(f).clone())).collect();
            let (x, y) = (medians[0], medians[1]);
            let mut line = format!("| {name} | {x:.digits$} {unit} | {y:.digits$} {unit} | {:.2} |", x / y);
            if let Some(z) = medians.get(2) {
                line += &format!(" {z:.digits$} {unit} | {:.2} |", z / y);
            }
            println!("{line}");
        };
        row("throughput, c=64", &|f| &f.throughput, "req/s", 0);
        row("p50 at fixed rate", &|f| &f.p50_ms, "ms", 3);
        row("p99 at fixed rate", &|f| &f.p99_ms, "ms", 3);
        row("p99.9 at fixed rate", &|f| &f.p999_ms, "ms", 3);
        row("proxy CPU per request, c=64", &|f| &f.proxy_cpu_us, "µs", 1);
        row("backends' CPU per request, c=64", &|f| &f.backend_cpu_us, "µs", 1);
        let failed: Vec<String> = figures.iter().map(|f| f.failed.to_string()).collect();
        println!("| failed requests | {} | {} | |{}", failed[0], failed[1], failed.get(2).map(|n| format!(" {n} | |")).unwrap_or_default());
        // nginx's workers outlive a killed master: ask it to stop, then wait for it.
        let _ = Command::new("nginx").arg("-p").arg(dir.path()).arg("-c").arg(&conf).args(["-s", "stop"]).status();
        for _ in 0..100 {
            if nginx.child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop((nginx, ingress, backends));
        Ok(())
    })
}
