// webrtc.js: the fifth way. Cursor moves go browser to browser on WebRTC
// data channels; the server only introduces the peers.
//
//   page ann                       pushlab                       page bob
//     | -- signal offer, to bob --->  |  -- signal, from ann ---->  |
//     |  <--- signal, from bob -----  |  <--- answer, to ann -----  |
//     | <--- ICE candidates, both ways, the same way ------------>  |
//     | ====== SCTP over DTLS over UDP, host to host =============  |
//     |   {"x":0.4,"y":0.7,"n":12,"t":1764166000123.4}              |
//
// Chat, presence and history still go through the server over a WebSocket,
// so the log keeps their order: WebRtcTransport is a WsTransport whose
// socket also takes signals (`/ws?…&signals=true`). Signals name their
// target by user name, never by session: a session id is a credential.
//
// Every online `webrtc` user of the room is a peer, in a mesh. The
// newcomer offers: when its socket says hello, a page offers to everyone
// already online, whose sockets have long been listening; of two offers
// that still cross, the one from the name that sorts first wins. The
// offerer learns who is not on WebRTC from the server's refusal
// (`target_not_listening`), and asks again a few times, in case that user
// had only just joined and its socket was still opening. A move goes on every open
// channel, and through the server too while anyone online has no open
// channel with us (a `ws` user, a peer still connecting, a peer whose
// channel failed), so everyone sees every cursor. Incoming, a peer's
// cursor follows its channel while moves arrive there, else the server.
//
// Everything shown is measured here: each move carries its sender's clock
// (`t`) and a sequence number per channel (`n`). Latency is arrival minus
// `t`; a gap in `n` is a loss until a late move fills it (then it counts as
// reordered). The server-path figure is the same moves' copies through the
// log, matched by position, when the sender also sends there.

import { getJson } from './api.js';
import { Samples } from './metrics.js';
import { WsTransport } from './transports.js';

/**
 * The cursor channel: unordered and never retransmitted, so a lost move is
 * lost and the next one is fresher anyway. `negotiated` with a fixed id:
 * both sides make it, with no in-band open message.
 */
export const CURSOR_CHANNEL = { ordered: false, maxRetransmits: 0, negotiated: true, id: 0 };
/** A channel not open this long after we start is failed, in ms. */
const OPEN_TIMEOUT_MS = 10_000;
/** A peer's cursor follows its channel while a move arrived there this recently, in ms. */
const FRESH_MS = 1000;
/** Moves per peer remembered to match their server copies. */
const MATCH_WINDOW = 300;
/** How often an offer refused with `target_not_listening` is made again, and the first pause, in ms (then doubled). */
const PROBES = 3;
const PROBE_PAUSE_MS = 1000;

/** Milliseconds since 1970 with sub-millisecond resolution; one clock for every page of a machine. */
export const wallClock = () => performance.timeOrigin + performance.now();

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

/** The same cursor stream measured on both paths: latency, loss, reordering. */
export class PathMetrics {
  constructor() {
    /** Sender's clock to arrival here, over data channels, in ms. */
    this.p2p = new Samples();
    /** Sender's clock to arrival here of the same moves through the server, in ms. */
    this.server = new Samples();
    this.moves = 0;
    this.bytes = 0;
    this.lost = 0;
    this.reordered = 0;
    /** name key → the highest `n` seen on its current channel */
    this.highest = new Map();
    /** name key → Map(position → {t} or {serverAt}), to pair the two copies of a move */
    this.recent = new Map();
    /** name key → performance.now() of its last move over a channel */
    this.lastP2P = new Map();
  }

  /** A peer's channel (re)opened: its `n` starts again at 1. */
  restart(name) {
    this.highest.delete(keyOf(name));
  }

  /** A move from `name` over its data channel. */
  p2pMove(name, move, bytes) {
    const key = keyOf(name);
    this.moves += 1;
    this.bytes += bytes;
    this.p2p.add(wallClock() - move.t);
    this.lastP2P.set(key, performance.now());
    const top = this.highest.get(key) ?? 0;
    if (move.n > top) {
      this.lost += move.n - top - 1;
      this.highest.set(key, move.n);
    } else {
      // It was counted lost when a later one came first.
      this.reordered += 1;
      this.lost -= 1;
    }
    this.pair(key, move.x, move.y, { t: move.t });
  }

  /** A move from `name` through the server's log. */
  serverMove(name, x, y) {
    this.pair(keyOf(name), x, y, { serverAt: wallClock() });
  }

  /** Pairs the two copies of a move by its position; the second to arrive records the server's latency. */
  pair(key, x, y, copy) {
    let seen = this.recent.get(key);
    if (!seen) this.recent.set(key, (seen = new Map()));
    const position = `${x}:${y}`;
    const first = seen.get(position);
    if (first && (first.t === undefined) !== (copy.t === undefined)) {
      const { t, serverAt } = { ...first, ...copy };
      this.server.add(serverAt - t);
      seen.delete(position);
      return;
    }
    seen.set(position, copy);
    if (seen.size > MATCH_WINDOW) seen.delete(seen.keys().next().value);
  }

  /** Whether `name`'s cursor is arriving over its channel right now. */
  isFresh(name) {
    const last = this.lastP2P.get(keyOf(name));
    return last !== undefined && performance.now() - last < FRESH_MS;
  }

  snapshot() {
    return {
      moves: this.moves,
      bytesPerMove: this.moves ? this.bytes / this.moves : null,
      lost: this.lost,
      reordered: this.reordered,
      p2pP50: this.p2p.percentile(50),
      p2pP95: this.p2p.percentile(95),
      p2pCount: this.p2p.values.length,
      serverP50: this.server.percentile(50),
      serverP95: this.server.percentile(95),
      serverCount: this.server.values.length,
    };
  }
}

/**
 * WebRTC: the chat and presence of a WebSocket, with cursors peer to peer.
 * Options beyond a transport's: `me` (our name), `users()` (the names of
 * the others online), `onPeerMove(name, x, y, move, bytes)`,
 * `onPeersChange(link)`, and
 * `mirror`: send every move through the server too, to compare the paths.
 */
export class WebRtcTransport extends WsTransport {
  name = 'webrtc';

  constructor(options, { me, users, onPeerMove = () => {}, onPeersChange = () => {}, mirror = false }) {
    super({ ...options, deliver: (message) => this.receive(message) });
    this.pageDeliver = options.deliver;
    this.users = users;
    this.mirror = mirror;
    this.paths = new PathMetrics();
    this.mesh = null;
    // Signals that arrive before the ICE servers are known wait for them, in order.
    this.ready = fetchIceServers().then((iceServers) => {
      if (this.stopped) return;
      this.mesh = new PeerMesh({
        me,
        iceServers,
        signal: (to, kind, data) => this.sendSignal(to, kind, data),
        onMove: (name, move, bytes) => {
          this.paths.p2pMove(name, move, bytes);
          onPeerMove(name, move.x, move.y, move, bytes);
        },
        onChange: (link) => {
          if (link.state === 'open') this.paths.restart(link.name);
          onPeersChange(link);
        },
      });
    });
  }

  /** The socket takes our session's signals. */
  socketParams() {
    return { signals: true };
  }

  /** Everything the socket delivers: signals go to the mesh, the rest to the page. */
  receive(message) {
    const later = (act) => this.ready.then(() => this.mesh && act(this.mesh));
    switch (message.type) {
      case 'signal':
        later((mesh) => mesh.onSignal(message));
        return;
      case 'error':
        if (message.to) {
          later((mesh) => mesh.onRefused(message.to, message.code));
          return;
        }
        break;
      case 'hello':
        // A newcomer offers to everyone already here; later arrivals offer to us.
        later((mesh) => mesh.sync(this.users()));
        break;
      case 'leave':
        later((mesh) => mesh.remove(message.name));
        break;
      case 'mousemove':
        this.paths.serverMove(message.name, message.x, message.y);
        break;
      default:
        break;
    }
    this.pageDeliver(message);
  }

  sendSignal(to, kind, data) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: 'signal', to, kind, data }));
    }
  }

  /** Sends a move on every open channel, and nowhere else. */
  sendPeers(x, y) {
    this.mesh?.broadcast(x, y);
  }

  /** Moves go on every open channel, and through the server while anyone online lacks one. */
  send(message) {
    if (message.type !== 'mousemove') return super.send(message);
    this.sendPeers(message.x, message.y);
    if (this.mirror || !this.users().every((name) => this.mesh?.isOpen(name))) return super.send(message);
    return Promise.resolve({});
  }

  /** Whether `name`'s cursor comes over its channel, so its server copies are not drawn. */
  ownsCursor(name) {
    return Boolean(this.mesh?.isOpen(name)) && this.paths.isFresh(name);
  }

  /** Every peer's channel: [{name, state, reason}]. */
  peers() {
    return this.mesh?.peers() ?? [];
  }

  stop() {
    super.stop();
    this.mesh?.close();
  }
}

const tenths = (v) => (v === null ? '–' : `${v.toFixed(1)} ms`);
const pairOf = (a, b, count) => (a === null ? '–' : `${tenths(a)} / ${tenths(b)} · ${count} moves`);

/** The WebRTC figures: id, label, format, and one plain sentence. */
export const RTC_FIGURES = [
  {
    id: 'p2p-latency',
    label: 'Peer-to-peer latency p50 / p95',
    format: (s) => pairOf(s.p2pP50, s.p2pP95, s.p2pCount),
    explain: 'From the sender stamping a cursor move to its arrival here over the data channel, on the sender’s clock (exact between pages of one machine).',
  },
  {
    id: 'server-latency',
    label: 'Server-path latency p50 / p95, same moves',
    format: (s) => pairOf(s.serverP50, s.serverP95, s.serverCount),
    explain: 'The same moves’ copies through the server (WebSocket, log, WebSocket), paired by position. Only when the sender also sends through the server: tick the box, or have a non-WebRTC user online.',
  },
  {
    id: 'p2p-moves',
    label: 'Moves received peer to peer',
    format: (s) => (s.moves ? `${s.moves} · ${Math.round(s.bytesPerMove)} B each` : '0'),
    explain: 'Cursor moves that came over data channels, and their JSON size (SCTP, DTLS, UDP and IP add about 60 to 80 bytes more).',
  },
  {
    id: 'p2p-loss',
    label: 'Lost / reordered',
    format: (s) => `${s.lost} / ${s.reordered}`,
    explain: 'From the number each move carries: a gap not filled is a loss, a move that arrives after a later one is reordered. The channel never retransmits.',
  },
];

const PATH_NOTE = {
  connecting: 'connecting: cursors through the server until the channel opens',
  open: 'open: cursors peer to peer',
  failed: 'failed: cursors through the server',
};

/** The peers' channel states and the path figures, in a panel of the chat page. */
export class PeerPanel {
  /** `onMirror(checked)` hears the compare box. */
  constructor(container, { mirror = false, onMirror = () => {} } = {}) {
    const title = document.createElement('h3');
    title.className = 'rtc-title';
    title.textContent = 'Peers (WebRTC data channels)';
    this.list = document.createElement('ul');
    this.list.id = 'peers';
    this.list.className = 'peers';
    this.list.dataset.empty = 'No peer yet: another page on ?transport=webrtc in this room becomes one.';
    const label = document.createElement('label');
    label.className = 'rtc-mirror';
    this.mirror = document.createElement('input');
    this.mirror.type = 'checkbox';
    this.mirror.id = 'rtc-mirror';
    this.mirror.checked = mirror;
    this.mirror.addEventListener('change', () => onMirror(this.mirror.checked));
    label.append(this.mirror, ' Send my moves through the server too, so peers can compare the two paths');
    const figures = document.createElement('dl');
    figures.className = 'figures';
    this.values = new Map();
    for (const figure of RTC_FIGURES) {
      const row = document.createElement('div');
      row.className = 'figure';
      row.dataset.figure = figure.id;
      const term = document.createElement('dt');
      term.textContent = figure.label;
      const value = document.createElement('dd');
      value.className = 'figure-value';
      value.textContent = '–';
      const note = document.createElement('dd');
      note.className = 'figure-explain';
      note.textContent = figure.explain;
      row.append(term, value, note);
      figures.append(row);
      this.values.set(figure.id, value);
    }
    container.append(title, this.list, label, figures);
    container.hidden = false;
  }

  /** Redraws the peer list and the figures from a transport. */
  refresh(transport) {
    this.list.replaceChildren(
      ...transport.peers().map(({ name, state, reason }) => {
        const item = document.createElement('li');
        item.dataset.peer = name;
        item.dataset.state = state;
        item.textContent = `${name} · ${PATH_NOTE[state]}${reason ? ` (${reason})` : ''}`;
        return item;
      }),
    );
    const snapshot = transport.paths.snapshot();
    for (const figure of RTC_FIGURES) this.values.get(figure.id).textContent = figure.format(snapshot);
  }
}
