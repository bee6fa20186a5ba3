//! The [`Directory`] of a room that one node serves alone: the default,
//! handed out by every store that keeps no sessions of its own (memory and
//! `--data-dir`).
//!
//! It owns, in this process, what a shared directory keeps in its store:
//! each name taken (without case) until its session's `leave` is in the log,
//! whether each session is live or ending, and each session's own rate
//! limit (`--rate-limit`). It has no leases: on one node the node is the
//! whole truth, so a session ends when the room hears it went idle here
//! ([`Directory::went_idle`], after `--presence-timeout`), or leaves.
//!
//! Every `join` and `leave` takes its place in the log while this table is
//! locked, so the names a `join` lists are exactly those online at its seq.
//! It holds the log weakly: the log's strong count is how the room registry
//! tells that nobody uses a room any more. It knows nothing of presence,
//! connections, addresses, the room or the registry.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Appending, Directory, Joined, Lookup, Reaped, SignalSink, WELCOME_USERS};
use crate::core::error::ApiError;
use crate::core::log::{Event, EventBody, EventLog, LogError};
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
}

struct Session {
    name: Name,
    /// Set once its `leave` is on its way: it takes nothing more, but its
    /// name stays taken until the `leave` is in the log.
    ending: bool,
    /// Its own rate limit.
    bucket: TokenBucket,
}

impl std::fmt::Debug for LocalDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDirectory")
            .field("online", &self.table.lock().live)
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
    /// Marks `session` as ending and returns its name, if it is live.
    fn begin_end(&mut self, session: SessionId) -> Option<Name> {
        let entry = self.sessions.get_mut(&session).filter(|s| !s.ending)?;
        entry.ending = true;
        self.live -= 1;
        Some(entry.name.clone())
    }

    /// Forgets `session` and frees its name.
    fn remove(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.remove(&session) {
            self.names.remove(&entry.name.key());
            if !entry.ending {
                self.live -= 1;
            }
        }
    }

    /// At most [`WELCOME_USERS`] of the live names, sorted without case,
    /// always with `me` among them.
    fn names_with(&self, me: &Name) -> Vec<Name> {
        let mut names: Vec<Name> = self
            .sessions
            .values()
            .filter(|s| !s.ending)
            .map(|s| s.name.clone())
            .collect();
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
                    ending: false,
                    // Full: a new session may send its burst at once.
                    bucket: TokenBucket::full(f64::INFINITY, Instant::now()),
                },
            );
            table.live += 1;
            let appended = log.append(name.clone(), EventBody::Join);
            (appended, table.names_with(name), table.live)
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
        {
            let mut table = self.table.lock();
            let Some(entry) = table.sessions.get_mut(&session).filter(|s| !s.ending) else {
                return Appending::refused(ApiError::UnknownSession);
            };
            if !entry.bucket.take(rate, Instant::now()) {
                return Appending::refused(ApiError::RateLimited);
            }
        }
        match self.log() {
            Ok(log) => Appending::admitted(log.append(name, body)),
            Err(err) => Appending::refused(err.into()),
        }
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
        self.table.lock().live
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
        directory.join(alice, &name("Alice"), LEASE).await.unwrap();

        // Act
        let taken = directory
            .join(SessionId::new_v4(), &name("aLiCe"), LEASE)
            .await;
        let leaving = directory.leave(alice);
        let while_ending = directory
            .join(SessionId::new_v4(), &name("alice"), LEASE)
            .await;
        let left = leaving.await.unwrap();
        let after = directory
            .join(SessionId::new_v4(), &name("alice"), LEASE)
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
        directory.join(ann, &name("ann"), LEASE).await.unwrap();

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
                .join(SessionId::new_v4(), &name(n), LEASE)
                .await
                .unwrap();
        }

        // Act
        let joined = directory
            .join(SessionId::new_v4(), &name("ann"), LEASE)
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
                .join(SessionId::new_v4(), &n, LEASE)
                .await
                .unwrap();
        }

        // Act
        let joined = directory
            .join(SessionId::new_v4(), &name("zed"), LEASE)
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
        directory.join(ann, &name("ann"), LEASE).await.unwrap();
        directory.join(bob, &name("bob"), LEASE).await.unwrap();
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

    #[tokio::test]
    async fn an_unknown_or_ended_session_cannot_append_or_be_found() {
        // Arrange
        let (log, directory) = room();
        let ann = SessionId::new_v4();
        directory.join(ann, &name("ann"), LEASE).await.unwrap();
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
        directory.join(ann, &name("ann"), LEASE).await.unwrap();
        directory.join(bob, &name("bob"), LEASE).await.unwrap();

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
            .join(SessionId::new_v4(), &name("bob"), LEASE)
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
            .join(SessionId::new_v4(), &name("ann"), LEASE)
            .await;

        // Assert
        assert_eq!(refused.unwrap_err().code(), "internal");
        assert_eq!(directory.online(), 0);
    }
}
