//! Rate-limited logging of what clients can make the frameworks say: one bad
//! client must not write one ERROR line per bad request.
//!
//! actix-server logs every failed accept at ERROR (`Error accepting
//! connection: ...`, target `actix_server::accept`, for example when the
//! process is out of file descriptors), and actix-http logs each malformed
//! request at ERROR when it closes the connection (`stream error: ...`,
//! target `actix_http::h1::dispatcher`), as well as oversized heads
//! (`MAX_BUFFER_SIZE unprocessed data reached, closing`, target
//! `actix_http::h1::decoder`).
//!
//! [`Throttled`] wraps the layer that writes log lines. For the targets it is
//! given, it lets at most one WARN or ERROR line through per (target, level)
//! per window; the next line let through after some were dropped is preceded
//! by one that says how many, as the Linux kernel's `printk_ratelimit` does
//! ("N callbacks suppressed"). Other lines pass untouched. The clock is
//! Tokio's, so tests run it on paused time.

use std::collections::hash_map::{Entry, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{FieldSet, Value};
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long one line of a kind holds back the next ones.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The crates whose per-connection errors clients can provoke.
pub const FRAMEWORK_TARGETS: &[&str] = &["actix_server", "actix_http"];

/// Which lines to let through: at most one per (target, level) per window.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    /// Target prefixes (whole path segments) the throttle applies to.
    targets: &'static [&'static str],
    /// The window of each kind of line seen, with what it dropped. Targets
    /// are static callsite names, so this stays small.
    seen: Mutex<HashMap<(&'static str, Level), Seen>>,
}

#[derive(Debug)]
struct Seen {
    since: Instant,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, after saying how many of its kind were dropped since the
    /// last one written.
    Pass { suppressed: u64 },
    /// Drop it.
    Suppress,
}

impl Throttle {
    /// A throttle of one line per `window` for each (target, level) under
    /// `targets`.
    pub fn new(window: Duration, targets: &'static [&'static str]) -> Self {
        Throttle {
            window,
            targets,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether lines like this are throttled at all: WARN and ERROR lines
    /// from the given targets.
    pub fn applies_to(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        *metadata.level() <= Level::WARN
            && self.targets.iter().any(|prefix| {
                target
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    }

    /// Decides on one line of `target` at `level`, seen at `now`.
    pub fn check(&self, target: &'static str, level: Level, now: Instant) -> Verdict {
        let mut seen = self.seen.lock();
        match seen.entry((target, level)) {
            Entry::Vacant(entry) => {
                entry.insert(Seen {
                    since: now,
                    suppressed: 0,
                });
                Verdict::Pass { suppressed: 0 }
            }
            Entry::Occupied(mut entry) => {
                let seen = entry.get_mut();
                if now.saturating_duration_since(seen.since) < self.window {
                    seen.suppressed += 1;
                    return Verdict::Suppress;
                }
                let suppressed = seen.suppressed;
                *seen = Seen {
                    since: now,
                    suppressed: 0,
                };
                Verdict::Pass { suppressed }
            }
        }
    }
}

/// A layer (the one that writes lines) behind a [`Throttle`].
#[derive(Debug)]
pub struct Throttled<L> {
    inner: L,
    throttle: Throttle,
}

impl<L> Throttled<L> {
    /// Puts `inner` behind `throttle`.
    pub fn new(inner: L, throttle: Throttle) -> Self {
        Throttled { inner, throttle }
    }
}

/// The callsite of the "N lines suppressed" line, which the throttle writes
/// itself, straight to the inner layer.
struct SuppressedCallsite;

static SUPPRESSED_CALLSITE: SuppressedCallsite = SuppressedCallsite;

static SUPPRESSED: Metadata<'static> = Metadata::new(
    "suppressed log lines",
    "pushlab::log_throttle",
    Level::WARN,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(
        &["message", "suppressed", "from", "level"],
        Identifier(&SUPPRESSED_CALLSITE),
    ),
    Kind::EVENT,
);

impl Callsite for SuppressedCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &SUPPRESSED
    }
}

impl<L> Throttled<L> {
    /// Writes "N lines suppressed" for lines like `like`.
    fn report<S>(&self, like: &Metadata<'_>, suppressed: u64, ctx: Context<'_, S>)
    where
        S: Subscriber,
        L: Layer<S>,
    {
        let fields = SUPPRESSED.fields();
        // The names are the ones declared in SUPPRESSED just above.
        let field = |name| fields.field(name).expect("a declared field");
        let (message, count, from, level) = (
            field("message"),
            field("suppressed"),
            field("from"),
            field("level"),
        );
        let text = format!(
            "{suppressed} more {} lines from {} were suppressed (at most one per {} s)",
            like.level(),
            like.target(),
            self.throttle.window.as_secs()
        );
        let values: [(&tracing::field::Field, Option<&dyn Value>); 4] = [
            (&message, Some(&text)),
            (&count, Some(&suppressed)),
            (&from, Some(&like.target())),
            (&level, Some(&like.level().as_str())),
        ];
        let values = fields.value_set(&values);
        self.inner.on_event(&Event::new(&SUPPRESSED, &values), ctx);
    }
}

impl<S, L> Layer<S> for Throttled<L>
where
    S: Subscriber,
    L: Layer<S>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !self.throttle.applies_to(metadata) {
            return self.inner.on_event(event, ctx);
        }
        match self
            .throttle
            .check(metadata.target(), *metadata.level(), Instant::now())
        {
            Verdict::Suppress => {}
            Verdict::Pass { suppressed } => {
                if suppressed > 0 {
                    self.report(metadata, suppressed, ctx.clone());
                }
                self.inner.on_event(event, ctx);
            }
        }
    }

    // Everything else goes straight to the inner layer.

    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }

    /// # Safety
    ///
    /// Hands out a pointer to `self` only for `Self`'s own type id, and
    /// otherwise whatever the inner layer hands out under the same contract.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: the inner layer upholds the same contract.
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const TARGETS: &[&str] = &["actix_server"];

    #[test]
    fn the_first_line_of_a_kind_passes_and_the_rest_of_its_window_is_counted() {
        let throttle = Throttle::new(WINDOW, TARGETS);
        let start = Instant::now();
        let target = "actix_server::accept";

        assert_eq!(
            throttle.check(target, Level::ERROR, start),
            Verdict::Pass { suppressed: 0 }
        );
        for second in 1..=9 {
            let at = start + Duration::from_secs(second);
            assert_eq!(throttle.check(target, Level::ERROR, at), Verdict::Suppress);
        }
        // Another level or target is another kind of line.
        assert_eq!(
            throttle.check(target, Level::WARN, start),
            Verdict::Pass { suppressed: 0 }
        );
        assert_eq!(
            throttle.check("actix_server::worker", Level::ERROR, start),
            Verdict::Pass { suppressed: 0 }
        );
        // The window over, one passes and says how many were dropped.
        assert_eq!(
            throttle.check(target, Level::ERROR, start + WINDOW),
            Verdict::Pass { suppressed: 9 }
        );
        assert_eq!(
            throttle.check(target, Level::ERROR, start + WINDOW * 3),
            Verdict::Pass { suppressed: 0 }
        );
    }

    #[test]
    fn only_warnings_and_errors_from_the_given_targets_are_throttled() {
        let throttle = Throttle::new(WINDOW, TARGETS);
        let applies = |meta: &Metadata<'_>| throttle.applies_to(meta);
        assert!(applies(ACCEPT_ERROR_CALLSITE.metadata()));
        assert!(!applies(&SUPPRESSED));
    }

    /// A callsite for the target check: an ERROR from actix_server::accept.
    struct AcceptErrorCallsite;
    static ACCEPT_ERROR_CALLSITE: AcceptErrorCallsite = AcceptErrorCallsite;
    static ACCEPT_ERROR: Metadata<'static> = Metadata::new(
        "accept error",
        "actix_server::accept",
        Level::ERROR,
        None,
        None,
        None,
        FieldSet::new(&["message"], Identifier(&ACCEPT_ERROR_CALLSITE)),
        Kind::EVENT,
    );
    impl Callsite for AcceptErrorCallsite {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &ACCEPT_ERROR
        }
    }

    /// Log output, captured.
    #[derive(Clone, Default)]
    struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock())
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_accept_errors_writes_one_line_per_window_and_then_the_count() {
        // Arrange
        let captured = Captured::default();
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(captured.clone())
            .with_ansi(false)
            .without_time();
        let subscriber = tracing_subscriber::registry().with(Throttled::new(
            lines,
            Throttle::new(WINDOW, FRAMEWORK_TARGETS),
        ));
        let _default = tracing::subscriber::set_default(subscriber);

        // Act: a burst, a line of our own, then the next window.
        for _ in 0..100 {
            tracing::error!(target: "actix_server::accept", "Error accepting connection: Too many open files (os error 24)");
        }
        tracing::error!(target: "pushlab::journal", "our own");
        tracing::error!(target: "pushlab::journal", "our own");
        tracing::info!(target: "actix_server::worker", "an info line");
        tracing::info!(target: "actix_server::worker", "an info line");
        tokio::time::advance(WINDOW).await;
        tracing::error!(target: "actix_server::accept", "Error accepting connection: Too many open files (os error 24)");

        // Assert
        let lines = captured.lines();
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert!(
            lines[0].contains("Error accepting connection"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("our own") && lines[2].contains("our own"));
        assert!(lines[3].contains("an info line") && lines[4].contains("an info line"));
        assert!(
            lines[5].contains("WARN")
                && lines[5].contains("99 more ERROR lines from actix_server::accept"),
            "{}",
            lines[5]
        );
        assert!(
            lines[6].contains("Error accepting connection"),
            "{}",
            lines[6]
        );
    }
}
