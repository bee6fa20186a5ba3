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
