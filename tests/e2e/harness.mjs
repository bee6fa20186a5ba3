// harness.mjs: what every browser test needs. A real pushlab server on a
// free port (or a cluster: Redis, several nodes and nginx in front), Debian's
// headless Chromium driven by playwright-core, and helpers that speak in the
// page's stable hooks (#join, #send, #messages li, #canvas,
// .cursor[data-name], #transport, #status).
//
// Every browser test file starts the same way: `useServerAndBrowser()` in
// its describe block starts the servers and Chromium before its tests and
// stops them after; a file whose pages open WebRTC first calls
// `runsInTestNamespace()`, which re-runs it inside a network namespace.
//
// Nothing here sleeps to synchronise: every wait polls the page for the
// state it expects, with a timeout.

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

/** The repository root, found from this file rather than the working directory. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The server under test; override with PUSHLAB_BIN. */
export const SERVER_BIN = process.env.PUSHLAB_BIN ?? path.join(REPO_ROOT, 'target', 'release', 'pushlab');

/** How long a test waits for any one expected state, in ms. */
export const WAIT_MS = 15_000;

/** The flags the brief asks for: headless, no sandbox (root in CI), nothing phoning home. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/**
 * Starts pushlab on 127.0.0.1 (`port` 0 picks a free one) and resolves once
 * it prints its first stdout line, `pushlab listening on http://127.0.0.1:PORT`
 * (`https://` under `--tls`).
 * The presence timeout defaults to 30 s so that a user who disappears within
 * a few seconds in a test did so by leaving, not by timing out.
 */
export function startServer({ port = 0, args = ['--presence-timeout', '30'] } = {}) {
  const child = spawn(SERVER_BIN, ['--addr', `127.0.0.1:${port}`, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  const logs = keepTail(child.stderr);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pushlab did not start within 10 s:\n${logs.join('\n')}`));
    }, 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${SERVER_BIN} (build it with cargo build --release): ${err.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pushlab exited with ${code} before listening:\n${logs.join('\n')}`));
    });
    readline.createInterface({ input: child.stdout }).once('line', (line) => {
      const match = /^pushlab listening on (https?:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
      clearTimeout(timer);
      if (!match) {
        child.kill('SIGKILL');
        reject(new Error(`unexpected first line from pushlab: ${line}`));
        return;
      }
      resolve(new RunningServer(child, match[1], Number(match[2]), logs));
    });
  });
}

class RunningServer {
  constructor(child, url, port, logs) {
    this.child = child;
    this.url = url;
    this.port = port;
    this.logs = logs;
  }

  /** Stops the server: SIGTERM (a graceful shutdown), or SIGKILL to simulate a crash. */
  stop(signal = 'SIGTERM') {
    return stopChild(this.child, signal);
  }
}

/** The last 200 lines of a child's output stream (added to `lines`), kept for error messages. */
function keepTail(stream, lines = []) {
  readline.createInterface({ input: stream }).on('line', (line) => {
    lines.push(line);
    if (lines.length > 200) lines.shift();
  });
  return lines;
}

/** Sends `signal` to a child, then SIGKILL if it is still there 5 s later; resolves once it has exited. */
async function stopChild(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * A free port on 127.0.0.1, for a program that cannot listen on port 0 and
 * say which port it got (redis-server, nginx): listen on 0, note the port,
 * close.
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port` right now. */
function accepting(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A program the tests run beside pushlab (redis-server, nginx), in a
 * temporary folder of its own that goes when it stops.
 */
class Service {
  constructor(name, child, dir, { logFile = null } = {}) {
    this.name = name;
    this.child = child;
    this.dir = dir;
    this.logFile = logFile;
    // Both streams are read, so a chatty program never blocks on a full pipe.
    this.logs = keepTail(child.stderr);
    keepTail(child.stdout, this.logs);
  }

  /** What the program said, for an error message. */
  async said() {
    const file = this.logFile ? await readFile(this.logFile, 'utf8').catch(() => '') : '';
    return [...this.logs, file].join('\n').trim();
  }

  /**
   * Resolves once the program accepts connections on `port`; rejects if it
   * exits first or takes more than 10 s. A program that prints nothing when
   * it is ready can only be asked this way.
   */
  async listening(port) {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`${this.name} exited before listening on ${port}:\n${await this.said()}`);
      }
      if (await accepting(port)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${this.name} did not listen on ${port} within 10 s:\n${await this.said()}`);
  }

  /** Stops the program and removes its folder. */
  async stop() {
    await stopChild(this.child);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Runs `command` in a new temporary folder and waits until it listens on `port`; stops it if it never does. */
async function startService(name, command, args, { dir, port, logFile = null }) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const spawned = new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(new Error(`could not run ${command}: ${err.message}`)));
  });
  const service = new Service(name, child, dir, { logFile });
  try {
    await spawned;
    await service.listening(port);
  } catch (err) {
    await service.stop();
    throw err;
  }
  return service;
}

/** redis-server; override with REDIS_SERVER. tests/run.sh installs it. */
export const REDIS_BIN = process.env.REDIS_SERVER ?? 'redis-server';

/** nginx; override with NGINX. Debian puts it in /usr/sbin, outside a user's PATH. */
export const NGINX_BIN = process.env.NGINX ?? '/usr/sbin/nginx';

/**
 * Starts a Redis that keeps nothing on disk, on a free port, in a folder of
 * its own; `url` is what `--redis` takes.
 */
export async function startRedis() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pushlab-redis-'));
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'];
  const redis = await startService('redis-server', REDIS_BIN, args, { dir, port });
  redis.url = `redis://127.0.0.1:${port}/0`;
  return redis;
}

/**
 * Starts nginx on a free port in front of `upstreams` (`HOST:PORT`s), with
 * the configuration scripts/nginx-cluster-conf.sh prints: round-robin, or
 * `ipHash` for the sticky control. It runs as any user, from a folder of its
 * own, and logs every request with the node that served it; `requests()`
 * reads that log.
 */
export async function startNginx(upstreams, { ipHash = false } = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pushlab-nginx-'));
  const port = await freePort();
  const script = path.join(REPO_ROOT, 'scripts', 'nginx-cluster-conf.sh');
  const conf = execFileSync(script, [...(ipHash ? ['--ip-hash'] : []), dir, String(port), ...upstreams], { encoding: 'utf8' });
  const confFile = path.join(dir, 'nginx.conf');
  const errorLog = path.join(dir, 'error.log');
  await writeFile(confFile, conf);
  const nginx = await startService('nginx', NGINX_BIN, ['-p', dir, '-e', errorLog, '-c', confFile], { dir, port, logFile: errorLog });
  nginx.url = `http://127.0.0.1:${port}`;
  nginx.requests = async () => {
    const text = await readFile(path.join(dir, 'access.log'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map((line) => {
      const [method, uri, status, upstream] = line.split(' ');
      return { method, uri, status: Number(status), upstream };
    });
  };
  return nginx;
}

/**
 * Starts a Redis, `nodes` pushlab nodes on it (each also given `args`), and
 * nginx in front of them. Pages load from `cluster.url`; `cluster.nodes`
 * are the servers themselves, for asking each one directly. Whatever
 * started is stopped again if a later part fails.
 */
export async function startCluster({ nodes = 2, args = ['--presence-timeout', '30'], ipHash = false } = {}) {
  const started = [];
  try {
    const redis = await startRedis();
    started.push(redis);
    const servers = [];
    for (let i = 0; i < nodes; i += 1) {
      // nginx is a trusted proxy: the nodes take the page's address from
      // its X-Forwarded-For.
      const server = await startServer({ args: [...args, '--redis', redis.url, '--trusted-proxy', '127.0.0.1'] });
      started.push(server);
      servers.push(server);
    }
    const proxy = await startNginx(servers.map((server) => `127.0.0.1:${server.port}`), { ipHash });
    started.push(proxy);
    return new Cluster(redis, servers, proxy);
  } catch (err) {
    await stopAll(started);
    throw err;
  }
}

/** Stops the newest first, each even if another fails to stop. */
async function stopAll(started) {
  for (const part of [...started].reverse()) {
    await part.stop().catch(() => {});
  }
}

class Cluster {
  constructor(redis, nodes, proxy) {
    this.redis = redis;
    this.nodes = nodes;
    this.proxy = proxy;
  }

  /** Where pages load from: nginx. */
  get url() {
    return this.proxy.url;
  }

  /** The node listening on `HOST:PORT` (as nginx's log and GET /join name it). */
  node(addr) {
    return this.nodes.find((server) => server.url === `http://${addr}`);
  }

  /** Stops nginx, the nodes, then Redis. */
  stop() {
    return stopAll([this.redis, ...this.nodes, this.proxy]);
  }
}

/** A server's `GET /stats`, asked of that server itself (a node, not the proxy). */
export async function readStats(server) {
  const response = await fetch(`${server.url}/stats`);
  if (!response.ok) throw new Error(`GET /stats from ${server.url} answered ${response.status}`);
  return response.json();
}

/**
 * A TCP proxy in front of the server, for cutting a page's network without
 * touching the server: `cut()` resets every open connection and refuses new
 * ones until `restore()`. Pages that load from `proxy.url` go through it.
 */
export function startProxy(targetPort) {
  const sockets = new Set();
  let down = false;
  const proxy = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    proxy.listen(0, '127.0.0.1', () => {
      const { port } = proxy.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        cut() {
          down = true;
          for (const socket of sockets) socket.resetAndDestroy();
        },
        restore() {
          down = false;
        },
        close() {
          for (const socket of sockets) socket.destroy();
          return new Promise((done) => proxy.close(done));
        },
      });
    });
  });
}

/**
 * Outside a network namespace of the test's own, WebRTC may use no UDP at
 * all: pages that open peer connections (the compare page's WebRTC pane)
 * then gather no candidate, so no test sends traffic on the machine's real
 * interfaces. Their channels fail, and say so.
 */
const NO_WEBRTC_UDP = '--force-webrtc-ip-handling-policy=disable_non_proxied_udp';

/**
 * Inside one (see runsInTestNamespace), peers find each other by host
 * candidates on the namespace's own addresses: real addresses instead of
 * random `.local` names, which nothing in the namespace would resolve.
 */
const NAMESPACE_WEBRTC_ARGS = ['--disable-features=WebRtcHideLocalIpsWithMdns'];

/** Whether this process runs in the network namespace runsInTestNamespace makes. */
export const IN_TEST_NETNS = process.env.PUSHLAB_TEST_NETNS === '1';

/**
 * Starts Chromium; `webrtc: true` lets WebRTC use UDP, only inside the
 * test's namespace; `quic: true` leaves QUIC on, which WebTransport needs
 * (its sessions go to pushlab on 127.0.0.1 only).
 */
export function launchBrowser({ webrtc = false, quic = false } = {}) {
  if (webrtc && !IN_TEST_NETNS) {
    throw new Error('WebRTC over UDP is only allowed inside the network namespace runsInTestNamespace makes');
  }
  const base = quic ? CHROMIUM_ARGS.filter((arg) => arg !== '--disable-quic') : CHROMIUM_ARGS;
  const args = webrtc ? [...base, ...NAMESPACE_WEBRTC_ARGS] : [...base, NO_WEBRTC_UDP];
  return chromium.launch({ executablePath: '/usr/bin/chromium', args });
}

/**
 * What every browser test file's describe block sets up, wired to its
 * `before` and `after`: the servers in `servers` (a name for each, and the
 * options startServer takes; one called `server` unless told otherwise)
 * and one Chromium (`browser`, with the options launchBrowser takes).
 * Returns an object whose fields are there once `before` has run:
 * `lab.browser` and one per server, such as `lab.server`. `after` closes
 * the browser, then stops the servers.
 */
export function useServerAndBrowser({ servers = { server: {} }, browser = {} } = {}) {
  const lab = {};
  before(async () => {
    for (const [name, options] of Object.entries(servers)) lab[name] = await startServer(options);
    lab.browser = await launchBrowser(browser);
  });
  after(async () => {
    await lab.browser?.close();
    for (const name of Object.keys(servers)) await lab[name]?.stop();
  });
  return lab;
}

/** The namespace: loopback up, a veth pair with one address each, a default route into it. */
const NETNS_SETUP = [
  'ip link set lo up',
  'ip link add v0 type veth peer name v1',
  'ip addr add 10.203.0.1/24 dev v0',
  'ip addr add 10.203.0.2/24 dev v1',
  'ip link set v0 up',
  'ip link set v1 up',
  'ip route add default via 10.203.0.2 dev v0',
].join(' && ');

/**
 * The environment of the run inside the namespace: marked as inside, and
 * without the outer test runner's context, which would make the inner
 * `node --test` skip its files.
 */
function namespaceEnv() {
  const env = { ...process.env, PUSHLAB_TEST_NETNS: '1' };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

/**
 * Chromium gathers ICE candidates on every interface it sees, so a test
 * whose pages open WebRTC never runs on the machine's own network. Called at
 * the top of such a file (`fileUrl` is its import.meta.url): inside the
 * namespace it returns true, and the file defines its tests. Outside, it
 * returns false and adds one test that re-runs the file inside a network
 * namespace made with `unshare -n`, holding only a loopback and a veth pair
 * (10.203.0.1 and 10.203.0.2), where the server and the browser both live,
 * and checks that exactly `tests` tests passed there. With only a loopback
 * Chromium gathers no candidate at all; the veth pair gives it two host
 * addresses that lead nowhere else. Lines with `measured:` in them are
 * repeated as the outer test's diagnostics.
 */
export function runsInTestNamespace(fileUrl, { tests }) {
  if (IN_TEST_NETNS) return true;
  const file = path.basename(fileURLToPath(fileUrl));
  test(`the tests of ${file} pass inside a network namespace of their own`, async (t) => {
    for (const [tool, hint] of [['unshare', 'util-linux'], ['ip', 'iproute2']]) {
      const found = spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
      assert.ok(found, `WebRTC tests need \`${tool}\` (Debian package ${hint}) to make their network namespace`);
    }
    const child = spawn(
      'unshare',
      ['-n', 'sh', '-c', `${NETNS_SETUP} && exec "$0" --test --test-reporter=spec "$1"`, process.execPath, fileURLToPath(fileUrl)],
      { env: namespaceEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const output = [];
    for (const stream of [child.stdout, child.stderr]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        output.push(line);
        process.stderr.write(`  [netns] ${line}\n`);
      });
    }
    const code = await new Promise((resolve) => child.on('close', resolve));
    for (const line of output.filter((l) => l.includes('measured:'))) t.diagnostic(line);
    assert.equal(code, 0, `the tests of ${file} failed in their namespace (unshare -n needs root or CAP_SYS_ADMIN):\n${output.join('\n')}`);
    // A run that ran nothing would also exit 0.
    const passed = Number(/pass (\d+)/.exec(output.join('\n'))?.[1] ?? 0);
    assert.equal(passed, tests, `expected ${tests} tests of ${file} to pass in the namespace:\n${output.join('\n')}`);
  });
  return false;
}

/**
 * Opens the chat page in a fresh browser context (its own cookies and
 * connections, like a separate person) and records any uncaught page error
 * in `page.errors`.
 */
export async function openPage(browser, url, query = {}, { init = null } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  // A script to run in the page before its own, such as a test's hooks.
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  const search = new URLSearchParams(query);
  await page.goto(`${url}/?${search}`);
  return page;
}

/** Opens the page on `transport` and joins as `name`; resolves once #status says connected. */
export async function join(browser, url, { name, transport, query = {}, init = null }) {
  const page = await openPage(browser, url, transport ? { transport, ...query } : query, { init });
  await enterName(page, name);
  return page;
}

/** Joins as `name` on a page already open; resolves once #status says connected. */
export async function enterName(page, name) {
  await page.fill('#name', name);
  await page.press('#name', 'Enter');
  try {
    await waitForText(page, '#status', 'connected');
  } catch (err) {
    // Say what the page said: a refusal next to the field, or an error.
    const refusal = await page.locator('#name-error').textContent().catch(() => '(missing)');
    throw new Error(`${err.message}; #name-error reads "${refusal}", page errors ${JSON.stringify(page.errors ?? [])}`, { cause: err });
  }
}

/**
 * Waits until `check()` (sync or async) returns something truthy, asking
 * every 100 ms, and returns it; after `timeout` ms fails with `what`. For
 * state outside the page, such as a server's counters.
 */
export async function eventually(check, what, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Waits until `selector`'s text content is exactly `text`. */
export async function waitForText(page, selector, text, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(
      ([sel, expected]) => document.querySelector(sel)?.textContent.trim() === expected,
      [selector, text],
      { timeout, polling: 50 },
    );
  } catch (err) {
    const actual = await page.locator(selector).textContent().catch(() => '(missing)');
    throw new Error(`${selector} should read "${text}" but reads "${actual}"`, { cause: err });
  }
}

/** Types and sends a chat line. */
export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/**
 * Waits for a confirmed message (an `li` with a data-seq) whose whole text
 * content is `text`, and returns its seq.
 */
export async function waitForMessage(page, text, timeout = WAIT_MS) {
  const handle = await page.waitForFunction(
    (expected) => {
      const li = [...document.querySelectorAll('#messages li')].find(
        (item) => item.textContent === expected && item.dataset.seq,
      );
      return li ? Number(li.dataset.seq) : null;
    },
    text,
    { timeout, polling: 50 },
  );
  return handle.jsonValue();
}

/** Moves the real mouse to a fraction (fx, fy) of #canvas. */
export async function moveMouseTo(page, fx, fy) {
  const box = await page.locator('#canvas').boundingBox();
  await page.mouse.move(box.x + box.width * fx, box.y + box.height * fy, { steps: 4 });
}

/**
 * Waits until `name`'s dot on `page` is centred at (fx, fy) of #canvas,
 * within `tolerance` (a fraction of the canvas).
 */
export async function waitForCursorAt(page, name, fx, fy, { tolerance = 0.02, timeout = WAIT_MS } = {}) {
  try {
    await page.waitForFunction(
      ({ name, fx, fy, tolerance }) => {
        const dot = document.querySelector(`#canvas .cursor[data-name="${name}"]`);
        if (!dot) return false;
        const canvas = document.querySelector('#canvas').getBoundingClientRect();
        const box = dot.getBoundingClientRect();
        const x = (box.left + box.width / 2 - canvas.left) / canvas.width;
        const y = (box.top + box.height / 2 - canvas.top) / canvas.height;
        return Math.abs(x - fx) <= tolerance && Math.abs(y - fy) <= tolerance;
      },
      { name, fx, fy, tolerance },
      { timeout, polling: 50 },
    );
  } catch (err) {
    const where = await cursorFraction(page, name);
    throw new Error(`${name}'s dot should be at (${fx}, ${fy}) but is at ${JSON.stringify(where)}`, { cause: err });
  }
}

/** Where `name`'s dot is, as fractions of #canvas, or null if there is none. */
export function cursorFraction(page, name) {
  return page.evaluate((name) => {
    const dot = document.querySelector(`#canvas .cursor[data-name="${name}"]`);
    if (!dot) return null;
    const canvas = document.querySelector('#canvas').getBoundingClientRect();
    const box = dot.getBoundingClientRect();
    return {
      x: (box.left + box.width / 2 - canvas.left) / canvas.width,
      y: (box.top + box.height / 2 - canvas.top) / canvas.height,
    };
  }, name);
}

/** A short random suffix so names never collide across tests on one server. */
export function suffix() {
  return Math.random().toString(36).slice(2, 6);
}

/** The transports in the compare page's panes, in order. */
export const COMPARE_TRANSPORTS = ['poll', 'longpoll', 'sse', 'ws'];

/**
 * Opens /compare.html, starts its demo bot, and waits until every pane has
 * the bot's dot and at least `events` events, so the page has something
 * worth looking at. Returns the page.
 */
export async function openCompareWithBot(browser, url, { events = 40 } = {}) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  await page.goto(`${url}/compare.html`);
  await page.click('#bot-toggle');
  await page.locator('#bot-state[data-running="true"]').waitFor({ timeout: WAIT_MS });
  for (const transport of COMPARE_TRANSPORTS) {
    const pane = page.locator(`.pane[data-transport="${transport}"]`);
    await pane.locator('.cursor[data-name^="bot-"]').waitFor({ timeout: WAIT_MS });
  }
  await page.waitForFunction(
    ([transports, events]) =>
      transports.every((transport) => {
        const value = document.querySelector(`.pane[data-transport="${transport}"] [data-figure="events"] .figure-value`);
        return value && parseInt(value.textContent, 10) >= events;
      }),
    [COMPARE_TRANSPORTS, events],
    { timeout: 30_000, polling: 100 },
  );
  return page;
}

/** The compare page's summary table as {transport: {events, p50, p95, requestsPerEvent, bytesPerEvent}}. */
export function readSummary(page) {
  return page.locator('#summary tbody tr').evaluateAll((rows) => {
    const number = (text) => (/\d/.test(text) ? parseFloat(text) : null);
    return Object.fromEntries(
      rows.map((row) => {
        const [transport, events, p50, p95, requestsPerEvent, bytesPerEvent] = [...row.cells].map((cell) => cell.textContent);
        return [
          transport,
          {
            events: number(events),
            p50: number(p50),
            p95: number(p95),
            requestsPerEvent: number(requestsPerEvent),
            bytesPerEvent: number(bytesPerEvent),
          },
        ];
      }),
    );
  });
}
