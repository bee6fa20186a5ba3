// metrics.js: what each transport costs and how fast it delivers, measured
// in the browser from what actually arrives.
//
// The transports feed a Metrics object; the pages render its snapshot with
// FIGURES, which pairs every number with one plain sentence saying what it
// means. Nothing here touches the DOM except renderFigures.

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
  constructor() {
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
    // `ts` is on the server's clock: read ours on the same one.
    const now = Date.now() + clockOffsetMs;
    this.events += 1;
    this.arrivals.push(performance.now());
    // An event written while we were disconnected (or before we arrived)
    // would measure the outage, not the transport.
    if (event.ts - clockOffsetMs >= this.liveSince) this.latency.add(Math.max(0, now - event.ts));
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

const ms = (v) => (v === null ? '–' : `${Math.round(v)} ms`);
const pair = (a, b) => (a === null ? '–' : `${ms(a)} / ${ms(b)}`);

/**
 * The figures the panels show: id, label, how to format a snapshot, and one
 * sentence for someone who has never measured a network.
 */
export const FIGURES = [
  {
    id: 'events',
    label: 'Events received',
    format: (s) => `${s.events} · ${s.eventsPerSecond.toFixed(1)}/s`,
    explain: 'Log entries (chat, cursor moves, joins, leaves) that reached this page, and how many per second lately.',
  },
  {
    id: 'latency',
    label: 'Delivery latency p50 / p95',
    format: (s) => pair(s.latencyP50, s.latencyP95),
    explain: 'Time from the server writing an event to this page having it; half arrive faster than p50, 95% faster than p95.',
  },
  {
    id: 'round-trip',
    label: 'Own message round trip p50 / p95',
    format: (s) => pair(s.roundTripP50, s.roundTripP95),
    explain: 'From pressing send to seeing your own message come back from the server.',
  },
  {
    id: 'requests',
    label: 'Requests made',
    format: (s) => {
      if (!s.perRequest) return `${s.requests} connection${s.requests === 1 ? '' : 's'}`;
      const empty = s.emptyShare === null ? '' : ` · ${Math.round(s.emptyShare * 100)}% empty`;
      return `${s.requests}${empty}`;
    },
    explain: 'HTTP reads sent to ask for news, and the share that came back with nothing (streams count connections instead).',
  },
  {
    id: 'bytes',
    label: 'Bytes per event',
    format: (s) => (s.bytesPerEvent === null ? '–' : `${Math.round(s.bytesPerEvent)} B`),
    explain: 'Bytes received for reading the log (headers and empty answers included), divided by events delivered.',
  },
];

/**
 * Builds the figure list once into `container` (a <dl>) and returns a
 * function that refreshes the numbers from a snapshot. `only` picks figures
 * by id; `compact` moves the explanations into tooltips.
 */
export function renderFigures(container, { compact = false, only = null } = {}) {
  const shown = only ? FIGURES.filter((figure) => only.includes(figure.id)) : FIGURES;
  const values = new Map();
  for (const figure of shown) {
    const row = document.createElement('div');
    row.className = 'figure';
    row.dataset.figure = figure.id;
    const term = document.createElement('dt');
    term.textContent = figure.label;
    const value = document.createElement('dd');
    value.className = 'figure-value';
    value.textContent = '–';
    row.append(term, value);
    if (!compact) {
      const note = document.createElement('dd');
      note.className = 'figure-explain';
      note.textContent = figure.explain;
      row.append(note);
    } else {
      row.title = figure.explain;
    }
    container.append(row);
    values.set(figure.id, value);
  }
  return (snapshot) => {
    for (const figure of shown) values.get(figure.id).textContent = figure.format(snapshot);
  };
}

// Resource Timing: the browser records, for every fetch, how many bytes
// came over the wire (`transferSize`: response headers + body as sent). It is
// the honest cost of a poll, empty answers included. Same-origin requests
// expose it freely; a cross-origin server would have to send
// `Timing-Allow-Origin`. Streams (SSE, WebSocket) are measured from their
// frames instead, because their entry only appears once they end.

const byteWatchers = new Map();
let resourceObserver = null;

/** Calls `onBytes(n)` for every finished request to `pathname` (e.g. "/poll"). */
export function watchResourceBytes(pathname, onBytes) {
  if (!('PerformanceObserver' in window)) return () => {};
  if (!resourceObserver) {
    resourceObserver = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const url = new URL(entry.name);
        const watcher = byteWatchers.get(url.pathname);
        if (watcher) watcher(entry.transferSize || entry.encodedBodySize);
      }
      // The timeline buffer holds 250 entries by default; a poller fills it
      // in minutes. The observer has what it needs, so empty the buffer.
      performance.clearResourceTimings();
    });
    resourceObserver.observe({ type: 'resource', buffered: false });
  }
  byteWatchers.set(pathname, onBytes);
  return () => byteWatchers.delete(pathname);
}

// The clock offset: what to add to this browser's Date.now() to read the
// server's clock, on which every event's `ts` is written. 0 until a page
// estimates it (classroom.js does, against GET /time); a student's laptop
// can be seconds off the lecturer's server.
let clockOffsetMs = 0;

/** Sets the offset latency is corrected by, in ms (server minus browser). */
export function setClockOffset(ms) {
  clockOffsetMs = ms;
}
