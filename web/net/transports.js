/// transports.js: the ways to hear about new log events, behind one
/// interface. It owns the wire (URLs, frames, reconnecting with backoff);
/// where a reader stands in the log, and what is new to it, is its
/// LogFollower's business (follower.js).
///
/// The server keeps one append-only log. Each entry has a `seq` (1, 2, 3, …)
/// and a reader remembers the last seq it has taken: its cursor. Every
/// transport below does the same job, "give me the events after my cursor,
/// and keep doing it", in its own wire shape:
///
///   poll      GET /poll?since=N      answers at once, often with nothing; ask again after an interval
///   longpoll  GET /longpoll?since=N  the server holds the request until there is news (or 25 s pass)
///   sse       GET /sse?since=N       one response that never ends; the server writes `data:` lines into it
///   ws        GET /ws?since=N        an upgraded socket; JSON text frames both ways
///   webtransport  https://host:port/wt?since=N  an HTTP/3 session over QUIC (UDP): one server
///             stream of JSON lines, cursor moves as datagrams, sends on a stream of our own
///
/// Every transport takes the same options and has the same methods:
///
///   new XTransport({ session, follower, onStatus, metrics, interval, client })
///     session    the id from POST /register, or null to observe anonymously
///     follower   a LogFollower: position() says where to resume after a
///                reconnect, and everything read goes to it, in order
///     onStatus(s) hears 'connecting' | 'connected' | 'reconnecting'
///     client     the id the server counts this reader's bytes under, or null
///   .name         'poll' | 'longpoll' | 'sse' | 'ws' | 'webtransport'
///   .start()      begins reading; from then on it reconnects by itself
///   .stop()       stops reading and closes what is open; nothing read after reaches the follower
///   .send(msg)    sends a client message; rejects with an ApiError. A socket
///                 still opening holds it until it has said hello
///   .leave()      ends the session at once, from a page that is going away
///
/// When a connection drops, a transport waits (capped, jittered backoff) and
/// resumes from the follower's position, so nothing is lost; the follower
/// drops anything it has already taken, so nothing is shown twice. When the
/// server says the session is gone (HTTP 401 `unknown_session`), the
/// transport stops and hands the follower {type: 'error', code:
/// 'unknown_session'}: its owner registers again.

import { ApiError, beaconLeave, getJson, readUrl, send as httpSend } from './api.js';
import { watchResourceBytes } from './metrics.js';

/** How long a held long-poll may last, in seconds (the server caps it at --longpoll-timeout). */
const LONGPOLL_HOLD_SECS = 25;
/** How long `auto` waits for a WebSocket's or WebTransport session's hello before falling back, in ms. */
const OPEN_TIMEOUT_MS = 3000;
/** The most bytes of messages a socket holds while it opens (see HeldSends). */
const HELD_LIMIT_BYTES = 64 * 1024;
/** How long a message waits for its socket to open before it is refused, in ms. */
const HELD_MS = 10_000;

/** The transports a page may ask for with ?transport=. */
export const TRANSPORT_NAMES = ['auto', 'poll', 'longpoll', 'sse', 'ws', 'webtransport'];

/**
 * The transport class for a name; `auto` tries WebTransport (where the
 * server and the browser have it), then WebSocket, then long polling.
 */
export function createTransport(name, options) {
  switch (name) {
    case 'poll': return new PollTransport(options);
    case 'longpoll': return new LongPollTransport(options);
    case 'sse': return new SseTransport(options);
    case 'ws': return new WsTransport(options);
    case 'webtransport': return new WtTransport(options);
    case 'auto': return new AutoTransport(options);
    default: throw new Error(`unknown transport ${name}`);
  }
}

/**
 * Waits between reconnection attempts: 250 ms, 500 ms, 1 s, … capped at 5 s,
 * each a random time between half and all of that ("equal jitter"). The
 * randomness stops a thousand clients that lost the same server from all
 * coming back in the same millisecond.
 */
export class Backoff {
  constructor({ base = 250, cap = 5000 } = {}) {
    this.base = base;
    this.cap = cap;
    this.attempt = 0;
  }

  /** The next delay in ms. */
  next() {
    const ceiling = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  reset() {
    this.attempt = 0;
  }
}

/** What every transport shares: options, status, backoff, stopping, HTTP sending. */
class Transport {
  constructor({ session = null, follower, onStatus = () => {}, metrics, interval = 1000, client = null }) {
    this.session = session;
    this.follower = follower;
    this.onStatus = onStatus;
    this.client = client;
    this.metrics = metrics;
    this.interval = interval;
    this.backoff = new Backoff();
    this.stopped = false;
    this.status = null;
    /** Cancels the sleep between attempts when the transport stops. */
    this.wake = null;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    if (status === 'connected') {
      this.backoff.reset();
      this.metrics.markLive();
    }
    this.onStatus(status);
  }

  /** Resolves after `ms`, or at once when the transport stops. */
  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  stop() {
    this.stopped = true;
    this.wake?.();
  }

  /** Hands one message read to the follower, unless this transport has stopped meanwhile. */
  receive(message) {
    if (!this.stopped) this.follower.receive(message);
  }

  /** The query of a read from the follower's position. */
  readParams() {
    const { cursor, epoch } = this.follower.position();
    return { since: cursor, epoch, session: this.session, client: this.client };
  }

  /** The server no longer knows our session: stop, and let the owner register again. */
  sessionLost() {
    if (this.stopped) return;
    this.stop();
    this.follower.receive({ type: 'error', code: 'unknown_session', error: 'the session has expired' });
  }

  /**
   * A browser cannot see the HTTP status of a refused EventSource or
   * WebSocket, so after a failed attempt we ask over plain HTTP whether the
   * session still exists (a poll with our session answers 401 if not).
   */
  async sessionIsGone() {
    if (!this.session) return false;
    try {
      await getJson(readUrl('/poll', this.readParams()));
      return false;
    } catch (err) {
      return err.code === 'unknown_session';
    }
  }

  /** HTTP transports send with POST /send; the WebSocket overrides this. */
  send(message) {
    if (!this.session) return Promise.reject(new ApiError('unknown_session', 'observers cannot send'));
    return httpSend(this.session, message);
  }

  /**
   * Ends the session from pagehide. sendBeacon is the only request a browser
   * still delivers after the page is gone.
   */
  leave() {
    this.stop();
    if (this.session) beaconLeave(this.session);
  }
}

/**
 * Short polling: ask, get an answer at once (usually "nothing new"), wait,
 * ask again. Simple and works through anything, but every answer costs a
 * full HTTP request with headers, and news waits on average half an
 * interval before anyone asks for it.
 *
 *   GET /poll?since=41&epoch=…&session=…
 *   200 {"events":[{"seq":42,…}],"cursor":42,"epoch":"…","gap":false,"more":false}
 */
export class PollTransport extends Transport {
  name = 'poll';
  path = '/poll';

  start() {
    this.setStatus('connecting');
    this.abort = new AbortController();
    this.unwatch = watchResourceBytes(this.path, (bytes) => this.metrics.recordBytes(bytes));
    this.run();
  }

  stop() {
    super.stop();
    this.abort?.abort();
    this.unwatch?.();
  }

  /** The query of one read. */
  params() {
    return this.readParams();
  }

  /**
   * What to do between two answers: short polling waits out its interval,
   * unless the server said `more: true` (its answer was capped in bytes or
   * events and more is already waiting), when it asks again at once.
   */
  async between(batch) {
    if (!batch.more) await this.sleep(this.interval);
  }

  async run() {
    while (!this.stopped) {
      let batch;
      try {
        batch = await getJson(readUrl(this.path, this.params()), { signal: this.abort.signal });
      } catch (err) {
        if (this.stopped) return;
        if (err.code === 'unknown_session') return this.sessionLost();
        this.setStatus('reconnecting');
        await this.sleep(this.backoff.next());
        continue;
      }
      if (this.stopped) return;
      this.setStatus('connected');
      this.metrics.recordResponse(batch.events.length === 0);
      this.follower.receiveBatch(batch);
      await this.between(batch);
    }
  }
}

/**
 * Long polling: the same request, but when there is nothing new the server
 * holds it open until there is (or until `timeout` seconds pass) and then
 * answers. The client asks again at once. News arrives about as fast as on
 * a socket, at the price of one request per batch.
 *
 *   GET /longpoll?since=42&epoch=…&session=…&timeout=25
 *   … the server waits …
 *   200 {"events":[{"seq":43,…}],"cursor":43,"epoch":"…","gap":false,"more":false}
 */
export class LongPollTransport extends PollTransport {
  name = 'longpoll';
  path = '/longpoll';

  /**
   * A held request says nothing until it answers, so the first read after
   * (re)connecting asks with timeout=0: its immediate answer proves the
   * server is there. From then on each read is held.
   */
  params() {
    const timeout = this.status === 'connected' ? LONGPOLL_HOLD_SECS : 0;
    return { ...super.params(), timeout };
  }

  /** No pause: the next request is the next wait. */
  async between() {}
}

/**
 * What SSE and WebSocket share: one long-lived connection, opened by
 * `open()`, and reopened after a backoff when it drops.
 */
class StreamTransport extends Transport {
  /**
   * `onFirstFailure`, if given, is called instead of reconnecting when the
   * very first connection does not say hello within OPEN_TIMEOUT_MS: `auto`
   * then falls back to the next transport.
   */
  constructor(options, { onFirstFailure = null } = {}) {
    super(options);
    this.onFirstFailure = onFirstFailure;
    this.everConnected = false;
  }

  start() {
    this.setStatus('connecting');
    this.open();
  }

  /**
   * `wasConnected` says whether the connection that just ended had said
   * hello. If not, the attempt itself failed, which may mean our session
   * is gone, so ask before trying again.
   */
  async reconnect(wasConnected) {
    this.setStatus('reconnecting');
    if (!wasConnected && (await this.sessionIsGone())) return this.sessionLost();
    await this.sleep(this.backoff.next());
    if (!this.stopped) this.open();
  }

  /** Whether this is the first connection of a fallible `auto` choice. */
  onTrial() {
    return Boolean(this.onFirstFailure) && !this.everConnected;
  }

  /** On trial, a timer that gives up on the connection if no hello comes; otherwise null. */
  helloTimer() {
    return this.onTrial() ? setTimeout(() => this.firstFailure(), OPEN_TIMEOUT_MS) : null;
  }

  firstFailure() {
    const fallBack = this.onFirstFailure;
    if (!fallBack || this.stopped || this.everConnected) return;
    this.onFirstFailure = null;
    this.stop();
    fallBack();
  }
}

/** The UTF-8 size of a string: what it weighed on the wire. */
const encoder = new TextEncoder();
const byteLength = (text) => encoder.encode(text).length;

/**
 * Messages sent on a socket (WebSocket, WebTransport) that has not said
 * hello yet, held until it does: a line typed just after joining, while the
 * socket still opens, goes out once it is open instead of failing. What is
 * held is bounded in bytes (HELD_LIMIT_BYTES) and in time (HELD_MS); past
 * either, that send is refused, as it is when the transport stops.
 */
class HeldSends {
  constructor() {
    /** [{message, bytes, resolve, reject, timer}], oldest first. */
    this.held = [];
    this.bytes = 0;
  }

  /** Holds `message`; resolves as its write does once flushed, or rejects with an ApiError. */
  add(message) {
    const bytes = byteLength(JSON.stringify(message));
    if (this.bytes + bytes > HELD_LIMIT_BYTES) {
      return Promise.reject(new ApiError('network', 'too much is waiting for the connection to open'));
    }
    return new Promise((resolve, reject) => {
      const entry = { message, bytes, resolve, reject, timer: 0 };
      entry.timer = setTimeout(() => {
        this.remove(entry);
        reject(new ApiError('network', 'the connection did not open in time'));
      }, HELD_MS);
      this.held.push(entry);
      this.bytes += bytes;
    });
  }

  remove(entry) {
    clearTimeout(entry.timer);
    this.held = this.held.filter((other) => other !== entry);
    this.bytes -= entry.bytes;
  }

  /** Writes every held message with `write(message)` (which returns a promise), in order. */
  flush(write) {
    const held = this.held;
    this.held = [];
    this.bytes = 0;
    for (const entry of held) {
      clearTimeout(entry.timer);
      write(entry.message).then(entry.resolve, entry.reject);
    }
  }

  /** Refuses everything held: the transport stopped. */
  refuseAll() {
    this.flush(() => Promise.reject(new ApiError('network', 'the connection was closed')));
  }
}

/**
 * Server-Sent Events: one GET whose response never ends. The server writes
 * each event as lines of text and the browser's EventSource hands each one
 * to `onmessage`:
 *
 *   retry: 1000
 *   data: {"type":"hello","epoch":"…","cursor":42}
 *
 *   id: 43
 *   data: {"seq":43,"ts":…,"type":"message",…}
 *
 * Server to browser only: we still send with POST /send. EventSource would
 * reconnect by itself, sending `Last-Event-ID: 43` so the server resumes
 * after it; we close it on error and reconnect ourselves instead, to back
 * off with jitter and to notice an expired session (a 401 makes EventSource
 * give up silently).
 *
 * Over HTTP/1.1 an open stream (like a held long-poll) occupies one of the
 * six connections a browser allows per host, so many tabs on SSE can starve
 * each other; HTTP/2 carries them all on one connection.
 */
export class SseTransport extends StreamTransport {
  name = 'sse';

  open() {
    const source = new EventSource(readUrl('/sse', this.readParams()));
    this.source = source;
    this.metrics.recordConnection();
    let greeted = false;
    source.onmessage = (message) => {
      // What came over the wire for this message: its id line, if any, and its data line.
      const idLine = message.lastEventId ? `id: ${message.lastEventId}\n` : '';
      this.metrics.recordBytes(byteLength(`${idLine}data: ${message.data}\n\n`));
      const parsed = JSON.parse(message.data);
      if (parsed.type === 'hello') {
        greeted = true;
        this.setStatus('connected');
      }
      this.receive(parsed);
    };
    source.onerror = () => {
      source.close();
      if (!this.stopped) this.reconnect(greeted);
    };
  }

  stop() {
    super.stop();
    this.source?.close();
  }
}

/**
 * WebSocket: an HTTP request that upgrades into a two-way connection. Each
 * message is one JSON text frame, in either direction; after the handshake a
 * frame costs a few bytes of header and no HTTP at all.
 *
 *   GET /ws?session=…&since=42&epoch=…  (Upgrade: websocket)
 *   ← {"type":"hello","epoch":"…","cursor":42}
 *   ← {"seq":43,"ts":…,"type":"mousemove","name":"bob","x":0.4,"y":0.7}
 *   → {"type":"message","text":"hi","id":"m-…"}
 *   ← {"seq":44,…,"type":"message","text":"hi","id":"m-…"}
 *
 * A refused message comes back as {"type":"error","code":…,"id":…}. Closing
 * the socket cleanly (a close frame) ends the session at once.
 */
export class WsTransport extends StreamTransport {
  name = 'ws';
  /** What was sent before this socket said hello. */
  held = new HeldSends();

  open() {
    const params = { ...this.readParams(), ...this.socketParams() };
    const url = new URL(readUrl('/ws', params), location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url);
    this.socket = socket;
    this.greeted = false;
    this.metrics.recordConnection();
    // A socket counts as working only once the server's hello arrives: a
    // proxy may accept the upgrade and then pass nothing through.
    const onTrial = this.onTrial();
    const helloTimer = this.helloTimer();
    socket.onmessage = (frame) => {
      // Payload plus the 2-byte frame header (4 above 125 bytes).
      const size = byteLength(frame.data);
      this.metrics.recordBytes(size + (size > 125 ? 4 : 2));
      const parsed = JSON.parse(frame.data);
      if (parsed.type === 'hello') {
        clearTimeout(helloTimer);
        this.greeted = true;
        this.everConnected = true;
        this.setStatus('connected');
      }
      this.receive(parsed);
      if (parsed.type === 'hello') this.held.flush((message) => this.write(message));
    };
    socket.onclose = () => {
      clearTimeout(helloTimer);
      if (this.socket !== socket || this.stopped) return;
      if (onTrial) return this.firstFailure();
      this.reconnect(this.greeted);
    };
  }

  /** Extra query parameters of the socket's URL (WebRTC asks for signals). */
  socketParams() {
    return {};
  }

  /** Sends now if the socket is open and greeted, else once it is (HeldSends). */
  send(message) {
    if (this.stopped) return Promise.reject(new ApiError('network', 'the socket is closed'));
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN || !this.greeted) return this.held.add(message);
    return this.write(message);
  }

  write(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ApiError('network', 'the socket is not connected'));
    }
    this.socket.send(JSON.stringify(message));
    // Written, not yet accepted: a refusal comes back as an error frame.
    return Promise.resolve({});
  }

  stop() {
    super.stop();
    this.held.refuseAll();
    // 1000 = normal closure. The server treats any close frame from us as
    // "this user left".
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, 'closing');
  }

  /** A clean close frame ends the session; no beacon needed. */
  leave() {
    this.stop();
  }
}

/** Whether this browser can open WebTransport sessions from this page. */
export function webTransportAvailable() {
  return typeof WebTransport === 'function' && window.isSecureContext;
}

/** GET /config's `webtransport`, asked once: {host, port, certificate_hash}, or null without it. */
let webTransportConfigAsked = null;
export function webTransportConfig() {
  webTransportConfigAsked ??= getJson('/config').then((config) => config.webtransport ?? null);
  // A failed ask is asked again next time.
  webTransportConfigAsked.catch(() => {
    webTransportConfigAsked = null;
  });
  return webTransportConfigAsked;
}

/** A lowercase hex string as bytes. */
function hexBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/**
 * WebTransport: an HTTP/3 session over QUIC, on UDP at the page's port
 * number. The server opens one unidirectional stream and writes the log on
 * it as lines of JSON, the same messages as WebSocket frames; cursor moves
 * come as datagrams instead (we ask with cursors=datagrams), which may be
 * lost or overtake each other, and are never held up by a lost packet of
 * the chat. We send on one stream of our own, a JSON line per message, and
 * our cursor moves as datagrams.
 *
 *   CONNECT https://host:port/wt?session=…&since=42&epoch=…&cursors=datagrams
 *   ⇐ stream  {"type":"hello","epoch":"…","cursor":42}
 *   ⇐ stream  {"seq":43,"ts":…,"type":"message",…}
 *   ⇐ datagram {"seq":44,"ts":…,"type":"mousemove","name":"bob","x":0.4,"y":0.7}
 *   ⇒ stream  {"type":"message","text":"hi","id":"m-…"}
 *   ⇒ datagram {"type":"mousemove","x":0.1,"y":0.2}
 *
 * A refused session gets one {"type":"error","code":…} line and is closed.
 * With pushlab's own self-signed certificate, the page passes its SHA-256
 * hash (from GET /config) as serverCertificateHashes. Closing the session
 * cleanly ends ours at once, as a WebSocket's close frame does.
 */
export class WtTransport extends StreamTransport {
  name = 'webtransport';

  constructor(options, fallible) {
    super(options, fallible);
    this.writer = null;
    this.datagrams = null;
    /** What was sent before this session said hello. */
    this.held = new HeldSends();
  }

  async open() {
    const onTrial = this.onTrial();
    const helloTimer = this.helloTimer();
    const attempt = {};
    this.attempt = attempt;
    this.greeted = false;
    this.writer = null;
    this.datagrams = null;
    let session = null;
    try {
      const config = await webTransportConfig();
      if (!config || !webTransportAvailable()) throw new Error('no WebTransport here');
      if (this.attempt !== attempt || this.stopped) return;
      const path = readUrl('/wt', { ...this.readParams(), cursors: 'datagrams' });
      // The node's own name under --wt-host (several nodes behind one
      // proxy), else the page's host.
      const url = new URL(path, `https://${config.host ?? location.hostname}:${config.port}`);
      const options = config.certificate_hash
        ? { serverCertificateHashes: [{ algorithm: 'sha-256', value: hexBytes(config.certificate_hash) }] }
        : {};
      session = new WebTransport(url, options);
      this.wt = session;
      this.metrics.recordConnection();
      await session.ready;
      const streams = session.incomingUnidirectionalStreams.getReader();
      const { value: incoming } = await streams.read();
      streams.releaseLock();
      const outgoing = await session.createUnidirectionalStream();
      this.writer = outgoing.getWriter();
      this.datagrams = session.datagrams.writable.getWriter();
      this.readDatagrams(session, attempt);
      await this.readLines(incoming, attempt, helloTimer);
    } catch {
      // The session failed or closed; what to do next is decided below.
    }
    clearTimeout(helloTimer);
    if (this.attempt !== attempt || this.stopped) return;
    this.writer = null;
    this.datagrams = null;
    session?.close();
    // The next attempt asks GET /config again: a restarted server has a
    // new certificate (and hash), and behind a proxy the answer may name
    // another node (--wt-host).
    webTransportConfigAsked = null;
    if (onTrial && !this.everConnected) return this.firstFailure();
    this.reconnect(this.greeted);
  }

  /** Reads the server's stream, a JSON message per line, until it ends. */
  async readLines(stream, attempt, helloTimer) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.attempt !== attempt) return;
      pending += value;
      let newline;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.trim() === '') continue;
        this.metrics.recordBytes(byteLength(line) + 1);
        const parsed = JSON.parse(line);
        if (parsed.type === 'hello') {
          clearTimeout(helloTimer);
          this.greeted = true;
          this.everConnected = true;
          this.setStatus('connected');
        }
        // A refusal before hello: one that means the session is gone ends
        // the transport; any other is told, and the session closes.
        if (!this.greeted && parsed.type === 'error' && parsed.code === 'unknown_session') {
          return this.sessionLost();
        }
        this.receive(parsed);
        if (parsed.type === 'hello') this.held.flush((message) => this.write(message));
      }
    }
  }

  /** Hands each datagram (a cursor move) to the follower, outside the stream's order. */
  async readDatagrams(session, attempt) {
    const reader = session.datagrams.readable.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.attempt !== attempt || this.stopped) return;
        this.metrics.recordBytes(value.byteLength);
        const parsed = JSON.parse(decoder.decode(value));
        if (parsed.seq !== undefined) this.follower.receiveUnordered(parsed);
      }
    } catch {
      // The session ended; the stream's reader reconnects.
    }
  }

  /** Sends now if the session is open and greeted, else once it is (HeldSends). */
  send(message) {
    if (this.stopped) return Promise.reject(new ApiError('network', 'the session is closed'));
    if (!this.writer || !this.greeted) return this.held.add(message);
    return this.write(message);
  }

  write(message) {
    if (!this.writer) return Promise.reject(new ApiError('network', 'the session is not connected'));
    const json = JSON.stringify(message);
    // Cursor moves may be lost, and should not wait behind a lost packet.
    const written = message.type === 'mousemove' && this.datagrams
      ? this.datagrams.write(encoder.encode(json))
      : this.writer.write(encoder.encode(`${json}\n`));
    // Written, not yet accepted: a refusal comes back as an error line.
    return written.then(() => ({}), () => Promise.reject(new ApiError('network', 'the session closed')));
  }

  stop() {
    super.stop();
    this.held.refuseAll();
    this.attempt = null;
    // A clean close: the server ends our session at once.
    try {
      this.wt?.close({ closeCode: 0, reason: 'closing' });
    } catch {
      // Already closed.
    }
  }

  /** A clean close ends the session; no beacon needed. */
  leave() {
    this.stop();
  }
}

/**
 * `auto`: try WebTransport where the server offers it and the browser has
 * it, then a WebSocket; if one is refused or has not said hello within 3 s
 * (a proxy that does not pass upgrades, a firewall that drops UDP), fall
 * back to the next, and from the WebSocket to long polling, which is plain
 * HTTP and goes through anything. Once a transport works, it stays.
 */
export class AutoTransport {
  constructor(options) {
    this.options = options;
    this.fellBack = false;
    this.stopped = false;
    this.inner = this.webSocket();
  }

  /** A WebSocket that falls back to long polling. */
  webSocket() {
    return new WsTransport(this.options, {
      onFirstFailure: () => this.fallBack(new LongPollTransport(this.options)),
    });
  }

  /** The transport in use right now. */
  get name() {
    return this.inner.name;
  }

  get status() {
    return this.inner.status;
  }

  fallBack(next) {
    if (this.stopped) return;
    this.fellBack = true;
    // The figures should describe the transport the page ended on.
    this.options.metrics.reset();
    this.inner = next;
    this.inner.start();
  }

  async start() {
    let config = null;
    if (webTransportAvailable()) {
      try {
        config = await webTransportConfig();
      } catch {
        // No answer: the WebSocket will tell whether the server is there.
      }
    }
    if (this.stopped) return;
    if (config) {
      this.inner = new WtTransport(this.options, { onFirstFailure: () => this.fallBack(this.webSocket()) });
    }
    this.inner.start();
  }

  stop() {
    this.stopped = true;
    this.inner.stop();
  }

  send(message) {
    return this.inner.send(message);
  }

  leave() {
    this.stopped = true;
    this.inner.leave();
  }
}
