// The ring on three stacked canvases, each redrawn only when its own content changes:
//   static  token arcs, leaving stripes, labels: when the ring, the size or the pixel
//           ratio changes;
//   dots    sampled keys: when traffic arrives (at most a few times a second) and as
//           they fade;
//   overlay (the `#ring` canvas, on top, takes the pointer) moved-range bands, the probe,
//           the hovered member: every frame while something animates.
// So an animation frame costs the overlay alone, not 160,000 arcs and 10,000 dots. Arcs
// and dots are batched into one path per colour.
//
// At high token counts many arcs share a pixel; drawing them all would show whichever
// came last. Instead the circle is cut into one slice per device pixel of circumference
// and each slice shows the owner of its longest arc piece; the caption says so.

import { colourOf, slotOf, SLOTS } from './palette.js';
import { frac, upperBound } from './u64.js';
import { DOT_LIFETIME_MS } from './state.js';
import { pct } from './format.js';

const TAU = Math.PI * 2;
const MOVE_MS = 4000;
const LABEL_LIMIT = 16;
const DOTS_EVERY_MS = 250;
const DOTS_FADE_MS = 2000;
const angleOf = (f) => -Math.PI / 2 + f * TAU;

// Band radii as fractions of the outer radius.
const BAND = { dotsIn: 0.5, dotsOut: 0.66, oldIn: 0.69, oldOut: 0.76, ringIn: 0.79, ringOut: 0.92, newIn: 0.94, newOut: 1 };

export class RingView {
  constructor(canvas, { caption, tooltip, onHover, onSelect }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.caption = caption;
    this.tooltip = tooltip;
    this.onHover = onHover;
    this.onSelect = onSelect;
    this.ring = null;
    this.waiting = true;
    this.pending = new Map();
    this.dots = null;
    this.moves = null;
    this.probe = null;
    this.hover = null;
    this.selected = null;
    this.staticLayer = layer(canvas);
    this.dotsLayer = layer(canvas);
    this.staticDirty = true;
    this.dotsDirty = false;
    this.dotsAt = 0;
    this.dotsTimer = null;
    this.frame = 0;
    this.dpr = 0;
    this.reduceMotion = matchMedia('(prefers-reduced-motion: reduce)');
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    canvas.addEventListener('pointermove', (e) => this.pointer(e));
    canvas.addEventListener('pointerleave', () => this.pointer(null));
    canvas.addEventListener('click', (e) => {
      const hit = this.hitTest(e);
      if (hit) this.onSelect(hit.id);
    });
    this.resize();
  }

  /** @param waiting true until the first snapshot (an empty ring then means "no data yet") */
  setRing(ring, pending, waiting = false) {
    this.ring = ring;
    this.waiting = waiting;
    this.pending = pending || new Map();
    this.staticDirty = true;
    this.request();
  }

  setDots(dots) {
    this.dots = dots;
    this.dotsDirty = true;
    this.request();
  }

  /** New traffic arrived: redraw the dots layer soon (bursts coalesce). */
  dotsChanged() {
    this.dotsDirty = true;
    this.request();
  }

  /** Highlights ranges that changed owner: [{start, end, from, to}] (BigInt positions). */
  showMoves(ranges) {
    if (!ranges || !ranges.length) return;
    this.moves = {
      at: performance.now(),
      list: ranges.map((r) => ({
        s: frac(r.start),
        e: r.start === r.end ? frac(r.start) + 1 : frac(r.end) + (r.end < r.start ? 1 : 0),
        from: r.from,
        to: r.to,
      })),
    };
    this.request();
  }

  clearMoves() {
    if (!this.moves) return;
    this.moves = null;
    this.request();
  }

  /** The probed key: {pos: fraction, ownerPos: fraction of the owner's token, owner: id}. */
  setProbe(probe) {
    this.probe = probe;
    this.request();
  }

  setHover(id) {
    if (id === this.hover) return;
    this.hover = id;
    this.request();
  }

  setSelected(id) {
    this.selected = id;
    this.request();
  }

  resize() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const css = Math.max(120, Math.floor(Math.min(box.width, Math.max(box.height, 0) || box.width)));
    const dpr = window.devicePixelRatio || 1;
    const px = Math.round(css * dpr);
    for (const c of [this.canvas, this.staticLayer, this.dotsLayer]) {
      c.style.width = `${css}px`;
      c.style.height = `${css}px`;
    }
    if (px !== this.canvas.width || dpr !== this.dpr) {
      for (const c of [this.canvas, this.staticLayer, this.dotsLayer]) {
        c.width = px;
        c.height = px;
      }
      this.dpr = dpr;
      this.staticDirty = true;
      this.dotsDirty = true;
    }
    this.css = css;
    this.request();
  }

  geometry() {
    const size = this.canvas.width;
    const labels = this.ring && this.ring.members.length <= LABEL_LIMIT && this.css >= 360;
    const margin = (labels ? 74 : 10) * this.dpr;
    return { c: size / 2, R: Math.max(10, size / 2 - margin), dpr: this.dpr };
  }

  request() {
    if (!this.frame) this.frame = requestAnimationFrame((t) => this.draw(t));
  }

  // --- static layer -------------------------------------------------------------

  /** Arcs to draw as [{s, e, owner}] in turns: merged runs, or one per pixel slice. */
  arcs(R) {
    const ring = this.ring;
    const runs = ring.runs();
    const slices = Math.min(16384, Math.ceil(TAU * R));
    const out = [];
    if (runs.count <= slices / 2) {
      for (let k = 0; k < runs.count; k++) out.push({ s: runs.start[k], e: runs.end[k], owner: runs.owner[k] });
      this.binned = 0;
      return out;
    }
    const best = new Float64Array(slices);
    const who = new Int32Array(slices).fill(-1);
    const cover = (s, e, o) => {
      const b0 = Math.max(0, Math.floor(s * slices));
      const b1 = Math.min(slices - 1, Math.floor(e * slices));
      for (let b = b0; b <= b1; b++) {
        const len = Math.min(e, (b + 1) / slices) - Math.max(s, b / slices);
        if (len > best[b]) {
          best[b] = len;
          who[b] = o;
        }
      }
    };
    for (let k = 0; k < runs.count; k++) {
      let s = runs.start[k];
      const e = runs.end[k];
      if (s < 0) {
        cover(s + 1, 1, runs.owner[k]);
        s = 0;
      }
      cover(s, e, runs.owner[k]);
    }
    for (let b = 0; b < slices; b++) {
      const last = out[out.length - 1];
      if (last && last.owner === who[b]) last.e = (b + 1) / slices;
      else if (who[b] >= 0) out.push({ s: b / slices, e: (b + 1) / slices, owner: who[b] });
    }
    this.binned = slices;
    return out;
  }

  drawStatic() {
    const g = this.geometry();
    const ctx = this.staticLayer.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.staticLayer.width, this.staticLayer.height);
    this.staticDirty = false;
    const ring = this.ring;
    // Background track, so an empty ring still reads as a ring.
    fullBand(ctx, g, BAND.ringIn, BAND.ringOut);
    ctx.fillStyle = '#262b36';
    ctx.fill();
    if (!ring || ring.size === 0) {
      this.caption.textContent = this.waiting ? 'Waiting for the first snapshot from the bridge.' : 'No members: the ring is empty, every key is unowned.';
      centre(ctx, g, this.waiting ? ['waiting for', 'the bridge'] : ['no members', 'every key unowned']);
      return;
    }
    centre(ctx, g, [`epoch ${ring.epoch}`, `${ring.members.length.toLocaleString('en-US')} member${ring.members.length === 1 ? '' : 's'}`]);
    const arcs = this.arcs(g.R);
    this.drawn = arcs;
    const ids = ring.members.map((m) => m.id);
    const paths = SLOTS.map(() => new Path2D());
    for (const a of arcs) addBand(paths[slotOf(ids[a.owner])], g, a.s, a.e, BAND.ringIn, BAND.ringOut);
    paths.forEach((p, i) => {
      ctx.fillStyle = SLOTS[i];
      ctx.fill(p);
    });
    // Leaving members: their arcs striped, so the state reads without colour.
    const leaving = new Set([...this.pending].filter(([, p]) => p.state === 'leaving').map(([id]) => ring.index.get(id)));
    if (leaving.size) {
      const p = new Path2D();
      for (const a of arcs) if (leaving.has(a.owner)) addBand(p, g, a.s, a.e, BAND.ringIn, BAND.ringOut);
      ctx.save();
      ctx.clip(p);
      ctx.strokeStyle = 'rgba(15,17,23,0.75)';
      ctx.lineWidth = 3 * g.dpr;
      ctx.beginPath();
      for (let x = -this.staticLayer.width; x < this.staticLayer.width * 2; x += 9 * g.dpr) {
        ctx.moveTo(x, 0);
        ctx.lineTo(x + this.staticLayer.height, this.staticLayer.height);
      }
      ctx.stroke();
      ctx.restore();
    }
    // Separators between arcs when they are few enough to see.
    if (arcs.length <= 400) {
      ctx.strokeStyle = '#0f1117';
      ctx.lineWidth = Math.max(1, g.dpr);
      ctx.beginPath();
      for (const a of arcs) radial(ctx, g, a.e, BAND.ringIn, BAND.ringOut);
      ctx.stroke();
    }
    if (ring.members.length <= LABEL_LIMIT && this.css >= 360) this.drawLabels(ctx, g, arcs);
    const n = ring.size.toLocaleString('en-US');
    this.caption.textContent = this.binned
      ? `${n} tokens in ${ring.runs().count.toLocaleString('en-US')} arcs; each of ${this.binned.toLocaleString('en-US')} slices shows the owner of its longest arc. Shares in the table are exact.`
      : `${n} tokens, ${arcs.length.toLocaleString('en-US')} arcs (runs of one owner's tokens merged).`;
  }

  /** Member labels at the middle of each member's longest arc (small rings only). */
  drawLabels(ctx, g, arcs) {
    const ring = this.ring;
    const longest = new Map();
    for (const a of arcs) {
      const cur = longest.get(a.owner);
      if (!cur || a.e - a.s > cur.e - cur.s) longest.set(a.owner, a);
    }
    const shares = ring.shares();
    const placed = [];
    ctx.font = `${12 * g.dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'middle';
    for (const [owner, a] of longest) {
      const m = ring.members[owner];
      const mid = angleOf((a.s + a.e) / 2);
      const r = g.R * 1.06;
      const x = g.c + Math.cos(mid) * r;
      const y = g.c + Math.sin(mid) * r;
      if (placed.some((p) => Math.abs(p.y - y) < 30 * g.dpr && Math.abs(p.x - x) < 90 * g.dpr)) continue;
      placed.push({ x, y });
      const state = this.pending.get(m.id)?.state || 'serving';
      const top = `${m.id} ${pct(shares[owner])}`;
      const bottom = `${m.address || 'no address'} · ${state}`;
      // Anchor away from the ring, then keep the whole label inside the canvas.
      const w = Math.max(ctx.measureText(top).width, ctx.measureText(bottom).width);
      const side = Math.cos(mid) >= 0.2 ? 0 : Math.cos(mid) <= -0.2 ? 1 : 0.5;
      const pad = 4 * g.dpr;
      const left = Math.max(pad, Math.min(this.staticLayer.width - pad - w, x - side * w));
      ctx.textAlign = 'left';
      ctx.fillStyle = colourOf(m.id);
      ctx.fillText(top, left, y - 7 * g.dpr);
      ctx.fillStyle = '#aab2c0';
      ctx.fillText(bottom, left, y + 8 * g.dpr);
    }
  }

  // --- per frame ------------------------------------------------------------------

  draw(now) {
    this.frame = 0;
    if (window.devicePixelRatio !== this.dpr) this.resize();
    if (this.staticDirty) this.drawStatic();
    const g = this.geometry();
    if (this.dotsDirty && now - this.dotsAt >= DOTS_EVERY_MS) this.redrawDots(g, now);
    else if (this.dotsDirty) this.request();
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.drawFocus(ctx, g);
    const again = this.drawMoves(ctx, g, now);
    this.drawProbe(ctx, g);
    if (again) this.request();
  }

  redrawDots(g, now) {
    const ctx = this.dotsLayer.getContext('2d');
    ctx.clearRect(0, 0, this.dotsLayer.width, this.dotsLayer.height);
    this.dotsDirty = false;
    this.dotsAt = now;
    const alive = this.drawDots(ctx, g, now);
    // Fading needs a redraw now and then even without new traffic.
    clearTimeout(this.dotsTimer);
    if (alive) this.dotsTimer = setTimeout(() => this.dotsChanged(), DOTS_FADE_MS);
  }

  /** The hovered or selected member: everything else dimmed, its arcs outlined. */
  drawFocus(ctx, g) {
    const id = this.hover || this.selected;
    const ring = this.ring;
    if (!id || !ring || !ring.index.has(id) || !this.drawn) return false;
    const owner = ring.index.get(id);
    fullBand(ctx, g, BAND.ringIn, BAND.ringOut);
    ctx.fillStyle = 'rgba(15,17,23,0.6)';
    ctx.fill();
    const p = new Path2D();
    const runs = ring.runs();
    for (let k = 0; k < runs.count; k++) if (runs.owner[k] === owner) addBand(p, g, runs.start[k], runs.end[k], BAND.ringIn - 0.02, BAND.ringOut + 0.01);
    ctx.fillStyle = colourOf(id);
    ctx.fill(p);
    ctx.strokeStyle = '#ffffff';
    ctx.lineWidth = Math.max(1, g.dpr);
    ctx.stroke(p);
    return false;
  }

  drawDots(ctx, g, now) {
    const d = this.dots;
    if (!d || d.count === 0) return false;
    const buckets = 6;
    const paths = new Map();
    const size = 2 * g.dpr;
    const r0 = g.R * BAND.dotsIn;
    const span = g.R * (BAND.dotsOut - BAND.dotsIn);
    let alive = 0;
    for (let i = 0; i < d.count; i++) {
      const age = now - d.at[i];
      if (age > DOT_LIFETIME_MS || age < 0) continue;
      alive++;
      const key = slotOf(d.owner[i]) * buckets + Math.min(buckets - 1, Math.floor((age / DOT_LIFETIME_MS) * buckets));
      let p = paths.get(key);
      if (!p) paths.set(key, (p = new Path2D()));
      // The radius is spread by the position's low digits, so dots at nearby angles do not pile up.
      const a = angleOf(d.pos[i]);
      const r = r0 + span * ((d.pos[i] * 7919) % 1);
      p.rect(g.c + Math.cos(a) * r - size / 2, g.c + Math.sin(a) * r - size / 2, size, size);
    }
    for (const [key, p] of paths) {
      ctx.globalAlpha = 1 - (key % buckets) / buckets;
      ctx.fillStyle = SLOTS[Math.floor(key / buckets)];
      ctx.fill(p);
    }
    ctx.globalAlpha = 1;
    return alive > 0;
  }

  /** Ranges that changed owner: old owner's colour inside, new owner's outside, fading. */
  drawMoves(ctx, g, now) {
    const m = this.moves;
    if (!m) return false;
    const t = (now - m.at) / MOVE_MS;
    if (t >= 1) {
      this.moves = null;
      return false;
    }
    // Reduced motion: the bands stay still at full strength, then go in one step.
    ctx.globalAlpha = this.reduceMotion.matches ? 1 : 1 - t * t;
    // Tiny ranges (a 1,000-member ring) still get two pixels, so a change is visible.
    const min = (2 * g.dpr) / (TAU * g.R);
    for (const [field, rIn, rOut] of [['from', BAND.oldIn, BAND.oldOut], ['to', BAND.newIn, BAND.newOut]]) {
      const paths = new Map();
      for (const r of m.list) {
        const slot = slotOf(r[field]);
        let p = paths.get(slot);
        if (!p) paths.set(slot, (p = new Path2D()));
        addBand(p, g, r.s, Math.max(r.e, r.s + min), rIn, rOut);
      }
      for (const [slot, p] of paths) {
        ctx.fillStyle = SLOTS[slot];
        ctx.fill(p);
      }
    }
    ctx.globalAlpha = 1;
    if (this.reduceMotion.matches) {
      setTimeout(() => this.request(), Math.max(0, MOVE_MS - (now - m.at)) + 20);
      return false;
    }
    return true;
  }

  drawProbe(ctx, g) {
    const p = this.probe;
    if (!p) return;
    const a = angleOf(p.pos);
    ctx.strokeStyle = '#ffffff';
    ctx.lineWidth = 2 * g.dpr;
    ctx.beginPath();
    ctx.moveTo(g.c + Math.cos(a) * g.R * 0.42, g.c + Math.sin(a) * g.R * 0.42);
    ctx.lineTo(g.c + Math.cos(a) * g.R * BAND.newOut, g.c + Math.sin(a) * g.R * BAND.newOut);
    ctx.stroke();
    if (p.ownerPos !== null && p.ownerPos !== undefined) {
      // The clockwise walk from the key to its owner's token.
      let end = p.ownerPos;
      if (end < p.pos) end += 1;
      ctx.setLineDash([6 * g.dpr, 4 * g.dpr]);
      ctx.strokeStyle = colourOf(p.owner);
      ctx.lineWidth = 3 * g.dpr;
      ctx.beginPath();
      ctx.arc(g.c, g.c, g.R * 0.775, a, angleOf(end));
      ctx.stroke();
      ctx.setLineDash([]);
      const b = angleOf(end);
      ctx.fillStyle = colourOf(p.owner);
      ctx.beginPath();
      ctx.arc(g.c + Math.cos(b) * g.R * 0.775, g.c + Math.sin(b) * g.R * 0.775, 5 * g.dpr, 0, TAU);
      ctx.fill();
    }
    ctx.fillStyle = '#ffffff';
    ctx.beginPath();
    ctx.arc(g.c + Math.cos(a) * g.R * 0.42, g.c + Math.sin(a) * g.R * 0.42, 4 * g.dpr, 0, TAU);
    ctx.fill();
  }

  // --- pointer --------------------------------------------------------------------

  /** The member under the pointer, by binary search on the merged runs' end angles. */
  hitTest(e) {
    const ring = this.ring;
    if (!e || !ring || ring.size === 0) return null;
    const rect = this.canvas.getBoundingClientRect();
    const g = this.geometry();
    const x = (e.clientX - rect.left) * g.dpr - g.c;
    const y = (e.clientY - rect.top) * g.dpr - g.c;
    const r = Math.hypot(x, y) / g.R;
    if (r < BAND.oldIn || r > BAND.newOut) return null;
    let f = (Math.atan2(y, x) + Math.PI / 2) / TAU;
    if (f < 0) f += 1;
    const runs = ring.runs();
    let k = upperBound(runs.end, f);
    if (k >= runs.count) k = 0;
    const owner = runs.owner[k];
    return { id: ring.members[owner].id, owner, s: runs.start[k], e: runs.end[k], x: e.clientX - rect.left, y: e.clientY - rect.top };
  }

  pointer(e) {
    const hit = this.hitTest(e);
    this.onHover(hit ? hit.id : null);
    const tip = this.tooltip;
    if (!hit) {
      tip.hidden = true;
      return;
    }
    const m = this.ring.members[hit.owner];
    const state = this.pending.get(m.id)?.state || 'serving';
    tip.textContent = `${m.id} (${state}) · ${m.address || 'no address'}\nshare ${pct(this.ring.shares()[hit.owner], 2)} · this arc ${pct(hit.e - hit.s, 3)}`;
    tip.style.left = `${hit.x + 14}px`;
    tip.style.top = `${hit.y + 14}px`;
    tip.hidden = false;
  }
}

/** Two lines of text in the middle of the ring. */
function centre(ctx, g, [big, small]) {
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#e6e9ef';
  ctx.font = `600 ${Math.round(Math.max(14, g.R / 9))}px system-ui, sans-serif`;
  ctx.fillText(big, g.c, g.c - g.R * 0.06);
  ctx.fillStyle = '#a0a8b8';
  ctx.font = `${Math.round(Math.max(11, g.R / 16))}px system-ui, sans-serif`;
  ctx.fillText(small, g.c, g.c + g.R * 0.08);
}

/** A canvas stacked under `top` in the same box, out of the accessibility tree. */
function layer(top) {
  const c = document.createElement('canvas');
  c.className = 'layer';
  c.setAttribute('aria-hidden', 'true');
  top.before(c);
  return c;
}

function addBand(p, g, s, e, rIn, rOut) {
  const a0 = angleOf(s);
  const a1 = angleOf(e);
  p.moveTo(g.c + Math.cos(a0) * g.R * rOut, g.c + Math.sin(a0) * g.R * rOut);
  p.arc(g.c, g.c, g.R * rOut, a0, a1);
  p.arc(g.c, g.c, g.R * rIn, a1, a0, true);
  p.closePath();
}

/** Starts a path of the whole band between two radii (the caller fills it). */
function fullBand(ctx, g, rIn, rOut) {
  ctx.beginPath();
  ctx.arc(g.c, g.c, g.R * rOut, 0, TAU);
  ctx.arc(g.c, g.c, g.R * rIn, TAU, 0, true);
}

function radial(ctx, g, f, rIn, rOut) {
  const a = angleOf(f);
  ctx.moveTo(g.c + Math.cos(a) * g.R * rIn, g.c + Math.sin(a) * g.R * rIn);
  ctx.lineTo(g.c + Math.cos(a) * g.R * rOut, g.c + Math.sin(a) * g.R * rOut);
}
