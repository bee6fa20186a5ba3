/// mesh-member.js: a user of the room who takes part in its WebRTC mesh and
/// reads the log only to know who else is online: the compare page's demo
/// bot (bot.js) and its WebRTC pane (ui/compare.js).
///
/// It registers, reads the log with a LogFollower over a WebSocket that
/// takes signals (webrtc.js), and keeps the set of the others online from
/// the welcome and the join and leave events that follow. When the server
/// no longer knows its session (it restarted, or the member was away too
/// long), it registers again under the same name, with backoff, and starts
/// over from the new welcome: a new session, a new mesh, and a cursor in the
/// log's epoch as it is now. Only the session it holds can be lost: an
/// answer about an earlier one (a send still on its way when the member
/// registered again) changes nothing, or it would end a session the server
/// has just given it. A gap needs no new session: the follower moves
/// past it, and the mesh mends what a missed join or leave would break (a
/// newcomer offers to us; a peer that left fails its channel).
///
/// It knows no DOM: its owner draws what it hears.

import { beaconLeave, register, send } from './api.js';
import { LogFollower } from './follower.js';
import { Metrics } from './metrics.js';
import { Backoff } from './transports.js';
import { WebRtcTransport } from './webrtc.js';

/** Registering again gives up after this many `name_taken` answers: someone else has the name now. */
const NAME_TAKEN_TRIES = 3;

/**
 * Whether a registration that failed may succeed later without anything
 * changed: the server could not be reached, or was busy or at a limit that
 * frees up (429, 5xx). A bad or taken name stays refused.
 */
const worthRetrying = (err) => err.code === 'network' || err.status === 429 || err.status >= 500;

const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();

export class MeshMember {
  /**
   * `name` is the name to register under. Its owner hears:
   *   onJoined(welcome, {again})  after each registration, the first and every one after a lost session
   *   onEvent(event)              every new log event, once the member has noted who is online
   *   onGap(gap)                  every gap, once the follower has moved past it
   *   onStatus(status)            the socket's status; 'reconnecting' while registering again, 'offline' once it gives up
   *   onPeerMove, onPeersChange   as WebRtcTransport's (webrtc.js)
   *   onRetry(err)                a first registration failed and will be tried again (start with `retry`)
   *   onFail(err)                 registering again was refused for good (the ApiError)
   * With `observer`, it registers as an observer, left out of who is online
   * (and so of the welcome's users): `peers()` names the members it should
   * offer to all the same, such as the other helper of its own page.
   */
  constructor({
    name,
    observer = false,
    peers = () => [],
    onJoined = () => {},
    onEvent = () => {},
    onGap = () => {},
    onStatus = () => {},
    onPeerMove = () => {},
    onPeersChange = () => {},
    onRetry = () => {},
    onFail = () => {},
  }) {
    this.name = name;
    this.observer = observer;
    this.peers = peers;
    this.handlers = { onJoined, onEvent, onStatus, onPeerMove, onPeersChange, onRetry, onFail };
    /** Where the member stands in the log; one for its whole life, restarted by each welcome. */
    this.follower = new LogFollower({
      onEvent: (event) => this.onLogEvent(event),
      onGap,
      onControl: (control) => {
        if (control.type === 'error' && control.code === 'unknown_session') this.sessionLost();
      },
    });
    /** The session while registered; null before, while registering again, and after stop. */
    this.session = null;
    /** Whether it should be in the room: from start() until stop() or giving up. */
    this.running = false;
    /** True while registering again after losing the session. */
    this.rejoining = false;
    /** The names of the others online: the mesh offers to them. */
    this.others = new Set();
    /** The signalling socket and its data channels, while registered. */
    this.transport = null;
  }

  /**
   * Registers and joins the mesh; rejects with the ApiError if the server
   * refuses. With `retry`, a failure that may pass (worthRetrying) is tried
   * again with backoff until it does, as every reader reconnects, or until
   * stop(); the owner hears each with onRetry.
   */
  async start({ retry = false } = {}) {
    this.running = true;
    const backoff = new Backoff();
    let welcome;
    while (!welcome) {
      try {
        welcome = await register(this.name, { observer: this.observer });
      } catch (err) {
        if (!retry || !worthRetrying(err) || !this.running) {
          this.running = false;
          throw err;
        }
        this.handlers.onRetry(err);
        await new Promise((resolve) => setTimeout(resolve, backoff.next()));
        // Stopped while waiting: there is nothing to join.
        if (!this.running) return;
      }
    }
    this.enter(welcome, { again: false });
  }

  /** Takes a welcome as the whole truth: session, who is online, and where to read from. */
  enter(welcome, { again }) {
    if (!this.running) {
      // Stopped while registering: the session is not wanted.
      beaconLeave(welcome.session);
      return;
    }
    this.name = welcome.name;
    this.session = welcome.session;
    this.others = new Set(welcome.users.map((user) => user.name).filter((name) => !sameName(name, welcome.name)));
    this.follower.startAt(welcome);
    const { onStatus, onPeerMove, onPeersChange } = this.handlers;
    this.transport = new WebRtcTransport(
      // The socket's own figures are not what anyone shows.
      { session: welcome.session, follower: this.follower, onStatus, metrics: new Metrics() },
      { me: welcome.name, users: () => this.users(), onPeerMove, onPeersChange },
    );
    this.transport.start();
    this.handlers.onJoined(welcome, { again });
  }

  /** The names the mesh offers to: the others online, and the peers named by the owner. */
  users() {
    const names = new Set(this.others);
    for (const name of this.peers()) if (name && !sameName(name, this.name)) names.add(name);
    return [...names];
  }

  /**
   * Publishes a message through the server on the member's socket, without
   * waiting for an answer (a refusal comes back on the socket), so that a
   * long round trip never slows the publisher. Rejects when the socket is
   * not connected: the caller may send over HTTP instead.
   */
  publish(message) {
    if (!this.transport) return Promise.reject(new Error('not registered'));
    return this.transport.publish(message);
  }

  onLogEvent(event) {
    if (event.type === 'join' && !sameName(event.name, this.name)) this.others.add(event.name);
    if (event.type === 'leave') this.others.delete(event.name);
    this.handlers.onEvent(event);
  }

  /**
   * The server no longer knows `session` (a transport or a send said
   * `unknown_session`): registers again under the same name, waiting
   * longer between attempts while the server is unreachable. Said of any
   * session but the one held now (an answer to a request made under an
   * earlier one, or while registering again), it is old news, and ignored:
   * registering again then would end the live session, whose name would
   * then be taken by itself until the server times it out.
   */
  async sessionLost(session = this.session) {
    if (!this.running || this.rejoining || !session || session !== this.session) return;
    this.rejoining = true;
    this.transport?.stop();
    this.transport = null;
    this.session = null;
    this.handlers.onStatus('reconnecting');
    const backoff = new Backoff();
    for (let attempt = 1; this.running; attempt += 1) {
      try {
        const welcome = await register(this.name, { observer: this.observer });
        this.rejoining = false;
        this.enter(welcome, { again: true });
        return;
      } catch (err) {
        // A session of ours the server still holds may take a moment to go;
        // after that a taken name means someone else has it.
        if (err.code === 'invalid_name' || (err.code === 'name_taken' && attempt >= NAME_TAKEN_TRIES)) {
          this.running = false;
          this.handlers.onStatus('offline');
          this.handlers.onFail(err);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, backoff.next()));
      }
    }
    this.rejoining = false;
  }

  /** Sends a move on every open data channel, and nowhere else. */
  sendPeers(x, y) {
    this.transport?.sendPeers(x, y);
  }

  /**
   * Leaves the room: closes the socket, whose close frame ends the session;
   * only if the socket was not open does it say leave over HTTP (after a
   * clean close that would be refused: the session is already gone).
   */
  async stop() {
    const session = this.session;
    const socketOpen = this.transport?.socket?.readyState === WebSocket.OPEN;
    this.halt();
    if (!session || socketOpen) return;
    try {
      await send(session, { type: 'leave' });
    } catch {
      // Already gone.
    }
  }

  /** From pagehide: the page is going, so only a beacon will still get out. */
  leaveNow() {
    if (this.session) beaconLeave(this.session);
    this.halt();
  }

  halt() {
    this.running = false;
    this.transport?.stop();
    this.transport = null;
    this.session = null;
  }
}
