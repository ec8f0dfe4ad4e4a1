// Wires the dashboard together: the connection feeds the store, the store's topics mark
// panels dirty, and one timer redraws the dirty panels (a burst of events costs one
// render). Also: keyboard shortcuts, the URL fragment, and `window.ringside` for tests.

import { Store, rebalanceDetail, entryOf } from './state.js';
import { Connection } from './conn.js';
import { eventsBetween, ringAt } from './api.js';
import { ringFromSnapshot } from './ringmodel.js';
import { RingView } from './ringview.js';
import { MembersTable, imbalanceLevel } from './members.js';
import { Timeline } from './timeline.js';
import { Travel } from './travel.js';
import { Probe } from './probe.js';
import { renderRebalance } from './rebalance.js';
import { renderScale } from './scale.js';
import { readUrl, writeUrl } from './url.js';
import { hex64, relTime } from './format.js';

// The page's errors, for the end-to-end test (its console must stay clean).
const errors = [];
addEventListener('error', (e) => errors.push(String(e.message || e)));
addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)));
const consoleError = console.error.bind(console);
console.error = (...args) => {
  errors.push(args.map(String).join(' '));
  consoleError(...args);
};

const $ = (id) => document.getElementById(id);
const store = new Store();
const ui = { selected: null, hover: null, conn: { state: 'reconnecting', retryAt: 0, attempt: 0, lastAt: 0 }, urlApplied: false };

// --- panels ---------------------------------------------------------------------

const view = new RingView($('ring'), {
  caption: $('ring-caption'),
  tooltip: $('ring-tip'),
  onHover: (id) => hover(id),
  onSelect: (id) => select(id),
});
view.setDots(store.dots);

const members = new MembersTable($('members-panel'), { onHover: (id) => hover(id), onSelect: (id) => select(id) });

const travel = new Travel(
  store,
  {
    slider: $('travel'),
    live: $('live'),
    play: $('travel-play'),
    back: $('travel-back'),
    forward: $('travel-forward'),
    first: $('travel-first'),
    speed: $('travel-speed'),
    banner: $('banner'),
    bannerText: $('banner-text'),
    bannerLive: $('banner-live'),
  },
  { onError: showError, onChange: () => saveUrl() },
);

const timeline = new Timeline($('timeline-panel'), { onJump: (seq) => travel.go(seq) });
timeline.onFilter = () => dirty('timeline');

const probe = new Probe(
  {
    form: $('probe-form'),
    input: $('probe-input'),
    clear: $('probe-clear'),
    error: $('probe-error'),
    result: $('probe-result'),
    owner: $('probe-owner'),
    ownerSwatch: $('probe-swatch'),
    replicas: $('probe-replicas'),
    position: $('probe-position'),
    epoch: $('probe-epoch'),
    history: $('probe-history'),
    shownOwner: $('probe-shown-owner'),
  },
  {
    onResult: () => {
      dirty('probe');
      saveUrl();
    },
  },
);

// --- rendering --------------------------------------------------------------------

const pendingParts = new Set();
let flushTimer = null;

/** Marks panels for the next render (about one frame later, bursts coalesce). */
function dirty(...parts) {
  for (const p of parts) pendingParts.add(p);
  if (!flushTimer) flushTimer = setTimeout(flush, 16);
}

function flush() {
  flushTimer = null;
  const parts = new Set(pendingParts);
  pendingParts.clear();
  const all = parts.has('ring');
  const shown = store.shown();
  if (all) {
    view.setRing(shown.ring, shown.pending, !store.snapshots);
    renderHeader();
  }
  if (all || parts.has('members')) renderMembers();
  if (all || parts.has('probe')) {
    const m = probe.marker(shown.ring);
    view.setProbe(m);
    probe.showShownOwner(m && m.owner, store.isLive);
  }
  if (all || parts.has('timeline')) {
    timeline.render(store.timeline(), store.isLive ? null : shown.seq, historyNote());
    travel.render();
    renderPanels();
  }
  if (parts.has('travel')) travel.render();
  if (parts.has('scale')) renderPanels();
  if (parts.has('conn')) renderConn();
}

function renderHeader() {
  const { ring, seq } = store.shown();
  $('epoch').textContent = String(ring.epoch);
  $('checksum').textContent = String(ring.checksum);
  $('checksum-hex').textContent = `(${hex64(ring.checksum)})`;
  $('seq').textContent = String(seq);
  const imb = ring.imbalance();
  const lvl = imbalanceLevel(imb);
  const el = $('imbalance');
  el.dataset.level = lvl.level;
  el.textContent = imb > 0 ? `${imb.toFixed(3)} · ${lvl.label}` : '— · no members';
  el.title = 'Peak share / mean share (1 is perfect); the alert fires at 1.25';
}

function renderMembers() {
  const shown = store.shown();
  const at = store.isLive ? null : timeAt(shown.seq);
  members.empty.textContent = store.snapshots ? 'No members: the ring is empty, every key is unowned.' : 'Waiting for the first snapshot from the bridge…';
  members.render({ ring: shown.ring, pending: shown.pending, loads: store.loads, at });
  const counts = { serving: 0, joining: 0, leaving: 0 };
  const names = { joining: [], leaving: [] };
  for (const m of shown.ring.members) counts[shown.pending.get(m.id)?.state || 'serving']++;
  for (const [id, p] of shown.pending) {
    if (p.state === 'joining' && !shown.ring.index.has(id)) counts.joining++;
    if (names[p.state]) names[p.state].push(id);
  }
  const total = shown.ring.members.length;
  const parts = [`${counts.serving} serving`, counts.joining ? `${counts.joining} joining` : '', counts.leaving ? `${counts.leaving} leaving` : ''].filter(Boolean);
  $('member-count').textContent = String(total);
  $('member-states').textContent = `(${total}: ${parts.join(', ')})`;
  const list = (ids) => (ids.length > 5 ? `${ids.slice(0, 5).join(', ')} and ${ids.length - 5} more` : ids.join(', '));
  $('ring-summary').textContent = total
    ? `${total} member${total === 1 ? '' : 's'}: ${counts.serving} serving${names.joining.length ? `, joining: ${list(names.joining)}` : ''}${names.leaving.length ? `, leaving: ${list(names.leaving)}` : ''}. ${shown.ring.size.toLocaleString('en-US')} tokens.${total === 1 ? ' One member owns 100% of the key space.' : ''}`
    : store.snapshots
      ? `No members${names.joining.length ? ` (joining: ${list(names.joining)})` : ''}: every key is unowned.`
      : 'Waiting for the bridge…';
}

function renderPanels() {
  if (!store.snapshots) {
    for (const id of ['rebalance', 'scale']) $(id).querySelector('.body').textContent = 'Waiting for the bridge…';
    return;
  }
  const rb = store.lastRebalance();
  renderRebalance($('rebalance'), rb, rb ? store.handoffsOf(rb.epoch) : [], (seq) => travel.go(seq));
  const shown = store.shown();
  let scale = null;
  for (const e of store.timeline()) if (e.kind === 'scale' && e.seq <= shown.seq) scale = e;
  if (!scale && store.scale && (store.isLive || store.scale.seq <= shown.seq)) scale = store.scale;
  const serving = shown.ring.members.filter((m) => shown.pending.get(m.id)?.state !== 'leaving').length;
  renderScale($('scale'), scale, serving, (seq) => travel.go(seq));
}

function renderConn() {
  const c = ui.conn;
  const el = $('conn');
  el.dataset.state = c.state;
  const seq = store.live.seq;
  let text;
  if (c.state === 'live') text = `live · seq ${seq} · last message ${relTime(c.lastAt)}`;
  else if (c.state === 'stale') text = `stale · nothing heard for ${Math.round((Date.now() - c.lastAt) / 1000)} s · seq ${seq}`;
  else {
    const wait = Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000));
    text = c.attempt ? `reconnecting${wait ? ` in ${wait} s` : '…'} (attempt ${c.attempt})${store.snapshots ? ` · showing seq ${seq}` : ''}` : 'connecting…';
  }
  $('conn-text').textContent = text;
  $('conn-retry').hidden = c.state !== 'reconnecting' || !c.attempt;
}

function historyNote() {
  const first = Number(store.hello?.stream_first) || 0;
  if (!store.hello) return '';
  if (first === 0) return 'The stream holds no stored events yet.';
  if (first > 1) return `History starts at seq ${first}: earlier events are no longer stored.`;
  return '';
}

/** The time of the last stored event at or before `seq` (for history-mode load values). */
function timeAt(seq) {
  let t = null;
  for (const e of store.timeline()) {
    if (e.seq > seq) break;
    if (e.time) t = e.time;
  }
  return t ?? 0;
}

// --- interaction ---------------------------------------------------------------------

function hover(id) {
  if (ui.hover === id) return;
  ui.hover = id;
  view.setHover(id);
  members.setHover(id);
}

function select(id) {
  ui.selected = ui.selected === id ? null : id;
  view.setSelected(ui.selected);
  members.setSelected(ui.selected);
  if (ui.selected) members.scrollTo(ui.selected);
  saveUrl();
}

let errorTimer = null;
function showError(msg) {
  const el = $('error');
  el.textContent = msg;
  el.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (el.hidden = true), 8000);
}

function saveUrl() {
  if (!ui.urlApplied) return; // do not overwrite a shared link before it is applied
  writeUrl({ seq: store.isLive ? null : store.shown().seq, member: ui.selected, key: probe.result ? probe.result.key : null });
}

function applyUrl() {
  const u = readUrl();
  if (u.member !== ui.selected) select(u.member);
  if (u.key && (!probe.result || probe.result.key !== u.key)) probe.lookup(u.key);
  if (u.seq !== null && u.seq < store.latestSeq) travel.go(u.seq);
  else if (u.seq === null && !store.isLive) travel.live();
  ui.urlApplied = true;
}
window.addEventListener('hashchange', applyUrl);

const help = $('help');
$('help-open').addEventListener('click', () => help.showModal());
$('conn-retry').addEventListener('click', () => conn.retryNow());

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || help.open) return;
  const t = e.target;
  const typing = t instanceof HTMLInputElement ? t.type !== 'range' && t.type !== 'checkbox' : t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement;
  if (typing) {
    if (e.key === 'Escape') t.blur();
    return;
  }
  const onSlider = t === $('travel');
  const onButton = t instanceof HTMLButtonElement || t instanceof HTMLTableRowElement;
  const keys = {
    ' ': () => !onButton && travel.toggle(),
    ArrowLeft: () => !onSlider && travel.step(-1),
    ArrowRight: () => !onSlider && travel.step(1),
    Home: () => travel.go(travel.min()),
    End: () => travel.live(),
    Escape: () => travel.live(),
    '[': () => travel.nudgeSpeed(-1),
    ']': () => travel.nudgeSpeed(1),
    '/': () => $('probe-input').focus(),
    m: () => ($('members').querySelector('tbody tr') || $('members')).focus(),
    e: () => $('timeline').querySelector('button')?.focus(),
    '?': () => help.showModal(),
  };
  const fn = keys[e.key];
  if (!fn) return;
  if ((e.key === ' ' && onButton) || ((e.key === 'ArrowLeft' || e.key === 'ArrowRight') && onSlider)) return;
  e.preventDefault();
  fn();
});

// --- store wiring ----------------------------------------------------------------------

store.on('hello', (h) => {
  $('ring-name').textContent = `· ring ${h.ring || '?'} · R=${h.replicas ?? '?'} · v${h.version || '?'}`;
  document.title = `ringside · ${h.ring || ''}`;
});
store.on('ring', ({ entry, reason } = {}) => {
  dirty('ring');
  if (entry && entry.kind === 'rebalance') view.showMoves(rebalanceDetail(entry).ranges);
  // A jump shows another ring: bands of a rebalance that is not its last step would lie.
  else if (reason !== 'event' && reason !== 'pending') view.clearMoves();
});
store.on('pending', () => dirty('ring'));
store.on('events', () => dirty('timeline'));
// Load reports come from every member every few seconds: redraw the table once a second.
let loadsTimer = null;
store.on('loads', () => {
  if (!loadsTimer) loadsTimer = setTimeout(() => ((loadsTimer = null), dirty('members')), 1000);
});
store.on('scale', () => dirty('scale'));
store.on('traffic', () => view.dotsChanged());
store.on('missed', () => dirty('travel'));
store.on('mode', () => dirty('ring', 'timeline'));
store.on('snapshot', (live) => backfill(live.seq));
store.on('gap', async (seq) => {
  // An epoch is missing or did not apply cleanly: take the ring from the bridge.
  try {
    const res = await ringAt(seq);
    store.replaceLive(Number(res.seq) || seq, ringFromSnapshot(res.snapshot));
  } catch (err) {
    showError(`The ring at seq ${seq} could not be applied or fetched: ${err.message}`);
  }
});

/** Fills the timeline with the stored events up to the snapshot, then applies the URL. */
async function backfill(to) {
  const first = Number(store.hello?.stream_first) || 0;
  if (first > 0 && to >= first) {
    try {
      const lines = await eventsBetween(first, to);
      const entries = lines.map(entryOf);
      for (const e of entries) store.addEntry(e);
      const complete = entries.length === 0 || entries[entries.length - 1].seq >= to || lines.length < 20000;
      if (complete) store.knownFrom = first;
      store.replayPending(entries);
      dirty('timeline', 'ring');
    } catch (err) {
      showError(`Event history unavailable (${err.message}); the timeline starts now.`);
    }
  }
  if (!ui.urlApplied) applyUrl();
}

const conn = new Connection(
  (msg) => store.handle(msg),
  (status) => {
    ui.conn = status;
    dirty('conn');
  },
);
conn.start();
dirty('ring', 'timeline', 'conn');

// --- test and benchmark hooks ------------------------------------------------------------

window.ringside = {
  store,
  errors,
  state: {
    get epoch() {
      return store.shown().ring.epoch;
    },
    get seq() {
      return store.shown().seq;
    },
    get members() {
      return store.shown().ring.members.map((m) => m.id);
    },
    get live() {
      return store.isLive;
    },
    get checksum() {
      return store.shown().ring.checksum;
    },
    get connection() {
      return ui.conn.state;
    },
  },
  /** Frames per second over `ms`, redrawing the ring every frame (the worst case). */
  fps(ms = 1000) {
    return new Promise((resolve) => {
      let frames = 0;
      const start = performance.now();
      const tick = (now) => {
        if (now - start >= ms) {
          resolve((frames * 1000) / (now - start));
          return;
        }
        frames++;
        view.request();
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
  },
};
