// Text formatting shared by every panel. Each function accepts missing or odd input and
// returns readable text ("—"), so no panel ever shows NaN or "undefined".

export const DASH = '—';

const finite = (v) => typeof v === 'number' && Number.isFinite(v);

/** 0.125 -> "12.5%" (one decimal, as the timeline hook expects). */
export function pct(fraction, digits = 1) {
  return finite(fraction) ? `${(fraction * 100).toFixed(digits)}%` : DASH;
}

/** A share that may be tiny: two significant digits below 0.1% ("0.0042%"), else pct. */
export function share(fraction) {
  if (!finite(fraction)) return DASH;
  if (fraction > 0 && fraction < 0.001) return `${(fraction * 100).toPrecision(2)}%`;
  return pct(fraction, 2);
}

/** A count with thousands separators. */
export function count(n) {
  return finite(n) ? Math.round(n).toLocaleString('en-US') : DASH;
}

/** A rate or ratio with sensible precision. */
export function num(n, digits = 1) {
  if (!finite(n)) return DASH;
  if (Math.abs(n) >= 1000) return count(n);
  return n.toFixed(digits);
}

export function bytes(n) {
  if (!finite(n)) return DASH;
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** Seconds as "3.8 ms", "1.20 s", "2 min 5 s". */
export function duration(seconds) {
  if (!finite(seconds)) return DASH;
  if (seconds < 1) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 60) return `${seconds.toFixed(2)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** Parses a proto3 JSON Duration ("1.999633682s") into seconds (0 when absent). */
export function parseDuration(d) {
  if (typeof d === 'number') return d;
  if (typeof d !== 'string') return 0;
  const v = parseFloat(d);
  return Number.isFinite(v) ? v : 0;
}

/** Parses an RFC 3339 time into milliseconds since the epoch (NaN-free: 0 when absent). */
export function parseTime(t) {
  const v = t ? Date.parse(t) : NaN;
  return Number.isFinite(v) ? v : 0;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Absolute time in UTC, "15:08:43.094Z"; the date too when it is not today. */
export function absTime(ms, now = Date.now()) {
  if (!ms) return DASH;
  const d = new Date(ms);
  const hms = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}Z`;
  const sameDay = new Date(now).toISOString().slice(0, 10) === d.toISOString().slice(0, 10);
  return sameDay ? hms : `${d.toISOString().slice(0, 10)} ${hms}`;
}

/** Relative time, "12 s ago", "3 min ago", "in 4 s". */
export function relTime(ms, now = Date.now()) {
  if (!ms) return DASH;
  const s = Math.round((now - ms) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 86400 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  if (a < 2) return 'just now';
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** Checksums arrive as decimal u64 strings; operators compare them in hex (as replay prints). */
export function hex64(dec) {
  try {
    return `0x${BigInt(dec || 0).toString(16).padStart(16, '0')}`;
  } catch {
    return DASH;
  }
}

/** Creates an element with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
