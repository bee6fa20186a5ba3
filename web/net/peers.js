/// peers.js: the WebRTC peer connections of one page, in a mesh. Cursor
/// moves go browser to browser on data channels; the server only introduces
/// the peers, relaying their signals over the WebSocket (webrtc.js).
///
///   page ann                       pushlab                       page bob
///     | -- signal offer, to bob --->  |  -- signal, from ann ---->  |
///     |  <--- signal, from bob -----  |  <--- answer, to ann -----  |
///     | <--- ICE candidates, both ways, the same way ------------>  |
///     | ====== SCTP over DTLS over UDP, host to host =============  |
///     |   {"x":0.4,"y":0.7,"n":12,"t":1764166000123.4}              |
///
/// Signals name their target by user name, never by session: a session id
/// is a credential. Every online `webrtc` user of the room is a peer. The
/// newcomer offers: when its socket says hello, a page offers to everyone
/// already online, whose sockets have long been listening; of two offers
/// that still cross, the one from the name that sorts first wins. The
/// offerer learns who is not on WebRTC from the server's refusal
/// (`target_not_listening`), and asks again a few times, in case that user
/// had only just joined and its socket was still opening.
///
/// Each move carries its sender's clock (`t`) and a sequence number per
/// channel (`n`), for path-metrics.js. It knows no log, no page and no DOM.

import { getJson } from './api.js';
import { wallClock } from './clock.js';

/**
 * The cursor channel: unordered and never retransmitted, so a lost move is
 * lost and the next one is fresher anyway. `negotiated` with a fixed id:
 * both sides make it, with no in-band open message.
 */
export const CURSOR_CHANNEL = { ordered: false, maxRetransmits: 0, negotiated: true, id: 0 };
/** A channel not open this long after we start is failed, in ms. */
const OPEN_TIMEOUT_MS = 10_000;
/** How often an offer refused with `target_not_listening` is made again, and the first pause, in ms (then doubled). */
const PROBES = 3;
const PROBE_PAUSE_MS = 1000;

/** Peers are told apart by name, without case, as the server compares names. */
const keyOf = (name) => name.toLowerCase();

/** The ICE servers the server tells pages about (`GET /config`); none on any failure. */
export async function fetchIceServers() {
  try {
    return (await getJson('/config')).ice_servers ?? [];
  } catch {
    return [];
  }
}

/** One peer connection and its cursor channel: 'connecting' → 'open', or 'failed'. */
class PeerLink {
  constructor(name, { offerer, iceServers, signal, onMove, onState }) {
    this.name = name;
    this.offerer = offerer;
    this.signal = signal;
    this.onMove = onMove;
    this.onState = onState;
    this.state = 'connecting';
    this.reason = '';
    this.closed = false;
    /** Moves sent on this channel: the `n` of the next one. */
    this.sent = 0;
    /** Candidates that came before the remote description. */
    this.early = [];
    this.pc = new RTCPeerConnection({ iceServers });
    this.channel = this.pc.createDataChannel('cursors', CURSOR_CHANNEL);
    this.channel.onopen = () => this.setState('open');
    this.channel.onclose = () => this.fail('the channel closed');
    this.channel.onmessage = (message) => this.receive(message.data);
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.signal('candidate', candidate.toJSON());
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === 'failed' || state === 'closed') this.fail(`the connection ${state}`);
    };
    this.timer = setTimeout(() => this.fail(`no channel within ${OPEN_TIMEOUT_MS / 1000} s`), OPEN_TIMEOUT_MS);
    if (offerer) this.offer();
  }

  async offer() {
    try {
      await this.pc.setLocalDescription();
      this.signal('offer', this.pc.localDescription.toJSON());
    } catch (err) {
      this.fail(err.message);
    }
  }

  /** An offer, answer or candidate from the peer, through the server. */
  async onSignal(kind, data) {
    if (this.closed) return;
    try {
      if (kind === 'offer' || kind === 'answer') {
        await this.pc.setRemoteDescription(data);
        if (kind === 'offer') {
          await this.pc.setLocalDescription();
          this.signal('answer', this.pc.localDescription.toJSON());
        }
        for (const candidate of this.early.splice(0)) await this.pc.addIceCandidate(candidate);
      } else if (kind === 'candidate') {
        if (this.pc.remoteDescription) await this.pc.addIceCandidate(data);
        else this.early.push(data);
      }
    } catch (err) {
      this.fail(err.message);
    }
  }

  /** Sends a move if the channel is open; says whether it went. */
  send(x, y) {
    if (this.state !== 'open' || this.channel.readyState !== 'open') return false;
    this.sent += 1;
    try {
      this.channel.send(JSON.stringify({ x, y, n: this.sent, t: wallClock() }));
      return true;
    } catch (err) {
      this.fail(err.message);
      return false;
    }
  }

  receive(text) {
    if (typeof text !== 'string') return;
    let move;
    try {
      move = JSON.parse(text);
    } catch {
      return;
    }
    const fraction = (v) => typeof v === 'number' && v >= 0 && v <= 1;
    if (!fraction(move.x) || !fraction(move.y) || !Number.isInteger(move.n) || typeof move.t !== 'number') return;
    this.onMove(this.name, move, text.length);
  }

  setState(state, reason = '') {
    if (this.closed || this.state === 'failed' || this.state === state) return;
    clearTimeout(this.timer);
    this.state = state;
    this.reason = reason;
    this.onState(this);
  }

  fail(reason) {
    if (this.closed || this.state === 'failed') return;
    this.setState('failed', reason);
    this.pc.close();
  }

  /** Ends the link without calling it failed (the peer left, or we stop). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.pc.close();
  }
}

/** Every peer of this page: who offers, each link and its state. */
export class PeerMesh {
  /**
   * `signal(to, kind, data)` sends through the server; `onMove(name, move,
   * bytes)` hears every move from a peer; `onChange(link)` every change of
   * state.
   */
  constructor({ me, iceServers, signal, onMove, onChange = () => {} }) {
    this.me = me;
    this.iceServers = iceServers;
    this.signal = signal;
    this.onMove = onMove;
    this.onChange = onChange;
    /** name key → PeerLink */
    this.links = new Map();
    /** Keys of users the server said take no signals: they use the server path. */
    this.notPeers = new Set();
    /** name key → offers refused with `target_not_listening` so far */
    this.refusals = new Map();
    this.closed = false;
  }

  /** Offers to everyone in `names` this page has no link with: the others already online. */
  sync(names) {
    for (const name of names) {
      const key = keyOf(name);
      if (key === keyOf(this.me) || this.links.has(key) || this.notPeers.has(key)) continue;
      this.connect(name, { offerer: true });
    }
  }

  connect(name, { offerer }) {
    this.links.get(keyOf(name))?.close();
    const link = new PeerLink(name, {
      offerer,
      iceServers: this.iceServers,
      signal: (kind, data) => this.signal(name, kind, data),
      onMove: this.onMove,
      onState: (changed) => {
        if (this.links.get(keyOf(name)) === changed) this.onChange(changed);
      },
    });
    this.links.set(keyOf(name), link);
    this.onChange(link);
    return link;
  }

  /**
   * A `signal` control from the server. An offer starts a fresh link,
   * unless it crossed ours and our name sorts first: then the peer takes
   * our offer instead.
   */
  onSignal({ from, kind, data }) {
    let link = this.links.get(keyOf(from));
    if (kind === 'offer') {
      const crossed = link?.offerer && link.state === 'connecting';
      if (crossed && keyOf(this.me) < keyOf(from)) return;
      this.notPeers.delete(keyOf(from));
      link = this.connect(from, { offerer: false });
    }
    link?.onSignal(kind, data);
  }

  /** The server refused a signal to `to`, with `code`. */
  onRefused(to, code) {
    const link = this.links.get(keyOf(to));
    if (!link) return;
    if (code === 'target_not_listening' || code === 'unknown_target') {
      // Not on WebRTC (or gone): not a peer, and not a failure either.
      link.close();
      this.links.delete(keyOf(to));
      this.notPeers.add(keyOf(to));
      this.onChange(link);
      const refused = (this.refusals.get(keyOf(to)) ?? 0) + 1;
      this.refusals.set(keyOf(to), refused);
      if (code === 'target_not_listening' && refused <= PROBES) {
        setTimeout(() => this.probe(to), PROBE_PAUSE_MS * 2 ** (refused - 1));
      }
    } else {
      link.fail(`the server refused a signal (${code})`);
    }
  }

  /** Offers again to someone whose socket took no signals a moment ago. */
  probe(name) {
    if (this.closed || !this.notPeers.has(keyOf(name))) return;
    this.notPeers.delete(keyOf(name));
    this.sync([name]);
  }

  /** `name` left the room. */
  remove(name) {
    const link = this.links.get(keyOf(name));
    this.links.delete(keyOf(name));
    this.notPeers.delete(keyOf(name));
    this.refusals.delete(keyOf(name));
    if (link) {
      link.close();
      this.onChange(link);
    }
  }

  /** Sends a move on every open channel. */
  broadcast(x, y) {
    for (const link of this.links.values()) link.send(x, y);
  }

  isOpen(name) {
    return this.links.get(keyOf(name))?.state === 'open';
  }

  /** [{name, state, reason}], by name. */
  peers() {
    return [...this.links.values()]
      .map(({ name, state, reason }) => ({ name, state, reason }))
      .sort((a, b) => keyOf(a.name).localeCompare(keyOf(b.name)));
  }

  close() {
    this.closed = true;
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}
