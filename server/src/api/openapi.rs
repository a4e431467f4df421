//! The OpenAPI 3.1 description of the API, served at `/api/openapi.json`. A test
//! checks that it lists exactly the routes the router serves.

use axum::Json;
use serde_json::{Value, json};

fn error_responses() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "409": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"},
        "500": {"$ref": "#/components/responses/Error"}
    })
}

fn op(summary: &str, ok: &str, ok_schema: Value) -> Value {
    let mut responses = error_responses();
    responses[ok] =
        json!({"description": summary, "content": {"application/json": {"schema": ok_schema}}});
    json!({"summary": summary, "responses": responses})
}

fn with_body(mut op: Value, schema: Value) -> Value {
    op["requestBody"] =
        json!({"required": true, "content": {"application/json": {"schema": schema}}});
    op
}

/// A body that is `{"source", "filename"?}` or the workflow file itself.
fn with_source_body(mut op: Value) -> Value {
    let file = json!({"type": "string", "description": "the workflow file itself (YAML)"});
    op["requestBody"] = json!({"required": true, "content": {
        "application/json": {"schema": {"oneOf": [r("Source"), {"type": "object", "description": "a JSON workflow (an object without `source`)"}]}},
        "application/yaml": {"schema": file},
        "text/yaml": {"schema": file},
        "text/plain": {"schema": file},
    }});
    op["parameters"] = json!([{"name": "filename", "in": "query", "required": false,
        "description": "the file name (its extension picks YAML or JSON) when the body is the file itself",
        "schema": {"type": "string"}}]);
    op
}

fn id_param(name: &str) -> Value {
    json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn list(name: &str) -> Value {
    json!({"type": "array", "items": r(name)})
}

pub fn spec() -> Value {
    let mut create_wf = with_source_body(op("Store a workflow", "201", r("Workflow")));
    create_wf["responses"]["422"] = json!({"$ref": "#/components/responses/Invalid"});
    let mut start = with_body(
        op("Start an execution", "201", r("Execution")),
        r("StartExecution"),
    );
    start["responses"]["422"] = json!({"$ref": "#/components/responses/Invalid"});
    let mut events = op(
        "Events of an execution (JSON, or Server-Sent Events with Accept: text/event-stream)",
        "200",
        list("Event"),
    );
    events["responses"]["200"]["content"]["text/event-stream"] =
        json!({"schema": {"type": "string"}});
    events["parameters"] = json!([
        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "after", "in": "query", "schema": {"type": "integer"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer"}}
    ]);
    let mut list_exec = op(
        "List executions, newest first",
        "200",
        list("ExecutionSummary"),
    );
    list_exec["parameters"] = json!([
        {"name": "state", "in": "query", "schema": r("ExecutionState")},
        {"name": "workflowId", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    ]);
    let mut import = with_body(
        op(
            "Import a checkpoint file as a new execution",
            "201",
            r("Execution"),
        ),
        r("CheckpointFile"),
    );
    import["parameters"] =
        json!([{"name": "resume", "in": "query", "schema": {"type": "boolean", "default": true}}]);
    let mut export = op("Export a checkpoint file", "200", r("CheckpointFile"));
    export["parameters"] = id_param("id");
    let mut pause = op(
        "Pause (in-flight steps finish unless now=true)",
        "202",
        r("Execution"),
    );
    pause["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"now": {"type": "boolean"}}}}}});
    pause["parameters"] = id_param("id");
    let with_id = |mut o: Value| {
        o["parameters"] = id_param("id");
        o
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ax",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable multi-agent LLM workflows: validate, store and run workflows, control executions, checkpoints and live events. Errors are {\"error\": {\"code\", \"message\"}}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required when the server binds a non-loopback address (AX_TOKEN)."}},
            "responses": {
                "Error": {"description": "An error", "content": {"application/json": {"schema": r("Error")}}},
                "Invalid": {"description": "The workflow is not valid", "content": {"application/json": {"schema": r("Error")}}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                    "report": r("Report")}},
                "Source": {"type": "object", "required": ["source"], "properties": {"source": {"type": "string"}, "filename": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["code", "message", "line", "column", "step"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "line": {"type": ["integer", "null"]}, "column": {"type": ["integer", "null"]}, "step": {"type": ["string", "null"]}}},
                "Report": {"type": "object", "required": ["valid", "errors", "warnings"], "properties": {
                    "valid": {"type": "boolean"}, "errors": list("Problem"), "warnings": list("Problem"),
                    "order": {"type": "array", "items": {"type": "string"}},
                    "levels": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}},
                "Workflow": {"type": "object", "required": ["id", "name", "version", "hash", "stepCount", "createdAt"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
                    "description": {"type": "string"}, "hash": {"type": "string"}, "stepCount": {"type": "integer"},
                    "createdAt": {"type": "integer"}, "source": {"type": "string"}, "format": {"type": "string"}}},
                "ExecutionState": {"type": "string", "enum": ["idle", "validating", "running", "paused", "completed", "failed", "cancelled", "interrupted"]},
                "StepState": {"type": "string", "enum": ["pending", "ready", "running", "waiting-retry", "completed", "failed", "skipped", "cancelled"]},
                "StartExecution": {"type": "object", "properties": {
                    "workflowId": {"type": "string"}, "source": {"type": "string"}, "filename": {"type": "string"},
                    "inputs": {"type": "object"}}},
                "Progress": {"type": "object", "properties": {"total": {"type": "integer"}, "completed": {"type": "integer"},
                    "failed": {"type": "integer"}, "running": {"type": "integer"}, "skipped": {"type": "integer"}}},
                "ExecutionSummary": {"type": "object", "required": ["id", "workflowId", "workflow", "state", "createdAt"], "properties": {
                    "id": {"type": "string"}, "workflowId": {"type": "string"}, "workflow": {"type": "string"},
                    "state": r("ExecutionState"), "reason": {"type": "string"}, "createdAt": {"type": "integer"},
                    "startedAt": {"type": "integer"}, "finishedAt": {"type": "integer"}, "inputs": {"type": "object"},
                    "progress": r("Progress")}},
                "Step": {"type": "object", "required": ["key", "state", "attempts"], "properties": {
                    "key": {"type": "string"}, "agent": {"type": "string"}, "state": r("StepState"), "attempts": {"type": "integer"},
                    "provider": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]},
                    "output": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
                    "tokensIn": {"type": "integer"}, "tokensOut": {"type": "integer"}, "costUsd": {"type": "number"},
                    "latencyMs": {"type": "integer"}, "dependencies": {"type": "array", "items": {"type": "string"}}}},
                "Execution": {"allOf": [r("ExecutionSummary"), {"type": "object", "properties": {"steps": list("Step")}}]},
                "Checkpoint": {"type": "object", "required": ["id", "executionId", "createdAt", "completedSteps"], "properties": {
                    "id": {"type": "string"}, "executionId": {"type": "string"}, "createdAt": {"type": "integer"},
                    "state": r("ExecutionState"), "completedSteps": {"type": "array", "items": {"type": "string"}}}},
                "CheckpointFile": {"type": "object", "required": ["format", "version", "workflow", "checkpoint", "outputs"], "properties": {
                    "format": {"const": "ax-checkpoint"}, "version": {"type": "integer"},
                    "workflow": {"type": "object", "required": ["name", "source"], "properties": {"name": {"type": "string"}, "source": {"type": "string"}, "filename": {"type": "string"}}},
                    "checkpoint": {"type": "object"}, "outputs": {"type": "object", "additionalProperties": {"type": "string"}},
                    "origin": {"type": "string"}, "executionId": {"type": "string"}}},
                "Event": {"type": "object", "required": ["id", "executionId", "at", "type"], "properties": {
                    "id": {"type": "integer"}, "executionId": {"type": "string"}, "at": {"type": "integer"},
                    "type": {"type": "string", "enum": ["execution", "step", "checkpoint", "log"]},
                    "step": {"type": "string"}, "state": {"type": "string"}, "attempt": {"type": "integer"},
                    "message": {"type": "string"}, "data": {}}}
            }
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/healthz": {"get": op("Ready when the database is open", "200", json!({"type": "object", "properties": {"status": {"const": "ok"}, "version": {"type": "string"}}}))},
            "/api/openapi.json": {"get": op("This document", "200", json!({"type": "object"}))},
            "/api/validate": {"post": with_source_body(op("Validate a workflow text", "200", r("Report")))},
            "/api/workflows": {"get": op("List workflows, newest first", "200", list("Workflow")), "post": create_wf},
            "/api/workflows/{id}": {
                "get": with_id(op("Get a workflow with its source", "200", r("Workflow"))),
                "delete": with_id(op("Delete a workflow and its finished executions", "204", json!({})))},
            "/api/executions": {"get": list_exec, "post": start},
            "/api/executions/{id}": {"get": with_id(op("Get an execution with its steps", "200", r("Execution")))},
            "/api/executions/{id}/pause": {"post": pause},
            "/api/executions/{id}/resume": {"post": with_id(op("Resume a paused, failed or interrupted execution", "202", r("Execution")))},
            "/api/executions/{id}/cancel": {"post": with_id(op("Cancel an execution", "202", r("Execution")))},
            "/api/executions/{id}/checkpoints": {"get": with_id(op("Restore points, newest first", "200", list("Checkpoint")))},
            "/api/executions/{id}/events": {"get": events},
            "/api/checkpoints/{id}/restore": {"post": with_id(op("Rewind the execution to this checkpoint and continue", "202", r("Execution")))},
            "/api/checkpoints/{id}/export": {"get": export},
            "/api/checkpoints/import": {"post": import}
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
