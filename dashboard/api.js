// The bridge's HTTP JSON API (time travel and the key probe), same origin as the page.
// Errors come back as {"error": "..."}; they are thrown as Error with that text.

async function get(path, params, signal) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const res = await fetch(`${path}?${q}`, { signal, headers: { accept: 'application/json' } });
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* a proxy's HTML error page: fall through to the status text */
  }
  if (!res.ok || (body && body.error)) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

/** The ring right after stream sequence `seq`: {seq, snapshot}. */
export const ringAt = (seq, signal) => get('/api/ring', { seq }, signal);

/** One page of stored events: {events, next}. */
export const eventsPage = (from, to, limit, signal) => get('/api/events', { from, to, limit }, signal);

/** Every stored event from `from` to `to`, page by page (at most `max`). */
export async function eventsBetween(from, to, max = 20000, signal) {
  const out = [];
  let cursor = from;
  while (out.length < max) {
    const page = await eventsPage(cursor, to, Math.min(5000, max - out.length), signal);
    out.push(...(page.events || []));
    if (page.next === null || page.next === undefined || !(page.events || []).length) break;
    cursor = page.next;
  }
  return out;
}

/** Where a key lives: {key, position, owner, replicas, epoch, seq, history}. */
export const keyInfo = (key, signal) => get('/api/key', { key }, signal);
