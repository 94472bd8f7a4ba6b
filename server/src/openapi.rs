//! The REST API's OpenAPI 3.0 document, served at `/v1/openapi.json`.
//!
//! The schemas are made from the proto files' own descriptors (the ones gRPC reflection
//! serves), in protobuf's JSON mapping as `pbjson` writes it, so they cannot drift from
//! the messages; the routes are listed once, in [`ROUTES`]. Written here because the
//! OpenAPI crates describe Rust types by derive, and these types are generated.

use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};

/// What a route takes and answers; its verb and path are the method table's
/// (`methods::rest`), found by the operation id.
struct Route {
    operation: &'static str,
    summary: &'static str,
    /// The JSON body's message, if the route takes one.
    body: Option<&'static str>,
    /// Query and path parameters: (name, in, schema type, description).
    params: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// The answer: a message, or a media type of its own.
    answer: Answer,
}

enum Answer {
    Message(&'static str),
    Bytes,
    EventStream,
    /// JSON that is no protobuf message (described in words).
    Json(&'static str),
}

const JOB_ID: (&str, &str, &str, &str) = ("id", "path", "string", "The job's id.");
const NODE_ID: (&str, &str, &str, &str) = ("id", "path", "string", "The node's id.");
const WORKFLOW_ID: (&str, &str, &str, &str) = ("id", "path", "string", "The workflow's id.");
const CRON_NAME: (&str, &str, &str, &str) = ("name", "path", "string", "The cron's name.");
const NAMESPACE: (&str, &str, &str, &str) = (
    "namespace",
    "query",
    "string",
    "The namespace; empty or absent: default.",
);
const NAMESPACES: (&str, &str, &str, &str) = (
    "namespace",
    "query",
    "string",
    "The namespace; empty or absent: default; * every namespace the token may read.",
);

/// Every route of the REST API (see `rest::routes`).
const ROUTES: &[Route] = &[
    Route {
        operation: "SubmitJob",
        summary: "Submit a job; answered once its entry is committed and applied.",
        body: Some("SubmitJobRequest"),
        params: &[],
        answer: Answer::Message("SubmitJobResponse"),
    },
    Route {
        operation: "ListJobs",
        summary: "List jobs, a page at a time, filtered by state, name prefix or node.",
        body: None,
        params: &[NAMESPACES,
            ("state", "query", "string", "A JobState name (JOB_STATE_RUNNING, …)."),
            ("name_prefix", "query", "string", "Jobs whose name starts so."),
            ("node_id", "query", "string", "Jobs whose latest attempt ran there."),
            ("workflow_id", "query", "string", "The jobs of this workflow."),
            ("newest_first", "query", "boolean", "Newest (highest id) first; page tokens then count down."),
            ("archived", "query", "boolean", "The jobs retention collected, from the node's archive, most recently collected first."),
            ("page_size", "query", "integer", "At most LIST_PAGE_SIZE_MAX (1000); default 100."),
            ("page_token", "query", "string", "A previous answer's next_page_token."),
        ],
        answer: Answer::Message("ListJobsResponse"),
    },
    Route {
        operation: "GetJob",
        summary: "One job and its attempts.",
        body: None,
        params: &[NAMESPACE, JOB_ID],
        answer: Answer::Message("Job"),
    },
    Route {
        operation: "CancelJob",
        summary: "Cancel a job (and the jobs that depend on it).",
        body: Some("CancelJobRequest"),
        params: &[JOB_ID],
        answer: Answer::Message("CancelJobResponse"),
    },
    Route {
        operation: "GetJobOutput",
        summary: "An attempt's captured output, fetched from the node that ran it.",
        body: None,
        params: &[NAMESPACE,
            JOB_ID,
            ("attempt", "query", "integer", "The attempt's number; 0 or absent: the latest."),
            ("follow", "query", "boolean", "Keep streaming until the attempt ends."),
        ],
        answer: Answer::Bytes,
    },
    Route {
        operation: "SubmitWorkflow",
        summary: "Submit a DAG of jobs, accepted or refused as a whole.",
        body: Some("SubmitWorkflowRequest"),
        params: &[],
        answer: Answer::Message("SubmitWorkflowResponse"),
    },
    Route {
        operation: "ListWorkflows",
        summary: "Workflows, newest first, a page at a time, with their jobs' states counted.",
        body: None,
        params: &[NAMESPACES,
            ("name_prefix", "query", "string", "Workflows whose name starts so."),
            ("page_size", "query", "integer", "At most 1000; default 100."),
            ("page_token", "query", "string", "A previous answer's next_page_token."),
        ],
        answer: Answer::Message("ListWorkflowsResponse"),
    },
    Route {
        operation: "GetWorkflow",
        summary: "One workflow: its name, its jobs by key, their states counted.",
        body: None,
        params: &[NAMESPACE, WORKFLOW_ID],
        answer: Answer::Message("WorkflowView"),
    },
    Route {
        operation: "RerunWorkflow",
        summary: "Run a failed, timed-out or cancelled job of the workflow again, with every job after it.",
        body: Some("RerunWorkflowRequest"),
        params: &[WORKFLOW_ID],
        answer: Answer::Message("RerunWorkflowResponse"),
    },
    Route {
        operation: "ExplainJob",
        summary: "Why a job is where it is, and each node's verdict for a runnable one.",
        body: None,
        params: &[NAMESPACE, JOB_ID],
        answer: Answer::Message("ExplainJobResponse"),
    },
    Route {
        operation: "ListNamespaces",
        summary: "The namespaces the token may read, with their settings and what they use now.",
        body: None,
        params: &[],
        answer: Answer::Message("ListNamespacesResponse"),
    },
    Route {
        operation: "GetNamespace",
        summary: "One namespace: its settings and what it uses now.",
        body: None,
        params: &[("name", "path", "string", "The namespace's name.")],
        answer: Answer::Message("NamespaceView"),
    },
    Route {
        operation: "ListCrons",
        summary: "Every cron with its next fire.",
        body: None,
        params: &[NAMESPACES],
        answer: Answer::Message("ListCronsResponse"),
    },
    Route {
        operation: "CreateCron",
        summary: "Create a cron: a job or a workflow launched on a schedule.",
        body: Some("CreateCronRequest"),
        params: &[],
        answer: Answer::Message("CreateCronResponse"),
    },
    Route {
        operation: "GetCron",
        summary: "One cron and its recent decisions.",
        body: None,
        params: &[NAMESPACE, CRON_NAME],
        answer: Answer::Message("Cron"),
    },
    Route {
        operation: "DeleteCron",
        summary: "Delete a cron (what it launched keeps running).",
        body: None,
        params: &[NAMESPACE, CRON_NAME],
        answer: Answer::Message("DeleteCronResponse"),
    },
    Route {
        operation: "PauseCron",
        summary: "Pause a cron: no fire is owed for the paused time.",
        body: None,
        params: &[NAMESPACE, CRON_NAME],
        answer: Answer::Message("SetCronPausedResponse"),
    },
    Route {
        operation: "ResumeCron",
        summary: "Resume a paused cron.",
        body: None,
        params: &[NAMESPACE, CRON_NAME],
        answer: Answer::Message("SetCronPausedResponse"),
    },
    Route {
        operation: "DashboardHistory",
        summary: "The last hour of the node's own measurements, a sample every 10 s, for the dashboard's charts (not a gRPC method).",
        body: None,
        params: &[],
        answer: Answer::Json("An object: sample_ms, and samples (oldest first), each with at_ms, jobs_started_per_s, jobs_finished_per_s, queue_depth, queue_wait_p50_ms, queue_wait_p99_ms, committed_per_s, fsyncs_per_s, fsync_p99_us and nodes (id, address, running, slots)."),
    },
    Route {
        operation: "Status",
        summary: "Raft's view from the node asked: leader, term, indexes, members.",
        body: None,
        params: &[],
        answer: Answer::Message("StatusResponse"),
    },
    Route {
        operation: "ListNodes",
        summary: "Every node: liveness, tags, capacity, load.",
        body: None,
        params: &[],
        answer: Answer::Message("ListNodesResponse"),
    },
    Route {
        operation: "RemoveNode",
        summary: "Retire a node and remove it from Raft's membership.",
        body: None,
        params: &[NODE_ID],
        answer: Answer::Message("RemoveNodeResponse"),
    },
    Route {
        operation: "SetNodeTags",
        summary: "Set and unset a node's tags at run time.",
        body: Some("SetNodeTagsRequest"),
        params: &[NODE_ID],
        answer: Answer::Message("SetNodeTagsResponse"),
    },
    Route {
        operation: "ReadLog",
        summary: "Entries of the node's log with what each decided, its checkpoints and the snapshots it holds.",
        body: None,
        params: &[
            ("from_index", "query", "string", "The first index; 0 or absent: the last `limit` entries."),
            ("limit", "query", "integer", "At most LOG_READ_LIMIT_MAX (1000); default 50."),
        ],
        answer: Answer::Message("ReadLogResponse"),
    },
    Route {
        operation: "TriggerSnapshot",
        summary: "Write a snapshot of the node's state now.",
        body: None,
        params: &[],
        answer: Answer::Message("TriggerSnapshotResponse"),
    },
    Route {
        operation: "WatchEvents",
        summary: "Server-Sent Events: every applied change, in log order, from a position the node holds, then live. Each event's id is INDEX.SEQ; Last-Event-ID resumes after it.",
        body: None,
        params: &[NAMESPACES,
            ("from_index", "query", "string", "Start at this log index; 0: the earliest held; absent: only new events."),
            ("from_seq", "query", "integer", "The place within from_index's entry."),
            ("kinds", "query", "string", "Comma-separated kinds (job_submitted, job_finished, node_failed, …)."),
            ("job_id", "query", "string", "Only this job's events."),
            ("workflow_id", "query", "string", "Only this workflow's events."),
            ("node_id", "query", "string", "Only this node's events."),
            ("stop_at_applied", "query", "boolean", "End after the events applied when the call came."),
        ],
        answer: Answer::EventStream,
    },
];

/// The document (made once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let fds = FileDescriptorSet::decode(crate::api::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set was encoded by the build script");
    let mut schemas = Map::new();
    for file in fds.file.iter().filter(|f| f.package() == "cathedral.v1") {
        for m in &file.message_type {
            message_schema(m, &mut schemas);
        }
        for e in &file.enum_type {
            let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
            schemas.insert(e.name().into(), json!({"type": "string", "enum": names}));
        }
    }
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "string", "description": "The gRPC status code's name (INVALID_ARGUMENT, NOT_FOUND, …)."},
                "status": {"type": "integer", "description": "The HTTP status."},
                "message": {"type": "string"}
            }
        }}}),
    );
    let mut paths = Map::new();
    for r in ROUTES {
        let route = crate::methods::rest(r.operation).expect("every route is in the method table");
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object");
        entry.insert(route.verb.into(), operation(r));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cathedral REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON over HTTP, mirroring the gRPC API (cathedral.v1). Messages follow protobuf's JSON mapping: field names as in the proto files, 64-bit integers as strings, enums by name. With access control on, send `Authorization: Bearer SECRET`."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"token": []}]
    })
}

fn operation(r: &Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), r.operation.into());
    op.insert("summary".into(), r.summary.into());
    let params: Vec<Value> = r
        .params
        .iter()
        .map(|(name, within, ty, description)| {
            json!({
                "name": name,
                "in": within,
                "required": *within == "path",
                "description": description,
                "schema": {"type": ty},
            })
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), params.into());
    }
    if let Some(b) = r.body {
        op.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/json": {"schema": reference(b)}}}),
        );
    }
    let ok = match &r.answer {
        Answer::Message(m) => json!({
            "description": "OK",
            "content": {"application/json": {"schema": reference(m)}}
        }),
        Answer::Bytes => json!({
            "description": "The output's bytes, streamed.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }),
        Answer::Json(what) => json!({
            "description": what,
            "content": {"application/json": {"schema": {"type": "object"}}}
        }),
        Answer::EventStream => json!({
            "description": "A text/event-stream; each event's data is a ClusterEvent as JSON (an `error` event ends a stream that can go no further).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}
        }),
    };
    let error = json!({
        "description": "Refused: the gRPC code's name and the HTTP status it maps to.",
        "content": {"application/json": {"schema": reference("Error")}}
    });
    op.insert("responses".into(), json!({"200": ok, "default": error}));
    Value::Object(op)
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schema of message `m` (and of the messages nested in it, by their full dotted
/// name past the package); map entries become objects with `additionalProperties`.
fn message_schema(m: &DescriptorProto, schemas: &mut Map<String, Value>) {
    let mut properties = Map::new();
    for f in &m.field {
        let mut schema = match f.r#type() {
            Type::Message => {
                let name = short(f.type_name());
                match m.nested_type.iter().find(|n| {
                    n.options.as_ref().is_some_and(|o| o.map_entry()) && name.ends_with(n.name())
                }) {
                    Some(entry) => {
                        let value = entry
                            .field
                            .iter()
                            .find(|v| v.number() == 2)
                            .expect("a map entry has a value");
                        properties.insert(
                            f.name().into(),
                            json!({"type": "object", "additionalProperties": scalar(value)}),
                        );
                        continue;
                    }
                    None => reference(&name),
                }
            }
            _ => scalar(f),
        };
        if f.label() == Label::Repeated {
            schema = json!({"type": "array", "items": schema});
        }
        properties.insert(f.name().into(), schema);
    }
    schemas.insert(
        m.name().into(),
        json!({"type": "object", "properties": properties}),
    );
}

/// A field's schema in the JSON mapping, other than a message or map.
fn scalar(f: &prost_types::FieldDescriptorProto) -> Value {
    match f.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Uint32 | Type::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Type::Uint64 | Type::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => reference(&short(f.type_name())),
        Type::Message | Type::Group => reference(&short(f.type_name())),
    }
}

/// `.cathedral.v1.Job` → `Job`.
fn short(type_name: &str) -> String {
    type_name
        .trim_start_matches(".cathedral.v1.")
        .rsplit('.')
        .next()
        .unwrap_or(type_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_a_route_names_has_a_schema_and_every_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(at) = rest.find("#/components/schemas/") {
            rest = &rest[at + "#/components/schemas/".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                schemas.contains_key(&name),
                "{name} is referenced and missing"
            );
            seen += 1;
        }
        assert!(seen > 20, "{seen} references");
        let job = &schemas["Job"]["properties"];
        assert_eq!(job["id"]["format"], "uint64");
        assert_eq!(job["state"]["$ref"], "#/components/schemas/JobState");
        assert_eq!(schemas["JobSpec"]["properties"]["env"]["type"], "object");
        assert_eq!(job["attempts"]["type"], "array");
    }

    #[test]
    fn every_route_of_the_method_table_is_described_once() {
        let described: Vec<&str> = ROUTES.iter().map(|r| r.operation).collect();
        let mut table: Vec<&str> = crate::methods::rest_routes()
            .map(|(_, r)| r.operation)
            .collect();
        let mut sorted = described.clone();
        sorted.sort_unstable();
        table.sort_unstable();
        assert_eq!(sorted, table);
        let doc = document();
        for (_, r) in crate::methods::rest_routes() {
            assert_eq!(
                doc["paths"][r.path][r.verb]["operationId"], r.operation,
                "{} {}",
                r.verb, r.path
            );
        }
    }
}
