/// bot.js: demo traffic for the compare page, made in the browser as any
/// client makes it:
///
///   POST /register        {"name":"bot-k3x9","observer":true}    once
///   → on its WebSocket    {"type":"mousemove","x":…,"y":…}       `rate` times a second,
///   → on its WebSocket    {"type":"message","text":…,"id":…}     one of them every few seconds
///
/// Together they make exactly `rate` events a second, as the compare page's
/// publish-rate selector says. They go as frames on the socket the bot has
/// anyway, without waiting for an answer, so a long round trip
/// (`--delay-ms 100`) does not cap the rate: over POST /send, one request at
/// a time, 200 ms each way and back held it near 5/s. Only while the socket
/// is not connected does a tick go over POST /send, one at a time.
///
/// It registers as an observer: a page's helper, not one of the people in
/// the room.
///
/// Its cursor traces a Lissajous figure, a smooth loop that visits the
/// whole canvas, so a transport that delivers late or in bursts shows it.
///
/// The bot is a WebRTC peer too, since the server is none: a MeshMember
/// (mesh-member.js) keeps its session, a WebSocket that takes signals, and
/// its data channels, and every move goes on its open channels as well, so
/// the compare page's WebRTC pane (and any chat page on ?transport=webrtc)
/// gets its cursor browser to browser. When the server forgets the bot's
/// session (it restarted), the member registers it again and the bot goes
/// on. It knows no DOM.

import { send } from './api.js';
import { MeshMember } from './mesh-member.js';

/** About how often the bot says a line instead of moving, in ms. */
const CHAT_EVERY_MS = 3000;

/** The most late ticks one timer firing makes up for: well inside the server's burst allowance. */
const MAX_CATCH_UP = 10;

/** Things the bot says, one per line, in turn. */
const LINES = [
  'Short polling asks every interval, news or not.',
  'Long polling: the server holds the question until it has an answer.',
  'SSE is one response that never ends.',
  'A WebSocket frame costs a couple of bytes of header.',
  'Every transport reads the same log; only the wire differs.',
  'Watch the poll pane: my dot jumps once per interval.',
];

export class DemoBot {
  /**
   * `onChange(bot)` hears about every start, stop, error and sent count;
   * `peers()` names the page's other mesh members the bot offers a channel
   * to (observers are in nobody's welcome).
   */
  constructor({ rate = 20, onChange = () => {}, peers = () => [] } = {}) {
    this.rate = rate;
    this.peers = peers;
    this.onChange = onChange;
    this.sent = 0;
    this.refused = 0;
    this.error = '';
    this.moveTimer = 0;
    /** Ticks since the start: every few seconds' worth, one is a chat line. */
    this.ticks = 0;
    this.inFlight = false;
    this.line = 0;
    /** Its session, its reader of the log and its WebRTC side, while running. */
    this.member = null;
    /** performance.now() at start: the path is a function of time since. */
    this.startedAt = 0;
  }

  /** Whether the bot is meant to be in the room (it may be registering again). */
  get running() {
    return Boolean(this.member?.running);
  }

  /** Its name in the room, once it has one. */
  get name() {
    return this.member?.name ?? null;
  }

  /** True while it registers again after the server forgot its session. */
  get rejoining() {
    return Boolean(this.member?.rejoining);
  }

  /** Where its reader stands in the log: {cursor, epoch}, or null when stopped. */
  position() {
    return this.member?.follower.position() ?? null;
  }

  async start() {
    if (this.running) return;
    this.error = '';
    const member = new MeshMember({
      name: `bot-${Math.random().toString(36).slice(2, 6)}`,
      observer: true,
      peers: this.peers,
      onFail: (err) => {
        if (this.member === member) this.halt(`the server refused to take the bot back: ${err.message}`);
      },
    });
    this.member = member;
    try {
      await member.start();
    } catch (err) {
      if (this.member === member) this.halt(err.message);
      return;
    }
    if (this.member !== member) return;
    this.startedAt = performance.now();
    this.ticks = 0;
    this.schedule();
    this.onChange(this);
  }

  /** Changes the moves per second, live. */
  setRate(rate) {
    this.rate = rate;
    if (this.running) this.schedule();
  }

  /**
   * One tick every 1/rate s. About every CHAT_EVERY_MS one of them is a chat
   * line instead of a move, so the bot publishes exactly `rate` events a
   * second, whatever the rate: what the compare page's selector says. A
   * timer fires late on a busy machine and never makes up for it, so each
   * firing publishes the ticks due since the rate was set: the rate holds
   * over any second, though a late tick goes out a little late.
   */
  schedule() {
    clearInterval(this.moveTimer);
    this.scheduledAt = performance.now();
    this.scheduledTicks = 0;
    this.moveTimer = setInterval(() => this.catchUp(), 1000 / this.rate);
  }

  /** Publishes the ticks due by now, at most MAX_CATCH_UP of them at once. */
  catchUp() {
    const due = Math.floor(((performance.now() - this.scheduledAt) * this.rate) / 1000);
    // After a long stall (a suspended tab) the missed ticks are dropped.
    if (due - this.scheduledTicks > MAX_CATCH_UP) this.scheduledTicks = due - MAX_CATCH_UP;
    while (this.scheduledTicks < due) {
      this.scheduledTicks += 1;
      this.tick();
    }
  }

  tick() {
    this.ticks += 1;
    const chatEvery = Math.max(2, Math.round((this.rate * CHAT_EVERY_MS) / 1000));
    if (this.ticks % chatEvery === 0) this.chat();
    else this.move();
  }

  /** One step along the path, to the peers and through the server. */
  move() {
    if (!this.member?.session) return;
    const t = (performance.now() - this.startedAt) / 1000;
    const x = 0.5 + 0.4 * Math.sin(t * 0.9);
    const y = 0.5 + 0.4 * Math.sin(t * 1.3 + Math.PI / 4);
    // Peers first: the server path below is what every other pane reads.
    this.member.sendPeers(x, y);
    this.publish({ type: 'mousemove', x, y });
  }

  chat() {
    if (!this.member?.session) return;
    const text = LINES[this.line % LINES.length];
    this.line += 1;
    this.publish({ type: 'message', text, id: `${this.name}-${this.line}` });
  }

  /**
   * Puts one event on the socket; while the socket is not connected, sends
   * it over POST /send instead, one at a time (a tick is skipped while one
   * is on its way), or skips it while registering again.
   */
  async publish(message) {
    const member = this.member;
    const session = member?.session;
    if (!session) return;
    try {
      await member.publish(message);
      this.sent += 1;
      return;
    } catch {
      // Not connected: over HTTP below.
    }
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      await send(session, message);
      this.sent += 1;
    } catch (err) {
      this.refused += 1;
      if (err.code === 'unknown_session') member.sessionLost(session);
    } finally {
      this.inFlight = false;
    }
  }

  /** Stops and ends the bot's session. */
  async stop() {
    const member = this.member;
    // Taken from the bot first, so that halting leaves the member to say leave.
    this.member = null;
    this.halt('');
    await member?.stop();
  }

  /** From pagehide: the page is going, so only a beacon will still get out. */
  leaveNow() {
    this.member?.leaveNow();
    this.halt('');
  }

  halt(error) {
    this.member?.halt();
    this.member = null;
    clearInterval(this.moveTimer);
    this.error = error;
    this.onChange(this);
  }
}
