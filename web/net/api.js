/// api.js: the request/response half of the pushlab protocol, and the
/// room every request names. It knows no transport and no page.
///
/// Every transport reads the log its own way, but joining and (for the HTTP
/// transports) sending are plain JSON requests:
///
///   POST /register        {"name":"alice"}        -> {session, name, epoch, cursor, history, users, online}
///   POST /send?session=S  {"type":"message",...}  -> {seq}
///
/// Every request names the page's room (`?room=` of the page's own URL) with
/// `room=`; without one, the server uses the lobby. A session belongs to its
/// room: the server answers `wrong_room` if it is used with another.
///
/// Every POST must say `Content-Type: application/json`; the server answers
/// anything else with 415. Errors come back as {"error": "...", "code": "..."}
/// and `code` is what a program should switch on.

/** The server's naming rule, checked here first so a typo never costs a round trip. */
export const NAME_RULE = /^[A-Za-z][A-Za-z0-9_-]{0,23}$/;

/** What the name rule means, in words, for the inline error. */
export const NAME_RULE_TEXT = '1 to 24 characters from A–Z a–z 0–9 _ -, starting with a letter.';

/** The server's room naming rule: a name's rule, optionally after one `_` (unlisted). */
export const ROOM_RULE = /^_?[A-Za-z][A-Za-z0-9_-]{0,23}$/;

/** The room every page starts in unless its URL names another. */
export const LOBBY = 'lobby';

/**
 * The room named by `?room=` in `search`, in lower case as the server keeps
 * it: `{room, problem}`, with the lobby and a sentence when the name is bad.
 */
export function roomFrom(search) {
  const raw = new URLSearchParams(search).get('room');
  if (raw === null || raw === '') return { room: LOBBY, problem: null };
  if (!ROOM_RULE.test(raw)) {
    return { room: LOBBY, problem: `"${raw}" is not a room name; using the lobby. A room name is 1 to 24 characters from A–Z a–z 0–9 _ -, starting with a letter (a leading _ keeps it off the room list).` };
  }
  return { room: raw.toLowerCase(), problem: null };
}

/** This page's room. */
export const ROOM = roomFrom(location.search).room;

/** `path` with this page's room added to its query, unless it is the lobby. */
export function inRoom(path) {
  if (ROOM === LOBBY) return path;
  const joiner = path.includes('?') ? '&' : '?';
  return `${path}${joiner}room=${encodeURIComponent(ROOM)}`;
}

/** The rooms on the server's list, busiest first: [{name, online, head}]. */
export async function listRooms({ signal } = {}) {
  return (await getJson('/rooms', { signal })).rooms;
}

/** A refusal from the server (`code` is its machine code), or a network failure (`code` = "network"). */
export class ApiError extends Error {
  constructor(code, message, status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** Sends `body` as JSON and returns the parsed answer, or throws an ApiError. */
export async function postJson(path, body, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    throw networkError(err);
  }
  return readJson(response);
}

/** GETs `path` and returns the parsed answer, or throws an ApiError. */
export async function getJson(path, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, { cache: 'no-store', signal });
  } catch (err) {
    throw networkError(err);
  }
  return readJson(response);
}

/**
 * Comes online as `name` in this page's room. An `observer` (a page's own
 * helper session) is left out of who is online (docs/protocol.md, Observers).
 */
export function register(name, { observer = false } = {}) {
  return postJson(inRoom('/register'), observer ? { name, observer } : { name });
}

/** Sends one client message for `session` over HTTP. */
export function send(session, message) {
  return postJson(inRoom(`/send?session=${encodeURIComponent(session)}`), message);
}

/**
 * Ends a session from a page that is going away. `sendBeacon` is the one
 * request a browser promises to deliver after the page is gone; a Blob lets
 * it carry the JSON content type the server requires.
 */
export function beaconLeave(session) {
  const body = new Blob([JSON.stringify({ type: 'leave' })], { type: 'application/json' });
  return navigator.sendBeacon(inRoom(`/send?session=${encodeURIComponent(session)}`), body);
}

/**
 * Builds a read URL such as `/poll?since=4&epoch=…&session=…` in this page's
 * room, leaving out empty values. A reader whose bytes the server should
 * count for it (GET /traffic?client=ID) passes `client` among them.
 */
export function readUrl(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(key, String(value));
  }
  if (ROOM !== LOBBY) query.set('room', ROOM);
  return `${path}?${query}`;
}

async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page, or a body cut off by a dying server.
  }
  if (response.ok && body) return body;
  if (body && body.code) throw new ApiError(body.code, body.error, response.status);
  throw new ApiError('network', `HTTP ${response.status}`, response.status);
}

function networkError(err) {
  if (err.name === 'AbortError') return new ApiError('aborted', 'the request was cancelled');
  return new ApiError('network', 'the server cannot be reached');
}
