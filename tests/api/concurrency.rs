//! Many clients sending at once still produce one gap-free order, and every
//! reader sees that same order.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_produce_one_gap_free_order_that_every_reader_sees() {
    // Arrange: readers on every transport, senders over HTTP and WebSocket.
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let mut readers = Vec::new();
    for kind in ALL {
        readers.push(Reader::open(&app, kind, From::since(0)).await);
    }
    const SENDERS: usize = 8;
    const EACH: usize = 40;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let name = format!("sender{s}");
        if s % 2 == 0 {
            let welcome = app.join(&name).await;
            let session = welcome["session"].as_str().unwrap().to_owned();
            let app = app.handle();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    let body = json!({"type": "message", "text": format!("{i}"), "id": format!("{s}-{i}")});
                    let response = app.send(&session, &body).await;
                    assert_eq!(response.status(), 200);
                }
            }));
        } else {
            let (mut socket, _) = ws_join(&app, &name).await;
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    socket
                        .ws_send(&json!({"type": "message", "text": format!("{i}"), "id": format!("{s}-{i}")}))
                        .await;
                }
                // Keep the socket open until the reader side is done.
                std::mem::forget(socket);
            }));
        }
    }
    // Act
    for task in tasks {
        task.await.unwrap();
    }
    let expected = (SENDERS + SENDERS * EACH) as u64;
    let mut orders = Vec::new();
    for reader in &mut readers {
        let events = reader.read_through(expected).await.to_vec();
        // Assert: gap-free and the same for everyone.
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=expected).collect::<Vec<_>>(),
            "{:?}",
            reader.kind
        );
        orders.push(events);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0]);
    }
    // Each sender's own messages keep the order it sent them in.
    for s in 0..SENDERS {
        let mine: Vec<String> = orders[0]
            .iter()
            .filter(|e| e["name"] == format!("sender{s}") && e["type"] == "message")
            .map(|e| e["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            mine,
            (0..EACH).map(|i| i.to_string()).collect::<Vec<_>>(),
            "sender{s}"
        );
    }
}
