/// peer-panel.js: the chat page's WebRTC panel: each peer's channel state,
/// and the two paths' figures from a WebRtcTransport's PathMetrics
/// (net/path-metrics.js), each with one plain sentence. DOM only.

import { figureRows } from './figures.js';

const tenths = (v) => (v === null ? '–' : `${v.toFixed(1)} ms`);
const pairOf = (a, b, count) => (a === null ? '–' : `${tenths(a)} / ${tenths(b)} · ${count} moves`);

/** The WebRTC figures: id, label, format, and one plain sentence. */
export const RTC_FIGURES = [
  {
    id: 'p2p-latency',
    label: 'Peer-to-peer latency p50 / p95',
    format: (s) => pairOf(s.p2pP50, s.p2pP95, s.p2pCount),
    explain: 'From the sender stamping a cursor move to its arrival here over the data channel, on the sender’s clock (exact between pages of one machine).',
  },
  {
    id: 'server-latency',
    label: 'Server-path latency p50 / p95, same moves',
    format: (s) => pairOf(s.serverP50, s.serverP95, s.serverCount),
    explain: 'The same moves’ copies through the server (WebSocket, log, WebSocket), paired by position. Only when the sender also sends through the server: tick the box, or have a non-WebRTC user online.',
  },
  {
    id: 'p2p-moves',
    label: 'Moves received peer to peer',
    format: (s) => (s.moves ? `${s.moves} · ${Math.round(s.bytesPerMove)} B each` : '0'),
    explain: 'Cursor moves that came over data channels, and their JSON size (SCTP, DTLS, UDP and IP add about 60 to 80 bytes more).',
  },
  {
    id: 'p2p-loss',
    label: 'Lost / reordered',
    format: (s) => `${s.lost} / ${s.reordered}`,
    explain: 'From the number each move carries: a gap not filled is a loss, a move that arrives after a later one is reordered. The channel never retransmits.',
  },
];

const PATH_NOTE = {
  connecting: 'connecting: cursors through the server until the channel opens',
  open: 'open: cursors peer to peer',
  failed: 'failed: cursors through the server',
};

/** The peers' channel states and the path figures, in a panel of the chat page. */
export class PeerPanel {
  /** `onMirror(checked)` hears the compare box. */
  constructor(container, { mirror = false, onMirror = () => {} } = {}) {
    const title = document.createElement('h3');
    title.className = 'rtc-title';
    title.textContent = 'Peers (WebRTC data channels)';
    this.list = document.createElement('ul');
    this.list.id = 'peers';
    this.list.className = 'peers';
    this.list.dataset.empty = 'No peer yet: another page on ?transport=webrtc in this room becomes one.';
    const label = document.createElement('label');
    label.className = 'rtc-mirror';
    this.mirror = document.createElement('input');
    this.mirror.type = 'checkbox';
    this.mirror.id = 'rtc-mirror';
    this.mirror.checked = mirror;
    this.mirror.addEventListener('change', () => onMirror(this.mirror.checked));
    label.append(this.mirror, ' Send my moves through the server too, so peers can compare the two paths');
    const figures = document.createElement('dl');
    figures.className = 'figures';
    this.values = figureRows(figures, RTC_FIGURES);
    container.append(title, this.list, label, figures);
    container.hidden = false;
  }

  /** Redraws the peer list and the figures from a transport. */
  refresh(transport) {
    this.list.replaceChildren(
      ...transport.peers().map(({ name, state, reason }) => {
        const item = document.createElement('li');
        item.dataset.peer = name;
        item.dataset.state = state;
        item.textContent = `${name} · ${PATH_NOTE[state]}${reason ? ` (${reason})` : ''}`;
        return item;
      }),
    );
    const snapshot = transport.paths.snapshot();
    for (const figure of RTC_FIGURES) this.values.get(figure.id).textContent = figure.format(snapshot);
  }
}
