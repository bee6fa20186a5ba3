/// figures.js: the measurement panels. Each figure of a Metrics snapshot
/// (net/metrics.js) is drawn with its label and one plain sentence saying
/// what it means, for someone who has never measured a network. It knows
/// the snapshot's fields, never how they were measured.

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
  const values = figureRows(container, shown, { compact });
  return (snapshot) => {
    for (const figure of shown) values.get(figure.id).textContent = figure.format(snapshot);
  };
}

/**
 * Appends one row per figure (`id`, `label`, `explain`) to `container` (a
 * <dl>): its label, a value cell showing '–' until set, and its explanation
 * (a tooltip when `compact`). Returns each figure's value cell by id.
 */
export function figureRows(container, figures, { compact = false } = {}) {
  const values = new Map();
  for (const figure of figures) {
    const row = document.createElement('div');
    row.className = 'figure';
    row.dataset.figure = figure.id;
    const term = document.createElement('dt');
    term.textContent = figure.label;
    const value = document.createElement('dd');
    value.className = 'figure-value';
    value.textContent = '–';
    row.append(term, value);
    if (compact) {
      row.title = figure.explain;
    } else {
      const note = document.createElement('dd');
      note.className = 'figure-explain';
      note.textContent = figure.explain;
      row.append(note);
    }
    container.append(row);
    values.set(figure.id, value);
  }
  return values;
}
