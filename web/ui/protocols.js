/// protocols.js: the compare page's HTTP/1.1 against HTTP/2 card. The same
/// short poll, sent a few times over each, with the exact bytes of every
/// request up and down as the server counted them.
///
/// A page cannot choose its HTTP version: the browser speaks HTTP/2 to an
/// `https://` server that offers it, and HTTP/1.1 to a plain one. So under
/// `--tls` pushlab can also listen for plain HTTP/1.1 (`--http1-addr`), and
/// GET /config gives that port. The card sends the same GET /poll to the
/// page's own origin (HTTP/2) and to that port (HTTP/1.1), each side under
/// its own `client=` id, one request at a time, and reads GET /traffic
/// before and after each: the difference is that one request's bytes, as
/// the server read and wrote them (HTTP/2: its stream's frames, before
/// encryption; HTTP/1.1: the bytes on the socket, which are plain). GET
/// /traffic is charged to no client, so reading it costs the figures
/// nothing.
///
/// Both sides are sent with the same options: `no-cors` (the plain port is
/// another origin, and nothing of the answer is needed: the server counts
/// it), and no credentials, which puts the HTTP/2 requests on a connection
/// of their own, apart from the page's: its first request starts with an
/// empty HPACK table, as a new visitor's does.
///
/// The section's element says how it stands (`data-state`: unavailable,
/// ready, running, done, failed) and whom it counted
/// (`data-client-http1`, `data-client-http2`); each row and cell says what
/// it is (`data-request`, `data-figure`).

import { getJson, inRoom, readUrl } from '../net/api.js';

/** Requests sent each way per run. */
export const REQUESTS = 6;

/** One id per side, the same length, so both send a path of the same size. */
const RUN_ID = Math.random().toString(36).slice(2, 10).padEnd(8, '0');
const CLIENTS = { http1: `proto-${RUN_ID}-1`, http2: `proto-${RUN_ID}-2` };

/** The columns of the table, each side's up, down and total. */
const FIGURES = ['up', 'down', 'total'];

const $ = (selector) => document.querySelector(selector);

/** The loopback names: an `https://` page on one may call plain HTTP on it (not mixed content). */
function isLoopback(hostname) {
  return hostname === 'localhost' || hostname.endsWith('.localhost') || hostname === '[::1]' || /^127\./.test(hostname);
}

/** The HTTP version this page itself came over, as the browser reports it ('h2', 'http/1.1'), or null. */
function pageProtocol() {
  const [navigation] = performance.getEntriesByType('navigation');
  return navigation?.nextHopProtocol || null;
}

/** One side's poll counters in GET /traffic?client=…: requests, bytes up, bytes down. */
async function pollTally(client) {
  const view = await getJson(`/traffic?client=${encodeURIComponent(client)}`);
  return { requests: view.poll.requests, up: view.poll.bytes_in, down: view.poll.bytes_out };
}

/**
 * The tally once it holds the answer sent since `before` and stops moving.
 * The server counts an answer's bytes as it writes them, which can be a
 * moment after the browser has them (an opaque answer resolves on its
 * head), so one read right after may miss them.
 */
async function settledTally(client, before) {
  let last = await pollTally(client);
  for (let i = 0; i < SETTLE_READS; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const next = await pollTally(client);
    const still = next.up === last.up && next.down === last.down;
    if (still && next.down > before.down) return next;
    last = next;
  }
  return last;
}

/** How often, and how far apart, settledTally reads the tally at most. */
const SETTLE_READS = 40;
const SETTLE_MS = 25;

/**
 * Sends `url` once and returns its bytes as the server counted them:
 * {up, down}. Throws if the request did not reach the server.
 */
async function measuredRequest(url, client) {
  const before = await pollTally(client);
  let failure = null;
  try {
    const response = await fetch(url, { mode: 'no-cors', credentials: 'omit', cache: 'no-store' });
    // Read the answer to its end where the browser lets us (same origin),
    // so every byte of it has been written before the count is read.
    if (response.type !== 'opaque') await response.arrayBuffer();
  } catch (err) {
    failure = err;
  }
  const after = await settledTally(client, before);
  if (after.requests - before.requests !== 1) {
    throw new Error(failure ? `the browser did not send it (${failure.message})` : 'the server did not count it');
  }
  return { up: after.up - before.up, down: after.down - before.down };
}

const bytes = (value) => (value === null || value === undefined ? '–' : `${value} B`);
const mean = (values) => (values.length ? Math.round(values.reduce((a, b) => a + b, 0) / values.length) : null);

/** The card: its element, filled here. */
class ProtocolsCard {
  constructor(element) {
    this.element = element;
    this.element.dataset.clientHttp1 = CLIENTS.http1;
    this.element.dataset.clientHttp2 = CLIENTS.http2;
    this.build();
  }

  build() {
    const head = document.createElement('div');
    head.className = 'card-head';
    const title = document.createElement('h2');
    title.id = 'protocols-title';
    title.textContent = 'The same poll over HTTP/1.1 and HTTP/2';
    this.button = document.createElement('button');
    this.button.type = 'button';
    this.button.id = 'protocols-run';
    this.button.textContent = `Send ${REQUESTS} polls each way`;
    this.button.disabled = true;
    head.append(title, this.button);
    this.intro = document.createElement('p');
    this.intro.className = 'table-note';
    this.intro.id = 'protocols-note';
    this.table = document.createElement('table');
    this.table.id = 'protocols-table';
    const thead = document.createElement('thead');
    const labels = ['request', 'HTTP/1.1 up', 'down', 'total', 'HTTP/2 up', 'down', 'total'];
    const row = document.createElement('tr');
    for (const label of labels) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = label;
      row.append(th);
    }
    this.http2Header = row.children[4];
    thead.append(row);
    this.tbody = document.createElement('tbody');
    this.table.append(thead, this.tbody);
    this.summary = document.createElement('p');
    this.summary.className = 'table-note';
    this.summary.id = 'protocols-summary';
    this.element.append(head, this.intro, this.table, this.summary);
    this.element.setAttribute('aria-labelledby', title.id);
    this.setState('unavailable');
  }

  setState(state) {
    this.element.dataset.state = state;
  }

  /** Says why the card cannot run here, and how to see it. */
  unavailable(text) {
    this.setState('unavailable');
    this.intro.textContent = text;
    this.table.hidden = true;
  }

  /** Reads the server's settings and says what the card can do. */
  async mount() {
    let config;
    try {
      config = await getJson('/config');
    } catch {
      this.unavailable('GET /config did not answer: is the server running?');
      return;
    }
    const start = 'pushlab --tls --http1-addr 127.0.0.1:8081, then open https://127.0.0.1:8080/compare.html (and accept the certificate warning)';
    if (!config.tls) {
      this.unavailable(`This server speaks plain HTTP/1.1 only, so there is no HTTP/2 to compare it with. To see HPACK at work, start it with ${start}.`);
      return;
    }
    if (location.protocol !== 'https:') {
      this.unavailable('This page came over the plain HTTP/1.1 listener. Open it over HTTPS (the address pushlab printed first) to compare the two.');
      return;
    }
    if (!config.http1) {
      this.unavailable(`The page is on HTTPS, but the server has no plain HTTP/1.1 listener to compare with. Start it with ${start}.`);
      return;
    }
    this.http1Origin = `http://${location.hostname}:${config.http1.port}`;
    const loopback = isLoopback(location.hostname);
    this.protocol = pageProtocol();
    if (this.protocol) this.http2Header.textContent = `${this.protocol === 'h2' ? 'HTTP/2' : this.protocol} up`;
    this.intro.textContent =
      `GET /poll ${REQUESTS} times over this page's own HTTPS origin (${this.protocol ?? 'HTTP/2'}) and ${REQUESTS} times ` +
      `over plain HTTP/1.1 at ${this.http1Origin}, one at a time. Each figure is one request's bytes as the server ` +
      'counted them (GET /traffic): up is the request (HTTP/1.1: its head as text; HTTP/2: its HEADERS frame, ' +
      'HPACK-compressed), down the answer. Both before encryption.' +
      (loopback ? '' : ` This page is not on localhost, so the browser may block the plain HTTP request as mixed content: open the page as https://127.0.0.1:${location.port}/compare.html on the server's own machine.`);
    this.button.disabled = false;
    this.button.addEventListener('click', () => this.run());
    this.setState('ready');
  }

  /** Sends the polls, one at a time, and shows each one's bytes. */
  async run() {
    this.button.disabled = true;
    this.setState('running');
    this.summary.textContent = 'Sending…';
    this.tbody.replaceChildren();
    const rows = [];
    try {
      const { head, epoch } = await getJson(inRoom('/stats'));
      const path = (client) => readUrl('/poll', { since: head, epoch, client });
      const http1 = [];
      const http2 = [];
      for (let i = 0; i < REQUESTS; i += 1) {
        http1.push(await measuredRequest(`${this.http1Origin}${path(CLIENTS.http1)}`, CLIENTS.http1));
        rows.push(this.row(i + 1, http1[i], null));
      }
      for (let i = 0; i < REQUESTS; i += 1) {
        http2.push(await measuredRequest(path(CLIENTS.http2), CLIENTS.http2));
        this.fill(rows[i], 'http2', http2[i]);
      }
      const sum = (side, key) => side.reduce((total, figures) => total + figures[key], 0);
      const all = this.row(`all ${REQUESTS}`, { up: sum(http1, 'up'), down: sum(http1, 'down') }, { up: sum(http2, 'up'), down: sum(http2, 'down') });
      all.dataset.request = 'all';
      this.summary.textContent = describe(http1, http2);
      this.setState('done');
    } catch (err) {
      this.summary.textContent = `Could not measure: ${err.message}.`;
      this.setState('failed');
    } finally {
      this.button.disabled = false;
    }
  }

  /** Adds a row for request `label` with each side's figures (null: not yet). */
  row(label, http1, http2) {
    const tr = document.createElement('tr');
    tr.dataset.request = String(label);
    const first = document.createElement('td');
    first.textContent = String(label);
    tr.append(first);
    for (const side of ['http1', 'http2']) {
      for (const figure of FIGURES) {
        const td = document.createElement('td');
        td.dataset.figure = `${side}-${figure}`;
        td.textContent = '–';
        tr.append(td);
      }
    }
    this.tbody.append(tr);
    this.fill(tr, 'http1', http1);
    this.fill(tr, 'http2', http2);
    return tr;
  }

  /** Writes one side's figures into a row. */
  fill(tr, side, figures) {
    if (!figures) return;
    const values = { up: figures.up, down: figures.down, total: figures.up + figures.down };
    for (const figure of FIGURES) {
      const td = tr.querySelector(`[data-figure="${side}-${figure}"]`);
      td.textContent = bytes(values[figure]);
      td.dataset.bytes = String(values[figure]);
    }
  }
}

/** The sentence under the table: the later requests side by side, and the first. */
function describe(http1, http2) {
  const later1 = mean(http1.slice(1).map((r) => r.up));
  const later2 = mean(http2.slice(1).map((r) => r.up));
  const share = later1 ? Math.round((100 * later2) / later1) : null;
  const first = http2[0].up;
  const firstNote = first > 2 * later2
    ? `Its first request carried ${first} B: a new connection's HPACK table starts empty, so the headers went out in full (Huffman-coded) and were remembered.`
    : `Its first request was small too (${first} B): the connection was still open from an earlier run, and its HPACK table remembered the headers.`;
  return (
    `Requests 2–${REQUESTS}: HTTP/1.1 sent ${later1} B up each, its headers as text every time; ` +
    `HTTP/2 sent ${later2} B (${share} %): a 9-byte frame header, the path, which browsers send anew every time, ` +
    `and a byte or so for each other header, a reference to one it had sent before. ${firstNote}`
  );
}

const element = $('#protocols');
if (element) new ProtocolsCard(element).mount();
