// The view in the URL fragment: `#seq=123&member=node-2&key=user:42`. A link reproduces
// what its sender saw: the sequence (history mode), the selected member, the probed key.

export function readUrl() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ''));
  const seq = p.has('seq') ? Number(p.get('seq')) : null;
  return { seq: Number.isFinite(seq) ? seq : null, member: p.get('member') || null, key: p.get('key') || null };
}

export function writeUrl({ seq, member, key }) {
  const p = new URLSearchParams();
  if (seq !== null && seq !== undefined) p.set('seq', String(seq));
  if (member) p.set('member', member);
  if (key) p.set('key', key);
  const hash = p.toString();
  const next = hash ? `#${hash}` : location.pathname + location.search;
  if (`#${hash}` !== location.hash) history.replaceState(null, '', next);
}
