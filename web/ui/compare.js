// compare.js: the same log read four ways at once.
//
// Each pane is an anonymous observer: it opens its transport with no
// session, so it is not "online" and cannot send; it only reads. All four
// start at the same cursor (the log's head, from GET /stats), so from then
// on they should show exactly the same events, and the differences are the
// transports': how late, how many requests, how many bytes.
//
// The fifth pane, WebRTC, cannot be an anonymous reader: the server relays
// no cursors peer to peer. It is a user of the room (watch-…) whose socket
// takes signals, and the bot (bot.js) offers it a data channel; the pane
// draws only what arrives on that channel.

import { ROOM, getJson, inRoom, register, roomFrom } from '../net/api.js';
import { describeBot, identifyPage, mountClassroom } from './classroom.js';
import { mountRoomPicker } from './rooms.js';
import { DemoBot } from '../net/bot.js';
import { CursorLayer } from './cursors.js';
import { Metrics, renderFigures } from '../net/metrics.js';
import { notify } from './notices.js';
import { createTransport } from '../net/transports.js';
import { WebRtcTransport } from '../net/webrtc.js';

/** The server's transports compared, in the order shown; the WebRTC pane comes last. */
const TRANSPORTS = ['poll', 'longpoll', 'sse', 'ws'];
/** How often the summary table and pane figures refresh, and GET /stats is asked, in ms. */
const REFRESH_MS = 1000;
/** Chat lines kept in each pane's little log. */
const PANE_LOG_LINES = 4;

const $ = (selector) => document.querySelector(selector);

/** One transport's reader: its own cursor, its own metrics, its own picture of the room. */
class Pane {
  constructor(transport, { interval }) {
    this.transportName = transport;
    this.interval = interval;
    /** The last seq this pane applied, and the epoch it belongs to. */
    this.cursor = 0;
    this.epoch = null;
    this.metrics = new Metrics();
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

  start(cursor, epoch) {
    this.cursor = cursor;
    this.epoch = epoch;
    this.transport = createTransport(this.transportName, {
      session: null,
      position: () => ({ cursor: this.cursor, epoch: this.epoch }),
      deliver: (message) => this.receive(message),
      onStatus: (status) => {
        this.status.textContent = status;
        this.status.dataset.status = status;
      },
      metrics: this.metrics,
      interval: this.interval,
    });
    this.transport.start();
  }

  receive(message) {
    if (message.type === 'gap') {
      // An observer has no session to renew: it just carries on from where
      // the server says the log now starts.
      this.cursor = message.cursor;
      this.epoch = message.epoch;
      this.cursors.clear();
      this.note(`gap: resumed at seq ${message.cursor}`);
      return;
    }
    if (message.seq === undefined || message.seq <= this.cursor) return;
    this.cursor = message.seq;
    this.metrics.recordEvent(message);
    switch (message.type) {
      case 'mousemove':
        this.cursors.move(message.name, message.x, message.y);
        break;
      case 'leave':
        this.cursors.remove(message.name);
        this.note(`${message.name} left`);
        break;
      case 'join':
        this.note(`${message.name} joined`);
        break;
      case 'message':
        this.note(`${message.name}: ${message.text}`);
        break;
      default:
        break;
    }
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
  }

  setStatus(status) {
    this.status.textContent = status;
    this.status.dataset.status = status;
  }
}

/**
 * The bot's cursor peer to peer. Its figures count the moves that came
 * over data channels, with latency on the sender's clock (one machine, one
 * clock) and no requests at all; bytes are the moves' JSON only.
 */
class RtcPane extends Pane {
  constructor({ interval }) {
    super('webrtc', { interval });
    /** Who else is online: the mesh offers to them. */
    this.others = new Set();
  }

  async start() {
    let welcome;
    try {
      welcome = await register(`watch-${Math.random().toString(36).slice(2, 6)}`);
    } catch (err) {
      this.setStatus('offline');
      this.note(`could not join the room: ${err.message}`);
      return;
    }
    for (const user of welcome.users) if (user.name !== welcome.name) this.others.add(user.name);
    this.cursor = welcome.cursor;
    this.epoch = welcome.epoch;
    this.note(`joined as ${welcome.name}; waiting for a peer`);
    this.transport = new WebRtcTransport(
      {
        session: welcome.session,
        position: () => ({ cursor: this.cursor, epoch: this.epoch }),
        deliver: (message) => this.receive(message),
        onStatus: (status) => this.setStatus(status),
        // The signalling socket's own traffic is not what this pane shows.
        metrics: new Metrics(),
        interval: this.interval,
      },
      {
        me: welcome.name,
        users: () => [...this.others],
        onPeerMove: (name, x, y, move, bytes) => {
          this.metrics.recordEvent({ ts: move.t });
          this.metrics.recordBytes(bytes);
          this.cursors.move(name, x, y);
        },
        onPeersChange: (link) => {
          this.note(`${link.name}: channel ${link.state}${link.reason ? ` (${link.reason})` : ''}`);
          if (link.state !== 'open') this.cursors.remove(link.name);
        },
      },
    );
    this.metrics.perRequest = false;
    this.transport.start();
  }

  /** Log events only tell the pane who is online; cursors come peer to peer. */
  receive(message) {
    if (message.seq === undefined || message.seq <= this.cursor) return;
    this.cursor = message.seq;
    if (message.type === 'join') this.others.add(message.name);
    if (message.type === 'leave') {
      this.others.delete(message.name);
      this.cursors.remove(message.name);
    }
  }
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
    TRANSPORTS.map((name) => {
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

function wireBot() {
  const toggle = $('#bot-toggle');
  const label = $('#bot-state');
  const bot = new DemoBot({
    rate: Number($('#bot-rate').value) || 20,
    onChange: () => {
      toggle.textContent = bot.running ? 'Stop the bot' : 'Start the bot';
      label.dataset.running = String(bot.running);
      // Says so when the server's --demo bot runs here too.
      label.textContent = describeBot(bot);
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
  const rtcPane = new RtcPane({ interval });
  const panes = [...TRANSPORTS.map((name) => new Pane(name, { interval })), rtcPane];
  $('#panes').append(...panes.map((pane) => pane.element));
  window.addEventListener('pagehide', () => rtcPane.transport?.leave());
  const bot = wireBot();

  // Start every reader at the current head, so they all see the same events.
  let head = 0;
  let epoch = null;
  try {
    ({ head, epoch } = await getJson(inRoom('/stats')));
  } catch {
    notify($('#notices'), 'The server did not answer GET /stats; the readers will start from the beginning of the log.', 'warning');
  }
  // Every read names this page, so the server counts its exact bytes.
  identifyPage();
  for (const pane of panes) if (pane !== rtcPane) pane.start(head, epoch);
  rtcPane.start();
  mountClassroom({ panes: panes.filter((pane) => pane !== rtcPane), bot, interval });

  const refresh = () => {
    for (const pane of panes) pane.refresh();
    // The table compares the server's transports, read the same way; the
    // WebRTC pane's figures (moves over its channel) stay in its pane.
    renderSummary(panes.filter((pane) => pane !== rtcPane));
    if (bot.running) bot.onChange(bot);
  };
  refresh();
  refreshStats();
  setInterval(() => {
    refresh();
    refreshStats();
  }, REFRESH_MS);
}

init();
