//! Sends one streamed request and records what the client saw.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::measure::record::{ErrorKind, Outcome, RequestRecord, RunClock};
use crate::plan::workload::{Item, TurnOf};
use crate::report::otel::Tracing;
use crate::send::protocol::{ApiKind, EventError, GenParams, StreamTally};

/// Where and how requests go; shared by every request of a run.
#[derive(Debug, Clone)]
pub struct Target {
    pub http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:3000`.
    pub base: String,
    /// Full URL of the streaming endpoint.
    pub endpoint: String,
    pub api: ApiKind,
    pub params: GenParams,
    pub timeout: Duration,
}

/// One request to send: what, and when it was meant to go.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub step: usize,
    pub scheduled: Instant,
    pub item: Item,
    /// Set when the request is one turn of a multi-turn conversation.
    pub turn: Option<TurnOf>,
}

/// What [`execute`] returns: the record and, for a conversation turn, the
/// server's reply (the next turn sends it back as the assistant message).
#[derive(Debug)]
pub struct Executed {
    pub record: RequestRecord,
    pub reply: Option<String>,
}

/// An HTTP client tuned for many concurrent streams: unbounded idle pool (one
/// connection per stream under HTTP/1.1), Nagle off, no global timeout (each
/// request has its own). `headers` go on every request (auth, `--header`).
pub fn http_client(headers: reqwest::header::HeaderMap) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// What `stream` learned before it returned.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) token_times: Vec<Instant>,
    pub(crate) chunks: u64,
    pub(crate) tally: StreamTally,
    status: Option<u16>,
    server_trace_id: Option<String>,
    end: Option<Instant>,
}

/// Send `job` and follow its stream to the end. Never fails: every problem
/// becomes an [`Outcome::Error`] with a kind.
pub async fn execute(target: &Target, clock: &RunClock, tracing: &Tracing, job: Job) -> Executed {
    let body = serde_json::to_vec(&target.api.body(
        &job.item.prompt,
        job.item.max_tokens,
        &target.params,
    ))
    .expect("invariant: a serde_json::Value always serializes");
    let trace = tracing.start(target.api.operation(), job.step, job.turn);
    let mut p = Progress {
        token_times: Vec::with_capacity(job.item.max_tokens as usize),
        chunks: 0,
        tally: StreamTally {
            reply: job.turn.map(|_| String::new()),
            ..StreamTally::default()
        },
        status: None,
        server_trace_id: None,
        end: None,
    };
    let sent = Instant::now();
    let mut req = target
        .http
        .post(&target.endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .body(body);
    for (k, v) in &trace.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let outcome = match tokio::time::timeout(target.timeout, stream(target.api, req, &mut p)).await
    {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Error {
            kind: ErrorKind::Timeout,
            message: format!("no completion within {:?}", target.timeout),
        },
    };
    let end = p.end.unwrap_or_else(Instant::now);
    let record = RequestRecord {
        id: job.id,
        step: job.step,
        scheduled: clock.at(job.scheduled),
        sent: clock.at(sent),
        token_times: p.token_times.iter().map(|t| clock.at(*t)).collect(),
        end: clock.at(end),
        input_tokens: p.tally.input_tokens,
        output_tokens: p.tally.output_tokens,
        cached_tokens: p.tally.cached_tokens,
        chunks: p.chunks,
        finish_reason: p.tally.finish_reason,
        outcome,
        http_status: p.status,
        trace_id: trace.trace_id.clone(),
        server_trace_id: p.server_trace_id,
        conversation: job.turn.map(|t| t.conversation),
        turn: job.turn.map(|t| t.turn),
    };
    trace.finish(&record, clock.wall);
    Executed {
        record,
        reply: p.tally.reply,
    }
}

fn transport_error(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Transport
    };
    Outcome::Error {
        kind,
        message: error_chain(e),
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); keep it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Sends `req` again (up to [`RESENDS`] times) when its connection closed
/// before any response byte. The case this is for: a kept-alive connection the
/// server closed after its previous response (llama-server does after streamed
/// ones), so it never read this request; browsers retry that race the same way.
/// hyper cannot tell it apart from a server that read the request and then
/// dropped the connection (a crash, say): that one is sent again too, and its
/// latency includes the failed attempts.
async fn send(req: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    const RESENDS: usize = 3;
    let mut req = req;
    for _ in 0..RESENDS {
        let again = req.try_clone();
        match (req.send().await, again) {
            (Err(e), Some(again)) if closed_before_response(&e) => req = again,
            (result, _) => return result,
        }
    }
    req.send().await
}

fn closed_before_response(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        src = s.source();
    }
    false
}

async fn stream(api: ApiKind, req: reqwest::RequestBuilder, p: &mut Progress) -> Outcome {
    let resp = match send(req).await {
        Ok(r) => r,
        Err(e) => return transport_error(&e),
    };
    let status = resp.status();
    p.status = Some(status.as_u16());
    p.server_trace_id = resp
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Outcome::Error {
            kind: ErrorKind::Http(status.as_u16()),
            message: error_message(&text),
        };
    }
    follow(api, resp.bytes_stream(), p).await
}

/// Follow a streamed body as SSE events until the completion marker, the
/// first error event, or the end. Every byte sequence ends in an [`Outcome`]:
/// malformed input is a typed error, never a panic (fuzzed in `crate::fuzz`).
pub(crate) async fn follow<S, B, E>(api: ApiKind, body: S, p: &mut Progress) -> Outcome
where
    S: futures::Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut events = std::pin::pin!(body.eventsource());
    while let Some(ev) = events.next().await {
        let now = Instant::now();
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                return Outcome::Error {
                    kind: ErrorKind::Truncated,
                    message: format!(
                        "stream broke after {} events: {}",
                        p.chunks,
                        error_chain(&e)
                    ),
                }
            }
        };
        if ev.data.is_empty() {
            continue;
        }
        match api.parse_event(&ev.data, &mut p.tally) {
            Ok(info) => {
                if info.content {
                    p.token_times.push(now);
                    p.chunks += 1;
                }
                if info.done {
                    p.end = Some(now);
                    // OpenAI ends at [DONE]; TGI's final event is the last one.
                    return Outcome::Ok;
                }
            }
            Err(EventError::Server { kind, message }) => {
                return Outcome::Error {
                    kind: ErrorKind::Stream(kind),
                    message,
                }
            }
            Err(e @ EventError::Shape { .. }) => {
                return Outcome::Error {
                    kind: ErrorKind::BadEvent,
                    message: e.to_string(),
                }
            }
        }
    }
    Outcome::Error {
        kind: ErrorKind::Truncated,
        message: format!(
            "stream ended without a completion marker after {} events",
            p.chunks
        ),
    }
}

/// The server's error message from a JSON error body, else the body's start.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.as_str()
                .map(str::to_string)
                .or_else(|| e.get("message")?.as_str().map(str::to_string))
        });
    from_json.unwrap_or_else(|| {
        body.chars()
            .take(200)
            .collect::<String>()
            .replace('\n', " ")
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one whole request (headers and the 2-byte body the tests send).
    async fn read_request(conn: &mut tokio::net::TcpStream) {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"\r\n\r\n{}") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A server that reads each request and closes its connection without a
    /// response, `closes` times, then answers. Counts the connections.
    async fn closes(closes: usize) -> std::io::Result<(String, Arc<AtomicUsize>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                read_request(&mut conn).await;
                if n >= closes {
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    let _ = conn.write_all(reply).await;
                }
            }
        });
        Ok((url, accepted))
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_response_byte_is_sent_again() {
        let (url, accepted) = closes(1).await.expect("listener");
        let req = reqwest::Client::new().post(url).body("{}");
        let resp = super::send(req)
            .await
            .expect("sent again on a new connection");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn resends_stop_after_their_bound() {
        let (url, accepted) = closes(usize::MAX).await.expect("listener");
        let req = reqwest::Client::new().post(url).body("{}");
        let err = super::send(req)
            .await
            .expect_err("every attempt is dropped");
        assert!(super::closed_before_response(&err), "{err}");
        // The first attempt and three resends.
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }
}
