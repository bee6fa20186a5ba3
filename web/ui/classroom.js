/// classroom.js: what the compare page shows a class besides the panes.
///
///   - Exact bytes. Every read the four panes make names the page with
///     `client=ID` (CLIENT_ID), and the server counts, on the socket, every
///     byte each of them read and wrote, request and response heads included
///     (GET /traffic?client=ID). The table shows those counts per event and
///     per second. The browser cannot see its own request bytes, and its
///     Resource Timing figure is the body plus a guess, so that one stays
///     only as a cross-check.
///   - The publish rate: idle, 1/s, 20/s or 50/s, of whatever publishes in
///     this room: this page's bot, or, where the server runs its --demo bot
///     here, that one (POST /demo sets its rate, and this page's bot stays
///     stopped). The label shows the rate measured in the log: the
///     publisher's events over the last few seconds, on their server
///     timestamps, so a slow page or network does not change it. Per
///     event, short polling looks cheap at 50/s; per second, idle, it is
///     the one that keeps paying.
///   - Theory next to measurement: what each transport's latency should be
///     for the measured round trip, beside what it was. Start the server with
///     --delay-ms 100 to make a round trip long enough to see.
///   - The clock. Latency is the event's server timestamp to its arrival
///     here, so the page's Clock (net/clock.js), which the panes' figures
///     are read on, is set against the server's first and every 30 s.
///   - The join URL for students, with a QR code the server draws.

import { LOBBY, ROOM, getJson, inRoom, postJson } from '../net/api.js';

/** The transports in the tables, in the panes' order; set from the panes when mounted. */
let TRANSPORTS = ['poll', 'longpoll', 'sse', 'ws'];
/** How often GET /traffic is asked, in ms. */
const TRAFFIC_MS = 1000;
/** The window the per-second figures are averaged over, in ms. */
const RATE_WINDOW_MS = 5000;
/** How often the clock offset is estimated again, in ms. */
const CLOCK_EVERY_MS = 30_000;
/** How often the server's setting (delay, demo bot) is read again, in ms. */
const SETUP_EVERY_MS = 10_000;
/** The window the publish rate is measured over, in ms of the events' server timestamps. */
const PUBLISH_WINDOW_MS = 5000;
/** The names the server's --demo bot registers under: demobot, or demobot-2 to -4 when taken. */
export const SERVER_BOT_NAME = /^demobot(-[2-4])?$/;

const $ = (selector) => document.querySelector(selector);

/** This page's name for its readers in `client=`: random, so two tabs never share one. */
export const CLIENT_ID = `page-${Math.random().toString(36).slice(2, 10)}`;

/** What the server said about itself in GET /stats `server`; null until known. */
const setup = { server: null };

// ── Exact bytes, from the server's count ─────────────────────────────────

/** Sums of the counters we use, for one transport. */
function take(view, events) {
  return { requests: view.requests, bytesIn: view.bytes_in, bytesOut: view.bytes_out, events };
}

function minus(a, b) {
  return {
    requests: a.requests - b.requests,
    bytesIn: a.bytesIn - b.bytesIn,
    bytesOut: a.bytesOut - b.bytesOut,
    events: a.events - b.events,
  };
}

/**
 * GET /traffic samples: `baseline` is where the per-event figures count from
 * (reset when the scenario changes), `recent` the last few seconds, for the
 * per-second ones.
 */
class TrafficWatch {
  constructor(panes, publishing = () => true) {
    this.panes = panes;
    /** Whether anything publishes now: per-event figures only mean something then. */
    this.publishing = publishing;
    this.baseline = null;
    this.recent = [];
    this.latest = null;
  }

  async sample() {
    let view;
    try {
      view = await getJson(`/traffic?client=${encodeURIComponent(CLIENT_ID)}`);
    } catch {
      return;
    }
    const at = performance.now();
    const sample = { at };
    for (const pane of this.panes) {
      if (view[pane.transportName]) sample[pane.transportName] = take(view[pane.transportName], pane.metrics.events);
    }
    this.latest = sample;
    this.baseline ??= sample;
    this.recent.push(sample);
    while (this.recent.length > 2 && this.recent[1].at <= at - RATE_WINDOW_MS) this.recent.shift();
  }

  /** Counts from now on for the per-event figures. */
  restart() {
    this.baseline = this.latest;
    this.recent = this.latest ? [this.latest] : [];
  }

  /** {since, perSecond} for one transport, or null before two samples. */
  figures(transport) {
    if (!this.latest || !this.baseline?.[transport]) return null;
    const since = minus(this.latest[transport], this.baseline[transport]);
    const first = this.recent[0];
    const seconds = (this.latest.at - first.at) / 1000;
    const window = minus(this.latest[transport], first[transport]);
    const perSecond = seconds > 0.5
      ? { requests: window.requests / seconds, bytesIn: window.bytesIn / seconds, bytesOut: window.bytesOut / seconds, events: window.events / seconds }
      : null;
    return { since, perSecond, total: this.latest[transport] };
  }
}

const count = (value, digits = 1) => (value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits));
const bytes = (value) => (value === null || !Number.isFinite(value) ? '–' : `${Math.round(value)} B`);

function renderTraffic(watch) {
  const tbody = $('#traffic tbody');
  const rows = TRANSPORTS.map((transport) => {
    const f = watch.figures(transport);
    const tr = document.createElement('tr');
    tr.dataset.transport = transport;
    // Idle, there is nothing to divide by: a few stray events (a leave) would
    // make a per-event figure of the idle cost, so it shows "–".
    const perEvent = (key) => (f && f.since.events > 0 && watch.publishing() ? f.since[key] / f.since.events : null);
    const perSecond = (key) => (f?.perSecond ? f.perSecond[key] : null);
    const cells = {
      transport,
      'events-per-second': count(perSecond('events')),
      'requests-per-second': count(perSecond('requests'), 2),
      'up-per-second': bytes(perSecond('bytesIn')),
      'down-per-second': bytes(perSecond('bytesOut')),
      'requests-per-event': count(perEvent('requests'), 2),
      'up-per-event': bytes(perEvent('bytesIn')),
      'down-per-event': bytes(perEvent('bytesOut')),
    };
    for (const [key, text] of Object.entries(cells)) {
      const td = document.createElement('td');
      td.dataset.figure = key;
      td.textContent = text;
      tr.append(td);
    }
    if (f) {
      // The raw counts, for anyone checking the arithmetic (and the tests).
      tr.dataset.requests = String(f.since.requests);
      tr.dataset.bytesIn = String(f.since.bytesIn);
      tr.dataset.bytesOut = String(f.since.bytesOut);
      tr.dataset.events = String(f.since.events);
      tr.dataset.totalRequests = String(f.total.requests);
      tr.dataset.totalBytesIn = String(f.total.bytesIn);
      tr.dataset.totalBytesOut = String(f.total.bytesOut);
    }
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// ── Theory against measurement ───────────────────────────────────────────

/** What each transport's delivery latency should be, for a round trip `rtt` and a poll interval, in ms. */
export function predictions(rtt, interval) {
  return {
    poll: { rule: 'interval/2 + RTT on average (0 to interval, then RTT)', low: interval / 2 + rtt, high: null },
    longpoll: { rule: '½ RTT while a request is held; up to 1½ RTT between an answer and the next request', low: rtt / 2, high: 1.5 * rtt },
    sse: { rule: '½ RTT: the response is already open', low: rtt / 2, high: null },
    ws: { rule: '½ RTT: the socket is already open', low: rtt / 2, high: null },
    webtransport: { rule: '½ RTT: the session is already open; a lost datagram is never resent', low: rtt / 2, high: null },
  };
}

function renderTheory(panes, clock, interval) {
  const rtt = clock.roundTrip;
  const theory = rtt === null ? null : predictions(rtt, interval);
  const ms = (v) => (v === null ? '–' : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);
  const rows = panes.map((pane) => {
    const s = pane.metrics.snapshot();
    const t = theory?.[pane.transportName];
    const tr = document.createElement('tr');
    tr.dataset.transport = pane.transportName;
    const predicted = t ? (t.high === null ? ms(t.low) : `${ms(t.low)} to ${ms(t.high)}`) : '–';
    for (const [key, text] of [
      ['transport', pane.transportName],
      ['rule', t?.rule ?? ''],
      ['predicted', predicted],
      ['p50', ms(s.latencyP50)],
      ['p95', ms(s.latencyP95)],
    ]) {
      const td = document.createElement('td');
      td.dataset.figure = key;
      td.textContent = text;
      tr.append(td);
    }
    if (t) tr.dataset.predicted = String(t.low);
    return tr;
  });
  $('#theory tbody').replaceChildren(...rows);
  const delay = setup.server?.delay_ms ?? 0;
  const rttText = rtt === null ? 'not measured yet' : `${ms(rtt)} (the fastest GET /time)`;
  $('#theory-note').textContent = delay
    ? `Simulated delay: ${delay} ms each way (--delay-ms ${delay}), so one RTT should be about ${2 * delay} ms; measured RTT ${rttText}. Poll interval ${interval} ms.`
    : `No simulated delay: measured RTT ${rttText}, too short to tell ½ RTT from 1½ RTT. Start the server with --delay-ms 100 to see them apart. Poll interval ${interval} ms.`;
  $('#clock-note').textContent = clock.describe();
}

// ── The server's demo bot, and the publish rate ──────────────────────────

/** The server's --demo bot in this room, as {room, rate}, or null. */
export function serverBot() {
  const demo = setup.server?.demo;
  return demo && demo.room === (ROOM || LOBBY) ? demo : null;
}

/**
 * The rate the publisher really keeps, measured in the log: the server
 * timestamps of its last PUBLISH_WINDOW_MS of events (moves and lines),
 * which a reader pane hands over as they arrive. Measured on the
 * timestamps, it is the publisher's own rate, whatever the page's or the
 * network's delays.
 */
export class PublishMeter {
  /** `clock` gives the server's time; `publisher()` tells whose events count (a test of a name), or null. */
  constructor({ clock, publisher }) {
    this.clock = clock;
    this.publisher = publisher;
    this.stamps = [];
    /** The server time the current scenario started at: the window never reaches before it. */
    this.since = 0;
  }

  /** An event a reader took as new. */
  record(event) {
    if (event.type !== 'mousemove' && event.type !== 'message') return;
    const counts = this.publisher();
    if (!counts || !counts(event.name)) return;
    this.stamps.push(event.ts);
    this.forget();
  }

  /** Starts a new scenario: what was published before does not count. */
  restart() {
    this.since = Date.now() + this.clock.offset;
    this.stamps = [];
  }

  forget() {
    const from = Date.now() + this.clock.offset - PUBLISH_WINDOW_MS;
    while (this.stamps.length && this.stamps[0] <= from) this.stamps.shift();
  }

  /**
   * Events a second over the window, or null until the window has had a
   * second: from the spacing of the events when there are three or more
   * (exact whatever the window's edges cut), else their count over the window.
   */
  rate() {
    this.forget();
    const now = Date.now() + this.clock.offset;
    const window = Math.min(PUBLISH_WINDOW_MS, now - this.since);
    if (window < 1000) return null;
    const n = this.stamps.length;
    if (n >= 3) return ((n - 1) * 1000) / (this.stamps[n - 1] - this.stamps[0] || 1);
    return (n * 1000) / window;
  }
}

/** The measured rate as a label's words. */
function measured(meter) {
  const rate = meter.rate();
  return rate === null ? 'measuring' : `measured ${rate.toFixed(1)}/s`;
}

/**
 * The bot label's text: the server's --demo bot where it runs in this room
 * (it is then what publishes), else this page's bot, with the rate measured
 * in the log.
 */
export function describeBot(bot, meter) {
  const demo = serverBot();
  if (demo) {
    const own = bot.error ? ` · this page's bot stopped: ${bot.error}` : '';
    if (demo.rate === 0) return `the server's demo bot (--demo) publishes here: idle, ${measured(meter)}${own}`;
    return `the server's demo bot (--demo) publishes here at ${demo.rate}/s · ${measured(meter)}${own}`;
  }
  if (bot.rejoining) return `the server forgot ${bot.name}; registering it again`;
  if (bot.running) {
    return `${bot.name} publishes at ${bot.rate}/s · ${measured(meter)} · ${bot.sent} sent${bot.refused ? ` · ${bot.refused} refused` : ''}`;
  }
  if (bot.error) return `this page's bot stopped: ${bot.error}`;
  return 'bot stopped';
}

/** Whether anything publishes: the server's bot at a rate above 0, or this page's bot. */
export function publishing(bot) {
  const demo = serverBot();
  return demo ? demo.rate > 0 : bot.running;
}

/** Shows `rate` in the selector, adding it as a choice if it is not one. */
function selectRate(rate) {
  const select = $('#bot-rate');
  const value = String(rate);
  if (![...select.options].some((option) => option.value === value)) {
    select.add(new Option(`${value}/s`, value));
  }
  select.value = value;
}

/**
 * The publish-rate selector sets the rate of whatever publishes in this
 * room: the server's --demo bot where it runs here (POST /demo, and this
 * page's bot stays stopped: two publishers would make neither rate true),
 * else this page's bot (0 stops it). `onScenario` hears every change.
 */
function wirePublishRate(bot, onScenario) {
  const select = $('#bot-rate');
  const toggle = $('#bot-toggle');
  const apply = async () => {
    const rate = Number(select.value);
    const demo = serverBot();
    if (demo) {
      if (bot.running) await bot.stop();
      try {
        const answer = await postJson(inRoom('/demo'), { rate });
        demo.rate = answer.rate;
        bot.error = '';
      } catch (err) {
        bot.error = `the server did not take the rate: ${err.message}`;
      }
    } else if (rate === 0) await bot.stop();
    else {
      bot.setRate(rate);
      if (!bot.running) await bot.start();
    }
    onScenario();
    bot.onChange(bot);
  };
  select.addEventListener('change', apply);
  // The button stops what publishes (idle), or starts it at the selected
  // rate, or at 20/s when idle is selected.
  toggle.addEventListener('click', () => {
    select.value = publishing(bot) ? '0' : Number(select.value) === 0 ? '20' : select.value;
    apply();
  });
}

// ── The join URL ─────────────────────────────────────────────────────────

async function showJoin() {
  let join;
  try {
    join = await getJson('/join');
  } catch {
    return;
  }
  const base = join.urls[0];
  const url = ROOM && ROOM !== LOBBY ? `${base}?room=${encodeURIComponent(ROOM)}` : base;
  $('#join-url').textContent = url;
  $('#join-url').href = url;
  $('#join-qr').src = `/qr.svg?text=${encodeURIComponent(url)}`;
  $('#join-qr').alt = `QR code for ${url}`;
  const others = join.urls.slice(1);
  $('#join-note').textContent = join.reachable
    ? `Bound to ${join.bound}.${others.length ? ` Also: ${others.join(', ')}.` : ''} Six tabs of one browser share six HTTP/1.1 connections to this server: see the README's classroom section.`
    : `Bound to ${join.bound}: only this machine can open it. For a class, start pushlab with --addr 0.0.0.0:8080.`;
  $('#join').dataset.reachable = String(join.reachable);
}

// ── Start ────────────────────────────────────────────────────────────────

async function readSetup() {
  try {
    setup.server = (await getJson(inRoom('/stats'))).server ?? null;
  } catch {
    // The stats table says so already.
  }
}

/**
 * Mounts everything above on the compare page: `panes` are its readers
 * (each with transportName and metrics), `bot` its DemoBot, `clock` the
 * Clock their latency is read on, which this sets against the server's,
 * and `meter` the PublishMeter a reader feeds.
 */
export async function mountClassroom({ panes, bot, interval, clock, meter }) {
  TRANSPORTS = panes.map((pane) => pane.transportName);
  const watch = new TrafficWatch(panes, () => publishing(bot));
  wirePublishRate(bot, () => {
    watch.restart();
    meter.restart();
  });
  showJoin();
  await Promise.all([clock.estimate(), readSetup()]);
  // The server's bot publishes here already: the selector says at what rate.
  if (serverBot()) selectRate(serverBot().rate);
  meter.restart();
  bot.onChange(bot);
  const refresh = async () => {
    await watch.sample();
    renderTraffic(watch);
    renderTheory(panes, clock, interval);
  };
  refresh();
  setInterval(refresh, TRAFFIC_MS);
  setInterval(() => clock.estimate(), CLOCK_EVERY_MS);
  setInterval(async () => {
    await readSetup();
    // Another page may have set the server bot's rate.
    if (serverBot() && String(serverBot().rate) !== $('#bot-rate').value) selectRate(serverBot().rate);
    bot.onChange(bot);
  }, SETUP_EVERY_MS);
}
