//! `--redis`: the HTTP answers when the store is shared in Redis, and when
//! Redis is gone.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_send_while_redis_is_down_answers_503_store_unavailable_and_is_not_stored() {
    // Arrange
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(|c| c.redis = Some(url)).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    app.say(session, "stored").await;

    // Act
    redis.kill();
    let refused = app
        .send(session, &json!({"type": "message", "text": "not stored"}))
        .await;

    // Assert
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "store_unavailable");
    let (_, poll) = app.get_json("/poll?since=0").await;
    assert_eq!(
        poll["events"].as_array().unwrap().len(),
        2,
        "join and one message"
    );
}

#[tokio::test]
async fn a_register_while_redis_is_down_answers_503_and_frees_the_name() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(|c| c.redis = Some(url)).await;

    redis.kill();
    let refused = app.register("bob").await;
    redis.restart();
    let mut again = app.register("bob").await;
    for _ in 0..50 {
        if again.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = app.register("bob").await;
    }

    assert_eq!(refused.status(), 503);
    assert_eq!(again.status(), 200, "the name was not left taken");
}

/// A `pushlab` process of its own, killed when dropped.
struct Node {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Node {
    fn start(redis: &RedisServer) -> Node {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pushlab"))
            .args(["--addr", "127.0.0.1:0", "--redis", &redis.url()])
            .args(["--rate-limit", "0", "--ip-rate-limit", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the pushlab binary runs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Node { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn readers_of_a_node_killed_mid_stream_resume_on_the_other_with_nothing_lost_or_repeated() {
    // Arrange: readers on every transport follow node A; a writer uses B.
    let redis = RedisServer::start();
    let mut a = Node::start(&redis);
    let b = Node::start(&redis);
    let http = reqwest::Client::new();
    let welcome: serde_json::Value = http
        .post(format!("http://{}/register", b.addr))
        .json(&json!({"name": "writer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = welcome["session"].as_str().unwrap().to_owned();
    let say = |i: u32| {
        let (http, session) = (http.clone(), session.clone());
        async move {
            let sent = http
                .post(format!("http://{}/send?session={session}", b.addr))
                .json(&json!({"type": "message", "text": format!("m{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(sent.status(), 200);
        }
    };
    let mut readers = Vec::new();
    for kind in ALL {
        readers.push(Reader::open(&a.addr, kind, From::since(0)).await);
    }
    for i in 0..50 {
        say(i).await;
    }
    for reader in &mut readers {
        reader.read_through(30).await;
    }

    // Act: kill -9 node A mid-stream, write on, and reconnect every reader
    // to B from its cursor, with its epoch.
    a.kill();
    for i in 50..100 {
        say(i).await;
    }
    let head = 101;
    for reader in &mut readers {
        let epoch = reader
            .events
            .last()
            .map(|_| welcome["epoch"].as_str().unwrap().to_owned());
        let from = From {
            since: reader.cursor(),
            epoch,
            session: None,
        };
        let mut resumed = Reader::open(&b.addr, reader.kind, from).await;
        resumed.read_through(head).await;
        reader.events.extend(resumed.events);
        reader.controls.extend(resumed.controls);
    }

    // Assert
    for reader in &readers {
        assert_eq!(
            reader.seqs(),
            (1..=head).collect::<Vec<_>>(),
            "{:?}: every event once, in order",
            reader.kind
        );
        assert!(
            reader.controls.iter().all(|c| c["type"] != "gap"),
            "{:?}: no gap",
            reader.kind
        );
    }
}
