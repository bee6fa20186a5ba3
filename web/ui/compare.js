/// compare.js: the same log read every way at once.
///
/// Each pane is an anonymous observer: it opens its transport with no
/// session, so it is not "online" and cannot send; it only reads, with a
/// LogFollower of its own (net/follower.js). All four start at the same
/// cursor (the log's head, from GET /stats), so from then on they should
/// show exactly the same events, and the differences are the transports':
/// how late, how many requests, how many bytes. When the log starts again
/// under a new epoch (the server restarted), each follower takes the gap and
/// its pane carries on in the new log.
///
/// The fifth pane, WebRTC, cannot be an anonymous reader: the server relays
/// no cursors peer to peer. It is an observer session of the room
/// (watch-…, left out of who is online), a MeshMember
/// (net/mesh-member.js) whose socket takes signals, and the bot
/// (net/bot.js, an observer too) offers it a data channel; the pane draws
/// only what arrives on that channel. Where the server's --demo bot
/// publishes instead, no browser is there to offer one, and the pane says so.
///
/// When a reader finds the log started again under a new epoch (the server
/// restarted), a banner says so once.
///
/// Each pane's element says where its reader stands (`data-epoch`,
/// `data-cursor`), and so does the bot's label (#bot-state).

import { ROOM, getJson, inRoom, roomFrom } from '../net/api.js';
import { DemoBot } from '../net/bot.js';
import { Clock } from '../net/clock.js';
import { LogFollower } from '../net/follower.js';
import { MeshMember } from '../net/mesh-member.js';
import { Metrics } from '../net/metrics.js';
import { createTransport, webTransportAvailable, webTransportConfig } from '../net/transports.js';
import { CLIENT_ID, PublishMeter, SERVER_BOT_NAME, describeBot, mountClassroom, publishing, serverBot } from './classroom.js';
import { CursorLayer } from './cursors.js';
import { renderFigures } from './figures.js';
import { notify } from './notices.js';
import { mountRoomPicker } from './rooms.js';

/** The server's transports compared, in the order shown; the WebRTC pane comes last. */
const TRANSPORTS = ['poll', 'longpoll', 'sse', 'ws'];
/** The transports with a pane here: TRANSPORTS, and webtransport where the server and browser have it. */
let shown = TRANSPORTS;
/** How often the summary table and pane figures refresh, and GET /stats is asked, in ms. */
const REFRESH_MS = 1000;
/** Chat lines kept in each pane's little log. */
const PANE_LOG_LINES = 4;

const $ = (selector) => document.querySelector(selector);

/**
 * A pane of the page: a canvas for cursors, a little log, its figures, and
 * where its reader stands. Each kind of pane below sets `follower`.
 */
class Pane {
  /** `clock` is what latency is read on: the server's, once set, for events stamped by the server. */
  constructor(transport, { interval, clock }) {
    this.transportName = transport;
    this.interval = interval;
    this.metrics = new Metrics({ clock });
    /** The pane's LogFollower (net/follower.js). */
    this.follower = null;
    this.element = this.build();
    this.cursors = new CursorLayer(this.canvas);
  }

  build() {
    const card = document.createElement('section');
    card.className = 'card pane';
    card.dataset.transport = this.transportName;
    const head = document.createElement('div');
    head.className = 'card-head';
    const title = document.createElement('h2');
    title.textContent = this.transportName;
    this.status = document.createElement('span');
    this.status.className = 'status';
    this.status.dataset.status = 'connecting';
    this.status.textContent = 'connecting';
    head.append(title, this.status);
    this.canvas = document.createElement('div');
    this.canvas.className = 'canvas';
    this.log = document.createElement('ul');
    this.log.className = 'pane-log';
    const figures = document.createElement('dl');
    figures.className = 'figures';
    this.updateFigures = renderFigures(figures, { compact: true, only: ['events', 'latency', 'requests', 'bytes'] });
    card.append(head, this.canvas, this.log, figures);
    return card;
  }

  /** Adds a line to the pane's little log (as text, never HTML). */
  note(text) {
    const line = document.createElement('li');
    line.textContent = text;
    this.log.append(line);
    while (this.log.children.length > PANE_LOG_LINES) this.log.firstElementChild.remove();
  }

  refresh() {
    this.updateFigures(this.metrics.snapshot());
    showPosition(this.element, this.follower.position());
  }

  setStatus(status) {
    this.status.textContent = status;
    this.status.dataset.status = status;
  }
}

/** One transport's anonymous reader: its own follower, its own metrics, its own picture of the room. */
class ReaderPane extends Pane {
  /**
   * `client` is the id the server counts this pane's bytes under; `onNew`
   * hears every event new to the pane, `onEpoch` every new epoch a gap
   * moves it to.
   */
  constructor(transport, { interval, clock, client, onNew = () => {}, onEpoch = () => {} }) {
    super(transport, { interval, clock });
    this.client = client;
    this.onNew = onNew;
    this.follower = new LogFollower({
      onEvent: (event) => this.show(event),
      onGap: (gap) => {
        // An observer has no session to renew: it carries on from where
        // the server says the log now starts, in the log's epoch.
        this.cursors.clear();
        this.note(`gap: resumed at seq ${gap.cursor}`);
        onEpoch(gap.epoch);
      },
    });
  }

  /** Starts reading after `cursor` of `epoch` (null: the log's, as the first read says). */
  start({ cursor, epoch }) {
    this.follower.startAt({ cursor, epoch });
    this.transport = createTransport(this.transportName, {
      session: null,
      follower: this.follower,
      onStatus: (status) => this.setStatus(status),
      metrics: this.metrics,
      interval: this.interval,
      client: this.client,
    });
    this.transport.start();
  }

  /** An event new to this pane's follower. */
  show(event) {
    this.metrics.recordEvent(event);
    this.onNew(event);
    switch (event.type) {
      case 'mousemove':
        this.cursors.move(event.name, event.x, event.y);
        break;
      case 'leave':
        this.cursors.remove(event.name);
        this.note(`${event.name} left`);
        break;
      case 'join':
        // A page's helpers (observers) are not people joining.
        if (!event.observer) this.note(`${event.name} joined`);
        break;
      case 'message':
        this.note(`${event.name}: ${event.text}`);
        break;
      default:
        break;
    }
  }
}

/**
 * The bot's cursor peer to peer. Its figures count the moves that came
 * over data channels, with latency on the sender's clock (one machine, one
 * clock, so no offset) and no requests at all; bytes are the moves' JSON
 * only. Its reader of the log (the member's follower) only tells it who is
 * online.
 */
class RtcPane extends Pane {
  /** `peers()` names the page's bot while it runs: observers are in nobody's welcome. */
  constructor({ interval, peers }) {
    // The moves are stamped on the sending page's clock, which is this machine's.
    super('webrtc', { interval, clock: { offset: 0 } });
    this.metrics.perRequest = false;
    this.explanation = document.createElement('p');
    this.explanation.className = 'pane-note';
    this.explanation.hidden = true;
    this.log.before(this.explanation);
    this.member = new MeshMember({
      name: `watch-${Math.random().toString(36).slice(2, 6)}`,
      observer: true,
      peers,
      onJoined: (welcome, { again }) => this.note(`joined${again ? ' again' : ''} as ${welcome.name}; waiting for a peer`),
      onEvent: (event) => {
        if (event.type === 'leave') this.cursors.remove(event.name);
      },
      onGap: (gap) => this.note(`gap: resumed at seq ${gap.cursor}`),
      onStatus: (status) => this.setStatus(status),
      onPeerMove: (name, x, y, move, bytes) => {
        this.metrics.recordEvent({ ts: move.t });
        this.metrics.recordBytes(bytes);
        this.cursors.move(name, x, y);
      },
      onPeersChange: (link) => {
        this.note(`${link.name}: channel ${link.state}${link.reason ? ` (${link.reason})` : ''}`);
        if (link.state !== 'open') this.cursors.remove(link.name);
      },
      onRetry: (err) => {
        // Like every reader pane, it waits for the server to come back.
        this.setStatus('reconnecting');
        this.note(`could not join the room yet (${err.message}); trying again`);
      },
      onFail: (err) => this.note(`could not join the room again: ${err.message}`),
    });
    // The pane's reader is the member's.
    this.follower = this.member.follower;
  }

  /**
   * Says why the pane stays empty while the server's --demo bot (`demo`,
   * or null) is what publishes in this room: a server is no WebRTC peer.
   */
  explain(demo) {
    const text = demo
      ? "The server's demo bot (--demo) publishes in this room, and a server is no WebRTC peer: no browser here offers a channel, so this pane stays empty. To see it move, open this page in a room of its own (the room picker, or ?room=…) and start the bot there, or start pushlab without --demo."
      : '';
    if (this.explanation.textContent === text) return;
    this.explanation.textContent = text;
    this.explanation.hidden = !demo;
    this.element.dataset.serverBot = String(Boolean(demo));
  }

  /** Joins the room, trying again for as long as the server cannot be reached or is busy. */
  async start() {
    try {
      await this.member.start({ retry: true });
    } catch (err) {
      this.setStatus('offline');
      this.note(`could not join the room: ${err.message}`);
    }
  }
}

/** Shows where a reader stands on its element: `data-epoch` and `data-cursor`. */
function showPosition(element, { cursor, epoch }) {
  element.dataset.epoch = epoch ?? '';
  element.dataset.cursor = String(cursor);
}

// ── Tables ───────────────────────────────────────────────────────────────

/** Replaces a table body with rows of text cells. */
function fillTable(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement('tr');
      tr.dataset.transport = cells[0];
      for (const text of cells) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }),
  );
}

const fixed = (value, digits) => (value === null ? '–' : value.toFixed(digits));
const millis = (value) => (value === null ? '–' : `${Math.round(value)} ms`);

function renderSummary(panes) {
  fillTable(
    $('#summary tbody'),
    panes.map((pane) => {
      const s = pane.metrics.snapshot();
      return [
        pane.transportName,
        String(s.events),
        millis(s.latencyP50),
        millis(s.latencyP95),
        fixed(s.requestsPerEvent, 2),
        s.bytesPerEvent === null ? '–' : `${Math.round(s.bytesPerEvent)} B`,
      ];
    }),
  );
}

async function refreshStats() {
  let stats;
  try {
    stats = await getJson(inRoom('/stats'));
  } catch {
    $('#stats-note').textContent = 'GET /stats did not answer: is the server running?';
    return;
  }
  fillTable(
    $('#stats tbody'),
    shown.map((name) => {
      const t = stats.transports[name];
      return [name, t.open, t.requests, t.events, t.bytes, t.empty].map(String);
    }),
  );
  const signals = stats.signals ? ` · WebRTC signals relayed ${stats.signals.relayed}, refused ${stats.signals.refused}` : '';
  $('#stats-note').textContent =
    `Log head seq ${stats.head} · ${stats.online} online · epoch ${stats.epoch.slice(0, 8)}…${signals}. ` +
    'Counts every client of this server, not only this page.';
}

// ── The bot's controls ───────────────────────────────────────────────────

function wireBot({ meter, peers }) {
  const toggle = $('#bot-toggle');
  const label = $('#bot-state');
  const bot = new DemoBot({
    rate: Number($('#bot-rate').value) || 20,
    peers,
    onChange: () => {
      const on = publishing(bot);
      toggle.textContent = on ? 'Stop the bot' : 'Start the bot';
      label.dataset.running = String(on);
      // The rate measured in the log, for anyone checking (and the tests).
      label.dataset.measured = String(meter.rate() ?? '');
      label.dataset.publisher = serverBot() ? 'server' : 'page';
      // Says so when the server's --demo bot is what publishes here.
      label.textContent = describeBot(bot, meter);
      const position = bot.position();
      if (position) showPosition(label, position);
    },
  });
  // The button and the publish-rate selector are wired in classroom.js.
  window.addEventListener('pagehide', () => bot.leaveNow());
  // The sent counter moves on its own; refresh the label with the tables.
  return bot;
}

// ── Start ────────────────────────────────────────────────────────────────

async function init() {
  const params = new URLSearchParams(location.search);
  mountRoomPicker($('#room'));
  $('#chat-link').href = inRoom('/');
  document.title = `${ROOM} · ${document.title}`;
  const { problem: roomProblem } = roomFrom(location.search);
  if (roomProblem) notify($('#notices'), roomProblem, 'warning');
  let interval = 1000;
  if (params.has('interval')) {
    const parsed = Number(params.get('interval'));
    if (Number.isInteger(parsed) && parsed >= 50 && parsed <= 60_000) interval = parsed;
    else notify($('#notices'), `interval=${params.get('interval')} is not a whole number of ms from 50 to 60000; using 1000.`, 'warning');
  }
  // The server's clock, set by the classroom: events' latency is read on it.
  const clock = new Clock();
  // A WebTransport pane where the server offers it (--webtransport) and
  // this browser has it: its cursor moves come as datagrams.
  const offered = webTransportAvailable() && (await webTransportConfig().catch(() => null));
  if (offered) shown = [...TRANSPORTS, 'webtransport'];
  // The publisher's rate is measured on what the WebSocket pane reads: its
  // events carry the server's timestamps.
  let bot = null;
  const meter = new PublishMeter({
    clock,
    publisher: () => {
      if (serverBot()) return (name) => SERVER_BOT_NAME.test(name);
      const own = bot?.name;
      return own ? (name) => name === own : null;
    },
  });
  // A new epoch is the server restarting: said once, whichever reader sees it first.
  const epochs = new Set();
  const onEpoch = (epoch) => {
    if (!epoch || epochs.has(epoch)) return;
    epochs.add(epoch);
    notify(
      $('#notices'),
      `The server restarted: its log starts again under a new epoch (${epoch.slice(0, 8)}…). Every pane carries on in the new log, and the bot and the WebRTC pane register again.`,
      'warning',
    );
  };
  // Every read of the panes names this page, so the server counts its exact
  // bytes; nothing else the page opens (the bot's and the WebRTC pane's
  // sockets) names it.
  const readers = shown.map((name) => new ReaderPane(name, {
    interval,
    clock,
    client: CLIENT_ID,
    onEpoch,
    onNew: name === 'ws' ? (event) => meter.record(event) : undefined,
  }));
  const rtcPane = new RtcPane({ interval, peers: () => (bot?.name ? [bot.name] : []) });
  const panes = [...readers, rtcPane];
  $('#panes').append(...panes.map((pane) => pane.element));
  window.addEventListener('pagehide', () => rtcPane.member.leaveNow());
  bot = wireBot({ meter, peers: () => [rtcPane.member.name] });

  // Start every reader at the current head, so they all see the same events.
  let head = 0;
  let epoch = null;
  try {
    ({ head, epoch } = await getJson(inRoom('/stats')));
  } catch {
    notify($('#notices'), 'The server did not answer GET /stats; the readers will start from the beginning of the log.', 'warning');
  }
  if (epoch) epochs.add(epoch);
  for (const pane of readers) pane.start({ cursor: head, epoch });
  rtcPane.start();
  mountClassroom({ panes: readers, bot, interval, clock, meter });

  const refresh = () => {
    for (const pane of panes) pane.refresh();
    // The table compares the server's transports, read the same way; the
    // WebRTC pane's figures (moves over its channel) stay in its pane.
    renderSummary(readers);
    rtcPane.explain(serverBot());
    bot.onChange(bot);
  };
  refresh();
  refreshStats();
  setInterval(() => {
    refresh();
    refreshStats();
  }, REFRESH_MS);
}

init();
