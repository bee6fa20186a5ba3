// bot.js: demo traffic for the compare page, made in the browser with the
// same two requests any client uses:
//
//   POST /register         {"name":"bot-k3x9"}                     once
//   POST /send?session=S   {"type":"mousemove","x":…,"y":…}        `rate` times a second,
//   POST /send?session=S   {"type":"message","text":…,"id":…}      one of them every few seconds
//
// Together they make exactly `rate` events a second, as the compare page's
// publish-rate selector says.
//
// Its cursor traces a Lissajous figure, a smooth loop that visits the
// whole canvas, so a transport that delivers late or in bursts shows it.
//
// The bot is a WebRTC peer too, since the server is none: it keeps a
// WebSocket that takes signals (webrtc.js) and sends every move on its open
// data channels as well, so the compare page's WebRTC pane (and any chat
// page on ?transport=webrtc) gets its cursor browser to browser.

import { beaconLeave, register, send } from './api.js';
import { Metrics } from './metrics.js';
import { WebRtcTransport } from './webrtc.js';

/** About how often the bot says a line instead of moving, in ms. */
const CHAT_EVERY_MS = 3000;

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
  /** `onChange(bot)` hears about every start, stop, error and sent count. */
  constructor({ rate = 20, onChange = () => {} } = {}) {
    this.rate = rate;
    this.onChange = onChange;
    this.name = null;
    this.session = null;
    this.sent = 0;
    this.refused = 0;
    this.error = '';
    this.moveTimer = 0;
    /** Ticks since the start: every few seconds' worth, one is a chat line. */
    this.ticks = 0;
    this.inFlight = false;
    this.line = 0;
    /** Its WebRTC side: a signalling socket and its data channels, while running. */
    this.peer = null;
    /** performance.now() at start: the path is a function of time since. */
    this.startedAt = 0;
  }

  get running() {
    return this.session !== null;
  }

  async start() {
    if (this.running) return;
    this.error = '';
    const name = `bot-${Math.random().toString(36).slice(2, 6)}`;
    let welcome;
    try {
      welcome = await register(name);
      this.name = welcome.name;
      this.session = welcome.session;
    } catch (err) {
      this.error = err.message;
      this.onChange(this);
      return;
    }
    this.startPeer(welcome);
    this.startedAt = performance.now();
    this.ticks = 0;
    this.schedule();
    this.onChange(this);
  }

  /** Joins the room's WebRTC mesh, following who is online to find peers. */
  startPeer(welcome) {
    const others = new Set(welcome.users.map((user) => user.name).filter((n) => n !== welcome.name));
    let position = { cursor: welcome.cursor, epoch: welcome.epoch };
    this.peer = new WebRtcTransport(
      {
        session: welcome.session,
        position: () => position,
        deliver: (message) => {
          if (message.seq === undefined || message.seq <= position.cursor) return;
          position = { ...position, cursor: message.seq };
          if (message.type === 'join' && message.name !== this.name) others.add(message.name);
          if (message.type === 'leave') others.delete(message.name);
        },
        // The socket's own figures are not shown anywhere.
        metrics: new Metrics(),
      },
      { me: welcome.name, users: () => [...others] },
    );
    this.peer.start();
  }

  /** Changes the moves per second, live. */
  setRate(rate) {
    this.rate = rate;
    if (this.running) this.schedule();
  }

  /**
   * One tick every 1/rate s. About every CHAT_EVERY_MS one of them is a chat
   * line instead of a move, so the bot publishes exactly `rate` events a
   * second, whatever the rate: what the compare page's selector says.
   */
  schedule() {
    clearInterval(this.moveTimer);
    this.moveTimer = setInterval(() => this.tick(), 1000 / this.rate);
  }

  tick() {
    this.ticks += 1;
    const chatEvery = Math.max(2, Math.round((this.rate * CHAT_EVERY_MS) / 1000));
    if (this.ticks % chatEvery === 0) this.chat();
    else this.move();
  }

  /** One step along the path; skipped if the last move is still on its way. */
  async move() {
    if (this.inFlight || !this.running) return;
    const t = (performance.now() - this.startedAt) / 1000;
    const x = 0.5 + 0.4 * Math.sin(t * 0.9);
    const y = 0.5 + 0.4 * Math.sin(t * 1.3 + Math.PI / 4);
    // Peers first: the server path below is what every other pane reads.
    this.peer?.sendPeers(x, y);
    this.inFlight = true;
    try {
      await send(this.session, { type: 'mousemove', x, y });
      this.sent += 1;
    } catch (err) {
      this.refused += 1;
      if (err.code === 'unknown_session') this.halt('the server forgot the bot (restarted?)');
    } finally {
      this.inFlight = false;
    }
  }

  async chat() {
    if (!this.running) return;
    const text = LINES[this.line % LINES.length];
    this.line += 1;
    try {
      await send(this.session, { type: 'message', text, id: `${this.name}-${this.line}` });
      this.sent += 1;
    } catch {
      this.refused += 1;
    }
  }

  /** Stops and ends the bot's session. */
  async stop() {
    const session = this.session;
    this.halt('');
    if (session) {
      try {
        await send(session, { type: 'leave' });
      } catch {
        // Already gone.
      }
    }
  }

  /** From pagehide: the page is going, so only a beacon will still get out. */
  leaveNow() {
    if (this.session) beaconLeave(this.session);
    this.halt('');
  }

  halt(error) {
    this.peer?.stop();
    this.peer = null;
    clearInterval(this.moveTimer);
    this.session = null;
    this.error = error;
    this.onChange(this);
  }
}
