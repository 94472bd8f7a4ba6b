//! The REST API: JSON over HTTP on the HTTP port, mirroring the gRPC API.
//!
//! Every call goes through the gRPC service's own method (the `Api` value behind
//! `JobService` and `ClusterService`), so bounds, errors, forwarding to the leader and
//! at-most-once request ids are the gRPC API's, not a copy of them. Messages are the
//! generated ones in protobuf's canonical JSON mapping (`pbjson`): field names as in the
//! proto file, 64-bit integers as strings (numbers are accepted too), enums by name.
//! Tokens are checked as for the gRPC method the route mirrors (`authorization: Bearer`).
//! Errors are `{"error": {"code": "INVALID_ARGUMENT", "status": 400, "message": …}}`.
//! The routes and their shapes are served as OpenAPI at `/v1/openapi.json` (see
//! `openapi`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use crate::api::v1 as pb;
use crate::api::v1::cluster_service_server::ClusterService;
use crate::api::v1::job_service_server::JobService;
use crate::auth::{self, code_name};
use crate::error::ServerError;
use crate::node::Node;
use crate::service::Api;

/// The routes under `/v1`.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/output", get(job_output))
        .route("/v1/workflows", post(submit_workflow).get(list_workflows))
        .route("/v1/workflows/{id}", get(get_workflow))
        .route("/v1/workflows/{id}/rerun", post(rerun_workflow))
        .route("/v1/jobs/{id}/explain", get(explain_job))
        .route("/v1/namespaces", get(list_namespaces))
        .route("/v1/namespaces/{name}", get(get_namespace))
        .route("/v1/crons", get(list_crons).post(create_cron))
        .route("/v1/crons/{name}", get(get_cron).delete(delete_cron))
        .route("/v1/crons/{name}/pause", post(pause_cron))
        .route("/v1/crons/{name}/resume", post(resume_cron))
        .route("/v1/dashboard/history", get(dashboard_history))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", axum::routing::delete(remove_node))
        .route("/v1/nodes/{id}/tags", post(set_node_tags))
        .route("/v1/snapshots", post(trigger_snapshot))
        .route("/v1/log", get(read_log))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
}

/// The answer to a path under `/v1` that names no route.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    error(&Status::not_found(format!("no such route: {}", uri.path())))
}

/// The HTTP status for a gRPC code (the mapping gRPC-gateway uses).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("in range"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A refused call as JSON.
pub fn error(s: &Status) -> Response {
    let status = http_status(s.code());
    let body = serde_json::json!({"error": {
        "code": code_name(s.code()),
        "status": status.as_u16(),
        "message": s.message(),
    }});
    (status, json_header(), body.to_string()).into_response()
}

fn json_header() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "application/json")]
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => (StatusCode::OK, json_header(), s).into_response(),
        Err(e) => error(&Status::internal(format!("encoding the answer: {e}"))),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Status {
    ServerError::invalid(field, reason).into()
}

/// A request body: JSON of message `T` (empty: every field at its default), at most
/// `REQUEST_BYTES_MAX` bytes as over gRPC.
async fn body<T: DeserializeOwned + Default>(body: Body) -> Result<T, Status> {
    let bytes = axum::body::to_bytes(body, crate::REQUEST_BYTES_MAX)
        .await
        .map_err(|_| {
            invalid(
                "body",
                format!(
                    "larger than REQUEST_BYTES_MAX ({} bytes) or cut short",
                    crate::REQUEST_BYTES_MAX
                ),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid("body", format!("not the JSON expected: {e}")))
}

/// Query parameters as message `T`: each value is a string, which the JSON mapping
/// accepts for numbers and enums too. Unknown names are refused.
fn query<T: DeserializeOwned>(params: HashMap<String, String>) -> Result<T, Status> {
    let object: serde_json::Map<String, serde_json::Value> = params
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| invalid("query", e.to_string()))
}

fn id(raw: &str, what: &str) -> Result<u64, Status> {
    raw.parse()
        .map_err(|_| invalid(what, format!("{raw:?} is not an unsigned 64-bit integer")))
}

/// A body whose id `field` must be the path's: absent (0) takes the path's, another is
/// refused.
fn path_id_in_body<T>(
    path_id: Result<u64, Status>,
    body: Result<T, Status>,
    field: &str,
    id_of: impl Fn(&mut T) -> &mut u64,
) -> Result<T, Status> {
    let (want, mut r) = (path_id?, body?);
    let got = id_of(&mut r);
    match *got {
        0 => *got = want,
        n if n != want => {
            return Err(invalid(
                field,
                format!("the body names {n} and the path {want}"),
            ))
        }
        _ => {}
    }
    Ok(r)
}

/// Counts a REST call under the label of the gRPC method it mirrors.
fn count(path: &'static str, started: Instant, code: Code) {
    crate::metrics::api_call(
        crate::metrics::method_label(path),
        code_name(code),
        started.elapsed(),
    );
}

/// One call: the token check of the gRPC method at `path`, the method itself, the API
/// metrics, and the answer as JSON.
async fn call<Req, Resp, F, Fut>(
    node: &Arc<Node>,
    headers: &HeaderMap,
    path: &'static str,
    request: Result<Req, Status>,
    method: F,
) -> Response
where
    Resp: Serialize,
    F: FnOnce(Api, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let started = Instant::now();
    let result = async {
        let caller = auth::authorize_token(node, auth::need(path), path, headers)?;
        // Bad input is refused before any wait.
        let request = request?;
        let caller = auth::caught_up(node, path, headers, caller).await?;
        let mut r = tonic::Request::new(request);
        r.extensions_mut().insert(caller);
        method(Api { node: node.clone() }, r).await
    }
    .await;
    count(
        path,
        started,
        result.as_ref().map_or_else(Status::code, |_| Code::Ok),
    );
    match result {
        Ok(r) => json(&r.into_inner()),
        Err(s) => error(&s),
    }
}

async fn submit_job(State(node): State<Arc<Node>>, headers: HeaderMap, b: Body) -> Response {
    let req = body::<pb::SubmitJobRequest>(b).await;
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/SubmitJob",
        req,
        |api, r| async move { api.submit_job(r).await },
    )
    .await
}

async fn submit_workflow(State(node): State<Arc<Node>>, headers: HeaderMap, b: Body) -> Response {
    let req = body::<pb::SubmitWorkflowRequest>(b).await;
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/SubmitWorkflow",
        req,
        |api, r| async move { api.submit_workflow(r).await },
    )
    .await
}

/// Takes the boolean query parameter `name` out of `params` (`true` or `false`).
fn flag(params: &mut HashMap<String, String>, name: &str) -> Result<bool, Status> {
    match params.remove(name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(invalid(name, format!("{v:?} is not true or false"))),
    }
}

async fn list_jobs(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(mut params): Query<HashMap<String, String>>,
) -> Response {
    let req = flag(&mut params, "newest_first").and_then(|newest_first| {
        let archived = flag(&mut params, "archived")?;
        query::<pb::ListJobsRequest>(params).map(|r| pb::ListJobsRequest {
            newest_first,
            archived,
            ..r
        })
    });
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/ListJobs",
        req,
        |api, r| async move { api.list_jobs(r).await },
    )
    .await
}

async fn get_job(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let namespace = namespace_param(&params);
    let req = id(&raw, "job_id").map(|job_id| pb::GetJobRequest { job_id, namespace });
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/GetJob",
        req,
        |api, r| async move { api.get_job(r).await },
    )
    .await
}

async fn cancel_job(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    b: Body,
) -> Response {
    let req = path_id_in_body(
        id(&raw, "job_id"),
        body::<pb::CancelJobRequest>(b).await,
        "job_id",
        |r| &mut r.job_id,
    );
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/CancelJob",
        req,
        |api, r| async move { api.cancel_job(r).await },
    )
    .await
}

/// An attempt's output as bytes (`application/octet-stream`), streamed; with
/// `follow=true`, until the attempt ends.
async fn job_output(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let path = "/cathedral.v1.JobService/GetJobOutput";
    let started = Instant::now();
    let result = async {
        let caller = auth::authorize_token(&node, auth::need(path), path, &headers)?;
        let mut req = pb::GetJobOutputRequest {
            job_id: id(&raw, "job_id")?,
            ..Default::default()
        };
        for (k, v) in &params {
            match k.as_str() {
                "attempt" => {
                    req.attempt = v.parse().map_err(|_| {
                        invalid("attempt", format!("{v:?} is not an attempt number"))
                    })?
                }
                "follow" => {
                    req.follow = v
                        .parse()
                        .map_err(|_| invalid("follow", format!("{v:?} is not true or false")))?
                }
                "namespace" => req.namespace = v.clone(),
                other => return Err(invalid("query", format!("unknown parameter {other:?}"))),
            }
        }
        let caller = auth::caught_up(&node, path, &headers, caller).await?;
        let mut r = tonic::Request::new(req);
        r.extensions_mut().insert(caller);
        Api { node: node.clone() }.get_job_output(r).await
    }
    .await;
    count(
        path,
        started,
        result.as_ref().map_or_else(Status::code, |_| Code::Ok),
    );
    match result {
        Ok(stream) => {
            use tokio_stream::StreamExt;
            let mut stream = stream.into_inner();
            // The first chunk decides the status: an error before any byte (no output, not
            // found) is answered as one, not as a 200 whose body then breaks off.
            let first = match stream.next().await {
                Some(Err(s)) => return error(&s),
                first => first,
            };
            let bytes = tokio_stream::iter(first)
                .chain(stream)
                .map(|chunk| chunk.map(|c| axum::body::Bytes::from(c.data)));
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from_stream(bytes),
            )
                .into_response()
        }
        Err(s) => error(&s),
    }
}

async fn cluster_status(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/Status",
        Ok(pb::StatusRequest {}),
        |api, r| async move { api.status(r).await },
    )
    .await
}

async fn list_nodes(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/ListNodes",
        Ok(pb::ListNodesRequest {}),
        |api, r| async move { api.list_nodes(r).await },
    )
    .await
}

async fn remove_node(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let req = id(&raw, "node_id").map(|node_id| pb::RemoveNodeRequest { node_id });
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/RemoveNode",
        req,
        |api, r| async move { api.remove_node(r).await },
    )
    .await
}

async fn set_node_tags(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    b: Body,
) -> Response {
    let req = path_id_in_body(
        id(&raw, "node_id"),
        body::<pb::SetNodeTagsRequest>(b).await,
        "node_id",
        |r| &mut r.node_id,
    );
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/SetNodeTags",
        req,
        |api, r| async move { api.set_node_tags(r).await },
    )
    .await
}

async fn read_log(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = query::<pb::ReadLogRequest>(params);
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/ReadLog",
        req,
        |api, r| async move { api.read_log(r).await },
    )
    .await
}

async fn trigger_snapshot(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    call(
        &node,
        &headers,
        "/cathedral.v1.ClusterService/TriggerSnapshot",
        Ok(pb::TriggerSnapshotRequest {}),
        |api, r| async move { api.trigger_snapshot(r).await },
    )
    .await
}

/// `GET /v1/events`: Server-Sent Events, one per cluster event; `id:` is `INDEX.SEQ`, so
/// a reconnecting client's `Last-Event-ID` resumes right after the last one it got.
async fn events(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    use tokio_stream::StreamExt;
    let path = "/cathedral.v1.JobService/WatchEvents";
    let started = Instant::now();
    let result = async {
        let caller = auth::authorize_token(&node, auth::need(path), path, &headers)?;
        let mut watch = events_query(&params, &headers)?;
        let caller = auth::caught_up(&node, path, &headers, caller).await?;
        if let Some(ns) = &watch.filter.namespace {
            caller.require(cathedral_consensus::namespace::Capability::Read, ns)?;
        }
        // A token scoped to namespaces sees the job events of those it may read.
        watch.filter.readable = caller.grants.clone();
        crate::events::watch(&node, watch).map_err(Status::from)
    }
    .await;
    count(
        path,
        started,
        result.as_ref().map_or_else(Status::code, |_| Code::Ok),
    );
    let rx = match result {
        Ok(rx) => rx,
        Err(s) => return error(&s),
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| {
        Ok::<_, std::convert::Infallible>(match r {
            Ok(e) => Sse::default()
                .id(format!("{}.{}", e.index, e.seq))
                .event(e.kind.name())
                // The gRPC message in the JSON mapping, as every REST answer.
                .data(serde_json::to_string(&crate::events::to_pb(e)).unwrap_or_default()),
            Err(err) => {
                let s = Status::from(err);
                Sse::default().event("error").data(
                    serde_json::json!({"code": code_name(s.code()), "message": s.message()})
                        .to_string(),
                )
            }
        })
    });
    axum::response::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The position and filter of `/v1/events`: `from_index` (and `from_seq`; 0: the earliest
/// held), or the `Last-Event-ID` header (resume after it); `kinds` comma-separated;
/// `job_id`, `workflow_id`, `node_id`; `namespace` (job events of one namespace);
/// `stop_at_applied`.
fn events_query(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<crate::events::Watch, Status> {
    let mut filter = crate::events::Filter::default();
    let mut stop = false;
    let (mut from_index, mut from_seq) = (None, 0u32);
    for (k, v) in params {
        match k.as_str() {
            "from_index" => from_index = Some(id(v, "from_index")?),
            "from_seq" => {
                from_seq = v
                    .parse()
                    .map_err(|_| invalid("from_seq", format!("{v:?} is not a number")))?
            }
            "kinds" => {
                let names: Vec<&str> = v.split(',').collect();
                filter = filter.with_kinds(&names)?;
            }
            "job_id" => filter.job = Some(id(v, "job_id")?),
            "workflow_id" => filter.workflow = Some(id(v, "workflow_id")?),
            "node_id" => filter.node = Some(id(v, "node_id")?),
            "namespace" if v.is_empty() || v == "*" => filter.namespace = None,
            "namespace" => {
                cathedral_consensus::namespace::check_name(v)
                    .map_err(|e| Status::from(crate::error::ServerError::from(e)))?;
                filter.namespace = Some(v.clone());
            }
            "stop_at_applied" => {
                stop = v.parse().map_err(|_| {
                    invalid("stop_at_applied", format!("{v:?} is not true or false"))
                })?
            }
            other => return Err(invalid("query", format!("unknown parameter {other:?}"))),
        }
    }
    let mut from = from_index.map(|i| (i, from_seq));
    if let Some(last) = headers.get("last-event-id") {
        let parsed = last
            .to_str()
            .ok()
            .and_then(|s| s.split_once('.'))
            .and_then(|(i, s)| Some((i.parse::<u64>().ok()?, s.parse::<u32>().ok()?)));
        let (i, s) = parsed
            .ok_or_else(|| invalid("Last-Event-ID", "expected INDEX.SEQ, as this API sends"))?;
        from = Some((i, s + 1));
    }
    Ok(crate::events::Watch {
        from,
        filter,
        stop_at_applied: stop,
    })
}

async fn openapi() -> Response {
    (json_header(), crate::openapi::document().to_string()).into_response()
}

async fn list_workflows(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/ListWorkflows",
        query::<pb::ListWorkflowsRequest>(params),
        |api, r| async move { api.list_workflows(r).await },
    )
    .await
}

async fn get_workflow(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let namespace = namespace_param(&params);
    let req = id(&raw, "workflow_id").map(|workflow_id| pb::GetWorkflowRequest {
        workflow_id,
        namespace,
    });
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/GetWorkflow",
        req,
        |api, r| async move { api.get_workflow(r).await },
    )
    .await
}

async fn rerun_workflow(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    b: Body,
) -> Response {
    let req = path_id_in_body(
        id(&raw, "workflow_id"),
        body::<pb::RerunWorkflowRequest>(b).await,
        "workflow_id",
        |r| &mut r.workflow_id,
    );
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/RerunWorkflow",
        req,
        |api, r| async move { api.rerun_workflow(r).await },
    )
    .await
}

async fn explain_job(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let namespace = namespace_param(&params);
    let req = id(&raw, "job_id").map(|job_id| pb::ExplainJobRequest { job_id, namespace });
    call(
        &node,
        &headers,
        "/cathedral.v1.JobService/ExplainJob",
        req,
        |api, r| async move { api.explain_job(r).await },
    )
    .await
}

async fn list_namespaces(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    use crate::api::v1::namespace_service_server::NamespaceService;
    call(
        &node,
        &headers,
        "/cathedral.v1.NamespaceService/ListNamespaces",
        Ok(pb::ListNamespacesRequest {}),
        |api, r| async move { api.list_namespaces(r).await },
    )
    .await
}

async fn get_namespace(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    use crate::api::v1::namespace_service_server::NamespaceService;
    call(
        &node,
        &headers,
        "/cathedral.v1.NamespaceService/GetNamespace",
        Ok(pb::GetNamespaceRequest { name }),
        |api, r| async move { api.get_namespace(r).await },
    )
    .await
}

/// The `namespace` query parameter (empty: `default`).
fn namespace_param(params: &HashMap<String, String>) -> String {
    params.get("namespace").cloned().unwrap_or_default()
}

async fn list_crons(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    use crate::api::v1::cron_service_server::CronService;
    call(
        &node,
        &headers,
        "/cathedral.v1.CronService/ListCrons",
        Ok(pb::ListCronsRequest {
            namespace: namespace_param(&params),
        }),
        |api, r| async move { api.list_crons(r).await },
    )
    .await
}

async fn create_cron(State(node): State<Arc<Node>>, headers: HeaderMap, b: Body) -> Response {
    use crate::api::v1::cron_service_server::CronService;
    call(
        &node,
        &headers,
        "/cathedral.v1.CronService/CreateCron",
        body::<pb::CreateCronRequest>(b).await,
        |api, r| async move { api.create_cron(r).await },
    )
    .await
}

async fn get_cron(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    use crate::api::v1::cron_service_server::CronService;
    call(
        &node,
        &headers,
        "/cathedral.v1.CronService/GetCron",
        Ok(pb::GetCronRequest {
            name,
            namespace: namespace_param(&params),
        }),
        |api, r| async move { api.get_cron(r).await },
    )
    .await
}

async fn delete_cron(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    use crate::api::v1::cron_service_server::CronService;
    call(
        &node,
        &headers,
        "/cathedral.v1.CronService/DeleteCron",
        Ok(pb::DeleteCronRequest {
            name,
            request_id: String::new(),
            namespace: namespace_param(&params),
        }),
        |api, r| async move { api.delete_cron(r).await },
    )
    .await
}

/// Pauses or resumes cron `name` of namespace `namespace`.
async fn set_cron_paused(
    node: Arc<Node>,
    headers: HeaderMap,
    name: String,
    namespace: String,
    paused: bool,
) -> Response {
    use crate::api::v1::cron_service_server::CronService;
    call(
        &node,
        &headers,
        "/cathedral.v1.CronService/SetCronPaused",
        Ok(pb::SetCronPausedRequest {
            name,
            paused,
            request_id: String::new(),
            namespace,
        }),
        |api, r| async move { api.set_cron_paused(r).await },
    )
    .await
}

async fn pause_cron(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    set_cron_paused(node, headers, name, namespace_param(&params), true).await
}

async fn resume_cron(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    set_cron_paused(node, headers, name, namespace_param(&params), false).await
}

/// The last hour of this node's own measurements, for the dashboard's charts (not a gRPC
/// method: see `history`). Needs what the cluster's status needs.
async fn dashboard_history(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let path = "/cathedral.v1.ClusterService/Status";
    if let Err(s) = auth::authorize_token(&node, auth::need(path), path, &headers) {
        return error(&s);
    }
    axum::Json(serde_json::json!({
        "sample_ms": crate::history::HISTORY_SAMPLE_MS,
        "samples": crate::history::samples(),
    }))
    .into_response()
}
