//! An open-loop HTTP load generator for the autoscaling test and benchmark.
//!
//! [`Load::start`] fires `GET path` at a fixed rate, whatever the servers answer (open loop:
//! a slow answer never delays the next request), spread round-robin over the current endpoints
//! of a service, which it asks a caller's closure for every `refresh_every` (so it follows new
//! tasks within that time). It is bounded three ways: a maximum number of requests, a maximum
//! duration and a per-request timeout; and it refuses every endpoint outside its
//! [`AllowList`] (loopback, plus only the subnets of a test's own network namespaces that the
//! caller names): a bug in a task list can never send traffic off the machine.
//!
//! Coordinated omission is recorded honestly: each request has an intended start on the
//! schedule (`start + i / rate`), and its latency is measured from that instant, not from when
//! a worker got to it. A request still waiting for a worker when its timeout has passed is a
//! failure. The report also counts the requests that started late, and those that had no
//! endpoint to go to.
//!
//! Plain HTTP/1.0 over `std::net::TcpStream`, one connection per request, on a pool of worker
//! threads sized for `rate x timeout` requests in flight. Threads inherit the network
//! namespace of the thread that calls `start` (the tests run it inside their netns lab).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The IPv4 networks a load may send to. Always includes loopback (127.0.0.0/8).
#[derive(Clone, Debug)]
pub struct AllowList {
    nets: Vec<(Ipv4Addr, u8)>,
}

impl AllowList {
    /// Loopback only.
    pub fn loopback() -> Self {
        AllowList { nets: vec![(Ipv4Addr::new(127, 0, 0, 0), 8)] }
    }

    /// Also `net/prefix`: a subnet that exists only inside a test's own network namespaces
    /// (e.g. its netns lab's `10.199.TAG.0/24`). Prefixes shorter than /16 are refused: a
    /// lab's subnet is small, and a wide one would take in real networks.
    pub fn with_lab_subnet(mut self, net: Ipv4Addr, prefix: u8) -> Self {
        assert!((16..=32).contains(&prefix), "a lab subnet is /16 to /32, not /{prefix}");
        self.nets.push((net, prefix));
        self
    }

    /// Whether traffic to `addr` is allowed.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        let IpAddr::V4(ip) = addr.ip() else { return false };
        self.nets.iter().any(|&(net, prefix)| {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            u32::from(ip) & mask == u32::from(net) & mask
        })
    }
}

/// What to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Requests per second (open loop).
    pub rate_per_sec: f64,
    /// The load stops after this many requests...
    pub max_requests: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Each request's deadline, counted from its intended start.
    pub request_timeout: Duration,
    /// The path to GET (e.g. `/cgi-bin/burn`).
    pub path: String,
    /// How often the endpoint list is asked for.
    pub refresh_every: Duration,
    /// Where requests may go.
    pub allow: AllowList,
}

impl LoadOptions {
    /// `rate_per_sec` of GET `path` for at most `max_duration` (and as many requests as that
    /// takes at the rate, plus one), 5 s timeout, endpoints refreshed every 300 ms, loopback.
    pub fn new(rate_per_sec: f64, path: &str, max_duration: Duration) -> Self {
        LoadOptions {
            rate_per_sec,
            max_requests: (rate_per_sec * max_duration.as_secs_f64()).ceil() as u64 + 1,
            max_duration,
            request_timeout: Duration::from_secs(5),
            path: path.to_owned(),
            refresh_every: Duration::from_millis(300),
            allow: AllowList::loopback(),
        }
    }
}

/// What one endpoint saw.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    /// When the endpoint list first named it.
    pub first_seen: Instant,
    /// When its first 200 came back.
    pub first_success: Option<Instant>,
    pub successes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What a load did so far (or in all, once stopped).
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// When the first request was due.
    pub started: Instant,
    /// The same instant on the wall clock (to compare with the servers' unix_ms).
    pub started_wall: SystemTime,
    /// Requests due so far on the schedule (each is a success, a failure or no_endpoint once
    /// done; in flight until then).
    pub scheduled: u64,
    pub successes: u64,
    pub failures: u64,
    /// Requests due while the endpoint list was empty (not sent; counted as failed).
    pub no_endpoint: u64,
    /// Requests a worker started more than 10 ms after they were due (all workers busy).
    pub started_late: u64,
    /// Latency of each success from its intended start (coordinated omission included).
    pub latencies: Vec<Duration>,
    pub endpoints: BTreeMap<SocketAddr, EndpointStats>,
    /// Endpoints the list named that the allow-list (or parsing) refused; never contacted.
    pub refused: BTreeSet<String>,
}

impl LoadReport {
    fn new() -> Self {
        LoadReport {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            scheduled: 0,
            successes: 0,
            failures: 0,
            no_endpoint: 0,
            started_late: 0,
            latencies: Vec::new(),
            endpoints: BTreeMap::new(),
            refused: BTreeSet::new(),
        }
    }

    /// The `p`-th percentile (0-100) of the successes' latencies.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let last = sorted.len().checked_sub(1)?;
        let index = ((p / 100.0) * last as f64).round() as usize;
        sorted.get(index.min(last)).copied()
    }

    /// Requests finished so far (successes, failures and those without an endpoint).
    pub fn finished(&self) -> u64 {
        self.successes + self.failures + self.no_endpoint
    }

    /// The first time an endpoint outside `known` answered 200, from the start of the load.
    pub fn first_success_outside(&self, known: &BTreeSet<SocketAddr>) -> Option<(SocketAddr, Duration)> {
        self.endpoints
            .iter()
            .filter(|(addr, _)| !known.contains(addr))
            .filter_map(|(addr, s)| s.first_success.map(|t| (*addr, t.saturating_duration_since(self.started))))
            .min_by_key(|(_, d)| *d)
    }

    /// One line: counts and latency percentiles.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0));
        format!(
            "{} scheduled, {} ok, {} failed, {} without an endpoint, {} started late; latency p50 {} p90 {} p99 {} max {}; {} endpoints{}",
            self.scheduled,
            self.successes,
            self.failures,
            self.no_endpoint,
            self.started_late,
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.percentile(100.0)),
            self.endpoints.len(),
            if self.refused.is_empty() { String::new() } else { format!(", refused {:?}", self.refused) },
        ) + &self.last_errors()
    }

    /// Each endpoint's last error, for a failure message ("" when none failed).
    fn last_errors(&self) -> String {
        self.endpoints
            .iter()
            .filter_map(|(addr, stats)| stats.last_error.as_ref().map(|e| format!("; {addr}: {} failed, last: {e}", stats.failures)))
            .collect()
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    threads: Vec<JoinHandle<()>>,
    scheduler_done: Arc<AtomicBool>,
}

/// One request for a worker: when it was due and where it goes.
struct Job {
    due: Instant,
    addr: SocketAddr,
}

impl Load {
    /// Starts the load now. `endpoints` is called once before the first request and then every
    /// `refresh_every` on a thread of its own; it returns the current `IP:PORT`s, or `None`
    /// when it cannot tell (e.g. the CLI failed): then the previous list stays in use.
    pub fn start(options: LoadOptions, mut endpoints: impl FnMut() -> Option<Vec<String>> + Send + 'static) -> Load {
        assert!(options.rate_per_sec > 0.0 && options.rate_per_sec <= 1000.0, "rate {} per s is out of 0-1000", options.rate_per_sec);
        assert!(options.max_duration <= Duration::from_secs(3600), "a load lasts at most an hour");
        let report = Arc::new(Mutex::new(LoadReport::new()));
        let current: Arc<Mutex<Vec<SocketAddr>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let scheduler_done = Arc::new(AtomicBool::new(false));
        let allow = options.allow.clone();
        let refresh = {
            let (report, current) = (report.clone(), current.clone());
            move |list: Vec<String>| {
                let mut report = report.lock().unwrap();
                let mut accepted = Vec::new();
                for text in list {
                    match text.parse::<SocketAddr>() {
                        Ok(addr) if allow.allows(&addr) => {
                            report.endpoints.entry(addr).or_insert_with(|| EndpointStats {
                                first_seen: Instant::now(),
                                first_success: None,
                                successes: 0,
                                failures: 0,
                                last_error: None,
                            });
                            accepted.push(addr);
                        }
                        _ => {
                            report.refused.insert(text);
                        }
                    }
                }
                *current.lock().unwrap() = accepted;
            }
        };
        if let Some(list) = endpoints() {
            refresh(list);
        }
        let mut threads = Vec::new();
        {
            let (stop, done, every) = (stop.clone(), scheduler_done.clone(), options.refresh_every);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst) {
                    sleep_until(Instant::now() + every, &stop);
                    if let Some(list) = endpoints() {
                        refresh(list);
                    }
                }
            }));
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let in_flight = (options.rate_per_sec * options.request_timeout.as_secs_f64()).ceil() as usize;
        let workers = (in_flight + 4).clamp(4, 256);
        for _ in 0..workers {
            let (receiver, report, options) = (receiver.clone(), report.clone(), options.clone());
            threads.push(std::thread::spawn(move || {
                loop {
                    let job = match receiver.lock().unwrap().recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let now = Instant::now();
                    let deadline = job.due + options.request_timeout;
                    let result = if now >= deadline {
                        Err("timed out waiting for a free worker".to_string())
                    } else {
                        get(job.addr, &options.path, deadline)
                    };
                    let done = Instant::now();
                    let mut report = report.lock().unwrap();
                    if now.duration_since(job.due) > Duration::from_millis(10) {
                        report.started_late += 1;
                    }
                    let ok = result.is_ok();
                    if ok {
                        report.successes += 1;
                        report.latencies.push(done.duration_since(job.due));
                    } else {
                        report.failures += 1;
                    }
                    if let Some(stats) = report.endpoints.get_mut(&job.addr) {
                        match result {
                            Ok(_) => {
                                stats.successes += 1;
                                stats.first_success.get_or_insert(done);
                            }
                            Err(e) => {
                                stats.failures += 1;
                                stats.last_error = Some(e);
                            }
                        }
                    }
                }
            }));
        }
        {
            let (stop, done, report, current) = (stop.clone(), scheduler_done.clone(), report.clone(), current.clone());
            // The schedule's origin, set before `start` returns so every snapshot carries it.
            let started = Instant::now();
            {
                let mut r = report.lock().unwrap();
                r.started = started;
                r.started_wall = SystemTime::now();
            }
            threads.push(std::thread::spawn(move || {
                let mut next_endpoint = 0usize;
                for i in 0..options.max_requests {
                    let due = started + Duration::from_secs_f64(i as f64 / options.rate_per_sec);
                    if due >= started + options.max_duration {
                        break;
                    }
                    sleep_until(due, &stop);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let addr = {
                        let list = current.lock().unwrap();
                        if list.is_empty() {
                            None
                        } else {
                            next_endpoint = (next_endpoint + 1) % list.len();
                            Some(list[next_endpoint])
                        }
                    };
                    let mut r = report.lock().unwrap();
                    r.scheduled += 1;
                    match addr {
                        Some(addr) => {
                            drop(r);
                            if sender.send(Job { due, addr }).is_err() {
                                break;
                            }
                        }
                        None => r.no_endpoint += 1,
                    }
                }
                // Dropping the sender lets the workers finish what is queued and exit.
                drop(sender);
                done.store(true, Ordering::SeqCst);
            }));
        }
        Load { stop, report, threads, scheduler_done }
    }

    /// The report so far (requests in flight are not in it yet).
    pub fn snapshot(&self) -> LoadReport {
        self.report.lock().unwrap().clone()
    }

    /// Whether every request has been scheduled (the duration or count bound is reached).
    pub fn schedule_done(&self) -> bool {
        self.scheduler_done.load(Ordering::SeqCst)
    }

    /// Stops scheduling, waits for the requests in flight (each bounded by its timeout) and
    /// returns the report.
    pub fn stop(mut self) -> LoadReport {
        self.finish()
    }

    /// Waits until the schedule is done and every request finished.
    pub fn wait(mut self) -> LoadReport {
        while !self.schedule_done() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish()
    }

    fn finish(&mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.report.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sleeps until `until`, waking early when `stop` is set.
fn sleep_until(until: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// `GET path` from `addr` over HTTP/1.0, by `deadline`; the body of a 200.
pub fn get(addr: SocketAddr, path: &str, deadline: Instant) -> Result<String, String> {
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_string());
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("connect: {e}"))?;
    stream.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > 1 << 20 {
                    return Err("answer over 1 MiB".into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default();
    let code = status.strip_prefix("HTTP/1.").and_then(|rest| rest.split_whitespace().nth(1));
    if code != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    Ok(text.split_once("\r\n\r\n").map_or_else(String::new, |(_, body)| body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_takes_loopback_and_named_lab_subnets_only() {
        let allow = AllowList::loopback().with_lab_subnet(Ipv4Addr::new(10, 199, 7, 0), 24);
        for ok in ["127.0.0.1:80", "127.1.2.3:9", "10.199.7.200:40000"] {
            assert!(allow.allows(&ok.parse().unwrap()), "{ok}");
        }
        for refused in ["10.199.8.1:80", "192.168.1.1:80", "8.8.8.8:53", "[::1]:80", "0.0.0.0:80"] {
            assert!(!allow.allows(&refused.parse().unwrap()), "{refused}");
        }
    }

    #[test]
    fn a_load_is_open_loop_bounded_and_refuses_endpoints_off_the_allow_list() {
        // A server that answers 200 to everything, on loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                });
            }
        });
        let mut options = LoadOptions::new(100.0, "/", Duration::from_secs(10));
        options.max_requests = 50;
        let list = vec![addr.to_string(), "192.0.2.1:80".to_string(), "example.com:80".to_string()];
        let started = Instant::now();
        let report = Load::start(options, move || Some(list.clone())).wait();
        assert!(started.elapsed() < Duration::from_secs(3), "50 requests at 100/s take about 0.5 s");
        assert_eq!(report.scheduled, 50, "{}", report.summary());
        assert_eq!(report.successes, 50, "{}", report.summary());
        assert_eq!(report.endpoints.len(), 1, "only the loopback endpoint is used");
        assert_eq!(report.refused, BTreeSet::from(["192.0.2.1:80".to_string(), "example.com:80".to_string()]));
        assert!(report.endpoints[&addr].first_success.is_some());
    }

    #[test]
    fn a_silent_server_costs_failures_bounded_by_the_timeout_and_latency_counts_from_the_schedule() {
        // Accepts and never answers: every request times out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in silent.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        let mut options = LoadOptions::new(20.0, "/", Duration::from_millis(500));
        options.request_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let report = Load::start(options, move || Some(vec![silent_addr.to_string()])).wait();
        assert!(started.elapsed() < Duration::from_secs(2), "0.5 s of load + a 0.3 s timeout took {:?}", started.elapsed());
        assert_eq!(report.successes, 0, "{}", report.summary());
        assert_eq!(report.failures, report.scheduled, "{}", report.summary());
        assert!(report.endpoints[&silent_addr].last_error.is_some());

        // Answers after 200 ms, one connection at a time: requests queue behind each other,
        // and their latency counts from when they were due, not from when they were sent.
        let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let slow_addr = slow.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in slow.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                std::thread::sleep(Duration::from_millis(200));
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nok");
            }
        });
        let mut options = LoadOptions::new(20.0, "/", Duration::from_millis(500));
        options.max_requests = 5;
        let report = Load::start(options, move || Some(vec![slow_addr.to_string()])).wait();
        assert_eq!(report.successes, 5, "{}", report.summary());
        // Due every 50 ms, served one per 200 ms: the 5th waits ~1 s - 0.2 s behind the others.
        let worst = report.percentile(100.0).unwrap();
        assert!(worst >= Duration::from_millis(700), "the queued request's latency includes its wait: {}", report.summary());
    }
}
