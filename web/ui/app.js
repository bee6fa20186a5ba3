/// app.js: the chat-and-cursors page.
///
/// One state object holds everything the page knows; the functions below
/// change it and then update the DOM. The flow:
///
///   1. POST /register {name} → a session, the log's epoch, our cursor (the
///      seq of our own join), the recent chat history and who is online.
///   2. A transport (net/transports.js) reads every log event after the
///      cursor into the page's LogFollower (net/follower.js), which hands
///      each new one here once, in seq order.
///   3. We send chat lines and pointer moves with transport.send().
///   4. On pagehide we end the session at once, so others see us leave now
///      rather than when the server's presence timeout notices.
///
/// All text from other people is put on the page with textContent, never as
/// HTML, so a message like <img onerror=…> is shown, not run.

import { NAME_RULE, NAME_RULE_TEXT, ROOM, getJson, inRoom, register, roomFrom, send as httpSend } from '../net/api.js';
import { LogFollower } from '../net/follower.js';
import { Metrics } from '../net/metrics.js';
import { Backoff, TRANSPORT_NAMES, createTransport } from '../net/transports.js';
import { WebRtcTransport } from '../net/webrtc.js';
import { CursorLayer, colorFor, fractionOf } from './cursors.js';
import { FIGURES, figureRows, renderFigures } from './figures.js';
import { notify as showNotice } from './notices.js';
import { PeerPanel } from './peer-panel.js';
import { mountRoomPicker } from './rooms.js';

/**
 * The transports this page offers: the four server paths, and WebRTC
 * (chat over the WebSocket, cursors peer to peer; see net/webrtc.js).
 */
const PAGE_TRANSPORTS = [...TRANSPORT_NAMES, 'webrtc'];

/** Pointer moves are sent at most this often, in ms (about 30 per second). */
const MOVE_INTERVAL_MS = 33;
/** An own message not back from the server after this long is marked failed, in ms. */
const PENDING_TIMEOUT_MS = 10_000;
/** Why we rejoin when the server answers `unknown_session`. */
const SESSION_LOST = 'The server no longer knew this page (it restarted, or the page was away too long).';
/** The default and the bounds of ?interval=, in ms. */
const DEFAULT_INTERVAL_MS = 1000;
const MIN_INTERVAL_MS = 50;
const MAX_INTERVAL_MS = 60_000;
/**
 * This page's name for its reads in `client=`: the server counts, on the
 * socket, every byte they cost both ways (GET /traffic?client=ID). Random,
 * so two tabs never share one.
 */
const CLIENT_ID = `chat-${Math.random().toString(36).slice(2, 10)}`;
/** How often the server's count is asked, in ms. */
const TRAFFIC_EVERY_MS = 2000;
/**
 * Bytes per event, from the server's count for this page: the browser sees
 * neither its request heads nor, exactly, its response heads.
 */
const EXACT_BYTES = {
  id: 'bytes',
  label: 'Bytes per event',
  explain: 'The server\'s count for this page\'s reads: bytes it sent (down), and with the requests, per event.',
};

const $ = (selector) => document.querySelector(selector);
const ui = {
  switcher: $('#switcher'),
  notices: $('#notices'),
  canvas: $('#canvas'),
  ownCursor: $('.own-cursor'),
  people: $('#people'),
  join: $('#join'),
  name: $('#name'),
  nameError: $('#name-error'),
  nameRule: $('#name-rule'),
  messages: $('#messages'),
  send: $('#send'),
  text: $('#text'),
  transport: $('#transport'),
  transportNote: $('#transport-note'),
  status: $('#status'),
  figures: $('#figures'),
  rtc: $('#rtc'),
};

/** Everything the page knows. */
const state = {
  /** What the query string asked for, after checking. */
  options: readOptions(location.search),
  /** Our name and session once registered, else null. */
  me: null,
  /** Where we stand in the log (cursor and epoch), and what is new to us. */
  follower: new LogFollower({
    onEvent: (event) => {
      state.metrics.recordEvent(event);
      applyEvent(event);
    },
    // Events after our cursor are gone from the server (we were away too
    // long, or the log is another one now), so our picture of the room may
    // be wrong. The only complete picture is a fresh welcome: end this
    // session and join again.
    onGap: () => rejoin('Some events this page missed were no longer on the server.', { endSession: true }),
    onControl: (control) => receiveControl(control),
  }),
  /** Other people online: name → {x, y} (null until they first move). */
  users: new Map(),
  /** Our chat lines not yet seen back from the server: id → {text, li, sentAt, timer}. */
  outbox: new Map(),
  /** The pointer: where it is, whether a move is waiting or on its way, when we last sent one. */
  pointer: { next: null, frame: 0, inFlight: false, lastSent: 0 },
  /** The transport in use (see net/transports.js), or null before joining. */
  transport: null,
  /** 'offline' | 'connecting' | 'connected' | 'reconnecting' */
  status: 'offline',
  /** True while we are registering again after losing the session. */
  rejoining: false,
  metrics: new Metrics(),
  /** The WebRTC panel, on ?transport=webrtc. */
  peerPanel: null,
  /** Peer names whose channel failure the page has announced. */
  announcedFailures: new Set(),
  /**
   * The server's count for this page (GET /traffic): `view` its last
   * answer, `baseEvents` the events delivered before those counters began
   * (a restarted server counts from zero again).
   */
  traffic: { view: null, baseEvents: 0 },
};

const cursors = new CursorLayer(ui.canvas);

// ── Options from the query string ────────────────────────────────────────

/**
 * ?transport=poll|longpoll|sse|ws|webtransport|auto|webrtc, &interval=MS (short polling
 * only), &mirror=1 (WebRTC only: send moves through the server too, to
 * compare the paths), &name= to pre-fill the form. A bad value falls back to the default and
 * says so on the page.
 */
function readOptions(search) {
  const params = new URLSearchParams(search);
  const problems = [];
  let transport = params.get('transport') ?? 'auto';
  if (!PAGE_TRANSPORTS.includes(transport)) {
    problems.push(`"${transport}" is not a transport; using auto. Pick one of ${PAGE_TRANSPORTS.join(', ')}.`);
    transport = 'auto';
  }
  let interval = DEFAULT_INTERVAL_MS;
  const rawInterval = params.get('interval');
  if (rawInterval !== null) {
    const parsed = Number(rawInterval);
    if (Number.isInteger(parsed) && parsed >= MIN_INTERVAL_MS && parsed <= MAX_INTERVAL_MS) {
      interval = parsed;
    } else {
      problems.push(`interval=${rawInterval} is not a whole number of ms from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}; using ${DEFAULT_INTERVAL_MS}.`);
    }
  }
  const { problem: roomProblem } = roomFrom(search);
  if (roomProblem) problems.push(roomProblem);
  return { transport, interval, mirror: params.get('mirror') === '1', name: params.get('name') ?? '', problems };
}

/** The same page with another transport, keeping the other options. */
function urlForTransport(transport) {
  const params = new URLSearchParams(location.search);
  params.set('transport', transport);
  const name = state.me?.name ?? ui.name.value.trim();
  if (name) params.set('name', name);
  else params.delete('name');
  return `?${params}`;
}

function renderSwitcher() {
  for (const name of PAGE_TRANSPORTS) {
    const link = document.createElement('a');
    link.textContent = name;
    link.href = urlForTransport(name);
    if (name === state.options.transport) link.setAttribute('aria-current', 'page');
    // Rewrite at click time so the name typed so far comes along.
    link.addEventListener('click', () => {
      link.href = urlForTransport(name);
    });
    ui.switcher.append(link);
  }
}

// ── Notices ──────────────────────────────────────────────────────────────

/** Shows a banner at the top of the page. `kind` is 'info' or 'warning'. */
function notify(text, kind = 'info') {
  showNotice(ui.notices, text, kind);
}

// ── Joining ──────────────────────────────────────────────────────────────

function showNameError(text) {
  ui.nameError.textContent = text;
  ui.name.setAttribute('aria-invalid', text ? 'true' : 'false');
}

async function onJoin(event) {
  event.preventDefault();
  const name = ui.name.value.trim();
  // The same rule the server applies; checking here saves a round trip.
  if (!NAME_RULE.test(name)) {
    showNameError(name ? `“${name}” is not allowed: ${NAME_RULE_TEXT}` : 'Type a name first.');
    return;
  }
  showNameError('');
  const button = ui.join.querySelector('button');
  button.disabled = true;
  try {
    enterRoom(await register(name));
  } catch (err) {
    showNameError(describeJoinError(err, name));
  } finally {
    button.disabled = false;
  }
}

function describeJoinError(err, name) {
  switch (err.code) {
    case 'name_taken': return `“${name}” is taken by someone online. Try another.`;
    case 'invalid_name': return err.message;
    case 'network': return 'The server cannot be reached. Is it running?';
    default: return err.message || 'Joining failed.';
  }
}

/**
 * Takes a welcome (from POST /register) as the whole truth: history,
 * who is online, and where to read from. Used on the first join and every
 * rejoin after a restart or an expired session.
 */
function enterRoom(welcome) {
  state.me = { name: welcome.name, session: welcome.session };
  state.follower.startAt(welcome);

  // The chat: the server's history (which may hold lines of ours we never
  // saw confirmed), then our own lines it does not have.
  ui.messages.replaceChildren();
  for (const message of welcome.history) showMessage(message, { measure: false });
  for (const entry of state.outbox.values()) {
    ui.messages.append(entry.li);
    markFailed(entry, 'not confirmed before the connection was lost');
  }

  state.users.clear();
  cursors.clear();
  for (const user of welcome.users) {
    if (sameName(user.name, state.me.name)) continue;
    state.users.set(user.name, { x: user.x, y: user.y });
    if (user.x !== null && user.y !== null) cursors.move(user.name, user.x, user.y);
  }
  renderPeople();

  document.body.classList.add('joined');
  ui.join.hidden = true;
  ui.send.hidden = false;
  ui.text.focus();
  startTransport();
}

function startTransport() {
  state.transport?.stop();
  // A transport hands nothing to the follower once stopped, so a replaced
  // one cannot move our cursor.
  const options = {
    session: state.me.session,
    follower: state.follower,
    onStatus: (status) => {
      // Late news from a transport we have already replaced is ignored.
      if (state.transport === transport) setStatus(status);
    },
    metrics: state.metrics,
    interval: state.options.interval,
    client: CLIENT_ID,
  };
  const transport = state.options.transport === 'webrtc' ? createWebRtc(options) : createTransport(state.options.transport, options);
  state.transport = transport;
  transport.start();
}

/** The WebRTC transport, wired to the cursors and the peer panel. */
function createWebRtc(options) {
  state.peerPanel ??= new PeerPanel(ui.rtc, {
    mirror: state.options.mirror,
    onMirror: (checked) => {
      state.options.mirror = checked;
      if (state.transport) state.transport.mirror = checked;
    },
  });
  const transport = new WebRtcTransport(options, {
    me: state.me.name,
    users: () => [...state.users.keys()],
    mirror: state.options.mirror,
    onPeerMove: (name, x, y) => {
      if (state.transport !== transport || !state.users.has(name)) return;
      state.users.set(name, { x, y });
      cursors.move(name, x, y);
    },
    onPeersChange: (link) => {
      if (state.transport !== transport) return;
      state.peerPanel.refresh(transport);
      if (link.state === 'failed' && !state.announcedFailures.has(link.name)) {
        state.announcedFailures.add(link.name);
        notify(`The peer-to-peer channel with ${link.name} failed (${link.reason}): your cursors reach each other through the server instead.`, 'warning');
      }
    },
  });
  return transport;
}

function setStatus(status) {
  state.status = status;
  ui.status.textContent = status;
  ui.status.dataset.status = status;
  const active = state.transport?.name ?? state.options.transport;
  ui.transport.textContent = active;
  if (state.options.transport === 'webrtc') {
    ui.transportNote.textContent = 'webrtc: chat and presence over the WebSocket; cursors peer to peer on data channels, and through the server to anyone without an open channel.';
  }
  if (state.options.transport === 'webtransport') {
    ui.transportNote.textContent = 'webtransport: the log on one QUIC stream, cursor moves as datagrams. It needs a server started with --webtransport, a secure context (https, or http on localhost) and UDP to the server; until then the page keeps reconnecting.';
  }
  if (state.options.transport === 'auto') {
    const fellBack = {
      ws: 'auto: WebTransport did not open within 3 s, so this page fell back to the WebSocket.',
      longpoll: 'auto: the WebSocket was refused or silent for 3 s, so this page fell back to long polling.',
    };
    ui.transportNote.textContent = state.transport?.fellBack
      ? fellBack[state.transport.name] ?? 'auto: this page fell back.'
      : 'auto: WebTransport first where the server and browser have it, then WebSocket; long polling if neither opens within 3 s.';
  }
}

/**
 * Registers again under the same name: the server restarted, our session
 * expired, or events we needed are gone (`endSession` first ends the
 * session we still have, to free the name). Retries with backoff while the
 * server is unreachable.
 */
async function rejoin(reason, { endSession = false } = {}) {
  if (state.rejoining || !state.me) return;
  state.rejoining = true;
  state.transport?.stop();
  setStatus('reconnecting');
  const { name, session } = state.me;
  if (endSession) {
    try {
      await httpSend(session, { type: 'leave' });
    } catch {
      // Already gone: that is what we wanted.
    }
  }
  const oldEpoch = state.follower.epoch;
  const backoff = new Backoff();
  for (let attempt = 1; ; attempt += 1) {
    try {
      const welcome = await register(name);
      state.rejoining = false;
      enterRoom(welcome);
      notify(
        welcome.epoch !== oldEpoch
          ? `The server restarted with an empty log. You rejoined as ${welcome.name} and the chat was reloaded.`
          : `${reason} You rejoined as ${welcome.name} and the chat was reloaded.`,
        'warning',
      );
      return;
    } catch (err) {
      // Our old session may take a moment to free the name; after that a
      // taken name means someone else has it.
      if (err.code === 'invalid_name' || (err.code === 'name_taken' && attempt >= 3)) {
        state.rejoining = false;
        leaveRoom();
        showNameError(describeJoinError(err, name));
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, backoff.next()));
    }
  }
}

/** Back to the join form, e.g. when our name was taken while we were away. */
function leaveRoom() {
  state.transport?.stop();
  state.transport = null;
  state.me = null;
  document.body.classList.remove('joined');
  ui.join.hidden = false;
  ui.send.hidden = true;
  ui.ownCursor.hidden = true;
  setStatus('offline');
}

// ── Receiving ────────────────────────────────────────────────────────────

/** Messages without a seq that the follower does not act on itself. */
function receiveControl(control) {
  switch (control.type) {
    case 'error':
      if (control.code === 'unknown_session') {
        rejoin(SESSION_LOST);
      } else if (control.id && state.outbox.has(control.id)) {
        markFailed(state.outbox.get(control.id), control.error);
      }
      // Other refusals (a rate-limited pointer move) need no action.
      break;
    default:
      break;
  }
}

/** An event new to the follower, in seq order. */
function applyEvent(event) {
  switch (event.type) {
    case 'join':
      // An observer (a compare page's reader or bot) is nobody online.
      if (!isMe(event.name) && !event.observer) state.users.set(event.name, { x: null, y: null });
      renderPeople();
      break;
    case 'leave':
      state.users.delete(event.name);
      cursors.remove(event.name);
      renderPeople();
      break;
    case 'mousemove':
      // Our own dot already moved when the pointer did.
      if (isMe(event.name)) break;
      // On WebRTC, a peer whose moves arrive over its channel is drawn
      // from there; the server's copy would only make the dot jitter.
      if (state.transport?.ownsCursor?.(event.name)) break;
      // Only someone online is listed: the welcome and the joins since name
      // them all, so a mover never named there is an observer.
      if (state.users.has(event.name)) state.users.set(event.name, { x: event.x, y: event.y });
      cursors.move(event.name, event.x, event.y);
      break;
    case 'message':
      showMessage(event, { measure: true });
      break;
    default:
      break;
  }
}

const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();
const isMe = (name) => state.me !== null && sameName(name, state.me.name);

// ── Chat ─────────────────────────────────────────────────────────────────

/**
 * One <li> per message. Its text content is exactly the message: the author
 * and time are drawn by CSS from data attributes.
 */
function messageItem({ name, text, ts }) {
  const li = document.createElement('li');
  li.dataset.author = name;
  li.dataset.time = new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.style.setProperty('--color', colorFor(name));
  if (isMe(name)) li.classList.add('own');
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text; // never innerHTML: this is someone else's text
  li.append(body);
  return li;
}

/** A message from the log: one of our pending lines coming back, or someone's new line. */
function showMessage(event, { measure }) {
  if (isMe(event.name) && event.id && state.outbox.has(event.id)) confirmOwn(event, { measure });
  else appendMessage(event);
}

function appendMessage(event) {
  const li = messageItem(event);
  li.dataset.seq = event.seq;
  if (event.id) li.dataset.id = event.id;
  insertInOrder(li);
}

/** Confirmed lines go before our pending ones, so the list stays in log order. */
function insertInOrder(li) {
  const stuck = ui.messages.querySelector('li.pending, li.failed');
  const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.insertBefore(li, stuck);
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** A client-chosen id, echoed back in the event so we can match our own line. */
function newMessageId() {
  const random = Math.random().toString(36).slice(2, 10);
  return `m-${Date.now().toString(36)}-${random}`;
}

function onSend(event) {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !state.transport) return;
  ui.text.value = '';
  const entry = { id: newMessageId(), text, li: null, sentAt: 0, timer: 0 };
  entry.li = messageItem({ name: state.me.name, text, ts: Date.now() });
  entry.li.dataset.id = entry.id;
  state.outbox.set(entry.id, entry);
  ui.messages.append(entry.li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  sendEntry(entry);
}

/** Sends (or resends) one of our lines and shows it as pending until it comes back. */
async function sendEntry(entry) {
  entry.li.classList.remove('failed');
  entry.li.classList.add('pending');
  entry.li.querySelector('.retry')?.remove();
  entry.li.removeAttribute('title');
  entry.sentAt = performance.now();
  clearTimeout(entry.timer);
  try {
    await state.transport.send({ type: 'message', text: entry.text, id: entry.id });
  } catch (err) {
    if (!state.outbox.has(entry.id)) return; // it came back meanwhile
    markFailed(entry, err.message);
    if (err.code === 'unknown_session') rejoin(SESSION_LOST);
    return;
  }
  // Accepted (HTTP) or written (WebSocket); the event may still be on its way.
  if (state.outbox.has(entry.id)) {
    entry.timer = setTimeout(() => markFailed(entry, 'no answer from the server'), PENDING_TIMEOUT_MS);
  }
}

function markFailed(entry, reason) {
  clearTimeout(entry.timer);
  entry.li.classList.remove('pending');
  entry.li.classList.add('failed');
  entry.li.title = `Not sent: ${reason}`;
  if (!entry.li.querySelector('.retry')) {
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'retry';
    retry.textContent = 'Retry';
    retry.addEventListener('click', () => sendEntry(entry));
    entry.li.append(retry);
  }
}

/** Our line came back in the log: it is real now. `measure` if it came back live. */
function confirmOwn(event, { measure }) {
  const entry = state.outbox.get(event.id);
  state.outbox.delete(event.id);
  clearTimeout(entry.timer);
  if (measure) state.metrics.recordRoundTrip(performance.now() - entry.sentAt);
  const { li } = entry;
  li.classList.remove('pending', 'failed');
  li.removeAttribute('title');
  li.querySelector('.retry')?.remove();
  li.dataset.seq = event.seq;
  insertInOrder(li);
}

// ── People and pointers ──────────────────────────────────────────────────

function renderPeople() {
  const names = state.me ? [state.me.name, ...state.users.keys()] : [];
  ui.people.replaceChildren(
    ...names.map((name) => {
      const chip = document.createElement('li');
      chip.textContent = isMe(name) ? `${name} (you)` : name;
      chip.style.setProperty('--color', colorFor(name));
      return chip;
    }),
  );
}

/**
 * Our own dot follows the pointer at once; the network sees at most one
 * move per animation frame and per MOVE_INTERVAL_MS, and only the latest
 * position. Over HTTP only one move is in flight at a time, so a slow
 * server gets fewer, fresher positions instead of a queue of stale ones.
 */
function onPointerMove(event) {
  if (!state.me) return;
  const position = fractionOf(event, ui.canvas);
  ui.ownCursor.hidden = false;
  ui.ownCursor.style.left = `${position.x * 100}%`;
  ui.ownCursor.style.top = `${position.y * 100}%`;
  state.pointer.next = position;
  scheduleMove();
}

function scheduleMove() {
  if (!state.pointer.frame) state.pointer.frame = requestAnimationFrame(sendMove);
}

function sendMove(now) {
  const pointer = state.pointer;
  pointer.frame = 0;
  if (!pointer.next || !state.transport) return;
  if (pointer.inFlight || now - pointer.lastSent < MOVE_INTERVAL_MS) return scheduleMove();
  const { x, y } = pointer.next;
  pointer.next = null;
  pointer.lastSent = now;
  pointer.inFlight = true;
  state.transport
    .send({ type: 'mousemove', x, y })
    .catch((err) => {
      if (err.code === 'unknown_session') rejoin(SESSION_LOST);
    })
    .finally(() => {
      pointer.inFlight = false;
    });
}

// ── Exact bytes ──────────────────────────────────────────────────────────

/** The row of GET /traffic the transport in use is counted under. */
function trafficRow() {
  const name = state.transport?.name;
  // WebRTC's log and signals go over its WebSocket; its channels bypass the server.
  return name === 'webrtc' ? 'ws' : name;
}

/** Asks the server what this page's reads have cost so far. */
async function readTraffic() {
  if (!state.transport) return;
  let view;
  try {
    view = await getJson(`/traffic?client=${encodeURIComponent(CLIENT_ID)}`);
  } catch {
    // The figure keeps its last value, or the browser's estimate.
    return;
  }
  const row = trafficRow();
  const before = state.traffic.view?.[row];
  // Counters that went down belong to a server that started again.
  if (before && view[row] && view[row].bytes_out < before.bytes_out) state.traffic.baseEvents = state.metrics.events;
  state.traffic.view = view;
}

/**
 * "235 B down · 544 B both ways" from the server's count, or the browser's
 * estimate marked "≈" until (or unless) the server's is known.
 */
function bytesPerEvent(snapshot) {
  const counted = state.traffic.view?.[trafficRow()];
  // `auto` counts from zero again on the transport it falls back to.
  if (state.metrics.events < state.traffic.baseEvents) state.traffic.baseEvents = 0;
  const events = state.metrics.events - state.traffic.baseEvents;
  if (counted && events > 0) {
    const down = counted.bytes_out / events;
    const both = (counted.bytes_in + counted.bytes_out) / events;
    return `${Math.round(down)} B down · ${Math.round(both)} B both ways`;
  }
  if (snapshot.bytesPerEvent !== null) return `≈${Math.round(snapshot.bytesPerEvent)} B (browser's estimate)`;
  return '–';
}

// ── Leaving ──────────────────────────────────────────────────────────────

// pagehide fires when the tab closes or navigates away (unload is not
// reliable, and it disables the back/forward cache). Leaving here means the
// others see us go now, not after the server's presence timeout.
window.addEventListener('pagehide', () => {
  if (state.me) state.transport?.leave();
});

// Restored from the back/forward cache: our session ended on pagehide.
window.addEventListener('pageshow', (event) => {
  if (event.persisted && state.me) rejoin('Welcome back.');
});

// ── Start ────────────────────────────────────────────────────────────────

function init() {
  renderSwitcher();
  mountRoomPicker($('#room'));
  $('#compare-link').href = inRoom('compare.html');
  document.title = `${ROOM} · ${document.title}`;
  for (const problem of state.options.problems) notify(problem, 'warning');
  ui.nameRule.textContent = NAME_RULE_TEXT;
  ui.name.value = state.options.name;
  ui.transport.textContent = state.options.transport;
  ui.join.addEventListener('submit', onJoin);
  ui.name.addEventListener('input', () => showNameError(''));
  ui.send.addEventListener('submit', onSend);
  ui.canvas.addEventListener('pointermove', onPointerMove);
  const updateFigures = renderFigures(ui.figures, { only: FIGURES.map((figure) => figure.id).filter((id) => id !== 'bytes') });
  const bytesCell = figureRows(ui.figures, [EXACT_BYTES]).get('bytes');
  const refresh = () => {
    const snapshot = state.metrics.snapshot();
    updateFigures(snapshot);
    bytesCell.textContent = bytesPerEvent(snapshot);
  };
  setInterval(() => {
    refresh();
    if (state.peerPanel && state.transport?.paths) state.peerPanel.refresh(state.transport);
  }, 500);
  setInterval(readTraffic, TRAFFIC_EVERY_MS);
  refresh();
  if (!state.options.name) ui.name.focus();
}

init();
