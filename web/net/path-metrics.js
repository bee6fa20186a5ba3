/// path-metrics.js: the same cursor stream measured on both paths, peer to
/// peer and through the server: latency, loss and reordering. Everything is
/// measured here from what arrives: each move carries its sender's clock
/// (`t`) and a sequence number per channel (`n`). Latency is arrival minus
/// `t`; a gap in `n` is a loss until a late move fills it (then it counts as
/// reordered). The server-path figure is the same moves' copies through the
/// log, matched by position, when the sender also sends there. Nothing here
/// touches the DOM (ui/peer-panel.js draws it).

import { wallClock } from './clock.js';
import { Samples } from './metrics.js';

/** A peer's cursor follows its channel while a move arrived there this recently, in ms. */
const FRESH_MS = 1000;
/** Moves per peer remembered to match their server copies. */
const MATCH_WINDOW = 300;

const keyOf = (name) => name.toLowerCase();

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
