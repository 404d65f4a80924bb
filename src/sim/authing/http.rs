//! The simulated routes: tokens, webhooks, logs, and the faults they serve.

use super::*;

pub(super) type Shared = State<Arc<Mutex<SimState>>>;

pub(super) fn body_error(code: i64, msg: &str) -> Response {
    // 2020 is the documented apiCode of a refused token; the others are the
    // simulator's own (the real ones are not documented).
    let api_code = match code {
        401 => 2020,
        400 => 1000,
        _ => 5000,
    };
    Json(json!({"statusCode": code, "message": msg, "apiCode": api_code, "requestId": "sim"}))
        .into_response()
}

/// Applies a fault: returns the response to send instead, if any.
pub(super) async fn apply_fault(
    fault: Option<Fault>,
    normal: impl FnOnce() -> Value,
    state: &Arc<Mutex<SimState>>,
) -> Result<Value, Response> {
    match fault {
        None => Ok(normal()),
        Some(Fault::Status(code, retry_after)) => {
            let mut resp = (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "fault\n",
            )
                .into_response();
            if let Some(ra) = retry_after.and_then(|r| r.parse().ok()) {
                resp.headers_mut().insert("retry-after", ra);
            }
            Err(resp)
        }
        Some(Fault::BodyStatus(code)) => Err(body_error(code, "simulated error")),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(normal())
        }
        Some(Fault::Truncated) => {
            let text = normal().to_string();
            let half = char_boundary(&text, text.len() / 2);
            Err((
                StatusCode::OK,
                [("content-type", "application/json")],
                text[..half].to_string(),
            )
                .into_response())
        }
        Some(Fault::Html) => Err((
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response()),
        Some(Fault::Huge(n)) => Err((
            StatusCode::OK,
            [("content-type", "application/json")],
            "[".repeat(n),
        )
            .into_response()),
        Some(Fault::RevokeTokens) => {
            lock(state).tokens.clear();
            Ok(normal())
        }
        Some(Fault::SlowBody(stall)) => Err(split_body(normal().to_string(), Some(stall))),
        Some(Fault::Reset) => Err(split_body(normal().to_string(), None)),
        Some(Fault::WrongTypes) => Err(Json(json!({"statusCode": 200, "message": "",
            "data": {"totalCount": "many", "list": {"0": {"eventName": 5}}}}))
        .into_response()),
        Some(Fault::MissingData) => {
            Err(Json(json!({"statusCode": 200, "message": "ok"})).into_response())
        }
    }
}

/// The largest char boundary of `s` at or before `i`.
pub(super) fn char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A 200 answer that sends the first half of `text`, then either stalls for
/// `stall` before the rest, or (with `None`) breaks the connection.
pub(super) fn split_body(text: String, stall: Option<Duration>) -> Response {
    use axum::body::{Body, Bytes};
    let half = char_boundary(&text, text.len() / 2);
    let (first, rest) = (
        Bytes::from(text[..half].to_string()),
        Bytes::from(text[half..].to_string()),
    );
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let (first, rest) = (first.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<Bytes, std::io::Error>(first), 1)),
                1 => match stall {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        Some((Ok(rest), 2))
                    }
                    None => Some((Err(std::io::Error::other("simulated connection reset")), 2)),
                },
                _ => None,
            }
        }
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenReq {
    pub(super) access_key_id: String,
    pub(super) access_key_secret: String,
}

pub(super) async fn token(State(state): Shared, body: Option<Json<TokenReq>>) -> Response {
    let (fault, ok, ttl, pool) = {
        let mut st = lock(&state);
        st.requests.push((Instant::now(), "get-management-token"));
        let ok = body.as_ref().is_some_and(|b| {
            b.access_key_id == st.cfg.access_key_id
                && b.access_key_secret == st.cfg.access_key_secret
        });
        (
            st.take_fault("get-management-token"),
            ok,
            st.cfg.token_ttl,
            st.cfg.pool_id.clone(),
        )
    };
    if !ok {
        return body_error(401, "invalid access key");
    }
    let st2 = state.clone();
    let v = apply_fault(
        fault,
        || {
            let mut st = lock(&st2);
            st.tokens_issued += 1;
            let n = st.tokens_issued;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let token = format!(
                "{}.{}.{}",
                b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(json!({"scoped_userpool_id": pool, "jti": n}).to_string()),
                b64.encode(format!("sim-signature-{n}"))
            );
            st.tokens.insert(token.clone(), Instant::now() + ttl);
            json!({"statusCode": 200, "message": "", "data": {"access_token": token, "expires_in": ttl.as_secs().max(1)}})
        },
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) page: Option<u64>,
    pub(super) limit: Option<u64>,
}

/// Unauthenticated answer: alternately HTTP 401 and HTTP 200 with body 401.
pub(super) fn unauthorized(n: usize) -> Response {
    if n.is_multiple_of(2) {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"statusCode": 401, "message": "token expired or invalid"})),
        )
            .into_response()
    } else {
        body_error(401, "token expired or invalid")
    }
}

pub(super) async fn list_webhooks(
    State(state): Shared,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let fault = {
        let mut st = lock(&state);
        if let Some(refused) = st.admit("list-webhooks", &headers) {
            return refused;
        }
        st.take_fault("list-webhooks")
    };
    if q.limit.is_some_and(|l| l > 50) {
        return body_error(400, "limit must not exceed 50");
    }
    let (page, limit) = (q.page.unwrap_or(1).max(1), q.limit.unwrap_or(10).max(1));
    let st2 = state.clone();
    let v = apply_fault(
        fault,
        || {
            let st = lock(&st2);
            let listed: Vec<&AuthingSimWebhook> = st
                .cfg
                .webhooks
                .iter()
                .filter(|w| !st.deleted.contains(&w.id))
                .collect();
            let total = listed.len();
            let list: Vec<Value> = listed
                .into_iter()
                .skip(((page - 1) * limit) as usize)
                .take(limit as usize)
                .map(|w| {
                    json!({"webhookId": w.id, "createdAt": "2022-09-01T00:00:00.000Z", "updatedAt": "2022-09-01T00:00:00.000Z",
                           "name": w.name, "url": "https://example.com/hooks", "enabled": w.enabled,
                           "events": w.events, "secret": "whsec-SIMULATED-WEBHOOK-SECRET", "contentType": "application/json",
                           "retryConfig": {"enabled": true, "count": 3, "delay": 10, "delayUnit": "Second"}})
                })
                .collect();
            json!({"statusCode": 200, "message": "", "data": {"totalCount": total, "list": list}})
        },
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogsReq {
    pub(super) webhook_id: String,
    pub(super) page: Option<u64>,
    pub(super) limit: Option<u64>,
}

pub(super) async fn webhook_logs(
    State(state): Shared,
    headers: HeaderMap,
    body: Option<Json<LogsReq>>,
) -> Response {
    let Some(Json(req)) = body else {
        return body_error(400, "bad request");
    };
    let latency = lock(&state).cfg.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = {
        let mut st = lock(&state);
        if let Some(refused) = st.admit("get-webhook-logs", &headers) {
            return refused;
        }
        let call = (
            Instant::now(),
            req.webhook_id.clone(),
            req.page.unwrap_or(1),
        );
        st.log_calls.push(call);
        st.take_fault("get-webhook-logs")
    };
    let page = req.page.unwrap_or(1).max(1);
    if req.limit.is_some_and(|l| l > 50) {
        return body_error(400, "limit must not exceed 50");
    }
    let limit = req.limit.unwrap_or(10).max(1);
    let st2 = state.clone();
    let render = move || lock(&st2).logs_page(&req.webhook_id, page, limit as usize);
    if fault.is_none() {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            render(),
        )
            .into_response();
    }
    let v = apply_fault(
        fault,
        move || serde_json::from_slice(&render()).unwrap_or(Value::Null),
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}
