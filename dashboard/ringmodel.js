// The ring as the dashboard holds it: members, sorted tokens and their owners, plus what
// the views derive from them (arcs merged into runs, exact shares). Pure: no DOM, no I/O,
// so the same code builds the live ring, a ring fetched for time travel, and a ring
// stepped forward through rebalance events during playback.

import { SPACE, u64, frac, arcLength, spaceFraction, successorIndex } from './u64.js';

/** Owner index meaning "nobody" (the ring was empty before or after). */
export const NO_OWNER = 4294967295;

const num = (v) => (v === undefined || v === null ? 0 : Number(v));

export class Ring {
  /**
   * @param {object} p
   * @param {number} p.epoch
   * @param {string} p.checksum decimal u64
   * @param {Array<{id:string,address:string,weight:number}>} p.members sorted by id
   * @param {BigUint64Array} p.tokens sorted
   * @param {Uint32Array} p.owners index into members, one per token
   * @param {object} p.config
   * @param {number} p.membershipSequence
   */
  constructor(p) {
    this.epoch = p.epoch;
    this.checksum = p.checksum;
    this.members = p.members;
    this.tokens = p.tokens;
    this.owners = p.owners;
    this.config = p.config || {};
    this.membershipSequence = p.membershipSequence || 0;
    this.index = new Map(this.members.map((m, i) => [m.id, i]));
    this._shares = null;
    this._runs = null;
  }

  get size() {
    return this.tokens.length;
  }

  /** Exact share of the key space per member index (Float64Array, sums to 1). */
  shares() {
    if (this._shares) return this._shares;
    const n = this.members.length;
    const sums = new Array(n).fill(0n);
    const t = this.tokens;
    const last = t.length - 1;
    for (let i = 0; i <= last; i++) {
      // Arc (t[i-1], t[i]] belongs to owners[i]; token 0's arc wraps past 2^64.
      const len = i === 0 ? SPACE - t[last] + t[0] : t[i] - t[i - 1];
      sums[this.owners[i]] += len;
    }
    this._shares = Float64Array.from(sums, spaceFraction);
    return this._shares;
  }

  /**
   * Runs of same-owner tokens merged into arcs, as fractions of a turn. Run k covers
   * (start[k], end[k]]; the first run may start below 0 (it wraps past the top).
   */
  runs() {
    if (this._runs) return this._runs;
    const t = this.tokens;
    const n = t.length;
    const start = new Float64Array(n);
    const end = new Float64Array(n);
    const owner = new Uint32Array(n);
    let k = 0;
    for (let i = 0; i < n; i++) {
      const o = this.owners[i];
      const f = frac(t[i]);
      if (k > 0 && owner[k - 1] === o) {
        end[k - 1] = f;
        continue;
      }
      start[k] = i === 0 ? frac(t[n - 1]) - 1 : frac(t[i - 1]);
      end[k] = f;
      owner[k] = o;
      k++;
    }
    // A single-owner ring (or a single token) is one full turn.
    if (k === 1) {
      start[0] = end[0] - 1;
    }
    this._runs = { start: start.subarray(0, k), end: end.subarray(0, k), owner: owner.subarray(0, k), count: k };
    return this._runs;
  }

  /** Member index owning hash position h (BigInt), or -1 on an empty ring. */
  ownerOf(h) {
    if (this.tokens.length === 0) return -1;
    return this.owners[successorIndex(this.tokens, h)];
  }

  /** The owner's token index for h (first token >= h, wrapping), or -1. */
  tokenFor(h) {
    return this.tokens.length === 0 ? -1 : successorIndex(this.tokens, h);
  }

  /** Peak share over mean share (1 is perfect balance); 0 for an empty ring. */
  imbalance() {
    const s = this.shares();
    if (s.length === 0) return 0;
    let peak = 0;
    for (const v of s) peak = Math.max(peak, v);
    return peak * s.length;
  }
}

/** An empty ring (no members yet, or every member gone). */
export function emptyRing(epoch = 0) {
  return new Ring({ epoch, checksum: '0', members: [], tokens: new BigUint64Array(0), owners: new Uint32Array(0) });
}

function member(m) {
  return { id: m.id || '', address: m.address || '', weight: num(m.weight) || 1, zone: m.zone || '' };
}

/** Builds a Ring from a proto3-JSON RingSnapshot (absent fields = defaults). */
export function ringFromSnapshot(snap) {
  if (!snap) return emptyRing();
  const members = (snap.members || []).map(member);
  const tokens = BigUint64Array.from(snap.tokens || [], u64);
  const owners = Uint32Array.from(snap.owners || []);
  if (owners.length !== tokens.length) throw new Error(`snapshot has ${tokens.length} tokens but ${owners.length} owners`);
  return new Ring({
    epoch: num(snap.epoch),
    checksum: String(snap.checksum || '0'),
    members,
    tokens,
    owners,
    config: snap.config || {},
    membershipSequence: num(snap.membershipSequence),
  });
}

/**
 * Resolves RingRebalanced's owner indices: i < members.length is members[i],
 * members.length + j is departed[j], NO_OWNER is nobody (null).
 */
export function ownerResolver(rb) {
  const members = rb.members || [];
  const departed = rb.departed || [];
  return (idx) => {
    const i = num(idx);
    if (i === NO_OWNER) return null;
    if (i < members.length) return members[i].id;
    return departed[i - members.length] ?? null;
  };
}

/**
 * Moved ranges of a RingRebalanced as [{start, end, length, from, to}] with BigInt
 * positions and member ids (null = nobody).
 */
export function movedRanges(rb) {
  const mr = rb.movedRanges || {};
  const starts = mr.starts || [];
  const ends = mr.ends || [];
  const from = mr.from || [];
  const to = mr.to || [];
  const who = ownerResolver(rb);
  const out = [];
  for (let i = 0; i < starts.length; i++) {
    const s = u64(starts[i]);
    const e = u64(ends[i]);
    out.push({ start: s, end: e, length: arcLength(s, e), from: who(from[i] ?? NO_OWNER), to: who(to[i] ?? NO_OWNER) });
  }
  return out;
}

/** Moved ranges summed per (from, to) pair, largest first: the rebalance card's table. */
export function movesByPair(ranges) {
  const pairs = new Map();
  for (const r of ranges) {
    const key = `${r.from}\u0000${r.to}`;
    const p = pairs.get(key) || { from: r.from, to: r.to, length: 0n, ranges: 0 };
    p.length += r.length;
    p.ranges += 1;
    pairs.set(key, p);
  }
  return [...pairs.values()]
    .map((p) => ({ ...p, fraction: spaceFraction(p.length) }))
    .sort((a, b) => b.fraction - a.fraction);
}

/**
 * Applies a RingRebalanced body to a ring and returns the ring after it. Throws when the
 * result disagrees with the event's token count, so the caller can fetch a fresh ring
 * instead of drawing a wrong one.
 */
export function applyRebalance(ring, rb) {
  const who = ownerResolver(rb);
  const tc = rb.tokenChanges || {};
  const members = (rb.members || []).map(member);
  const newIndex = new Map(members.map((m, i) => [m.id, i]));

  // Tokens and owners are matched by (token, owner id): equal tokens with different
  // owners can exist in random rings, and the two index spaces differ.
  const removed = new Set();
  (tc.removed || []).forEach((t, i) => removed.add(`${u64(t)}|${who((tc.removedOwners || [])[i] ?? 0)}`));
  const reassigned = new Map();
  (tc.reassigned || []).forEach((t, i) =>
    reassigned.set(`${u64(t)}|${who((tc.reassignedFrom || [])[i] ?? 0)}`, who((tc.reassignedTo || [])[i] ?? 0)),
  );

  const keptTok = [];
  const keptOwn = [];
  const oldIds = ring.members.map((m) => m.id);
  const checkKeys = removed.size > 0 || reassigned.size > 0;
  for (let i = 0; i < ring.tokens.length; i++) {
    const tok = ring.tokens[i];
    let id = oldIds[ring.owners[i]];
    if (checkKeys) {
      const key = `${tok}|${id}`;
      if (removed.has(key)) continue;
      const to = reassigned.get(key);
      if (to !== undefined) id = to;
    }
    const ni = newIndex.get(id);
    if (ni === undefined) throw new Error(`token ${tok} still owned by departed member ${id}`);
    keptTok.push(tok);
    keptOwn.push(ni);
  }

  // Merge the kept tokens with the added ones (both sorted by token, then owner index).
  const addTok = (tc.added || []).map(u64);
  const addOwn = (tc.addedOwners || []).map((o) => {
    const id = who(o);
    const ni = newIndex.get(id);
    if (ni === undefined) throw new Error(`added token owned by unknown member ${id}`);
    return ni;
  });
  const n = keptTok.length + addTok.length;
  const tokens = new BigUint64Array(n);
  const owners = new Uint32Array(n);
  let a = 0;
  let b = 0;
  for (let k = 0; k < n; k++) {
    const takeKept =
      b >= addTok.length ||
      (a < keptTok.length && (keptTok[a] < addTok[b] || (keptTok[a] === addTok[b] && keptOwn[a] <= addOwn[b])));
    if (takeKept) {
      tokens[k] = keptTok[a];
      owners[k] = keptOwn[a++];
    } else {
      tokens[k] = addTok[b];
      owners[k] = addOwn[b++];
    }
  }
  const expected = rb.tokenCount === undefined ? n : num(rb.tokenCount);
  if (expected !== n) throw new Error(`epoch ${rb.epoch}: ${n} tokens after applying, event says ${expected}`);

  return new Ring({
    epoch: num(rb.epoch),
    checksum: String(rb.checksum || '0'),
    members,
    tokens,
    owners,
    config: rb.config || ring.config,
    membershipSequence: num(rb.membershipSequence),
  });
}
