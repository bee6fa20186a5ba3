//! The [`Directory`] of a room that one node serves alone: the default,
//! handed out by every store that keeps no sessions of its own (memory and
//! `--data-dir`).
//!
//! It owns, in this process, what a shared directory keeps in its store:
//! each name taken (without case) until its session's `leave` is in the log,
//! whether each session is live or ending, each session's own rate limit
//! (`--rate-limit`), and the ids of the chat messages each session sent
//! last, so that one sent again is stored once. It has no leases: on one
//! node the node is the whole truth, so a session ends when the room hears
//! it went idle here ([`Directory::went_idle`], after
//! `--presence-timeout`), or leaves.
//!
//! Every `join` and `leave` takes its place in the log while this table is
//! locked, so the names a `join` lists are exactly those online at its seq.
//! It holds the log weakly: the log's strong count is how the room registry
//! tells that nobody uses a room any more. It knows nothing of presence,
//! connections, addresses, the room or the registry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    idempotency_key, Appending, Directory, Joined, Lookup, Reaped, SignalSink, SENT_IDS,
    SENT_ID_BYTES, WELCOME_USERS,
};
use crate::core::error::ApiError;
use crate::core::log::{Event, EventBody, EventLog, LogError, Seq};
use crate::core::names::Name;
use crate::core::presence::SessionId;
use crate::core::rate::TokenBucket;

/// The sessions of a room only this node serves. Every clone is the same
/// table.
#[derive(Clone)]
pub struct LocalDirectory {
    /// The room's log, where joins and leaves are written: held weakly, so
    /// it goes when the room does.
    log: Weak<dyn EventLog>,
    table: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<SessionId, Session>,
    /// Lower-cased name → session, ending ones included.
    names: HashMap<String, SessionId>,
    /// Sessions that are not ending.
    live: usize,
    /// Observers among them: not counted as online.
    observers: usize,
}

struct Session {
    name: Name,
    /// Registered as an observer: left out of who is online.
    observer: bool,
    /// Set once its `leave` is on its way: it takes nothing more, but its
    /// name stays taken until the `leave` is in the log.
    ending: bool,
    /// Its own rate limit.
    bucket: TokenBucket,
    /// The ids of the chat messages it sent last.
    sent: SentIds,
}

/// The ids of the chat messages one session sent last, oldest first, with
/// what became of each: at most [`SENT_IDS`] of them and [`SENT_ID_BYTES`]
/// of ids.
#[derive(Default)]
struct SentIds {
    ids: VecDeque<(Box<str>, Sent)>,
    /// The bytes of the ids held.
    bytes: usize,
}

/// A chat message's append, shared by every send of its id.
type Storing = Shared<BoxFuture<'static, Result<Seq, ApiError>>>;

/// What became of a chat message sent with an id.
#[derive(Clone)]
enum Sent {
    /// On its way into the log: a send of the same id waits for it.
    Storing(Storing),
    /// Stored as this seq.
    Stored(Seq),
}

impl SentIds {
    fn find(&self, id: &str) -> Option<Sent> {
        self.ids
            .iter()
            .find(|(sent, _)| &**sent == id)
            .map(|(_, what)| what.clone())
    }

    /// Remembers `id`, forgetting the oldest past either bound.
    fn remember(&mut self, id: &str, what: Sent) {
        self.bytes += id.len();
        self.ids.push_back((id.into(), what));
        while self.ids.len() > SENT_IDS || self.bytes > SENT_ID_BYTES {
            if let Some((old, _)) = self.ids.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Records how the append of `id` ended: stored as a seq, or failed,
    /// when the id is forgotten so that sending it again appends it.
    fn settle(&mut self, id: &str, result: &Result<Seq, ApiError>) {
        let Some(at) = self.ids.iter().position(|(sent, _)| &**sent == id) else {
            return;
        };
        match result {
            Ok(seq) => self.ids[at].1 = Sent::Stored(*seq),
            Err(_) => {
                if let Some((old, _)) = self.ids.remove(at) {
                    self.bytes -= old.len();
                }
            }
        }
    }
}

impl std::fmt::Debug for LocalDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDirectory")
            .field("online", &self.table.lock().online())
            .finish_non_exhaustive()
    }
}

impl LocalDirectory {
    /// The directory of the room whose log is `log`, with nobody in it.
    pub fn over(log: &Arc<dyn EventLog>) -> Self {
        LocalDirectory {
            log: Arc::downgrade(log),
            table: Arc::default(),
        }
    }

    fn log(&self) -> Result<Arc<dyn EventLog>, LogError> {
        self.log
            .upgrade()
            .ok_or_else(|| LogError::Storage("the room's log is closed".into()))
    }
}

impl Table {
    /// Live sessions that are not observers: who is online.
    fn online(&self) -> usize {
        self.live - self.observers
    }

    /// Marks `session` as ending and returns its name, if it is live.
    fn begin_end(&mut self, session: SessionId) -> Option<Name> {
        let entry = self.sessions.get_mut(&session).filter(|s| !s.ending)?;
        entry.ending = true;
        self.live -= 1;
        self.observers -= usize::from(entry.observer);
        Some(entry.name.clone())
    }

    /// Forgets `session` and frees its name.
    fn remove(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.remove(&session) {
            self.names.remove(&entry.name.key());
            if !entry.ending {
                self.live -= 1;
                self.observers -= usize::from(entry.observer);
            }
        }
    }

    /// At most [`WELCOME_USERS`] of the live names, observers left out,
    /// sorted without case, always with `me` among them unless `me` is an
    /// observer.
    fn names_with(&self, me: &Name) -> Vec<Name> {
        let mut names: Vec<Name> = self
            .sessions
            .values()
            .filter(|s| !s.ending && !s.observer)
            .map(|s| s.name.clone())
            .collect();
        if !names.iter().any(|n| n.key() == me.key()) {
            names.sort_by_key(Name::key);
            names.truncate(WELCOME_USERS);
            return names;
        }
        names.sort_by_key(Name::key);
        if names.len() > WELCOME_USERS {
            names.retain(|n| n.key() != me.key());
            names.truncate(WELCOME_USERS - 1);
            names.push(me.clone());
            names.sort_by_key(Name::key);
        }
        names
    }
}

/// A directory answer that is known at once.
fn ready<T: Send + 'static, E: Send + 'static>(
    result: Result<T, E>,
) -> BoxFuture<'static, Result<T, E>> {
    Box::pin(std::future::ready(result))
}

impl Directory for LocalDirectory {
    fn join(
        &self,
        session: SessionId,
        name: &Name,
        _lease: Duration,
        observer: bool,
    ) -> BoxFuture<'static, Result<Joined, ApiError>> {
        let log = match self.log() {
            Ok(log) => log,
            Err(err) => return ready(Err(err.into())),
        };
        let (appended, names, online) = {
            let mut table = self.table.lock();
            if table.names.contains_key(&name.key()) {
                return ready(Err(ApiError::NameTaken(name.to_string())));
            }
            table.names.insert(name.key(), session);
            table.sessions.insert(
                session,
                Session {
                    name: name.clone(),
                    observer,
                    ending: false,
                    // Full: a new session may send its burst at once.
                    bucket: TokenBucket::full(f64::INFINITY, Instant::now()),
                    sent: SentIds::default(),
                },
            );
            table.live += 1;
            table.observers += usize::from(observer);
            let appended = log.append(name.clone(), EventBody::Join { observer });
            (appended, table.names_with(name), table.online())
        };
        let table = self.table.clone();
        Box::pin(async move {
            match appended.await {
                Ok(event) => Ok(Joined {
                    event,
                    names,
                    online,
                }),
                Err(err) => {
                    tracing::error!(%err, "could not append a join");
                    table.lock().remove(session);
                    Err(err.into())
                }
            }
        })
    }

    fn lookup(&self, session: SessionId) -> BoxFuture<'static, Result<Lookup, ApiError>> {
        let table = self.table.lock();
        let found = match table.sessions.get(&session) {
            Some(entry) if !entry.ending => Lookup::Live(entry.name.clone()),
            _ => Lookup::Unknown,
        };
        ready(Ok(found))
    }

    fn append(
        &self,
        session: SessionId,
        name: Name,
        body: EventBody,
        _lease: Duration,
        rate: u32,
    ) -> Appending {
        let mut table = self.table.lock();
        let Some(entry) = table.sessions.get_mut(&session).filter(|s| !s.ending) else {
            return Appending::refused(ApiError::UnknownSession);
        };
        let Some(id) = idempotency_key(&body).map(str::to_owned) else {
            if !entry.bucket.take(rate, Instant::now()) {
                return Appending::refused(ApiError::RateLimited);
            }
            drop(table);
            return match self.log() {
                Ok(log) => Appending::admitted(log.append(name, body)),
                Err(err) => Appending::refused(err.into()),
            };
        };
        let storing = match entry.sent.find(&id) {
            Some(Sent::Stored(seq)) => return Appending::repeated(seq),
            Some(Sent::Storing(storing)) => storing,
            None => {
                if !entry.bucket.take(rate, Instant::now()) {
                    return Appending::refused(ApiError::RateLimited);
                }
                let log = match self.log() {
                    Ok(log) => log,
                    Err(err) => return Appending::refused(err.into()),
                };
                // Appended while the table is locked, so a second send of
                // the id finds this one, and waits for it.
                let storing = log
                    .append(name, body)
                    .map(|appended| Ok(appended?.seq))
                    .boxed()
                    .shared();
                entry.sent.remember(&id, Sent::Storing(storing.clone()));
                storing
            }
        };
        drop(table);
        let table = self.table.clone();
        Appending::deciding(Box::pin(async move {
            let result = storing.await;
            if let Some(entry) = table.lock().sessions.get_mut(&session) {
                entry.sent.settle(&id, &result);
            }
            result
        }))
    }

    fn leave(
        &self,
        session: SessionId,
    ) -> BoxFuture<'static, Result<Option<Arc<Event>>, ApiError>> {
        let log = match self.log() {
            Ok(log) => log,
            Err(err) => return ready(Err(err.into())),
        };
        let appended = {
            let mut table = self.table.lock();
            let Some(name) = table.begin_end(session) else {
                return ready(Ok(None));
            };
            log.append(name, EventBody::Leave)
        };
        let table = self.table.clone();
        Box::pin(async move {
            let stored = appended.await;
            // Only now is the name free: the `leave` is in the log.
            table.lock().remove(session);
            Ok(Some(stored?))
        })
    }

    fn renew(
        &self,
        sessions: Vec<SessionId>,
        _lease: Duration,
    ) -> BoxFuture<'static, Result<Vec<SessionId>, LogError>> {
        let table = self.table.lock();
        let gone = sessions
            .into_iter()
            .filter(|s| table.sessions.get(s).is_none_or(|e| e.ending))
            .collect();
        ready(Ok(gone))
    }

    fn went_idle(&self, sessions: Vec<SessionId>) -> BoxFuture<'static, Result<usize, LogError>> {
        if sessions.is_empty() {
            return ready(Ok(0));
        }
        let log = match self.log() {
            Ok(log) => log,
            Err(err) => return ready(Err(err)),
        };
        let leaving: Vec<_> = {
            let mut table = self.table.lock();
            sessions
                .into_iter()
                .filter_map(|session| {
                    let name = table.begin_end(session)?;
                    Some((session, log.append(name, EventBody::Leave)))
                })
                .collect()
        };
        let table = self.table.clone();
        Box::pin(async move {
            let (mut ended, mut failed) = (0, None);
            for (session, appended) in leaving {
                match appended.await {
                    Ok(_) => ended += 1,
                    Err(err) => failed = Some(err),
                }
                table.lock().remove(session);
            }
            failed.map_or(Ok(ended), Err)
        })
    }

    fn reap(&self) -> BoxFuture<'static, Result<Reaped, LogError>> {
        // No leases: nothing lapses that the room has not said went idle.
        ready(Ok(Reaped {
            ended: 0,
            online: self.online(),
        }))
    }

    fn online(&self) -> usize {
        self.table.lock().online()
    }

    fn relay_signal(
        &self,
        to: &Name,
        _frame: ByteString,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let table = self.table.lock();
        let online = table
            .names
            .get(&to.key())
            .and_then(|id| table.sessions.get(id))
            .is_some_and(|s| !s.ending);
        ready(Err(if online {
            ApiError::TargetNotListening(to.to_string())
        } else {
            ApiError::UnknownTarget(to.to_string())
        }))
    }

    fn deliver_signals(&self, _deliver: &Arc<SignalSink>) {
        // No other node relays signals here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::MemoryLog;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    const LEASE: Duration = Duration::from_secs(10);

    /// A log and its directory; the log must outlive the calls.
    fn room() -> (Arc<dyn EventLog>, LocalDirectory) {
        let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(100));
        let directory = LocalDirectory::over(&log);
        (log, directory)
    }

    fn kinds(log: &Arc<dyn EventLog>) -> Vec<(&'static str, String)> {
        log.read_since(0, None)
            .events
            .iter()
            .map(|e| (e.body.kind(), e.name.to_string()))
            .collect()
    }

    fn say() -> EventBody {
        EventBody::Message {
            text: "hi".into(),
            id: None,
        }
    }

    #[tokio::test]
    async fn a_name_is_taken_without_case_until_its_leave_is_in_the_log() {
        // Arrange
        let (log, directory) = room();
        let alice = SessionId::new_v4();
        directory
            .join(alice, &name("Alice"), LEASE, false)
            .await
            .unwrap();

        // Act
        let taken = directory
            .join(SessionId::new_v4(), &name("aLiCe"), LEASE, false)
            .await;
        let leaving = directory.leave(alice);
        let while_ending = directory
            .join(SessionId::new_v4(), &name("alice"), LEASE, false)
            .await;
        let left = leaving.await.unwrap();
        let after = directory
            .join(SessionId::new_v4(), &name("alice"), LEASE, false)
            .await;

        // Assert
        assert_eq!(taken.unwrap_err().code(), "name_taken");
        assert_eq!(while_ending.unwrap_err().code(), "name_taken");
        assert_eq!(left.map(|e| e.seq), Some(2));
        assert!(after.is_ok());
        assert_eq!(
            kinds(&log),
            [
                ("join", "Alice".into()),
                ("leave", "Alice".into()),
                ("join", "alice".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_session_leaves_once() {
        // Arrange
        let (log, directory) = room();
        let ann = SessionId::new_v4();
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();

        // Act
        let (first, second) = (directory.leave(ann), directory.leave(ann));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());

        // Assert
        assert!(first.is_some());
        assert!(second.is_none());
        assert_eq!(log.head(), 2, "one join, one leave");
        assert_eq!(directory.online(), 0);
    }

    #[tokio::test]
    async fn a_join_lists_those_online_with_the_newcomer_and_counts_them() {
        // Arrange
        let (_log, directory) = room();
        for n in ["cy", "Bo"] {
            directory
                .join(SessionId::new_v4(), &name(n), LEASE, false)
                .await
                .unwrap();
        }

        // Act
        let joined = directory
            .join(SessionId::new_v4(), &name("ann"), LEASE, false)
            .await
            .unwrap();

        // Assert
        let names: Vec<&str> = joined.names.iter().map(Name::as_str).collect();
        assert_eq!(names, ["ann", "Bo", "cy"]);
        assert_eq!((joined.online, joined.event.seq), (3, 3));
    }

    #[tokio::test]
    async fn a_crowded_join_lists_at_most_the_welcome_users_and_always_the_newcomer() {
        // Arrange
        let (_log, directory) = room();
        for i in 0..WELCOME_USERS + 5 {
            let n = name(&format!("a{i:03}"));
            directory
                .join(SessionId::new_v4(), &n, LEASE, false)
                .await
                .unwrap();
        }

        // Act
        let joined = directory
            .join(SessionId::new_v4(), &name("zed"), LEASE, false)
            .await
            .unwrap();

        // Assert
        assert_eq!(joined.names.len(), WELCOME_USERS);
        assert_eq!(joined.names.last().map(Name::as_str), Some("zed"));
        assert_eq!(joined.online, WELCOME_USERS + 6);
    }

    #[tokio::test(start_paused = true)]
    async fn each_session_may_send_a_burst_of_twice_its_rate_then_what_refills() {
        // Arrange
        let (_log, directory) = room();
        let (ann, bob) = (SessionId::new_v4(), SessionId::new_v4());
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        directory
            .join(bob, &name("bob"), LEASE, false)
            .await
            .unwrap();
        let send = |session| directory.append(session, name("x"), say(), LEASE, 10);

        // Act
        for _ in 0..20 {
            send(ann).await.unwrap();
        }
        let over = send(ann).await;
        let other = send(bob).await;
        tokio::time::advance(Duration::from_millis(500)).await;
        let mut refilled = 0;
        for _ in 0..6 {
            refilled += usize::from(send(ann).await.is_ok());
        }

        // Assert
        assert_eq!(over.unwrap_err().code(), "rate_limited");
        assert!(other.is_ok(), "each session has its own limit");
        assert_eq!(refilled, 5, "half a second at 10 a second");
    }

    fn say_with_id(id: &str) -> EventBody {
        EventBody::Message {
            text: "hi".into(),
            id: Some(id.into()),
        }
    }

    #[tokio::test]
    async fn a_message_sent_again_with_its_id_is_stored_once_and_answers_its_first_seq() {
        // Arrange
        let (log, directory) = room();
        let (ann, bob) = (SessionId::new_v4(), SessionId::new_v4());
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        directory
            .join(bob, &name("bob"), LEASE, false)
            .await
            .unwrap();
        let send = |session, id| directory.append(session, name("x"), say_with_id(id), LEASE, 0);

        // Act: twice in a row, twice at once, and the same id from another
        // session.
        let first = send(ann, "m1").await.unwrap();
        let again = send(ann, "m1").await.unwrap();
        let (once, twice) = (send(ann, "m2"), send(ann, "m2"));
        let (once, twice) = (once.await.unwrap(), twice.await.unwrap());
        let other = send(bob, "m1").await.unwrap();

        // Assert
        assert_eq!(again, first);
        assert_eq!(twice, once);
        assert_ne!(other, first, "an id is a key per session");
        assert_eq!(log.head(), 2 + 3, "two joins, three messages");
    }

    #[tokio::test]
    async fn a_session_remembers_only_its_last_sent_ids() {
        // Arrange
        let (log, directory) = room();
        let ann = SessionId::new_v4();
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        let send = |id: &str| directory.append(ann, name("ann"), say_with_id(id), LEASE, 0);
        let first = send("m0").await.unwrap();
        for i in 1..=SENT_IDS {
            send(&format!("m{i}")).await.unwrap();
        }

        // Act
        let forgotten = send("m0").await.unwrap();
        let remembered = send(&format!("m{SENT_IDS}")).await.unwrap();

        // Assert
        assert!(forgotten > first, "past the window it is a new message");
        assert_eq!(remembered, first + SENT_IDS as u64);
        assert_eq!(log.head(), 1 + SENT_IDS as u64 + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_sent_again_spends_none_of_the_rate_limit() {
        // Arrange: a burst of 2 at 1 a second.
        let (_log, directory) = room();
        let ann = SessionId::new_v4();
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        let send = |id: &str| directory.append(ann, name("ann"), say_with_id(id), LEASE, 1);
        send("a").await.unwrap();

        // Act
        let retries: Vec<_> = futures_util::future::join_all((0..5).map(|_| send("a"))).await;
        let new = send("b").await;

        // Assert
        assert!(retries.iter().all(Result::is_ok));
        assert!(new.is_ok(), "the burst's second token is left");
    }

    #[tokio::test]
    async fn an_unknown_or_ended_session_cannot_append_or_be_found() {
        // Arrange
        let (log, directory) = room();
        let ann = SessionId::new_v4();
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        directory.leave(ann).await.unwrap();

        // Act
        let ended = directory.append(ann, name("ann"), say(), LEASE, 0).await;
        let unknown = directory
            .append(SessionId::new_v4(), name("x"), say(), LEASE, 0)
            .await;
        let found = directory.lookup(ann).await.unwrap();

        // Assert
        assert_eq!(ended.unwrap_err().code(), "unknown_session");
        assert_eq!(unknown.unwrap_err().code(), "unknown_session");
        assert_eq!(found, Lookup::Unknown);
        assert_eq!(log.head(), 2, "nothing appended");
    }

    #[tokio::test]
    async fn sessions_that_went_idle_leave_once_and_renewing_them_says_they_are_gone() {
        // Arrange
        let (log, directory) = room();
        let (ann, bob) = (SessionId::new_v4(), SessionId::new_v4());
        directory
            .join(ann, &name("ann"), LEASE, false)
            .await
            .unwrap();
        directory
            .join(bob, &name("bob"), LEASE, false)
            .await
            .unwrap();

        // Act
        let ended = directory.went_idle(vec![ann, ann]).await.unwrap();
        let gone = directory.renew(vec![ann, bob], LEASE).await.unwrap();
        let reaped = directory.reap().await.unwrap();

        // Assert
        assert_eq!(ended, 1);
        assert_eq!(gone, [ann]);
        assert_eq!(
            reaped,
            Reaped {
                ended: 0,
                online: 1
            }
        );
        assert_eq!(kinds(&log)[2], ("leave", "ann".into()));
        assert_eq!(
            directory.lookup(bob).await.unwrap(),
            Lookup::Live(name("bob"))
        );
    }

    #[tokio::test]
    async fn a_signal_that_reached_no_socket_here_names_why() {
        // Arrange
        let (_log, directory) = room();
        directory
            .join(SessionId::new_v4(), &name("bob"), LEASE, false)
            .await
            .unwrap();

        // Act
        let online = directory.relay_signal(&name("BOB"), "{}".into()).await;
        let offline = directory.relay_signal(&name("ghost"), "{}".into()).await;

        // Assert
        assert_eq!(online.unwrap_err().code(), "target_not_listening");
        assert_eq!(offline.unwrap_err().code(), "unknown_target");
    }

    #[tokio::test]
    async fn a_closed_log_refuses_joins_without_taking_the_name() {
        // Arrange
        let (log, directory) = room();
        drop(log);

        // Act
        let refused = directory
            .join(SessionId::new_v4(), &name("ann"), LEASE, false)
            .await;

        // Assert
        assert_eq!(refused.unwrap_err().code(), "internal");
        assert_eq!(directory.online(), 0);
    }
}
