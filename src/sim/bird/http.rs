//! The simulated Bird routes, with their faults and refusals.

use super::*;

pub(super) type Shared = State<Arc<Mutex<SimState>>>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    pub(super) limit: Option<String>,
    pub(super) page_token: Option<String>,
    pub(super) request_id: Option<String>,
}

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// An error answer, rendered when sent (small, unlike a `Response`).
pub(super) struct Reject(StatusCode, &'static str, &'static str);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

pub(super) const INVALID_TOKEN: Reject = Reject(
    StatusCode::UNPROCESSABLE_ENTITY,
    "InvalidParameters",
    "invalid pageToken",
);

pub(super) fn encode_token(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

pub(super) fn decode_token(t: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A token of the repeating fault: serves the page of `inner` and names
/// itself as the next token.
pub(super) const LOOP_PREFIX: &str = "loop.";

/// Checks path, auth and limit, records the request and takes its fault.
/// `Err` is the answer to send instead.
pub(super) fn admit(
    state: &Arc<Mutex<SimState>>,
    endpoint: &'static str,
    headers: &HeaderMap,
    org: &str,
    ws: &str,
    q: &ListQuery,
) -> Result<(Option<BirdFault>, usize), Reject> {
    let mut st = lock(state);
    st.requests.push((Instant::now(), endpoint));
    if !st.authorized(headers) {
        return Err(Reject(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid access key",
        ));
    }
    if org != st.cfg.organization_id || ws != st.cfg.workspace_id {
        return Err(Reject(
            StatusCode::NOT_FOUND,
            "NotFound",
            "workspace not found",
        ));
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(l @ 1..=100)) => l,
        Some(_) => {
            return Err(Reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "InvalidParameters",
                "limit must be between 1 and 100",
            ));
        }
    };
    Ok((st.take_fault(endpoint), limit))
}

/// Serves `body` (a list answer) through `fault`. `token` is the page token
/// the request came with; a repeating fault makes the next token loop.
pub(super) async fn serve(
    fault: Option<BirdFault>,
    mut body: Value,
    token: Option<&str>,
) -> Response {
    let looping = token.is_some_and(|t| t.starts_with(LOOP_PREFIX));
    match fault {
        None => {}
        Some(BirdFault::Status(code, retry_after)) => {
            let mut resp = error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "Fault",
                "simulated fault",
            );
            if let Some(ra) = retry_after.and_then(|r| r.parse().ok()) {
                resp.headers_mut().insert("retry-after", ra);
            }
            return resp;
        }
        Some(BirdFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(BirdFault::Truncated) => {
            let text = body.to_string();
            let half = text.len() / 2;
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                text[..half].to_string(),
            )
                .into_response();
        }
        Some(BirdFault::RepeatToken) => {
            let next = body
                .get("nextPageToken")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default();
            body["nextPageToken"] = Value::from(format!("{LOOP_PREFIX}{next}"));
        }
    }
    if looping {
        body["nextPageToken"] = Value::from(token.unwrap_or_default());
    }
    axum::Json(body).into_response()
}

/// The token a request really asks for (a looping token wraps one).
pub(super) fn effective_token(q: &ListQuery) -> Option<&str> {
    q.page_token
        .as_deref()
        .map(|t| t.strip_prefix(LOOP_PREFIX).unwrap_or(t))
        .filter(|t| !t.is_empty())
}

pub(super) fn offset_of(token: Option<&str>, kind: &str) -> Result<usize, Reject> {
    let Some(t) = token else { return Ok(0) };
    decode_token(t)
        .and_then(|s| s.strip_prefix(kind).and_then(|n| n.parse().ok()))
        .ok_or(INVALID_TOKEN)
}

pub(super) async fn list_subscriptions(
    State(state): Shared,
    Path((org, ws)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::SUBSCRIPTIONS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let offset = match offset_of(effective_token(&q), "s.") {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        let live: Vec<&BirdSimSubscription> = st
            .cfg
            .subscriptions
            .iter()
            .filter(|s| !st.deleted.contains(&s.id))
            .collect();
        let results: Vec<Value> = live
            .iter()
            .skip(offset)
            .take(limit)
            .map(|s| st.subscription_json(s))
            .collect();
        let mut body = json!({ "results": results });
        if offset + limit < live.len() {
            body["nextPageToken"] = Value::from(encode_token(&format!("s.{}", offset + limit)));
        }
        body
    };
    serve(fault, body, q.page_token.as_deref()).await
}

pub(super) async fn get_subscription(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, _) = match admit(&state, endpoint::SUBSCRIPTION, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        match st.subscription(&sub) {
            Some(s) => st.subscription_json(s),
            None => return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found"),
        }
    };
    serve(fault, body, None).await
}

pub(super) async fn list_logs(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::LOGS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    // Keyset token: the (createdAt, seq) of the last entry of the previous page.
    let after: Option<(i64, u64)> = match effective_token(&q) {
        None => None,
        Some(t) => match decode_token(t).and_then(|s| {
            let (a, b) = s.strip_prefix("l.")?.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            Some(k) => Some(k),
            None => return INVALID_TOKEN.into_response(),
        },
    };
    let body = {
        let st = lock(&state);
        if st.subscription(&sub).is_none() {
            return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found");
        }
        let now = now_ms();
        let empty = Vec::new();
        let list = st.logs.get(&sub).unwrap_or(&empty);
        // Only requests already created show.
        let visible = list.partition_point(|r| r.created_ms <= now);
        let page: Vec<&SimRequest> = if st.cfg.oldest_first {
            // Forwards from just above the token's key.
            let start = after.map_or(0, |k| list.partition_point(|r| (r.created_ms, r.seq) <= k));
            list[start.min(visible)..visible]
                .iter()
                .take(limit)
                .collect()
        } else {
            // Newest first: the (createdAt, seq)-sorted list backwards from
            // just below the token's key.
            let end = match after {
                Some(k) => list.partition_point(|r| (r.created_ms, r.seq) < k),
                None => visible,
            };
            list[..end].iter().rev().take(limit).collect()
        };
        // The bytes of `{"nextPageToken"?, "results"}` as serde_json writes them.
        let mut body = Vec::with_capacity(64 + page.len() * 192);
        body.push(b'{');
        // Like many list APIs, a full page always names a next one (which may be empty).
        if let (true, Some(last)) = (page.len() == limit, page.last()) {
            let token = encode_token(&format!("l.{}.{}", last.created_ms, last.seq));
            body.extend_from_slice(b"\"nextPageToken\":");
            let _ = serde_json::to_writer(&mut body, &token);
            body.push(b',');
        }
        body.extend_from_slice(b"\"results\":[");
        for (i, r) in page.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            r.write_json(now, &mut body);
        }
        body.extend_from_slice(b"]}");
        body
    };
    if fault.is_none()
        && !q
            .page_token
            .as_deref()
            .is_some_and(|t| t.starts_with(LOOP_PREFIX))
    {
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    serve(fault, body, q.page_token.as_deref()).await
}

pub(super) async fn log_details(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::DETAILS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (strict, refuse) = {
        let st = lock(&state);
        (st.cfg.details_strict, st.cfg.details_status)
    };
    if let Some(code) = refuse {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
        return error(status, "Refused", "simulated refusal of the details route");
    }
    if strict
        && raw_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .any(|kv| !matches!(kv.split('=').next(), Some("requestId" | "pageToken")))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameters",
            "unknown query parameter",
        );
    }
    let Some(request_id) = q.request_id.clone() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidParameters",
            "requestId is required",
        );
    };
    let offset = match offset_of(effective_token(&q), "d.") {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        if st.subscription(&sub).is_none() {
            return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found");
        }
        let now = now_ms();
        let Some(r) = st
            .logs
            .get(&sub)
            .and_then(|l| l.iter().find(|r| r.id == request_id))
        else {
            return error(StatusCode::NOT_FOUND, "NotFound", "request not found");
        };
        let n = r.happened(now);
        let rows: Vec<Value> = r
            .attempts
            .iter()
            .take(n)
            .enumerate()
            .skip(offset)
            .take(limit)
            .map(|(i, a)| {
                // An attempt still waiting for its answer shows code 1.
                let code = if a.at_ms + r.answer_delay_ms > now { 1 } else { a.code };
                json!({
                    "organizationId": st.cfg.organization_id,
                    "workspaceId": st.cfg.workspace_id,
                    "subscriptionId": sub,
                    "requestId": r.id,
                    "attemptCount": i + 1,
                    "httpStatusCode": code,
                    "executionStatus": if r.is_success(i) { "succeeded" } else { "failed" },
                    "createdAt": rfc3339(a.at_ms),
                    "updatedAt": rfc3339(a.at_ms),
                    "payloadDetails": {"response": if code == 1 { "" } else { "<!DOCTYPE html><html>simulated</html>" }},
                })
            })
            .collect();
        let mut body = json!({ "results": rows });
        if offset + limit < n {
            body["nextPageToken"] = Value::from(encode_token(&format!("d.{}", offset + limit)));
        }
        body
    };
    serve(fault, body, q.page_token.as_deref()).await
}
