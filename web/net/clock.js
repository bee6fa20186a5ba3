/// clock.js: the two clocks latency is measured on.
///
///   wallClock()  this browser's clock, in ms with sub-millisecond resolution:
///                what a WebRTC move is stamped with, so one clock for every
///                page of one machine
///   Clock        this page's clock set against the server's, on which every
///                log event's `ts` is written; a student's laptop can be
///                seconds off the lecturer's server
///
/// A Metrics (metrics.js) is given the Clock its events are measured on; a
/// page that never sets one measures with an offset of 0. Nothing here
/// touches the DOM.

import { getJson } from './api.js';

/** How many GET /time exchanges one estimate makes. */
const CLOCK_SAMPLES = 5;

/** Milliseconds since 1970 with sub-millisecond resolution; one clock for every page of a machine. */
export const wallClock = () => performance.timeOrigin + performance.now();

/**
 * This page's clock against the server's: `offset` is what to add to
 * Date.now() to get the server's time. Each exchange brackets the server's
 * reading between a send (t0) and an arrival (t1); assuming the request and
 * the answer took equally long, the server read its clock at (t0 + t1) / 2.
 * The exchange with the shortest round trip bounds the error best: the
 * offset is right within ± half that round trip.
 */
export class Clock {
  constructor() {
    /** Server minus browser, in ms; 0 until estimated. */
    this.offset = 0;
    /** The fastest GET /time round trip of the last estimate, in ms. */
    this.roundTrip = null;
    this.estimated = false;
  }

  async estimate() {
    let best = null;
    for (let i = 0; i < CLOCK_SAMPLES; i += 1) {
      const t0 = Date.now();
      const started = performance.now();
      let server;
      try {
        server = (await getJson('/time')).now;
      } catch {
        continue;
      }
      const roundTrip = performance.now() - started;
      const t1 = t0 + roundTrip;
      if (!best || roundTrip < best.roundTrip) best = { roundTrip, offset: server - (t0 + t1) / 2 };
    }
    if (!best) return;
    this.offset = best.offset;
    this.roundTrip = best.roundTrip;
    this.estimated = true;
  }

  describe() {
    if (!this.estimated) return 'Clock: not yet set against the server; latency uses this browser\'s clock as it is.';
    const sign = this.offset >= 0 ? '+' : '−';
    return (
      `Clock offset corrected: the server's clock is ${sign}${Math.abs(this.offset).toFixed(1)} ms from this browser's ` +
      `(± ${(this.roundTrip / 2).toFixed(1)} ms, from the fastest of ${CLOCK_SAMPLES} GET /time round trips, ` +
      `${this.roundTrip.toFixed(1)} ms). Latency = arrival here − event ts, on the server's clock.`
    );
  }
}
