//! Each room's sessions in Redis beside its log: [`RedisDirectory`], the
//! core's [`Directory`] over the session scripts (see "Sessions" in
//! [`crate::store::redis`]).
//!
//! It shares the room's mirror, so the `join` and `leave` it writes are
//! read back like any other event. It knows nothing of the room registry,
//! of a room, or of HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::core::directory::{
    Appending, Directory, Joined, Lookup, Reaped, SignalSink, WELCOME_USERS,
};
use crate::core::error::ApiError;
use crate::core::log::{now_millis, Event, EventBody, LogError};
use crate::core::names::{Name, RoomName};
use crate::core::presence::SessionId;
use crate::store::redis::mirror::{Answer, Mirror, Written};
use crate::store::redis::{millis, StoreShared, SIGNALS};

/// The sessions of one room, in Redis beside its log: see [`Directory`]
/// and the module docs. It shares the log's mirror, so a `join` or `leave`
/// it writes is read back like any other event.
pub struct RedisDirectory {
    pub(super) mirror: Arc<Mirror>,
    /// Sessions online on every node, as the last `join` or reap counted.
    pub(super) online: Arc<AtomicUsize>,
}

/// The most names a `join` lists; the rest show up as they move or speak.
const JOIN_NAMES: usize = WELCOME_USERS;

/// How long Redis keeps a room that no node has open: every node that has
/// it open extends this at each reap (about once a second). A room unused
/// for longer is gone, and opens again empty under a new epoch, as a
/// reclaimed room of the in-memory store does.
pub const ROOM_KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many expired leases one reap ends at most; the next reap goes on.
const REAP_BATCH: usize = 1_000;

impl Directory for RedisDirectory {
    fn join(
        &self,
        session: SessionId,
        name: &Name,
        lease: Duration,
        observer: bool,
    ) -> BoxFuture<'static, Result<Joined, ApiError>> {
        let mirror = self.mirror.clone();
        // The join is marked; the shared lists and counts in Redis still
        // hold observers (see docs/protocol.md, "Observers").
        let args = [
            Event::new(0, now_millis(), name.clone(), EventBody::Join { observer })
                .json()
                .to_owned(),
            session.to_string(),
            name.to_string(),
            millis(lease).to_string(),
            mirror.keys.room.to_string(),
            JOIN_NAMES.to_string(),
        ];
        let (name, counted) = (name.clone(), self.online.clone());
        on_store(&self.mirror.store, async move {
            match mirror.write(&mirror.store.scripts.join, &args).await? {
                Written::Refused => Err(ApiError::NameTaken(name.to_string())),
                Written::Stored(event, rest) => {
                    let (online, names): (usize, Vec<String>) =
                        redis::from_redis_value(&redis::Value::Array(rest))
                            .map_err(|err| LogError::Storage(err.to_string()))?;
                    let mut names: Vec<Name> =
                        names.iter().filter_map(|n| Name::parse(n).ok()).collect();
                    names.sort_by_key(Name::key);
                    names.dedup_by_key(|n| n.key());
                    counted.store(online, Ordering::Relaxed);
                    Ok(Joined {
                        event,
                        names,
                        online,
                    })
                }
            }
        })
    }

    fn lookup(&self, session: SessionId) -> BoxFuture<'static, Result<Lookup, ApiError>> {
        let mirror = self.mirror.clone();
        on_store(&self.mirror.store, async move {
            let (found, what): (u8, String) = mirror
                .call(&mirror.store.scripts.lookup, &[session.to_string()])
                .await?;
            Ok(match found {
                1 => Name::parse(&what).map_or(Lookup::Unknown, Lookup::Live),
                2 => RoomName::parse(&what).map_or(Lookup::Unknown, Lookup::Elsewhere),
                _ => Lookup::Unknown,
            })
        })
    }

    fn append(
        &self,
        session: SessionId,
        name: Name,
        body: EventBody,
        lease: Duration,
        rate: u32,
    ) -> Appending {
        let appended = self.mirror.append(Some((session, lease, rate)), name, body);
        Appending::deciding(Box::pin(async move {
            match appended.await? {
                Answer::Stored(event) => Ok(event.seq),
                Answer::Repeated(seq) => Ok(seq),
                Answer::Refused(code) if code == "rate_limited" => Err(ApiError::RateLimited),
                Answer::Refused(_) => Err(ApiError::UnknownSession),
            }
        }))
    }

    fn leave(
        &self,
        session: SessionId,
    ) -> BoxFuture<'static, Result<Option<Arc<Event>>, ApiError>> {
        let mirror = self.mirror.clone();
        on_store(&self.mirror.store, async move {
            match mirror
                .write(&mirror.store.scripts.leave, &[session.to_string()])
                .await?
            {
                Written::Stored(event, _) => Ok(Some(event)),
                Written::Refused => Ok(None),
            }
        })
    }

    fn renew(
        &self,
        sessions: Vec<SessionId>,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Vec<SessionId>, LogError>> {
        let mirror = self.mirror.clone();
        let mut args = vec![millis(lease).to_string()];
        args.extend(sessions.iter().map(SessionId::to_string));
        on_store(&self.mirror.store, async move {
            let gone: Vec<String> = mirror.call(&mirror.store.scripts.renew, &args).await?;
            Ok(gone.iter().filter_map(|id| id.parse().ok()).collect())
        })
    }

    fn went_idle(&self, _sessions: Vec<SessionId>) -> BoxFuture<'static, Result<usize, LogError>> {
        // Another node may be using them: their leases decide.
        Box::pin(std::future::ready(Ok(0)))
    }

    fn reap(&self) -> BoxFuture<'static, Result<Reaped, LogError>> {
        let (mirror, counted) = (self.mirror.clone(), self.online.clone());
        on_store(&self.mirror.store, async move {
            let (ended, online): (usize, usize) = mirror
                .call(
                    &mirror.store.scripts.reap,
                    &[REAP_BATCH.to_string(), millis(ROOM_KEPT_FOR).to_string()],
                )
                .await?;
            if ended > 0 {
                tracing::debug!(ended, room = %mirror.keys.room, "sessions whose lease ran out left");
            }
            counted.store(online, Ordering::Relaxed);
            Ok(Reaped { ended, online })
        })
    }

    fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    fn relay_signal(
        &self,
        to: &Name,
        frame: ByteString,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let mirror = self.mirror.clone();
        let args = [
            to.key(),
            SIGNALS.to_owned(),
            format!("{}\n{to}\n{frame}", mirror.keys.room),
        ];
        let to = to.clone();
        on_store(&self.mirror.store, async move {
            let nodes: i64 = mirror.call(&mirror.store.scripts.signal, &args).await?;
            if nodes < 0 {
                return Err(ApiError::UnknownTarget(to.to_string()));
            }
            Ok(())
        })
    }

    fn deliver_signals(&self, deliver: &Arc<SignalSink>) {
        self.mirror
            .store
            .signal_sinks
            .lock()
            .insert(self.mirror.keys.room.clone(), Arc::downgrade(deliver));
    }
}

/// Runs `task` on the store's runtime, where every Redis call runs.
fn on_store<T, E>(
    store: &StoreShared,
    task: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> BoxFuture<'static, Result<T, E>>
where
    T: Send + 'static,
    E: From<LogError> + Send + 'static,
{
    let task = store.runtime.spawn(task);
    Box::pin(async move {
        task.await
            .map_err(|_| LogError::Unavailable("the Redis store has stopped".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::directory::SENT_IDS;
    use crate::core::log_store::LogStore;
    use crate::store::redis::scripts::Keys;
    use crate::store::redis::testing::{events_of, lobby_shared, name, say, LEASE};
    use crate::store::redis::RedisStore;
    use pushlab_testkit::RedisServer;

    #[tokio::test]
    async fn a_name_is_taken_on_every_node_until_its_leave_is_written() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((_, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let alice = SessionId::new_v4();

        // Act
        let joined = on_a
            .join(alice, &name("Alice"), LEASE, false)
            .await
            .unwrap();
        let taken = on_b
            .join(SessionId::new_v4(), &name("aLiCe"), LEASE, false)
            .await
            .unwrap_err();
        let left = on_b.leave(alice).await.unwrap();
        let again = on_b
            .join(SessionId::new_v4(), &name("alice"), LEASE, false)
            .await;

        // Assert
        assert_eq!(joined.online, 1);
        assert_eq!(joined.names, [name("Alice")]);
        assert_eq!(taken.code(), "name_taken");
        assert_eq!(left.unwrap().body.kind(), "leave");
        assert!(again.is_ok(), "the name is free once its leave is written");
    }

    #[tokio::test]
    async fn a_session_ended_on_two_nodes_at_once_leaves_once() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((log, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let mut sessions = Vec::new();
        for i in 0..20 {
            let session = SessionId::new_v4();
            on_a.join(session, &name(&format!("u{i}")), LEASE, false)
                .await
                .unwrap();
            sessions.push(session);
        }

        // Act
        let mut leaves = Vec::new();
        for &session in &sessions {
            leaves.push(on_a.leave(session));
            leaves.push(on_b.leave(session));
        }
        let outcomes = futures_util::future::join_all(leaves).await;

        // Assert
        let written = outcomes.iter().filter(|o| matches!(o, Ok(Some(_)))).count();
        assert_eq!(written, 20, "one leave written per session");
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(events_of(&log, 40, "leave").await.len(), 20);
    }

    #[tokio::test]
    async fn an_expired_lease_is_reaped_once_by_racing_nodes_and_a_renewed_one_lives_on() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((log, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let short = Duration::from_millis(300);
        let (gone, kept) = (SessionId::new_v4(), SessionId::new_v4());
        on_a.join(gone, &name("gone"), short, false).await.unwrap();
        on_a.join(kept, &name("kept"), short, false).await.unwrap();

        // Act: both nodes reap until the first lease has run out; the kept
        // session's node renews it meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut ended = 0;
        let online = loop {
            assert!(tokio::time::Instant::now() < deadline, "never reaped");
            assert!(on_a.renew(vec![kept], short).await.unwrap().is_empty());
            let (x, y) = tokio::join!(on_a.reap(), on_b.reap());
            let (x, y) = (x.unwrap(), y.unwrap());
            ended += x.ended + y.ended;
            if ended > 0 {
                break x.online.min(y.online);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        // Assert
        assert_eq!(ended, 1, "the expired session was reaped by one node");
        assert_eq!(online, 1, "the renewed session is still online");
        let leaves = events_of(&log, 3, "leave").await;
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0].name, name("gone"));
        assert_eq!(on_b.renew(vec![gone], short).await.unwrap(), [gone]);
        assert_eq!(on_b.lookup(kept).await.unwrap(), Lookup::Live(name("kept")));
        assert_eq!(on_b.lookup(gone).await.unwrap(), Lookup::Unknown);
    }

    fn say_with_id(id: &str) -> EventBody {
        EventBody::Message {
            text: "hi".into(),
            id: Some(id.into()),
        }
    }

    #[tokio::test]
    async fn a_message_sent_again_with_its_id_on_any_node_is_stored_once_and_answers_its_first_seq()
    {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((log, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let ann = SessionId::new_v4();
        on_a.join(ann, &name("ann"), LEASE, false).await.unwrap();
        let send = |node: &Arc<dyn Directory>, id| {
            node.append(ann, name("ann"), say_with_id(id), LEASE, 1)
        };

        // Act: again on the other node, and twice at once; at 1 a second,
        // so a retry that spent the rate would be refused.
        let first = send(&on_a, "m1").await.unwrap();
        let again = send(&on_b, "m1").await.unwrap();
        let (once, twice) = (send(&on_a, "m2"), send(&on_a, "m2"));
        let (once, twice) = (once.await.unwrap(), twice.await.unwrap());

        // Assert
        assert_eq!(again, first);
        assert_eq!(twice, once);
        assert_eq!(events_of(&log, once, "message").await.len(), 2);
    }

    #[tokio::test]
    async fn a_session_s_sent_ids_in_redis_are_bounded_and_go_with_its_leave() {
        // Arrange
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 1000).unwrap();
        let (_log, directory) = lobby_shared(&store);
        let ann = SessionId::new_v4();
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        let send = |id: &str| directory.append(ann, name("ann"), say_with_id(id), LEASE, 0);
        let sent = Keys::of(&RoomName::lobby()).sent;
        let first = send("id-0").await.unwrap();

        // Act
        for i in 1..=2 * SENT_IDS {
            send(&format!("id-{i}")).await.unwrap();
        }
        let held = redis.command(&format!("HSTRLEN {sent} {ann}"));
        let forgotten = send("id-0").await.unwrap();
        directory.leave(ann).await.unwrap();

        // Assert: at most SENT_IDS pairs of a short id and a seq.
        let held: usize = held[1..].parse().unwrap();
        assert!(held > 0 && held <= SENT_IDS * 20, "{held} bytes");
        assert!(forgotten > first, "past the window it is a new message");
        assert_eq!(redis.command(&format!("HEXISTS {sent} {ann}")), ":0");
    }

    #[tokio::test]
    async fn a_session_rate_limit_holds_across_nodes() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 1000).unwrap(),
            RedisStore::connect(&redis.url(), 1000).unwrap(),
        );
        let ((_, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let session = SessionId::new_v4();
        on_a.join(session, &name("fast"), LEASE, false)
            .await
            .unwrap();

        // Act: 40 events at once, alternating nodes, at 5 a second.
        let mut appends = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 { &on_a } else { &on_b };
            appends.push(node.append(session, name("fast"), say("x"), LEASE, 5));
        }
        let outcomes = futures_util::future::join_all(appends).await;

        // Assert: the burst (twice the rate) and whatever refilled meanwhile,
        // not a burst per node.
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
        assert!((10..=12).contains(&accepted), "accepted {accepted}");
        assert!(outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|e| e.code() == "rate_limited"));
    }

    #[tokio::test]
    async fn a_session_is_found_in_its_own_room_and_told_apart_in_another() {
        // Arrange
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let (_, lobby) = lobby_shared(&store);
        let other = store
            .open(&RoomName::parse("other").unwrap())
            .unwrap()
            .directory;
        let session = SessionId::new_v4();
        lobby
            .join(session, &name("ann"), LEASE, false)
            .await
            .unwrap();

        // Act
        let here = lobby.lookup(session).await.unwrap();
        let there = other.lookup(session).await.unwrap();
        let nobody = lobby.lookup(SessionId::new_v4()).await.unwrap();
        let refused = other
            .append(session, name("ann"), say("x"), LEASE, 0)
            .await
            .unwrap_err();

        // Assert
        assert_eq!(here, Lookup::Live(name("ann")));
        assert_eq!(there, Lookup::Elsewhere(RoomName::lobby()));
        assert_eq!(nobody, Lookup::Unknown);
        assert_eq!(refused.code(), "unknown_session", "{refused}");
    }

    #[tokio::test]
    async fn an_open_room_keeps_its_keys_in_redis_for_a_week_from_its_last_reap() {
        // Arrange
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let (log, directory) = lobby_shared(&store);
        log.append(name("ann"), say("hi")).await.unwrap();
        let stream = Keys::of(&RoomName::lobby()).stream;
        let before = redis.command(&format!("PTTL {stream}"));

        // Act
        directory.reap().await.unwrap();

        // Assert
        assert_eq!(before, ":-1", "kept for good until a node reaps");
        let ttl: u64 = redis.command(&format!("PTTL {stream}"))[1..]
            .parse()
            .unwrap();
        let week = millis(ROOM_KEPT_FOR);
        assert!(ttl <= week && ttl > week - 60_000, "{ttl}");
    }
}
