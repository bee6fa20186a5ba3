/// metrics.js: what each transport costs and how fast it delivers, measured
/// in the browser from what actually arrives.
///
/// The transports feed a Metrics object (events, requests, bytes); the pages
/// draw its snapshot with ui/figures.js. Latency is read on the Clock a
/// Metrics is given (clock.js): the server's clock, once a page has set it.
/// Nothing here touches the DOM.

/** How many recent samples the percentiles are computed over. */
const SAMPLE_WINDOW = 500;
/** The window events per second is averaged over, in milliseconds. */
const RATE_WINDOW_MS = 5000;

/** A bounded list of recent numbers with percentiles. */
export class Samples {
  constructor(limit = SAMPLE_WINDOW) {
    this.limit = limit;
    this.values = [];
  }

  add(value) {
    this.values.push(value);
    if (this.values.length > this.limit) this.values.shift();
  }

  /** The p-th percentile (0–100) by nearest rank, or null with no samples. */
  percentile(p) {
    if (this.values.length === 0) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    const rank = Math.ceil((p / 100) * sorted.length) - 1;
    return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
  }
}

/** The live figures of one connection to the log. */
export class Metrics {
  /**
   * `clock.offset` is what to add to Date.now() to read the clock events'
   * `ts` are written on (a Clock of clock.js); 0 when they are on this
   * browser's clock, or when nobody has set it against the server's.
   */
  constructor({ clock = { offset: 0 } } = {}) {
    this.clock = clock;
    this.reset();
  }

  reset() {
    /** Log events delivered (after dedupe), since the page loaded. */
    this.events = 0;
    /** Arrival times (performance.now) of recent events, for events/s. */
    this.arrivals = [];
    /** Event ts → receive time, in ms; only events created while we were connected. */
    this.latency = new Samples();
    /** Send → own message back from the server, in ms. */
    this.roundTrip = new Samples();
    /** HTTP reads made (polls, long-polls) or connections opened (SSE, WebSocket). */
    this.requests = 0;
    /** HTTP reads that came back with no event. */
    this.emptyResponses = 0;
    /** Bytes received by the reads: HTTP headers and bodies, SSE lines, WS frames. */
    this.bytes = 0;
    /** Whether `requests` counts HTTP reads (true) or stream connections (false). */
    this.perRequest = true;
    /** Wall-clock ms from which events count toward latency; older ones are catch-up. */
    this.liveSince = Date.now();
  }

  /** A log event arrived (already deduplicated by seq). */
  recordEvent(event) {
    // `ts` is on the clock's time: read ours on the same one.
    const offset = this.clock.offset;
    const now = Date.now() + offset;
    this.events += 1;
    this.arrivals.push(performance.now());
    // An event written while we were disconnected (or before we arrived)
    // would measure the outage, not the transport.
    if (event.ts - offset >= this.liveSince) this.latency.add(Math.max(0, now - event.ts));
  }

  /** One HTTP read answered; `empty` if it carried no event. */
  recordResponse(empty) {
    this.perRequest = true;
    this.requests += 1;
    if (empty) this.emptyResponses += 1;
  }

  /** A stream (SSE) or socket (WebSocket) was opened. */
  recordConnection() {
    this.perRequest = false;
    this.requests += 1;
  }

  recordBytes(count) {
    this.bytes += count;
  }

  recordRoundTrip(ms) {
    this.roundTrip.add(ms);
  }

  /** Events created before now are catch-up from here on (called on each (re)connect). */
  markLive() {
    this.liveSince = Date.now();
  }

  /** Every figure as a plain number (or null when there is nothing to show yet). */
  snapshot() {
    const cutoff = performance.now() - RATE_WINDOW_MS;
    while (this.arrivals.length && this.arrivals[0] < cutoff) this.arrivals.shift();
    return {
      events: this.events,
      eventsPerSecond: this.arrivals.length / (RATE_WINDOW_MS / 1000),
      latencyP50: this.latency.percentile(50),
      latencyP95: this.latency.percentile(95),
      roundTripP50: this.roundTrip.percentile(50),
      roundTripP95: this.roundTrip.percentile(95),
      requests: this.requests,
      emptyShare: this.perRequest && this.requests ? this.emptyResponses / this.requests : null,
      perRequest: this.perRequest,
      requestsPerEvent: this.events ? this.requests / this.events : null,
      bytesPerEvent: this.events && this.bytes ? this.bytes / this.events : null,
    };
  }
}

// Resource Timing: the browser records, for every fetch, how many bytes
// came over the wire (`transferSize`: response headers + body as sent). It is
// the honest cost of a poll, empty answers included. Same-origin requests
// expose it freely; a cross-origin server would have to send
// `Timing-Allow-Origin`. Streams (SSE, WebSocket) are measured from their
// frames instead, because their entry only appears once they end.

/**
 * Calls `onBytes(n)` for every finished request to `pathname` (e.g. "/poll"),
 * until the function it returns is called. Each watch is an observer of its
 * own, so two transports on one page never share one.
 */
export function watchResourceBytes(pathname, onBytes) {
  if (!('PerformanceObserver' in window)) return () => {};
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (new URL(entry.name).pathname === pathname) onBytes(entry.transferSize || entry.encodedBodySize);
    }
    // The timeline buffer holds 250 entries by default; a poller fills it
    // in minutes. The observers have what they need, so empty the buffer.
    performance.clearResourceTimings();
  });
  observer.observe({ type: 'resource', buffered: false });
  return () => observer.disconnect();
}
