//! A short soak: hundreds of readers mixed over the four transports, some with
//! sessions, while traffic flows; every one ends with every event exactly
//! once, and when they all go, the server holds nothing for them. The long
//! version (10,000 connections for 10 minutes) is `crates/pushlab-bench/soak.sh`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_mixed_readers_see_every_event_once_and_leave_nothing_behind() {
    // Arrange
    let app = spawn_app_with(|c| {
        c.rate_limit = 0;
        c.presence_timeout = 3.0;
    })
    .await;
    const PER_TRANSPORT: usize = 40;
    const MESSAGES: u64 = 200;
    let mut readers = Vec::new();
    for kind in ALL {
        for i in 0..PER_TRANSPORT {
            let session = if i % 2 == 0 {
                let welcome = app.join(&format!("{kind:?}{i}")).await;
                Some(welcome["session"].as_str().unwrap().to_owned())
            } else {
                None
            };
            let from = From {
                since: 0,
                epoch: None,
                session,
            };
            readers.push(Reader::open(&app, kind, from).await);
        }
    }
    let joined = app.head().await;
    // Act: paced traffic from two publishers while everyone reads.
    let head = joined + 2 + MESSAGES;
    let mut tasks = Vec::new();
    for mut reader in readers {
        tasks.push(tokio::spawn(async move {
            reader
                .read_through_within(head, Duration::from_secs(60))
                .await;
            reader
        }));
    }
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let app = app.handle();
            tokio::spawn(async move {
                let welcome = app.join(&format!("pub{p}")).await;
                let session = welcome["session"].as_str().unwrap().to_owned();
                for i in 0..MESSAGES / 2 {
                    app.say(&session, &format!("{p}:{i}")).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                session
            })
        })
        .collect();
    let mut publisher_sessions = Vec::new();
    for publisher in publishers {
        publisher_sessions.push(publisher.await.unwrap());
    }
    // Assert: every reader has every event, once, in order.
    let mut orders = Vec::new();
    for task in tasks {
        let reader = task.await.unwrap();
        let seqs = reader.seqs();
        let from = seqs.first().copied().unwrap_or(0);
        assert_eq!(seqs, (from..=head).collect::<Vec<_>>(), "{:?}", reader.kind);
        assert!(
            from <= joined - (PER_TRANSPORT * 4 / 2) as u64 + 1,
            "{:?} started late",
            reader.kind
        );
        orders.push(reader);
    }
    let reference: Vec<Value> = orders[0].events.clone();
    for reader in &orders {
        let offset = reader.events[0]["seq"].as_u64().unwrap() as usize - 1;
        assert_eq!(reader.events[..], reference[offset..], "{:?}", reader.kind);
    }
    // Everyone goes; nothing is left behind.
    drop(orders);
    for session in publisher_sessions {
        let left = app.send(&session, &json!({"type": "leave"})).await;
        assert_eq!(left.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, stats) = app.get_json("/stats").await;
        let t = &stats["transports"];
        let clean = ["longpoll", "sse", "ws"]
            .iter()
            .all(|k| t[k]["open"] == 0 && t[k]["queued"] == 0)
            && stats["online"] == 0
            && stats["connections"] == 1;
        if clean {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
