//! Wake-ups through LISTEN/NOTIFY: one plain connection per process that
//! listens on channel `ax_wake`, where the database's triggers announce control
//! requests, decisions and new work (migration 0006). Each notification becomes
//! a [`Wake`] on a broadcast channel that the engine reads.
//!
//! The connection is opened when the first subscriber asks, and reopened after
//! it breaks (the server restarted, the network cut): with growing pauses, each
//! new connection announcing [`Wake::Resync`] because notifications sent
//! meanwhile are lost. Polling stays as the fallback for everything.

use super::error_text;
use crate::store::owner::Wake;
use futures_util::StreamExt as _;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::AsyncMessage;

/// The channel the triggers of migration 0006 notify.
pub const CHANNEL: &str = "ax_wake";

/// What a notification's payload means (None: not ours).
pub fn parse(payload: &str) -> Option<Wake> {
    match payload.split_once(':') {
        Some(("control", id)) => Some(Wake::Control(id.to_owned())),
        Some(("inbox", id)) => Some(Wake::Inbox(id.to_owned())),
        None if payload == "work" => Some(Wake::Work),
        _ => None,
    }
}

/// Listen until `stop` fires or is dropped (the store is gone), reconnecting
/// as needed.
pub async fn run(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    describe: String,
    out: broadcast::Sender<Wake>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            (connected, why) = listen_once(&config, &tls, &out) => {
                if connected {
                    pause = Duration::from_millis(200);
                }
                tracing::warn!(
                    "wake-ups from {describe} stopped ({why}); polling meanwhile, reconnecting in {pause:?}"
                );
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One connection: LISTEN, announce a resync, forward notifications until the
/// connection ends. Returns whether it was listening, and why it ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    out: &broadcast::Sender<Wake>,
) -> (bool, String) {
    let (client, mut conn) = match config.connect(tls.clone()).await {
        Ok(c) => c,
        Err(e) => return (false, error_text(&e)),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection must be polled for the client's queries to go through,
    // and its notifications arrive the same way.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                    if let Some(w) = parse(n.payload()) {
                        let _ = tx.send(Ok(w));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(error_text(&e)));
                    return;
                }
            }
        }
        let _ = tx.send(Err("the server closed the connection".to_owned()));
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(e) = listening {
        driver.abort();
        return (false, error_text(&e));
    }
    let _ = out.send(Wake::Resync);
    let ended = loop {
        match rx.recv().await {
            Some(Ok(w)) => {
                let _ = out.send(w);
            }
            Some(Err(e)) => break e,
            None => break "the connection ended".to_owned(),
        }
    };
    driver.abort();
    drop(client);
    (true, ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse("control:ab12"), Some(Wake::Control("ab12".into())));
        assert_eq!(parse("inbox:x"), Some(Wake::Inbox("x".into())));
        assert_eq!(parse("work"), Some(Wake::Work));
        assert_eq!(parse("other"), None);
        assert_eq!(parse("else:x"), None);
    }
}
