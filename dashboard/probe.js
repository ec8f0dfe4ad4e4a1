// The key probe: where a key hashes, who owns it (and its replicas), and the epochs at
// which its owner changed, from /api/key. The ring view draws the key's position and the
// clockwise walk to the owning token of the ring being shown (live or historical).

import { keyInfo } from './api.js';
import { u64, frac, SPACE } from './u64.js';
import { absTime, pct, h } from './format.js';
import { colourOf } from './palette.js';

export class Probe {
  constructor(els, { onResult }) {
    this.els = els;
    this.onResult = onResult;
    this.result = null;
    this.abort = null;
    els.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.lookup(els.input.value);
    });
    els.clear.addEventListener('click', () => {
      els.input.value = '';
      this.lookup('');
    });
  }

  async lookup(key) {
    const { error, result } = this.els;
    if (this.abort) this.abort.abort();
    error.hidden = true;
    if (!key) {
      this.result = null;
      result.hidden = true;
      this.onResult(null);
      return;
    }
    this.els.input.value = key;
    const abort = (this.abort = new AbortController());
    try {
      const r = await keyInfo(key, abort.signal);
      this.result = r;
      this.render(r);
      this.onResult(r);
    } catch (err) {
      if (err.name === 'AbortError') return;
      this.result = null;
      result.hidden = true;
      error.textContent = `Could not look up “${key}”: ${err.message}`;
      error.hidden = false;
      this.onResult(null);
    }
  }

  render(r) {
    const e = this.els;
    const pos = u64(r.position);
    e.result.hidden = false;
    e.position.textContent = `${r.position} (0x${pos.toString(16).padStart(16, '0')}, ${pct(frac(pos), 3)} around the ring)`;
    e.owner.textContent = r.owner || 'nobody (empty ring)';
    e.ownerSwatch.style.background = colourOf(r.owner || null);
    e.replicas.textContent = (r.replicas || []).join(', ') || 'none';
    e.epoch.textContent = `epoch ${r.epoch ?? 0} (seq ${r.seq ?? 0})`;
    const hist = r.history || [];
    e.history.replaceChildren(
      ...(hist.length
        ? hist.map((x) => h('li', {}, h('span', { class: 'swatch', style: `background:${colourOf(x.owner)}`, 'aria-hidden': 'true' }), `epoch ${x.epoch} · seq ${x.seq} · ${absTime(Date.parse(x.time) || 0)} → ${x.owner || 'nobody'}`))
        : [h('li', { text: 'Never owned (the ring has been empty).' })]),
    );
  }

  /**
   * The marker for the ring view against the ring being shown. Returns also the owner at
   * that ring, which differs from the API's (the live ring's) in history mode.
   */
  marker(ring) {
    const r = this.result;
    if (!r) return null;
    const pos = u64(r.position) % SPACE;
    const idx = ring.tokenFor(pos);
    const owner = idx < 0 ? null : ring.members[ring.owners[idx]].id;
    return { pos: frac(pos), ownerPos: idx < 0 ? null : frac(ring.tokens[idx]), owner };
  }

  /** A note when the shown (historical) ring gives the key another owner. */
  showShownOwner(owner, live) {
    const e = this.els;
    if (!this.result || live || owner === this.result.owner) e.shownOwner.hidden = true;
    else {
      e.shownOwner.hidden = false;
      e.shownOwner.textContent = `At the viewed sequence its owner was ${owner || 'nobody'}.`;
    }
  }
}
