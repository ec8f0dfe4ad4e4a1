// Time travel over stream sequences. A jump fetches the ring at that sequence from
// /api/ring; stepping forward applies the stored events locally (same code as live), so
// playback is smooth and shows each rebalance's moved ranges. Live events keep arriving
// into the live ring meanwhile and are counted in the banner.

import { ringAt } from './api.js';
import { ringFromSnapshot } from './ringmodel.js';
import { applyEntry } from './state.js';
import { absTime, relTime } from './format.js';

export const SPEEDS = [0.5, 1, 2, 4, 8, 'real'];
const REAL_TIME_MAX_MS = 10000;

export class Travel {
  constructor(store, els, { onError, onChange }) {
    this.store = store;
    this.els = els;
    this.onError = onError;
    this.onChange = onChange;
    this.playing = false;
    this.timer = null;
    this.speed = 1;
    this.abort = null;
    this.target = null;
    this.debounce = null;
    els.slider.addEventListener('input', () => {
      clearTimeout(this.debounce);
      this.showPending(Number(els.slider.value));
      this.debounce = setTimeout(() => this.go(Number(els.slider.value)), 120);
    });
    els.slider.addEventListener('change', () => {
      clearTimeout(this.debounce);
      this.go(Number(els.slider.value));
    });
    els.live.addEventListener('click', () => this.live());
    els.bannerLive.addEventListener('click', () => this.live());
    els.play.addEventListener('click', () => this.toggle());
    els.back.addEventListener('click', () => this.step(-1));
    els.forward.addEventListener('click', () => this.step(1));
    els.first.addEventListener('click', () => this.go(this.min()));
    els.speed.addEventListener('change', () => this.setSpeed(els.speed.value));
  }

  min() {
    const first = this.store.hello?.stream_first;
    const t = this.store.timeline();
    return Math.max(0, Number(first) || (t.length ? t[0].seq : this.store.live.seq));
  }

  /** Stored event seqs (resync notes are not points of the stream). */
  points() {
    return this.store.timeline().filter((e) => e.kind !== 'resync').map((e) => e.seq);
  }

  /** Shows the ring right after `seq` (live when seq is the newest). */
  async go(seq) {
    const store = this.store;
    if (!Number.isFinite(seq)) return;
    seq = Math.max(this.min(), Math.min(seq, store.latestSeq));
    if (seq >= store.latestSeq) return this.live();
    this.target = seq;
    this.showPending(seq);
    const from = store.view ? store.view.seq : Infinity;
    if (store.view && seq > from && store.stepViewTo(seq)) return this.done();
    if (this.abort) this.abort.abort();
    const abort = (this.abort = new AbortController());
    try {
      const res = await ringAt(seq, abort.signal);
      if (this.target !== seq) return;
      const point = { ring: ringFromSnapshot(res.snapshot), seq: Number(res.seq) || seq, pending: new Map() };
      // Who was joining or leaving at that point: membership events not yet rebalanced.
      for (const e of store.timeline()) if (e.seq > point.ring.membershipSequence && e.seq <= point.seq && e.kind !== 'rebalance') applyEntry(point, e);
      store.setView(point.seq, point.ring, point.pending);
      // Moving forward onto a rebalance: show what it moved.
      const rb = store.timeline().filter((e) => e.kind === 'rebalance' && e.seq > from && e.seq <= point.seq).pop();
      if (rb && from !== Infinity) store.emit('ring', { reason: 'travel', entry: rb });
      this.done();
    } catch (err) {
      if (err.name === 'AbortError') return;
      this.stop();
      this.onError(`Could not load the ring at seq ${seq}: ${err.message}`);
      if (!store.view) this.render();
    }
  }

  done() {
    this.render();
    this.onChange();
  }

  live() {
    this.stop();
    this.target = null;
    if (this.abort) this.abort.abort();
    this.store.backToLive();
    this.render();
    this.onChange();
  }

  /** One stored event back (-1) or forward (+1) from the shown point. */
  step(dir) {
    const pts = this.points();
    const at = this.store.shown().seq;
    if (dir > 0) {
      const next = pts.find((s) => s > at);
      if (next === undefined || !this.store.view) return this.live();
      return this.go(next);
    }
    const prev = [...pts].reverse().find((s) => s < at);
    return this.go(prev === undefined ? this.min() : prev);
  }

  toggle() {
    if (this.playing) this.stop();
    else this.play();
  }

  play() {
    if (!this.store.view) {
      // From live, playback starts at the beginning of the stored history.
      this.go(this.min());
    }
    this.playing = true;
    this.render();
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.playing) return;
    let delay = 1000 / (this.speed === 'real' ? 1 : this.speed);
    if (this.speed === 'real') {
      // Wait as long as the stream did between this event and the next, capped.
      const t = this.store.timeline().filter((e) => e.kind !== 'resync');
      const at = this.store.shown().seq;
      const cur = [...t].reverse().find((e) => e.seq <= at);
      const next = t.find((e) => e.seq > at);
      delay = cur && next && cur.time && next.time ? Math.min(REAL_TIME_MAX_MS, Math.max(50, next.time - cur.time)) : 1000;
    }
    this.timer = setTimeout(async () => {
      await this.step(1);
      if (!this.store.view) return this.stop();
      this.schedule();
    }, delay);
  }

  stop() {
    this.playing = false;
    clearTimeout(this.timer);
    this.render();
  }

  setSpeed(v) {
    this.speed = v === 'real' ? 'real' : Number(v) || 1;
    this.els.speed.value = String(this.speed);
    if (this.playing) this.schedule();
  }

  /** Faster (+1) or slower (-1) through SPEEDS. */
  nudgeSpeed(dir) {
    const i = SPEEDS.indexOf(this.speed);
    this.setSpeed(String(SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, i + dir))]));
  }

  /** The banner as soon as the user picks a point, before the ring arrives. */
  showPending(seq) {
    const { banner, bannerText } = this.els;
    if (seq >= this.store.latestSeq) return;
    banner.hidden = false;
    bannerText.textContent = `Viewing sequence ${seq} (loading…)`;
  }

  render() {
    const { slider, banner, bannerText, play, live } = this.els;
    const store = this.store;
    const min = this.min();
    const max = Math.max(min, store.latestSeq);
    slider.min = String(min);
    slider.max = String(max);
    slider.disabled = max <= min;
    const shown = store.shown();
    if (document.activeElement !== slider || !store.view) slider.value = String(store.view ? shown.seq : max);
    slider.setAttribute('aria-valuetext', store.view ? `sequence ${shown.seq} of ${max}` : `live, sequence ${max}`);
    play.textContent = this.playing ? '❚❚ Pause' : '▶ Play';
    play.setAttribute('aria-pressed', String(this.playing));
    live.disabled = !store.view;
    if (store.view) {
      const at = store.timeline().filter((e) => e.seq <= shown.seq && e.kind !== 'resync').pop();
      const when = at ? ` · ${absTime(at.time)} (${relTime(at.time)})` : '';
      const missed = store.missed ? ` · ${store.missed} new live event${store.missed === 1 ? '' : 's'} since` : '';
      banner.hidden = false;
      bannerText.textContent = `Viewing sequence ${shown.seq} — epoch ${shown.ring.epoch}${when}${missed}`;
    } else if (this.target === null) {
      banner.hidden = true;
    }
  }
}
