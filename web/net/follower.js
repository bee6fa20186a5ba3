/// follower.js: where one reader stands in one room's log. Every reader of
/// the client has one: the chat page, each compare pane, and each user of
/// the WebRTC mesh (the compare page's WebRTC pane and its bot).
///
/// It owns the four rules the server's `log::Reader` applies on its side,
/// so that no page has its own copy of them:
///
///   cursor  the seq of the last event taken; a read resumes after it
///   epoch   the log's id, sent with every read, so that a cursor from a log
///           that is gone (the server restarted with an empty one) is never
///           taken for a cursor of this one. It comes from a welcome or
///           GET /stats, or else from the first read; a gap brings a new one.
///   dedupe  an event at or below the cursor was taken already (a resumed
///           stream or a repeated poll sends it again) and is dropped
///   gap     events after the cursor are gone (trimmed, or of another
///           epoch): the reader now stands just before the first event that
///           follows, under the log's epoch, and is told, so that it can
///           reload what it shows
///
/// It knows no wire and no page: transports hand it what they read
/// (`receive` for a stream's messages, `receiveBatch` for a poll's answer)
/// and ask it where to resume (`position`); its owner hears what is new.

export class LogFollower {
  /**
   * `onEvent(event)` hears each new event once, in seq order; `onGap(gap)`
   * each gap, {type: 'gap', epoch, cursor}, after the follower has moved
   * there; `onControl(message)` every other message without a seq (hello,
   * error, welcome).
   */
  constructor({ onEvent = () => {}, onGap = () => {}, onControl = () => {} } = {}) {
    this.onEvent = onEvent;
    this.onGap = onGap;
    this.onControl = onControl;
    /** The seq of the last event taken; 0 before the first. */
    this.cursor = 0;
    /** The epoch `cursor` belongs to; null until a welcome or the first read says. */
    this.epoch = null;
    /** The seq of the newest event taken out of order (a datagram); 0 before one. */
    this.unordered = 0;
  }

  /**
   * Stands at `cursor` of `epoch` from now on, as a welcome (POST /register)
   * or GET /stats describes the log. A null epoch is taken from the first read.
   */
  startAt({ cursor = 0, epoch = null } = {}) {
    this.cursor = cursor;
    this.epoch = epoch;
  }

  /** Where a transport resumes reading: {cursor, epoch}. */
  position() {
    return { cursor: this.cursor, epoch: this.epoch };
  }

  /**
   * One message read from a stream (or made by a transport, such as its
   * `unknown_session` error). Returns true if it was new: an event taken,
   * or a gap.
   */
  receive(message) {
    if (message.seq !== undefined) return this.take(message);
    if (message.type === 'gap') {
      this.cursor = message.cursor;
      this.epoch = message.epoch;
      this.onGap(message);
      return true;
    }
    // A stream's hello names the log's epoch. If ours is another, the
    // server sends a gap next, and that is where the follower moves.
    if (message.type === 'hello') this.epoch ??= message.epoch;
    this.onControl(message);
    return false;
  }

  /**
   * One poll answer, {events, cursor, epoch, gap, more}: its gap first, if
   * it has one, then its events, as a stream would have sent them. The gap
   * rule is the server's: the cursor just before the first event that
   * follows, or the answer's cursor when none does.
   */
  receiveBatch(batch) {
    if (batch.gap) {
      const cursor = batch.events.length ? batch.events[0].seq - 1 : batch.cursor;
      this.receive({ type: 'gap', epoch: batch.epoch, cursor });
    } else {
      this.epoch ??= batch.epoch;
    }
    for (const event of batch.events) this.take(event);
  }

  /**
   * An event that came outside the ordered stream: a WebTransport datagram,
   * which may arrive before events with lower seqs that are still on their
   * way, or never. It is shown if it is newer than the cursor and than every
   * datagram before it, and the cursor stays: the stream's events between
   * must still be taken. Returns true if it was new.
   */
  receiveUnordered(event) {
    if (event.seq <= this.cursor || event.seq <= this.unordered) return false;
    this.unordered = event.seq;
    this.onEvent(event);
    return true;
  }

  /** Takes an event newer than the cursor and moves there; drops one already taken. */
  take(event) {
    if (event.seq <= this.cursor) return false;
    this.cursor = event.seq;
    this.onEvent(event);
    return true;
  }
}
