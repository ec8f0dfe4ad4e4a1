// The dashboard's state: the live ring and everything the stream says about it, plus the
// point in history being viewed. Messages from the bridge go in through `handle`; views
// read `shown()` and subscribe with `on(topic, fn)`. No DOM here.
//
// Two rings are kept apart on purpose: `live` always follows the stream (even while the
// user looks at the past, so no event is lost), `view` is the ring at the sequence the
// time-travel slider points to (null when live).

import { emptyRing, ringFromSnapshot, applyRebalance, movedRanges, movesByPair } from './ringmodel.js';
import { u64, frac } from './u64.js';
import { parseDuration, parseTime, pct } from './format.js';

/** Envelope body field -> timeline kind (the `data-kind` hook values). */
export const KINDS = {
  membersJoined: 'join',
  memberLeft: 'leave',
  membershipSynced: 'sync',
  ringRebalanced: 'rebalance',
  keysHandedOff: 'handoff',
  scaleDecided: 'scale',
};

const ENVELOPE_FIELDS = new Set(['schemaVersion', 'ring', 'occurredAt', 'producer']);
const MAX_ENTRIES = 20000;
const LOAD_SAMPLES = 240;
export const DOT_CAPACITY = 10000;
export const DOT_LIFETIME_MS = 30000;

/** The body field and body of an EVENTLINE's envelope. */
export function bodyOf(line) {
  const ev = (line && line.event) || {};
  for (const k of Object.keys(ev)) {
    if (!ENVELOPE_FIELDS.has(k)) return [k, ev[k] || {}];
  }
  return [null, {}];
}

const ids = (list) => (list || []).map((m) => m.id);

/** A stored event line as a timeline entry: kind, seq, time, a one-line summary. */
export function entryOf(line) {
  const [field, body] = bodyOf(line);
  const kind = KINDS[field] || 'other';
  const e = { seq: Number(line.seq) || 0, time: parseTime(line.time || (line.event || {}).occurredAt), kind, body, text: '' };
  switch (kind) {
    case 'join':
      e.text = `${ids(body.members).join(', ') || 'nobody'} joined${body.members && body.members.length === 1 && body.members[0].address ? ` (${body.members[0].address})` : ''}`;
      break;
    case 'leave':
      e.text = `${body.memberId || '?'} left${body.detail ? `: ${body.detail}` : body.reason ? ` (${String(body.reason).replace('LEAVE_REASON_', '').toLowerCase()})` : ''}`;
      break;
    case 'sync':
      e.text = `membership sync: ${(body.members || []).length} members`;
      break;
    case 'rebalance': {
      e.epoch = Number(body.epoch) || 0;
      const joined = (body.joined || []).map((x) => `+${x}`);
      const departed = (body.departed || []).map((x) => `−${x}`);
      e.text = `epoch ${e.epoch}: moved ${pct(Number(body.movedFraction) || 0)} of the key space (ideal ${pct(Number(body.idealFraction) || 0)})${joined.length + departed.length ? ` · ${[...joined, ...departed].join(' ')}` : ''}`;
      break;
    }
    case 'handoff':
      e.epoch = Number(body.epoch) || 0;
      e.text = `handoff ${body.from || '?'} → ${body.to || '?'}: ${Number(body.count) || 0} keys (epoch ${e.epoch})`;
      break;
    case 'scale':
      e.text = `scale ${body.currentReplicas || 0} → ${body.desiredReplicas || 0}${body.metric ? ` (${body.metric})` : ''}${body.reason ? `: ${body.reason}` : ''}`;
      break;
    default:
      e.text = field || 'unknown event';
  }
  return e;
}

/** A load report as one sample of a node's sparklines. */
export function loadSample(line) {
  const [, b] = bodyOf(line);
  const window = parseDuration(b.window) || 1;
  const start = parseTime(b.windowStart);
  return {
    node: b.node || '',
    t: start ? start + window * 1000 : parseTime(line.time) || Date.now(),
    rps: (Number(b.requests) || 0) / window,
    forwarded: (Number(b.forwarded) || 0) / window,
    ips: Number(b.uniqueClientIpsLastMinute) || 0,
    cpu: Number(b.cpuRatio) || 0,
    keys: Number(b.keysHeld) || 0,
    bytes: Number(b.bytesHeld) || 0,
    epoch: Number(b.epoch) || 0,
  };
}

/** Sampled key positions, a fixed-size ring buffer (the oldest dot makes room). */
export class Dots {
  constructor(capacity = DOT_CAPACITY) {
    this.capacity = capacity;
    this.pos = new Float64Array(capacity);
    this.at = new Float64Array(capacity);
    this.owner = new Array(capacity).fill(null);
    this.head = 0;
    this.count = 0;
  }
  push(position, owner, at) {
    this.pos[this.head] = position;
    this.owner[this.head] = owner;
    this.at[this.head] = at;
    this.head = (this.head + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }
  clear() {
    this.head = 0;
    this.count = 0;
  }
}

/** Derived facts of a rebalance entry (ranges, pairs), computed once when first needed. */
export function rebalanceDetail(entry) {
  if (!entry.detail) {
    const ranges = movedRanges(entry.body);
    entry.detail = { ranges, pairs: movesByPair(ranges) };
  }
  return entry.detail;
}

export class Store {
  constructor() {
    this.hello = null;
    this.live = { ring: emptyRing(), seq: 0, pending: new Map() };
    this.view = null;
    this.entries = new Map();
    this.sorted = null;
    this.resyncs = 0;
    this.loads = new Map();
    this.scale = null;
    this.dots = new Dots();
    this.missed = 0;
    this.snapshots = 0;
    this.knownFrom = Infinity;
    this.listeners = new Map();
    this.problem = null;
  }

  on(topic, fn) {
    if (!this.listeners.has(topic)) this.listeners.set(topic, []);
    this.listeners.get(topic).push(fn);
  }

  emit(topic, arg) {
    for (const fn of this.listeners.get(topic) || []) fn(arg);
  }

  /** What the panels draw: the viewed point in history, or the live ring. */
  shown() {
    return this.view || this.live;
  }

  get isLive() {
    return this.view === null;
  }

  /** Timeline entries sorted by seq (resync notes sort after the seq they happened at). */
  timeline() {
    if (!this.sorted) this.sorted = [...this.entries.values()].sort((a, b) => a.seq - b.seq || (a.kind === 'resync') - (b.kind === 'resync'));
    return this.sorted;
  }

  addEntry(e) {
    const key = e.kind === 'resync' ? `r${this.resyncs++}` : e.seq;
    if (this.entries.has(key)) return false;
    this.entries.set(key, e);
    this.sorted = null;
    if (this.entries.size > MAX_ENTRIES) {
      // Drop the oldest stored events; history stays reachable through the slider.
      const oldest = this.timeline().slice(0, this.entries.size - MAX_ENTRIES);
      for (const o of oldest) for (const [k, v] of this.entries) if (v === o) this.entries.delete(k);
      this.knownFrom = Math.max(this.knownFrom, this.timeline()[0]?.seq ?? 0);
      this.sorted = null;
    }
    return true;
  }

  /** One message from the WebSocket. */
  handle(msg) {
    switch (msg && msg.type) {
      case 'hello':
        this.hello = msg;
        this.emit('hello', msg);
        break;
      case 'snapshot':
        this.applySnapshot(msg);
        break;
      case 'event':
        this.applyEvent(msg);
        break;
      case 'load':
        this.addLoad(msg);
        break;
      case 'traffic':
        this.addTraffic(msg);
        break;
      case 'resync':
        this.addEntry({ seq: this.live.seq, time: Date.now(), kind: 'resync', text: `resync: ${msg.reason || 'the bridge asked for a fresh start'}; a new snapshot follows`, body: msg });
        this.emit('events');
        break;
      default:
        break;
    }
  }

  applySnapshot(msg) {
    const seq = Number(msg.seq) || 0;
    let ring;
    try {
      ring = ringFromSnapshot(msg.snapshot);
    } catch (err) {
      this.problem = `bad snapshot: ${err.message}`;
      ring = emptyRing();
    }
    if (this.snapshots > 0) {
      this.addEntry({ seq, time: Date.now(), kind: 'resync', text: `started again from a fresh snapshot at seq ${seq}, epoch ${ring.epoch}`, body: msg });
    }
    this.snapshots++;
    this.live = { ring, seq, pending: new Map() };
    for (const line of msg.loads || []) this.addLoad(line, false);
    if (msg.scale) this.scale = entryOf(msg.scale);
    this.emit('snapshot', this.live);
    if (this.isLive) this.emit('ring', { reason: 'snapshot' });
    this.emit('events');
    this.emit('loads');
    this.emit('scale');
  }

  applyEvent(line) {
    const e = entryOf(line);
    if (e.seq <= this.live.seq && this.snapshots > 0) return; // already in the snapshot or seen
    this.addEntry(e);
    this.live.seq = Math.max(this.live.seq, e.seq);
    const changed = applyEntry(this.live, e);
    if (changed === 'gap') this.emit('gap', e.seq);
    if (e.kind === 'scale') {
      this.scale = e;
      this.emit('scale');
    }
    if (!this.isLive) {
      this.missed++;
      this.emit('missed', this.missed);
    } else {
      if (changed === 'ring') this.emit('ring', { reason: 'event', entry: e });
      else if (changed) this.emit('pending');
    }
    this.emit('events', e);
  }

  /** Replaces the live ring after a gap (fetched from /api/ring). */
  replaceLive(seq, ring) {
    if (seq < this.live.seq && this.live.ring.epoch >= ring.epoch) return;
    this.live.ring = ring;
    this.live.seq = Math.max(seq, this.live.seq);
    if (this.isLive) this.emit('ring', { reason: 'refetch' });
  }

  /**
   * Membership events after the snapshot's last folded membership sequence that a
   * rebalance has not yet answered: who is joining or leaving right now.
   */
  replayPending(entries) {
    const since = this.live.ring.membershipSequence;
    for (const e of entries) if (e.seq > since && e.seq <= this.live.seq && e.kind !== 'rebalance') applyEntry(this.live, e);
    this.emit('pending');
  }

  addLoad(line, notify = true) {
    const s = loadSample(line);
    if (!s.node) return;
    let list = this.loads.get(s.node);
    if (!list) this.loads.set(s.node, (list = []));
    if (list.length && list[list.length - 1].t >= s.t) return; // a repeat (snapshot + stream)
    list.push(s);
    if (list.length > LOAD_SAMPLES) list.splice(0, list.length - LOAD_SAMPLES);
    if (notify) this.emit('loads', s.node);
  }

  addTraffic(line) {
    const [, b] = bodyOf(line);
    const now = performance.now();
    for (const r of b.requests || []) this.dots.push(frac(u64(r.position)), r.owner || null, now);
    this.emit('traffic');
  }

  /** Enter (or move within) history mode: show `ring` as it was right after `seq`. */
  setView(seq, ring, pending = new Map()) {
    const entering = this.view === null;
    this.view = { ring, seq, pending };
    if (entering) this.missed = 0;
    this.emit('mode');
    this.emit('ring', { reason: 'travel' });
  }

  /**
   * Moves the viewed point forward to `seq` by applying the stored events in between,
   * when every event in between is known; returns false when the caller must fetch.
   */
  stepViewTo(seq) {
    const v = this.view;
    if (!v || seq < v.seq || v.seq < this.knownFrom) return false;
    const next = { ring: v.ring, seq: v.seq, pending: new Map(v.pending) };
    let last = null;
    for (const e of this.timeline()) {
      if (e.seq <= v.seq || e.kind === 'resync') continue;
      if (e.seq > seq) break;
      const r = applyEntry(next, e);
      if (r === 'gap') return false;
      if (r === 'ring') last = e;
    }
    next.seq = seq;
    this.view = next;
    this.emit('mode');
    this.emit('ring', { reason: 'travel', entry: last });
    return true;
  }

  backToLive() {
    if (this.view === null) return;
    this.view = null;
    this.missed = 0;
    this.emit('mode');
    this.emit('ring', { reason: 'live' });
  }

  /** The last rebalance entry at or before the shown point. */
  lastRebalance() {
    const at = this.shown().seq;
    const list = this.timeline();
    for (let i = list.length - 1; i >= 0; i--) if (list[i].kind === 'rebalance' && list[i].seq <= at) return list[i];
    return null;
  }

  /** Handoff entries caused by one epoch's rebalance. */
  handoffsOf(epoch) {
    return this.timeline().filter((e) => e.kind === 'handoff' && e.epoch === epoch && e.seq <= this.shown().seq);
  }

  /** The newest stored event seq known (the slider's right end). */
  get latestSeq() {
    return this.live.seq;
  }
}

/**
 * Applies one timeline entry to a {ring, seq, pending} point. Returns 'ring' when the
 * ring changed, 'pending' when only member states changed, 'gap' when a rebalance could
 * not be applied (an epoch is missing or the result disagrees: fetch the ring), or ''.
 */
export function applyEntry(point, e) {
  const { ring, pending } = point;
  const b = e.body || {};
  switch (e.kind) {
    case 'join':
      for (const m of b.members || []) if (!ring.index.has(m.id)) pending.set(m.id, { state: 'joining', member: m, seq: e.seq });
      return 'pending';
    case 'leave':
      if (ring.index.has(b.memberId)) pending.set(b.memberId, { state: 'leaving', seq: e.seq, detail: b.detail || '' });
      else pending.delete(b.memberId);
      return 'pending';
    case 'sync': {
      const now = new Set((b.members || []).map((m) => m.id));
      for (const m of b.members || []) if (!ring.index.has(m.id)) pending.set(m.id, { state: 'joining', member: m, seq: e.seq });
      for (const m of ring.members) if (!now.has(m.id)) pending.set(m.id, { state: 'leaving', seq: e.seq, detail: 'missing from a membership sync' });
      for (const [id, p] of pending) if (p.state === 'joining' && !now.has(id)) pending.delete(id);
      return 'pending';
    }
    case 'rebalance': {
      const epoch = Number(b.epoch) || 0;
      if (epoch <= ring.epoch) return '';
      if (epoch !== ring.epoch + 1) return 'gap';
      let next;
      try {
        next = applyRebalance(ring, b);
      } catch {
        return 'gap';
      }
      point.ring = next;
      for (const id of [...(b.joined || []), ...(b.departed || [])]) pending.delete(id);
      for (const [id, p] of pending) {
        if (p.state === 'joining' && next.index.has(id)) pending.delete(id);
        if (p.state === 'leaving' && !next.index.has(id)) pending.delete(id);
      }
      return 'ring';
    }
    default:
      return '';
  }
}
