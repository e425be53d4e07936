//! The HTTP server of the fault layer: reads each call whole, applies the rules, forwards it to
//! the upstream (moto) and rewrites the answer where a rule says so.
//!
//! It runs on its own thread and Tokio runtime so that one proxy can outlive the runtime of the
//! test that started it (each `#[tokio::test]` has its own).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::{Active, Call, Kind, Protocol, Rule, error_answer, form_value, recognise};

/// A running fault proxy; stopped when dropped.
pub struct FaultProxy {
    url: String,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    upstream: String,
    next_id: AtomicU64,
    rules: Mutex<Vec<Active>>,
    calls: Mutex<BTreeMap<(String, String), u64>>,
    faulted: Mutex<BTreeMap<(String, String), u64>>,
    tables_created: Mutex<HashMap<String, Instant>>,
    roles_created: Mutex<HashMap<String, Instant>>,
}

/// Why the proxy closed a connection instead of answering (a [`Rule::drop_response`]).
#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped by a fault rule")
    }
}
impl std::error::Error for Dropped {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking fault proxy");
        let port = std_listener.local_addr().expect("fault proxy addr").port();
        let state = Arc::new(State {
            upstream,
            ..State::default()
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("fault listener");
                    tokio::select! {
                        _ = serve(listener, st) => {}
                        _ = rx => {}
                    }
                });
            })
            .expect("spawn fault proxy");
        FaultProxy {
            url: format!("http://127.0.0.1:{port}"),
            state,
            shutdown: Some(tx),
        }
    }

    /// The URL to give the SDK as its endpoint.
    pub fn endpoint(&self) -> String {
        self.url.clone()
    }

    /// An SDK configuration pointed at this proxy with the test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::sdk_config_for(&self.url).await
    }

    /// Installs `rule`; returns its id for [`FaultProxy::remove_rule`].
    pub fn add_rule(&self, rule: Rule) -> u64 {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.state.rules).push(Active::new(id, rule));
        id
    }

    pub fn remove_rule(&self, id: u64) {
        lock(&self.state.rules).retain(|a| a.id != id);
    }

    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Calls of `service`'s `operation` that reached the proxy (`"*"` for all operations).
    pub fn calls(&self, service: &str, operation: &str) -> u64 {
        sum(&lock(&self.state.calls), service, operation)
    }

    /// Calls the proxy answered with an error rule, a rate limit or a role-propagation error.
    pub fn faulted(&self, service: &str, operation: &str) -> u64 {
        sum(&lock(&self.state.faulted), service, operation)
    }

    /// Every call counted, by `(service, operation)`.
    pub fn call_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.state.calls).clone()
    }

    /// Every faulted call (error rules, rate limits), by `(service, operation)`.
    pub fn faulted_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.state.faulted).clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.state.calls).clear();
        lock(&self.state.faulted).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn sum(counts: &BTreeMap<(String, String), u64>, service: &str, operation: &str) -> u64 {
    counts
        .iter()
        .filter(|((s, o), _)| s == service && (operation == "*" || o == operation))
        .map(|(_, n)| n)
        .sum()
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            // An error here is a dropped answer or a client that went away: nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// What the rules decided for one call before it is forwarded.
#[derive(Default)]
struct Plan {
    answer: Option<(Protocol, String, u16, String)>,
    delay: Duration,
    drop: bool,
    rewrites: Vec<Kind>,
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let call = recognise(
        parts.method.as_str(),
        &path,
        header("authorization"),
        header("x-amz-target"),
        &String::from_utf8_lossy(&body),
    );
    *lock(&state.calls)
        .entry((call.service.clone(), call.operation.clone()))
        .or_default() += 1;
    record_creations(&state, &call);

    let plan = decide(&state, &call);
    if let Some((protocol, code, status, message)) = plan.answer {
        *lock(&state.faulted)
            .entry((call.service.clone(), call.operation.clone()))
            .or_default() += 1;
        let (headers, body) = error_answer(protocol, &code, &message);
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        for (k, v) in headers {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        return Ok(resp);
    }
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    let forwarded = forward(&state.upstream, parts, body).await;
    let Ok((mut resp_parts, resp_body)) = forwarded else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"upstream unreachable")));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(resp);
    };
    if plan.drop {
        return Err(Dropped);
    }
    let resp_body = rewrite(&state, &call, &plan.rewrites, resp_body);
    // The body was read whole and may have changed size: let hyper frame it again.
    resp_parts.headers.remove(hyper::header::CONTENT_LENGTH);
    resp_parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    resp_parts.headers.remove(hyper::header::CONNECTION);
    Ok(Response::from_parts(resp_parts, Full::new(resp_body)))
}

/// Remembers when tables and roles were created, for the rules that mimic propagation delays.
fn record_creations(state: &State, call: &Call) {
    match (call.service.as_str(), call.operation.as_str()) {
        ("dynamodb", "CreateTable") => {
            if let Some(name) = json_str(&call.body, &["TableName"]) {
                lock(&state.tables_created).insert(name, Instant::now());
            }
        }
        ("iam", "CreateRole") => {
            if let Some(name) = form_value(&call.body, "RoleName") {
                lock(&state.roles_created).insert(name, Instant::now());
            }
        }
        _ => {}
    }
}

fn decide(state: &State, call: &Call) -> Plan {
    let now = Instant::now();
    let mut plan = Plan::default();
    let mut rules = lock(&state.rules);
    for active in rules.iter_mut() {
        if !active.live(now) || !active.rule.matches(call) {
            continue;
        }
        match active.rule.kind.clone() {
            Kind::Error { code, status } => {
                active.spend();
                let message = format!("{code} injected by the test's fault rule");
                plan.answer = Some((call.protocol, code, status, message));
                return plan;
            }
            Kind::RateLimit { .. } => {
                if !active.take_token(now) {
                    let code = super::throttling_code(&call.service).to_string();
                    plan.answer = Some((call.protocol, code, 400, "Rate exceeded".to_string()));
                    return plan;
                }
            }
            Kind::RolePropagation(window) => {
                if matches!(call.operation.as_str(), "CreateSchedule" | "UpdateSchedule")
                    && let Some(role) = json_str(&call.body, &["Target", "RoleArn"])
                    && let Some(name) = role.rsplit('/').next()
                    && lock(&state.roles_created)
                        .get(name)
                        .is_some_and(|t| now.duration_since(*t) < window)
                {
                    active.spend();
                    let message = "The execution role you provide must allow AWS EventBridge \
                                   Scheduler to assume the role."
                        .to_string();
                    plan.answer = Some((
                        call.protocol,
                        "ValidationException".to_string(),
                        400,
                        message,
                    ));
                    return plan;
                }
            }
            Kind::Delay(d) => {
                active.spend();
                plan.delay += d;
            }
            Kind::DropResponse => {
                active.spend();
                plan.drop = true;
            }
            kind @ (Kind::TableCreating(_) | Kind::TagsEmpty(_) | Kind::EmailPending) => {
                plan.rewrites.push(kind);
            }
        }
    }
    plan
}

async fn forward(
    upstream: &str,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<(http::response::Parts, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::from_parts(parts, Full::new(body));
    // Origin form: the upstream is a plain server, not a proxy.
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = pq.as_str().parse()?;
    }
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok((parts, body.collect().await?.to_bytes()))
}

/// Applies the answer-rewriting rules that match this call.
fn rewrite(state: &State, call: &Call, rewrites: &[Kind], body: Bytes) -> Bytes {
    let mut text = String::from_utf8_lossy(&body).into_owned();
    let created_within = |table: &str, window: Duration| {
        lock(&state.tables_created)
            .get(table)
            .is_some_and(|t| t.elapsed() < window)
    };
    let mut changed = false;
    for kind in rewrites {
        match (kind, call.operation.as_str()) {
            (Kind::TableCreating(w), "CreateTable" | "DescribeTable") => {
                let key = if call.operation == "CreateTable" {
                    "TableDescription"
                } else {
                    "Table"
                };
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let name = v[key]["TableName"].as_str().unwrap_or_default().to_string();
                if created_within(&name, *w) && v[key].get("TableStatus").is_some() {
                    v[key]["TableStatus"] = "CREATING".into();
                    text = v.to_string();
                    changed = true;
                }
            }
            (Kind::TagsEmpty(w), "ListTagsOfResource") => {
                let arn = json_str(&call.body, &["ResourceArn"]).unwrap_or_default();
                let table = arn.rsplit("table/").next().unwrap_or_default();
                if created_within(table, *w) {
                    text = r#"{"Tags":[]}"#.to_string();
                    changed = true;
                }
            }
            (Kind::EmailPending, op) => {
                if let Some(t) = email_pending(call, op, &text) {
                    text = t;
                    changed = true;
                }
            }
            _ => {}
        }
    }
    if changed { Bytes::from(text) } else { body }
}

/// SNS answers as they are while an e-mail subscription waits for its confirmation click.
fn email_pending(call: &Call, op: &str, xml: &str) -> Option<String> {
    let is_email = |p: &str| p == "email" || p == "email-json";
    match op {
        "Subscribe" => {
            let protocol = form_value(&call.body, "Protocol")?;
            is_email(&protocol)
                .then(|| replace_element(xml, "SubscriptionArn", "pending confirmation"))
        }
        "ListSubscriptionsByTopic" | "ListSubscriptions" => {
            let mut out = String::with_capacity(xml.len());
            let mut rest = xml;
            while let Some(start) = rest.find("<member>") {
                let end = rest[start..].find("</member>")? + start + "</member>".len();
                out.push_str(&rest[..start]);
                let member = &rest[start..end];
                let protocol = element(member, "Protocol").unwrap_or_default();
                if is_email(protocol) {
                    out.push_str(&replace_element(
                        member,
                        "SubscriptionArn",
                        "PendingConfirmation",
                    ));
                } else {
                    out.push_str(member);
                }
                rest = &rest[end..];
            }
            out.push_str(rest);
            Some(out)
        }
        "GetSubscriptionAttributes" => {
            let email = xml.contains("<key>Protocol</key><value>email</value>")
                || xml.contains("<key>Protocol</key><value>email-json</value>");
            email.then(|| {
                xml.replace(
                    "<key>PendingConfirmation</key><value>false</value>",
                    "<key>PendingConfirmation</key><value>true</value>",
                )
            })
        }
        _ => None,
    }
}

fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn replace_element(xml: &str, name: &str, value: &str) -> String {
    match element(xml, name) {
        Some(old) => xml.replacen(
            &format!("<{name}>{old}</{name}>"),
            &format!("<{name}>{value}</{name}>"),
            1,
        ),
        None => xml.to_string(),
    }
}

/// A string at `path` in a JSON document.
fn json_str(json: &str, path: &[&str]) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(json).ok()?;
    for key in path {
        v = v.get(*key)?.clone();
    }
    v.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_members_become_pending() {
        let xml = "<r><member><Protocol>email</Protocol><SubscriptionArn>arn:1</SubscriptionArn></member>\
                   <member><Protocol>sqs</Protocol><SubscriptionArn>arn:2</SubscriptionArn></member></r>";
        let call = Call {
            service: "sns".into(),
            operation: "ListSubscriptionsByTopic".into(),
            protocol: Protocol::Query,
            body: String::new(),
        };
        let out = email_pending(&call, "ListSubscriptionsByTopic", xml).unwrap();
        assert!(out.contains("<SubscriptionArn>PendingConfirmation</SubscriptionArn>"));
        assert!(out.contains("<SubscriptionArn>arn:2</SubscriptionArn>"));
    }
}
