// The member table: one row per member of the shown ring (plus members that joined but
// are not in a rebalance yet), with ring share, load and sparklines. Rows are kept by id
// and updated in place. Every row's state and share (the data-* hooks) are always
// current; the load cells and sparklines, the costly part with a thousand members, are
// drawn only for rows in view and brought up to date when a row scrolls into view.

import { colourOf } from './palette.js';
import { pct, share, num, count, DASH, h } from './format.js';

/** Imbalance thresholds (peak/mean share); 1.25 is the alert rule's threshold. */
export const IMBALANCE_WARN = 1.1;
export const IMBALANCE_ALERT = 1.25;
const SPARK_WINDOW_MS = 5 * 60 * 1000;

const METRICS = [
  { key: 'ips', label: 'Clients/min', fmt: (v) => count(v), title: 'Unique client IPs in the last minute' },
  { key: 'cpu', label: 'CPU', fmt: (v) => num(v, 2), title: 'CPU used, in cores' },
  { key: 'rps', label: 'Req/s', fmt: (v) => num(v, 1), title: 'Requests per second (owned or forwarded)' },
  { key: 'keys', label: 'Keys', fmt: (v) => count(v), title: 'Keys held at the end of the last window' },
];

export function imbalanceLevel(v) {
  if (!(v > 0)) return { level: 'none', label: 'no members' };
  if (v >= IMBALANCE_ALERT) return { level: 'alert', label: `alert (≥ ${IMBALANCE_ALERT})` };
  if (v >= IMBALANCE_WARN) return { level: 'warn', label: `uneven (≥ ${IMBALANCE_WARN})` };
  return { level: 'ok', label: 'balanced' };
}

export class MembersTable {
  constructor(root, { onHover, onSelect }) {
    this.root = root;
    this.body = root.querySelector('tbody');
    this.empty = root.querySelector('.empty');
    this.onHover = onHover;
    this.onSelect = onSelect;
    this.rows = new Map();
    this.sort = { key: 'id', dir: 1 };
    this.selected = null;
    this.visible = new Set();
    this.ctx = null;
    this.io = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          const id = e.target.dataset.member;
          if (e.isIntersecting) {
            this.visible.add(id);
            const row = this.rows.get(id);
            if (row && row.stale) this.heavy(row);
          } else this.visible.delete(id);
        }
      },
      { root: root.querySelector('.table-wrap'), rootMargin: '200px 0px' },
    );
    root.querySelectorAll('th[data-sort] button').forEach((b) =>
      b.addEventListener('click', () => {
        const key = b.parentElement.dataset.sort;
        this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === 'id' ? 1 : -1 };
        root.querySelectorAll('th[data-sort]').forEach((th) => th.setAttribute('aria-sort', th.dataset.sort === key ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none'));
        this.order();
      }),
    );
  }

  /**
   * @param {object} p
   * @param {import('./ringmodel.js').Ring} p.ring
   * @param {Map} p.pending member id -> {state}
   * @param {Map} p.loads node -> samples
   * @param {number|null} p.at show load as of this time (history), null for the newest
   */
  render({ ring, pending, loads, at }) {
    const shares = ring.shares();
    const list = ring.members.map((m, i) => ({ m, share: shares[i], state: pending.get(m.id)?.state || 'serving' }));
    for (const [id, p] of pending) if (p.state === 'joining' && !ring.index.has(id)) list.push({ m: { address: '', ...p.member, id }, share: 0, state: 'joining' });

    const latest = (id) => {
      const s = loads.get(id) || [];
      if (at === null) return s[s.length - 1];
      for (let i = s.length - 1; i >= 0; i--) if (s[i].t <= at) return s[i];
      return undefined;
    };
    let totalRps = 0;
    const current = new Map();
    for (const x of list) {
      const s = latest(x.m.id);
      current.set(x.m.id, s);
      if (s) totalRps += s.rps;
    }
    // One time axis and one scale per metric for every row, so rows compare by eye.
    let tEnd = at ?? 0;
    if (at === null) for (const s of loads.values()) if (s.length) tEnd = Math.max(tEnd, s[s.length - 1].t);
    const peak = {};
    for (const mt of METRICS) {
      peak[mt.key] = 0;
      for (const x of list) for (const s of loads.get(x.m.id) || []) if (s.t <= tEnd && s.t >= tEnd - SPARK_WINDOW_MS) peak[mt.key] = Math.max(peak[mt.key], s[mt.key]);
    }

    this.ctx = { loads, tEnd, peak, totalRps, n: list.length };
    const seen = new Set();
    for (const x of list) {
      const id = x.m.id;
      seen.add(id);
      let row = this.rows.get(id);
      if (!row) this.rows.set(id, (row = this.row(id)));
      const s = current.get(id);
      row.x = x;
      row.s = s;
      set(row.tr.dataset, 'state', x.state);
      set(row.tr.dataset, 'share', String(x.share));
      row.sortValues = { id, share: x.share, state: x.state, ips: s?.ips ?? -1, cpu: s?.cpu ?? -1, rps: s?.rps ?? -1, keys: s?.keys ?? -1 };
      set(row.address, 'textContent', x.m.address || DASH);
      set(row.state, 'textContent', x.state);
      set(row.state, 'className', `state state-${x.state}`);
      set(row.shareText, 'textContent', share(x.share));
      // The bar's middle mark is the ideal share (1/n): full width is twice the ideal.
      set(row.shareBar.style, 'width', `${Math.min(100, (x.share * list.length * 100) / 2)}%`);
      row.stale = true;
      if (this.visible.has(id)) this.heavy(row);
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        this.io.unobserve(row.tr);
        this.visible.delete(id);
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = list.length > 0;
    this.order();
    this.setSelected(this.selected);
  }

  /** The load cells and sparklines of one row (rows in view only). */
  heavy(row) {
    const { loads, tEnd, peak, totalRps, n } = this.ctx;
    const { x, s } = row;
    row.stale = false;
    const loadShare = s && totalRps > 0 ? s.rps / totalRps : null;
    set(row.loadShare, 'textContent', loadShare === null ? DASH : pct(loadShare, 1));
    row.hot.hidden = !(loadShare !== null && x.share > 0 && loadShare > x.share * IMBALANCE_ALERT && n > 1);
    for (const mt of METRICS) {
      set(row[mt.key].value, 'textContent', s ? mt.fmt(s[mt.key]) : DASH);
      row[mt.key].path.setAttribute('d', sparkPath(loads.get(x.m.id) || [], mt.key, tEnd, peak[mt.key]));
    }
  }

  row(id) {
    const sw = h('span', { class: 'swatch', style: `background:${colourOf(id)}`, 'aria-hidden': 'true' });
    const r = {};
    r.address = h('td', { class: 'addr' });
    r.state = h('span', { class: 'state' });
    r.shareText = h('span', { class: 'num' });
    r.shareBar = h('span', { class: 'bar-fill', style: `background:${colourOf(id)}` });
    r.loadShare = h('td', { class: 'num' });
    r.hot = h('span', { class: 'badge hot', text: 'hot', title: 'Load share above 1.25 × ring share', hidden: true });
    const cells = METRICS.map((mt) => {
      const value = h('span', { class: 'num' });
      const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
      const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      svg.setAttribute('viewBox', '0 0 60 16');
      svg.setAttribute('class', 'spark');
      svg.setAttribute('aria-hidden', 'true');
      svg.setAttribute('preserveAspectRatio', 'none');
      svg.append(path);
      r[mt.key] = { value, path };
      return h('td', { class: 'metric' }, value, svg);
    });
    r.tr = h(
      'tr',
      {
        'data-member': id,
        tabindex: '0',
        onmouseenter: () => this.onHover(id),
        onmouseleave: () => this.onHover(null),
        onfocus: () => this.onHover(id),
        onblur: () => this.onHover(null),
        onclick: () => this.onSelect(id),
        onkeydown: (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            this.onSelect(id);
          }
        },
      },
      h('th', { scope: 'row' }, sw, h('span', { class: 'id', text: id }), ' ', r.hot),
      r.address,
      h('td', {}, r.state),
      h('td', { class: 'share' }, r.shareText, h('span', { class: 'bar' }, r.shareBar)),
      r.loadShare,
      cells,
    );
    this.body.append(r.tr);
    this.io.observe(r.tr);
    return r;
  }

  order() {
    const { key, dir } = this.sort;
    const rows = [...this.rows.values()];
    rows.sort((a, b) => {
      const x = a.sortValues?.[key];
      const y = b.sortValues?.[key];
      const c = typeof x === 'string' ? x.localeCompare(y, 'en', { numeric: true }) : x - y;
      return c * dir || a.sortValues.id.localeCompare(b.sortValues.id, 'en', { numeric: true });
    });
    // Reinsert only when the order changed, so focus and scroll stay put.
    const current = [...this.body.children];
    if (rows.some((r, i) => current[i] !== r.tr)) this.body.append(...rows.map((r) => r.tr));
  }

  setSelected(id) {
    this.selected = id;
    for (const [rid, row] of this.rows) row.tr.classList.toggle('selected', rid === id);
  }

  setHover(id) {
    for (const [rid, row] of this.rows) row.tr.classList.toggle('hover', rid === id);
  }

  scrollTo(id) {
    this.rows.get(id)?.tr.scrollIntoView({ block: 'nearest' });
  }
}

/** Sets a property only when it changes (a same-value write still costs a style pass). */
function set(obj, key, value) {
  if (obj[key] !== value) obj[key] = value;
}

/** An SVG path of one metric over the shared window ending at tEnd, scaled to `peak`. */
function sparkPath(samples, key, tEnd, peak) {
  if (!samples.length || !(tEnd > 0)) return '';
  const t0 = tEnd - SPARK_WINDOW_MS;
  let d = '';
  for (const s of samples) {
    if (s.t < t0 || s.t > tEnd) continue;
    const x = ((s.t - t0) / SPARK_WINDOW_MS) * 60;
    const y = peak > 0 ? 15 - (s[key] / peak) * 14 : 15;
    d += `${d ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`;
  }
  return d;
}
