//! A fake LLM speaking the OpenAI Chat Completions wire format, with faults
//! injected at a set rate: HTTP 429 with `retry-after`, HTTP 500, an answer
//! slower than the step's time limit, and a reset connection. It lives in the
//! bench process, so it survives every kill of `ax serve` and keeps a log of
//! every call (when, which execution marker, which step, what it answered).
//!
//! The answer to a prompt is `answer(<first line>)`; the soak workflow puts the
//! execution's marker and the step key on that line.

use crate::util::{Rng, now_ms};
use anyhow::Result;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    RateLimited,
    ServerError,
    Slow,
    Reset,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "429 retry-after",
            Outcome::ServerError => "500",
            Outcome::Slow => "slower than the step limit",
            Outcome::Reset => "connection reset",
        }
    }
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Slow,
        Outcome::Reset,
    ];
}

#[derive(Debug, Clone)]
pub struct Call {
    /// When the request arrived (epoch ms).
    pub at: u64,
    /// The first line of the prompt: "<marker> <step key>".
    pub head: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Share of calls that get a fault (split evenly among the four kinds).
    pub fault_rate: f64,
    /// Latency of a normal answer, uniform in this range (ms).
    pub latency_ms: (u64, u64),
    /// How long a "slow" answer takes (more than the step's `timeoutMs`).
    pub slow_ms: u64,
    /// The `retry-after` of a 429, in seconds.
    pub retry_after_s: u64,
    pub seed: u64,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
}

impl FakeLlm {
    pub fn start(plan: Plan) -> Result<FakeLlm> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(Rng::new(plan.seed)));
        let plan = Arc::new(plan);
        {
            let (calls, stop) = (calls.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fake-llm".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (calls, rng, plan) = (calls.clone(), rng.clone(), plan.clone());
                        let _ = std::thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn(move || serve_conn(conn, &plan, &rng, &calls));
                    }
                })?;
        }
        Ok(FakeLlm { addr, calls, stop })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// One request: (headers, body), or None when the connection closed.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Close with a TCP reset (SO_LINGER 0) instead of a clean FIN.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn respond(s: &mut TcpStream, status: &str, extra: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes())
}

fn serve_conn(mut s: TcpStream, plan: &Plan, rng: &Mutex<Rng>, calls: &Mutex<Vec<Call>>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some((_head, body)) = read_request(&mut s, &mut buf) {
        let at = now_ms();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let prompt = v["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        let model = v["model"].as_str().unwrap_or("fake").to_owned();
        let (outcome, latency) = {
            let mut r = rng.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = if r.unit() < plan.fault_rate {
                Outcome::ALL[1 + (r.next_u64() % 4) as usize]
            } else {
                Outcome::Ok
            };
            (outcome, r.range(plan.latency_ms.0, plan.latency_ms.1 + 1))
        };
        let head = prompt.lines().next().unwrap_or("").to_owned();
        if let Ok(mut c) = calls.lock() {
            c.push(Call {
                at,
                head: head.clone(),
                outcome,
            });
        }
        let res = match outcome {
            Outcome::Ok | Outcome::Slow => {
                let wait = if outcome == Outcome::Slow {
                    plan.slow_ms
                } else {
                    latency
                };
                std::thread::sleep(Duration::from_millis(wait));
                respond(
                    &mut s,
                    "200 OK",
                    "",
                    &json!({
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": crate::workflows::fake_answer(&prompt)}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                    }),
                )
            }
            Outcome::RateLimited => {
                std::thread::sleep(Duration::from_millis(latency / 4));
                respond(
                    &mut s,
                    "429 Too Many Requests",
                    &format!("retry-after: {}\r\n", plan.retry_after_s),
                    &json!({"error": {"message": "Rate limit reached (fake)", "type": "rate_limit_error"}}),
                )
            }
            Outcome::ServerError => {
                std::thread::sleep(Duration::from_millis(latency / 4));
                respond(
                    &mut s,
                    "500 Internal Server Error",
                    "",
                    &json!({"error": {"message": "The server had an error (fake)", "type": "server_error"}}),
                )
            }
            Outcome::Reset => {
                std::thread::sleep(Duration::from_millis(latency / 4));
                reset(s);
                return;
            }
        };
        if res.is_err() {
            return;
        }
    }
}
