// The event timeline: stored events newest first, with seq, absolute (UTC) and relative
// time, a multi-select filter by kind, and in history mode the later events dimmed and
// the viewed one marked. Clicking an entry travels to it.

import { absTime, relTime, h } from './format.js';

const MAX_SHOWN = 500;
export const TIMELINE_KINDS = ['rebalance', 'join', 'leave', 'sync', 'handoff', 'scale', 'resync'];

export class Timeline {
  constructor(root, { onJump }) {
    this.root = root;
    this.list = root.querySelector('ol');
    this.note = root.querySelector('.note');
    this.onJump = onJump;
    this.filters = root.querySelectorAll('input[name="kind"]');
    this.filters.forEach((f) => f.addEventListener('change', () => this.onFilter && this.onFilter()));
    this.entries = [];
    setInterval(() => this.refreshTimes(), 5000);
  }

  kinds() {
    return new Set([...this.filters].filter((f) => f.checked).map((f) => f.value));
  }

  setKinds(kinds) {
    this.filters.forEach((f) => (f.checked = kinds.has(f.value)));
  }

  /**
   * @param {Array} entries timeline entries sorted by seq
   * @param {number|null} viewSeq the viewed seq in history mode, null when live
   * @param {string} note a line about where history starts
   */
  render(entries, viewSeq, note) {
    const kinds = this.kinds();
    const shown = [];
    for (let i = entries.length - 1; i >= 0 && shown.length < MAX_SHOWN; i--) if (kinds.has(entries[i].kind)) shown.push(entries[i]);
    let current = null;
    if (viewSeq !== null) current = shown.find((e) => e.seq <= viewSeq && e.kind !== 'resync') || null;
    const items = shown.map((e) => {
      const li = h(
        'li',
        {
          class: `ev ev-${e.kind}${viewSeq !== null && e.seq > viewSeq ? ' future' : ''}`,
          'data-kind': e.kind,
          'data-seq': String(e.seq),
          'data-epoch': e.kind === 'rebalance' ? String(e.epoch) : null,
          'aria-current': e === current ? 'step' : null,
        },
        h(
          'button',
          { type: 'button', class: 'ev-jump', title: `Show the ring right after seq ${e.seq}`, onclick: () => this.onJump(e.seq) },
          h('span', { class: 'kind', text: e.kind }),
          h('span', { class: 'seq', text: `#${e.seq}` }),
          h('time', { datetime: e.time ? new Date(e.time).toISOString() : null, title: e.time ? new Date(e.time).toISOString() : 'time unknown', class: 'abs', text: absTime(e.time) }),
          h('span', { class: 'rel', 'data-t': String(e.time || 0), text: relTime(e.time) }),
          h('span', { class: 'text', text: e.text }),
        ),
      );
      return li;
    });
    this.list.replaceChildren(...items);
    if (!items.length) this.list.append(h('li', { class: 'empty', text: entries.length ? 'No events of the selected kinds.' : 'No events yet.' }));
    this.note.textContent = note;
    this.note.hidden = !note;
  }

  refreshTimes() {
    for (const el of this.list.querySelectorAll('.rel')) el.textContent = relTime(Number(el.dataset.t));
  }
}
