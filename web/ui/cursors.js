/// cursors.js: other people's pointers, drawn as named dots over a shared area.
///
/// Positions travel as fractions of the area (0..1 on each axis), so a dot
/// lands in the same relative place whatever size each person's window is.
/// Each dot is absolutely positioned with percentages; no transition, so you
/// see exactly how often each transport delivers a move.

/** A stable, pleasant colour for a name, so the same person looks the same everywhere. */
export function colorFor(name) {
  let hash = 0;
  for (const char of name.toLowerCase()) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 65% 42%)`;
}

/** The dots inside one container element. */
export class CursorLayer {
  constructor(container) {
    this.container = container;
    /** name → the dot element */
    this.dots = new Map();
  }

  /** Moves `name`'s dot to (x, y), creating it on first sight. */
  move(name, x, y) {
    let dot = this.dots.get(name);
    if (!dot) {
      dot = document.createElement('div');
      dot.className = 'cursor';
      // Names are restricted by the server to A–Z a–z 0–9 _ -, so they are
      // safe in an attribute selector such as .cursor[data-name="bob"].
      dot.dataset.name = name;
      dot.style.setProperty('--color', colorFor(name));
      const label = document.createElement('span');
      label.className = 'cursor-name';
      label.textContent = name;
      dot.append(label);
      this.container.append(dot);
      this.dots.set(name, dot);
    }
    dot.style.left = `${x * 100}%`;
    dot.style.top = `${y * 100}%`;
    // Near the right edge the name goes on the left, so it stays readable.
    dot.classList.toggle('flip', x > 0.7);
  }

  remove(name) {
    this.dots.get(name)?.remove();
    this.dots.delete(name);
  }

  clear() {
    for (const dot of this.dots.values()) dot.remove();
    this.dots.clear();
  }
}

/** The pointer's position over `element` as fractions, clamped to 0..1. */
export function fractionOf(event, element) {
  const box = element.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return {
    x: clamp((event.clientX - box.left) / box.width),
    y: clamp((event.clientY - box.top) / box.height),
  };
}
