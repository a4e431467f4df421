//! Events: a JSON list, or a Server-Sent Events stream (stored events after
//! `Last-Event-ID`/`after`, then live ones, ending after the final state). The
//! stream also carries `step-delta` events, the text of running steps as the
//! provider streams it, and `step-waiting` events, an attempt waiting for a
//! provider's capacity before its call: live only, never stored, so they have
//! no id.

use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::model::{ErrorBody, Event, EventsHeaders, EventsQuery};
use crate::engine::StepDelta;
use crate::store::EventRecord;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The events of an execution: a JSON list, or with `Accept: text/event-stream`
/// (what `EventSource` sends) a Server-Sent Events stream of the stored events after
/// `Last-Event-ID`/`after`, then the live ones, ending after the final state and the
/// checkpoint recorded with it. The stream also carries `step-delta` events: the text
/// of running steps as the provider streams it, and `step-waiting` events (an attempt
/// waits for a provider's capacity before its call, `waitingFor`; `null` once sent),
/// live only, without an id.
#[utoipa::path(get, path = "/executions/{id}/events", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"), EventsQuery, EventsHeaders),
    responses(
        (status = 200, description = "The events in order",
            content((Vec<Event> = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "No such execution", body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let event_id = |what: &str, v: Option<&str>| -> Result<Option<i64>, ApiError> {
        match v {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{what} `{v}` is not an event id (a whole number, 0 or more)"
                    ))
                }),
        }
    };
    let header_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let last_event_id = event_id("Last-Event-ID", header_id)?;
    let after_param = q.after.map(|a| a.to_string());
    let after = event_id("`after`", after_param.as_deref())?;
    state.engine.execution(&id).await?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let after = last_event_id.or(after).unwrap_or(0);
    if !wants_stream {
        let n = match q.limit {
            None => 1000,
            Some(n @ 1..=10_000) => n,
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "`limit={n}` is out of range: give 1 to 10000 (default 1000)"
                )));
            }
        };
        let rows = state.engine.store().events_after(&id, after, n).await?;
        let rows: Vec<Event> = rows.into_iter().map(Event::from).collect();
        return Ok(Json(rows).into_response());
    }
    let rx = state.engine.subscribe();
    let deltas = state.engine.subscribe_deltas();
    Ok(Sse::new(stream_events(state, id, after, rx, deltas))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Cursor {
    state: AppState,
    id: String,
    after: i64,
    rx: broadcast::Receiver<String>,
    deltas: broadcast::Receiver<Arc<StepDelta>>,
    /// Pieces of text that came before the stored events in `buffer`.
    live: VecDeque<Arc<StepDelta>>,
    buffer: VecDeque<EventRecord>,
    done: bool,
    /// The server shuts down (`true`): send what is stored, then end.
    closing: tokio::sync::watch::Receiver<bool>,
    /// Set once it shuts down: the stream ends at the first empty read.
    ending: bool,
}

fn stream_events(
    state: AppState,
    id: String,
    after: i64,
    rx: broadcast::Receiver<String>,
    deltas: broadcast::Receiver<Arc<StepDelta>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let cursor = Cursor {
        id,
        after,
        rx,
        deltas,
        live: VecDeque::new(),
        buffer: VecDeque::new(),
        done: false,
        closing: state.engine.closing(),
        ending: false,
        state,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(delta) = c.live.pop_front() {
                return Some((Ok(delta_event(&delta)), c));
            }
            if let Some(ev) = c.buffer.pop_front() {
                if ev.kind == "execution" {
                    // A final state ends the stream once everything after it is sent.
                    c.done = ev
                        .state
                        .as_deref()
                        .and_then(ax_core::ExecutionState::parse)
                        .is_some_and(|s| s.is_terminal());
                }
                let data = serde_json::to_string(&ev).unwrap_or_default();
                let sse = SseEvent::default()
                    .id(ev.id.to_string())
                    .event(ev.kind.clone())
                    .data(data);
                return Some((Ok(sse), c));
            }
            if *c.closing.borrow() {
                // Shutting down: one last read of what is stored, then end.
                c.ending = true;
            }
            let (id, after) = (c.id.clone(), c.after);
            if c.done {
                // The last event was a final state: end, unless more came after it
                // (a resumed run) or the execution is not finished after all.
                let store = c.state.engine.store();
                let finished = async {
                    let more = !store.events_after(&id, after, 1).await?.is_empty();
                    let terminal = store
                        .get_execution(&id)
                        .await?
                        .is_none_or(|e| e.state().is_terminal());
                    anyhow::Ok(!more && terminal)
                }
                .await
                .unwrap_or(true);
                if finished {
                    return None;
                }
                c.done = false;
            }
            match c.state.engine.store().events_after(&id, after, 500).await {
                Ok(rows) if !rows.is_empty() => {
                    c.after = rows.last().map_or(c.after, |r| r.id);
                    c.buffer.extend(rows);
                    // A step's text is relayed before its completion is recorded,
                    // so what the channel holds now came before these rows: it
                    // goes out first, and none is left behind when they end the
                    // stream.
                    take_deltas(&mut c);
                    continue;
                }
                Ok(_) if c.ending => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("event stream for {} stopped: {e:#}", c.id);
                    return None;
                }
            }
            // Wait for news about this execution, passing its text on as it
            // streams in; poll anyway for runs driven by other processes.
            let mut closing = c.closing.clone();
            let news = tokio::select! {
                news = tokio::time::timeout(Duration::from_millis(500), next_news(&mut c)) => news,
                // Woken by the shutdown: the loop reads the rest and ends.
                _ = closing.wait_for(|v| *v) => continue,
            };
            if let Ok(Some(delta)) = news {
                return Some((Ok(delta_event(&delta)), c));
            }
        }
    })
}

/// The next piece of this execution's text (`Some`), or word that it has new
/// stored events (`None`).
async fn next_news(c: &mut Cursor) -> Option<Arc<StepDelta>> {
    use broadcast::error::RecvError;
    loop {
        tokio::select! {
            // Text first: it precedes the stored events it is announced with.
            biased;
            delta = c.deltas.recv() => match delta {
                Ok(d) if d.execution == c.id => return Some(d),
                // Pieces lost to a slow reader: the offsets show the gap, and
                // the whole output comes with the step's completion.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            },
            note = c.rx.recv() => match note {
                Ok(x) if x == c.id => return None,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return None,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            },
        }
    }
}

/// Move the pieces of this execution's text already received into `live`.
fn take_deltas(c: &mut Cursor) {
    use broadcast::error::TryRecvError;
    loop {
        match c.deltas.try_recv() {
            Ok(d) if d.execution == c.id => c.live.push_back(d),
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}

/// A `step-delta` (text), or a `step-waiting`: the attempt waits before its
/// call (`waitingFor`), or no longer (`waitingFor: null`).
fn delta_event(delta: &StepDelta) -> SseEvent {
    if let Some(waiting_for) = delta.waiting_for() {
        let data = serde_json::json!({
            "execution": delta.execution,
            "step": delta.step,
            "attempt": delta.attempt,
            "waitingFor": waiting_for,
        });
        return SseEvent::default()
            .event("step-waiting")
            .data(data.to_string());
    }
    let data = serde_json::to_string(delta).unwrap_or_default();
    SseEvent::default().event("step-delta").data(data)
}
